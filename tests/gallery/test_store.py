"""The stores on synthetic templates: schema, model binding, transactions, cascading deletion that leaves no
trace, concurrency from threads and processes, and a process killed inside a transaction. Tests taking
`store`/`store_spec` run on SQLite and on PostgreSQL; file-level ones (raw bytes, PRAGMAs, corrupt files) are
SQLite's, with their PostgreSQL counterparts beside them."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from gallery_support import MODEL_128 as MODEL  # noqa: F401
from gallery_support import (
    backend,
    check_consistent,
    is_url,
    legacy_postgres_gallery,
    new_gallery,
    postgres_gallery,
    rows,
    store_spec,
    unit_vectors,
)

from siamface.errors import GalleryError, ModelMismatchError
from siamface.gallery import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AuditRecord,
    ModelBinding,
    NewTemplate,
    PostgresStore,
    SQLiteStore,
    UnknownPersonError,
    open_store,
)


@pytest.fixture()
def store(store_spec):
    with open_store(store_spec, MODEL, create=True) as s:
        yield s


@pytest.fixture()
def sqlite_store(tmp_path):
    with SQLiteStore(tmp_path / "g.db", MODEL, create=True) as s:
        yield s


def _templates(n, seed=0, **kw):
    return [
        NewTemplate(v, source=f"img{i}.png", quality={"i": i}, **kw) for i, v in enumerate(unit_vectors(n, seed=seed))
    ]


def test_new_file_has_schema_wal_and_binding(sqlite_store, tmp_path):
    store = sqlite_store
    path = tmp_path / "g.db"
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    meta = dict(rows(path, "SELECT key, value FROM meta"))
    assert (meta["model_name"], meta["model_version"], meta["embedding_size"]) == ("test-model", "1", "128")
    db = store._connect()
    assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert db.execute("PRAGMA secure_delete").fetchone() == (1,)
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert set(MIGRATIONS) == set(range(1, SCHEMA_VERSION + 1))


def test_new_database_has_schema_and_binding(postgres_gallery):
    store_spec = postgres_gallery
    store = open_store(store_spec, MODEL, create=True)
    store.close()
    assert isinstance(store, PostgresStore)
    from siamface.gallery import postgres

    assert rows(store_spec, "SELECT version FROM siamface_schema") == [(postgres.SCHEMA_VERSION,)]
    meta = dict(rows(store_spec, "SELECT key, value FROM meta"))
    assert (meta["model_name"], meta["model_version"], meta["embedding_size"]) == ("test-model", "1", "128")
    # versions 1 and 2 are SQLite's; 3 (templates as pgvector vectors, HNSW index) is PostgreSQL's own
    assert set(postgres.MIGRATIONS) == set(range(1, postgres.SCHEMA_VERSION + 1)) == set(MIGRATIONS) | {3, 6}
    assert rows(
        store_spec,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'templates'::regclass AND attname = 'embedding'",
    ) == [("vector(128)",)]
    assert rows(
        store_spec,
        "SELECT strpos(indexdef, 'USING hnsw (embedding vector_cosine_ops)') > 0 FROM pg_indexes WHERE indexname = ?",
        (postgres.HNSW_INDEX,),
    ) == [(True,)]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, GalleryError, "no gallery at"),
        ({"create": True}, GalleryError, "needs the model"),
    ],
)
def test_opening_a_missing_gallery(new_gallery, kwargs, error, message):
    spec = new_gallery("none")
    with pytest.raises(error, match=message):
        open_store(spec, **kwargs)
    if is_url(spec):  # the database stays as it was: empty
        assert rows(spec, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]
    else:
        assert not spec.exists()


def test_other_model_is_refused_with_a_clear_message(store, store_spec):
    store.close()
    with pytest.raises(
        ModelMismatchError,
        match=r"'test-model' version '1'.*'other' version '2'.*--model with the model file of 'test-model'",
    ):
        open_store(store_spec, ModelBinding("other", "2", 128))
    with open_store(store_spec) as again:  # without a model: opened as it is (management commands)
        assert again.model == MODEL


def test_wrong_embedding_size_and_nan_are_refused(store):
    with pytest.raises(GalleryError, match="64 dimensions"):
        store.add_templates("a", [NewTemplate(np.ones(64, np.float32))])
    with pytest.raises(GalleryError, match="NaN"):
        store.add_templates("a", [NewTemplate(np.full(128, np.nan, np.float32))])
    assert store.people() == []


def test_newer_schema_and_foreign_databases_are_refused(postgres_gallery):
    store_spec = postgres_gallery
    open_store(store_spec, MODEL, create=True).close()
    from siamface.gallery.postgres import SCHEMA_VERSION as PG_VERSION

    rows(store_spec, "UPDATE siamface_schema SET version = ? RETURNING version", (PG_VERSION + 1,))
    with pytest.raises(GalleryError, match="newer than this siamface"):
        open_store(store_spec)
    other = store_spec.rsplit("/", 1)[0] + "/postgres"  # the server's own database: not a gallery
    rows(other, "CREATE TABLE IF NOT EXISTS t (x int) ")
    with pytest.raises(GalleryError, match="not a siamface gallery"):
        open_store(other, MODEL, create=True)
    assert rows(other, "SELECT to_regclass('people') IS NULL") == [(True,)]


def test_a_version_1_database_is_migrated_keeping_its_audit(postgres_gallery):
    store_spec = postgres_gallery
    from siamface.gallery import postgres as module

    # a database written by the version-1 code
    legacy_postgres_gallery(
        store_spec, 1, MODEL, [("a", [(unit_vectors(1)[0].astype("<f4").tobytes(), "a.png")])], audit=True
    )
    assert rows(store_spec, "SELECT version FROM siamface_schema") == [(1,)]
    with open_store(store_spec) as s:
        assert s.opened_version == 1 and s.schema_version() == module.SCHEMA_VERSION
        assert [(e.claimed, e.returned, e.accepted) for e in s.audit()] == [("a", "a", True)]
        assert s.verify_audit().intact  # the old rows, chained as found (schema version 4)
        s.delete("a")
        assert [(e.kind, e.claimed, e.claimed_tombstone is not None) for e in s.audit()] == [
            ("delete", None, True),
            ("verify", None, True),
        ]
        assert s.verify_audit().intact
    check_consistent(store_spec)


def test_newer_schema_and_foreign_sqlite_files_are_refused(tmp_path, sqlite_store):
    store = sqlite_store
    store._connect().execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(GalleryError, match="newer than this siamface"):
        SQLiteStore(tmp_path / "g.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(GalleryError, match="not a siamface gallery"):
        SQLiteStore(other, MODEL, create=True)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(GalleryError, match="not a usable gallery"):
        SQLiteStore(tmp_path / "junk.db")


def test_migration_table_brings_an_old_file_up(tmp_path, monkeypatch):
    from siamface.gallery import sqlite as module

    path = tmp_path / "g.db"
    SQLiteStore(path, MODEL, create=True).close()

    def to_2(db):
        db.execute("ALTER TABLE people ADD COLUMN note TEXT")

    future = module.SCHEMA_VERSION + 1
    monkeypatch.setitem(module.MIGRATIONS, future, to_2)
    monkeypatch.setattr(module, "SCHEMA_VERSION", future)
    SQLiteStore(path).close()
    assert rows(path, "PRAGMA user_version") == [(future,)]
    assert "note" in [r[1] for r in rows(path, "PRAGMA table_info(people)")]


def test_a_version_1_file_is_migrated_keeping_its_audit(tmp_path, monkeypatch):
    from siamface.gallery import sqlite as module

    path = tmp_path / "g.db"
    with monkeypatch.context() as m:  # a file written by the version-1 code
        m.setattr(module, "MIGRATIONS", {1: module.MIGRATIONS[1]})
        m.setattr(module, "SCHEMA_VERSION", 1)
        SQLiteStore(path, MODEL, create=True).close()
    db = sqlite3.connect(path)  # its rows, as that code wrote them
    db.execute("INSERT INTO people (id, name, metadata, created) VALUES (1, 'a', '{}', 't')")
    db.execute(
        "INSERT INTO templates (person_id, embedding, model, model_version, created) VALUES (1, ?, ?, ?, 't')",
        (unit_vectors(1)[0].astype("<f4").tobytes(), MODEL.name, MODEL.version),
    )
    db.execute(
        "INSERT INTO audit (time, kind, claimed_id, returned_id, score, threshold, accepted, rule) "
        "VALUES ('t', 'verify', 1, 1, 0.95, 0.9, 1, 'best')"
    )
    db.commit()
    db.close()
    assert rows(path, "PRAGMA user_version") == [(1,)]
    with SQLiteStore(path) as s:
        assert [(e.claimed, e.returned, e.accepted) for e in s.audit()] == [("a", "a", True)]
        assert s.verify_audit().intact  # the old rows, chained as found (schema version 4)
        s.delete("a")
        assert [(e.kind, e.claimed, e.claimed_tombstone is not None) for e in s.audit()] == [
            ("delete", None, True),
            ("verify", None, True),
        ]
        assert s.verify_audit().intact
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    check_consistent(path)


def test_add_list_rename_and_names_are_unique_ignoring_case(store):
    result = store.add_templates("Alice", _templates(3), metadata={"team": "a"})
    assert result.created and len(result.template_ids) == 3 and result.person.n_templates == 3
    again = store.add_templates("alice", _templates(2, seed=1))
    assert not again.created and again.person.name == "Alice" and again.person.n_templates == 5
    store.add_templates("Bob", _templates(1, seed=2))
    assert [p.name for p in store.people()] == ["Alice", "Bob"]
    assert store.person("ALICE").metadata == {"team": "a"}
    with pytest.raises(GalleryError, match="taken"):
        store.rename("Alice", "bob")
    assert store.rename("alice", "Alicia").name == "Alicia"
    with pytest.raises(UnknownPersonError, match="no person named 'Alice'"):
        store.person("Alice")
    t = store.templates("Alicia", embeddings=True)
    assert [x.source for x in t] == ["img0.png", "img1.png", "img2.png", "img0.png", "img1.png"]
    assert t[0].embedding.dtype == np.float32 and t[0].quality == {"i": 0} and t[0].model == "test-model"


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x" * 201])
def test_bad_names_are_refused(store, bad):
    with pytest.raises(GalleryError):
        store.add_templates(bad, _templates(1))


def test_generation_moves_on_every_change(store):
    g0 = store.generation()
    store.add_templates("a", _templates(1))
    g1 = store.generation()
    store.rename("a", "b")
    g2 = store.generation()
    store.delete("b")
    assert g0 < g1 < g2 < store.generation()


def test_a_failing_enrollment_changes_nothing(store):
    store.add_templates("a", _templates(1))
    before = store.generation()

    def explode(existing, new):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.add_templates("b", _templates(3), keep=explode)
    with pytest.raises(GalleryError):  # the third template is bad: the first two must not stay
        store.add_templates("c", _templates(2) + [NewTemplate(np.zeros(3, np.float32))])
    assert [p.name for p in store.people()] == ["a"] and store.generation() == before


def test_all_skipped_creates_nobody(store):
    result = store.add_templates("a", _templates(2), keep=lambda existing, new: ["dup"] * len(new))
    assert result.person is None and result.skipped == {0: "dup", 1: "dup"} and store.people() == []


def test_images_only_when_the_gallery_keeps_them(store, new_gallery):
    with pytest.raises(GalleryError, match="without keep_images"):
        store.add_templates("a", _templates(1, image=b"png"))
    with open_store(new_gallery("k"), MODEL, create=True, keep_images=True) as kept:
        tid = kept.add_templates("a", _templates(1, image=b"\x89PNG data")).template_ids[0]
        assert kept.image(tid) == b"\x89PNG data" and kept.stats()["kept_images"] == 1


def test_delete_removes_templates_and_images_audit_keeps_a_tombstone_and_no_bytes_remain(tmp_path):
    path = tmp_path / "k.db"
    marker = np.full(128, 0.0883883, np.float32)  # a recognisable embedding
    secret = b"FACE-IMAGE-OF-ALICE-" * 50
    with SQLiteStore(path, MODEL, create=True, keep_images=True) as s:
        alice = s.add_templates(
            "alice", [NewTemplate(marker, "a.png", image=secret)], metadata={"badge": "alice-0042"}
        ).person
        bob = s.add_templates("bob", _templates(2)).person
        s.log(
            [
                AuditRecord("verify", alice.id, alice.id, 0.99, 0.9, True, "best"),
                AuditRecord("identify", None, alice.id, 0.97, 0.9, True, "best"),
                AuditRecord("verify", bob.id, None, 0.5, 0.9, False, "mean"),
                AuditRecord("identify", None, None, 0.3, 0.9, False, "best"),
            ]
        )
        assert marker.tobytes() in path.read_bytes() + (tmp_path / "k.db-wal").read_bytes()
        assert s.delete("alice") == 1
        entries = [e for e in s.audit() if e.kind in ("verify", "identify")]
        assert [(e.claimed, e.returned) for e in entries] == [(None, None), ("bob", None), (None, None), (None, None)]
        tombs = {entries[2].returned_tombstone, entries[3].claimed_tombstone, entries[3].returned_tombstone}
        assert len(tombs) == 1 and None not in tombs  # one opaque id for alice's rows
        assert entries[3].to_dict()["claimed"] == f"removed:{tombs.pop()}"
        assert entries[0].returned_tombstone is None and entries[1].claimed_tombstone is None
        with pytest.raises(UnknownPersonError):
            s.delete("alice")
        carol = s.add_templates("carol", _templates(1, seed=7)).person  # may reuse alice's id: no rows follow
        assert [e.kind for e in s.audit(person="carol")] == ["enrol"] and carol.name == "carol"
        assert s.verify_audit().intact  # no audit row changed with the deletion
    check_consistent(path)
    assert rows(path, "SELECT count(*) FROM people WHERE name = 'alice'") == [(0,)]
    assert rows(path, "SELECT count(*) FROM templates") == [(3,)]
    assert rows(path, "SELECT count(*) FROM audit WHERE kind IN ('verify', 'identify')") == [(4,)]
    data = path.read_bytes()
    wal = tmp_path / "k.db-wal"
    data += wal.read_bytes() if wal.exists() else b""
    assert marker.tobytes() not in data and b"FACE-IMAGE-OF-ALICE" not in data and b"alice" not in data


def test_delete_leaves_no_row_mentioning_the_person_in_postgres(postgres_gallery):
    """PostgreSQL counterpart of the test above: after the deletion, no row of any table of the gallery holds
    the name, the metadata, the embedding or the image (the server's free space and WAL are its own, see
    siamface.gallery.postgres)."""
    spec = postgres_gallery
    marker = np.full(128, 0.0883883, np.float32)
    secret = b"FACE-IMAGE-OF-ALICE-" * 50
    with open_store(spec, MODEL, create=True, keep_images=True) as s:
        alice = s.add_templates(
            "alice", [NewTemplate(marker, "a.png", image=secret)], metadata={"badge": "alice-0042"}
        ).person
        bob = s.add_templates("bob", _templates(2)).person
        s.log(
            [
                AuditRecord("verify", alice.id, alice.id, 0.99, 0.9, True, "best"),
                AuditRecord("verify", bob.id, None, 0.5, 0.9, False, "mean"),
            ]
        )
        assert s.delete("alice") == 1
        decisions = [e for e in s.audit() if e.kind == "verify"]
        assert [(e.claimed, e.claimed_tombstone is not None) for e in decisions] == [("bob", False), (None, True)]
    check_consistent(spec)
    tables = [
        r[0] for r in rows(spec, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    ]
    assert {"people", "templates", "audit", "meta", "siamface_schema"} <= set(tables)
    dump = b"".join(str(r[0]).encode() for t in tables for r in rows(spec, f"SELECT x::text FROM {t} x"))
    assert b"bob" in dump
    for trace in (b"alice", marker.tobytes().hex().encode(), secret.hex().encode()[:80]):
        assert trace not in dump.lower()
    assert rows(spec, "SELECT count(*) FROM templates") == [(2,)]


def test_audit_lists_newest_first_with_names(store):
    a = store.add_templates("a", _templates(1)).person
    store.log([AuditRecord("verify", a.id, a.id, 0.95, 0.9, True, "fraction", "m")])
    store.log([AuditRecord("identify", None, None, 0.2, 0.9, False, "best", "m")])
    entries = store.audit()
    assert [e.kind for e in entries] == ["identify", "verify", "enrol"]
    assert entries[1].claimed == "a" and entries[1].returned == "a" and entries[1].rule == "fraction"
    assert len(store.audit(limit=1)) == 1 and len(store.audit(person="a")) == 2


def test_rebind_replaces_every_embedding_and_the_model(store):
    store.add_templates("a", _templates(2))
    ids = [t.id for t in store.templates()]
    with pytest.raises(GalleryError, match="every template"):
        store.rebind(ModelBinding("new", "2", 4), {ids[0]: np.ones(4, np.float32)})
    store.rebind(ModelBinding("new", "2", 4), {i: np.ones(4, np.float32) / 2 for i in ids})
    assert store.model == ModelBinding("new", "2", 4) and store.matrix()[3].shape == (2, 4)
    assert {t.model for t in store.templates()} == {"new"}


def test_threads_enrolling_the_same_names_make_one_person_each(store, store_spec):
    errors = []

    def work(seed):
        try:
            for k in range(10):
                store.add_templates(f"p{k}", _templates(2, seed=seed * 100 + k))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    people = store.people()
    assert sorted(p.name for p in people) == sorted(f"p{k}" for k in range(10))
    assert all(p.n_templates == 12 for p in people)
    check_consistent(store_spec)


_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from siamface.gallery import ModelBinding, NewTemplate, PostgresStore, SQLiteStore, open_store
    path, seed, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if pause:
        original = SQLiteStore._insert_template
        def slow(self, db, person_id, template, now):
            tid = original(self, db, person_id, template, now)
            print("inserted", template.source, flush=True)
            time.sleep(pause)
            return tid
        SQLiteStore._insert_template = slow
        original_many = PostgresStore._insert_templates
        def slow_many(self, db, person_id, templates, now):
            ids = []
            for t in templates:
                ids += original_many(self, db, person_id, [t], now)
                print("inserted", t.source, flush=True)
                time.sleep(pause)
            return ids
        PostgresStore._insert_templates = slow_many
    store = open_store(path, ModelBinding("test-model", "1", 128), create=True)
    rng = np.random.default_rng(seed)
    for k in range(int(sys.argv[4])):
        v = rng.normal(size=(4, 128)).astype(np.float32)
        store.add_templates(f"p{k}", [NewTemplate(x / np.linalg.norm(x), f"p{k}/{i}") for i, x in enumerate(v)])
        print("committed", k, flush=True)
""")


def test_two_processes_enrolling_at_once(new_gallery):
    path = new_gallery()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(seed), "0", "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    check_consistent(path)
    assert rows(path, "SELECT count(*), count(DISTINCT name) FROM people") == [(15, 15)]
    assert rows(path, "SELECT min(n), max(n) FROM (SELECT count(*) n FROM templates GROUP BY person_id) AS c") == [
        (8, 8)
    ]


def test_sigkill_inside_an_enrollment_transaction_leaves_the_gallery_as_before(new_gallery):
    path = new_gallery()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), "3", "0.15", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line.strip())
        if line.strip() == "inserted p2/1":  # p0 and p1 committed; p2 half written, transaction open
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert "committed 1" in seen and "committed 2" not in seen, seen
    check_consistent(path)
    assert rows(
        path, "SELECT name, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p ORDER BY name"
    ) == [("p0", 4), ("p1", 4)]
    with open_store(path) as s:  # and it is still a working gallery
        s.add_templates("p2", _templates(4))
        assert s.person("p2").n_templates == 4


def test_threads_creating_the_same_new_name_one_wins_the_others_are_refused(store, store_spec):
    """Issue 15, defect 1 at the store: "the name must be new" is decided inside the write transaction."""
    from siamface.gallery.store import PersonExistsError

    for trial in range(3):
        barrier = threading.Barrier(4)
        outcomes = []

        def work(seed, name=f"New{trial}"):
            barrier.wait()
            try:
                outcomes.append(
                    (
                        "ok",
                        store.add_templates(
                            name if seed % 2 else name.lower(), _templates(2, seed=seed), new=True
                        ).person.id,
                    )
                )
            except PersonExistsError as exc:
                outcomes.append(("taken", exc.name))

        threads = [threading.Thread(target=work, args=(trial * 10 + t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o[0] for o in outcomes) == ["ok", "taken", "taken", "taken"]
        assert store.person(f"new{trial}").n_templates == 2
    check_consistent(store_spec)
