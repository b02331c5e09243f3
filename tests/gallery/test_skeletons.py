"""The stored look-alike skeleton of every person's name (schema version 5): an old gallery is migrated in one
transaction keeping the look-alikes it already holds, every way in (enroll, import, rename) is checked with
one indexed lookup instead of a read of every name, and a stored skeleton is derived data: a wrong one never
refuses an innocent name, `gallery migrate` rewrites it, and one made by another rule is computed again.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import att
from gallery_support import (  # noqa: F401
    MODEL_128,
    backend,
    base_gallery,
    check_consistent,
    cli,
    is_url,
    new_gallery,
    postgres_gallery,
    role_url,
    rows,
    store_spec,
    unit_vectors,
)

from siamface.gallery import ModelBinding, NewTemplate, open_store, postgres, sqlbase, sqlite
from siamface.gallery.names import InvalidNameError, skeleton, skeleton_rule


def _one(seed: int = 0) -> list[NewTemplate]:
    return [NewTemplate(unit_vectors(1, seed=seed)[0])]


def _change(spec, statements) -> None:
    """Run (sql, params) statements in one committed transaction, behind the store's back (``?`` placeholders)."""
    if is_url(spec):
        import psycopg
        from pgvector.psycopg import register_vector

        with psycopg.connect(spec, autocommit=True) as db, db.transaction():
            register_vector(db)
            for sql, params in statements:
                db.execute(sql.replace("?", "%s"), params)
        return
    db = sqlite3.connect(spec)
    try:
        with db:
            for sql, params in statements:
                db.execute(sql, params)
    finally:
        db.close()


def _version(spec) -> int:
    return rows(spec, "SELECT version FROM siamface_schema" if is_url(spec) else "PRAGMA user_version")[0][0]


def _legacy_gallery(spec, base, monkeypatch, renamed: dict[str, str]) -> None:
    """Write at `spec` a gallery as the siamface of schema version 4 wrote it (that version's migrations, no
    skeleton anywhere), holding the people and templates of `base` (some `renamed`: names written before the
    look-alike check)."""
    module = postgres if is_url(spec) else sqlite
    meta = dict(rows(base, "SELECT key, value FROM meta"))
    model = ModelBinding(meta["model_name"], meta["model_version"], int(meta["embedding_size"]))
    with monkeypatch.context() as m:
        m.setattr(module, "MIGRATIONS", {v: module.MIGRATIONS[v] for v in range(1, 5)})
        m.setattr(module, "SCHEMA_VERSION", 4)
        open_store(spec, model, create=True).close()
    statements = [
        ("INSERT INTO people (name, metadata, created, ref) VALUES (?, '{}', 'then', ?)", (renamed.get(n, n), f"r{i}"))
        for i, n in rows(base, "SELECT id, name FROM people")
    ]
    for name, blob, source in rows(
        base, "SELECT p.name, t.embedding, t.source FROM templates t JOIN people p ON p.id = t.person_id"
    ):
        statements.append(
            (
                "INSERT INTO templates (person_id, embedding, model, model_version, source, quality, created) "
                "VALUES ((SELECT id FROM people WHERE name = ?), ?, ?, ?, ?, '{}', 'then')",
                (
                    renamed.get(name, name),
                    np.frombuffer(blob, "<f4") if is_url(spec) else blob,
                    model.name,
                    model.version,
                    source,
                ),
            )
        )
    _change(spec, statements)
    assert _version(spec) == 4


def _names(spec) -> list[str]:
    return sorted(r[0] for r in rows(spec, "SELECT name FROM people"))


def test_an_old_gallery_migrates_keeping_its_look_alikes_and_refuses_new_ones(base_gallery, new_gallery, monkeypatch):
    spec = new_gallery("old")
    _legacy_gallery(spec, base_gallery, monkeypatch, {"s4": "Ian", "s5": "lan"})  # alike, from before the check
    names = _names(spec)
    assert "Ian" in names and "lan" in names
    # a migration that fails half-way (here: the skeletons' fill) changes nothing: the old gallery is whole
    calls = []

    def failing(name):
        calls.append(name)
        if len(calls) > 3:
            raise RuntimeError("killed mid-migration")
        return skeleton(name)

    with monkeypatch.context() as m:
        m.setattr(sqlbase, "name_skeleton", failing)
        out = cli("people", "list", "-g", spec)
    assert out.returncode != 0 and "killed mid-migration" in out.stderr
    assert _version(spec) == 4 and _names(spec) == names
    columns = (
        rows(spec, "SELECT column_name FROM information_schema.columns WHERE table_name = 'people'")
        if is_url(spec)
        else [(r[1],) for r in rows(spec, "PRAGMA table_info(people)")]
    )
    assert ("skeleton",) not in columns

    out = cli("gallery", "migrate", "-g", spec, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    version = (postgres if is_url(spec) else sqlite).SCHEMA_VERSION
    assert (report["from_version"], report["schema_version"], report["skeletons_repaired"]) == (4, version, 0)
    assert _names(spec) == names  # both look-alikes stay
    stored = rows(spec, "SELECT name, skeleton FROM people")
    assert stored and all(shape == skeleton(name) for name, shape in stored)
    assert rows(spec, "SELECT value FROM meta WHERE key = 'skeleton_rule'") == [(skeleton_rule(),)]

    out = cli("enroll", "-g", spec, "1an", att(10, 2))  # 1 and l, I and l: it looks like both
    assert out.returncode == 2 and "could be taken for" in out.stderr, out.stderr
    out = cli("people", "rename", "-g", spec, "s6", "1an")
    assert out.returncode == 2 and "could be taken for" in out.stderr, out.stderr
    assert cli("people", "rename", "-g", spec, "lan", "Lana").returncode == 0
    out = cli("enroll", "-g", spec, "1an", att(10, 2))
    assert out.returncode == 2 and "could be taken for 'Ian'" in out.stderr, out.stderr
    out = cli("enroll", "-g", spec, "Lana Two", att(10, 2))
    assert out.returncode == 0, out.stderr
    assert rows(spec, "SELECT skeleton FROM people WHERE name = 'Lana'") == [(skeleton("Lana"),)]
    assert _names(spec) == sorted([n for n in names if n != "lan"] + ["Lana", "Lana Two"])
    check_consistent(spec)


def test_a_bulk_add_refuses_a_look_alike_of_someone_enrolled_or_of_another_newcomer(store_spec):
    with open_store(store_spec, MODEL_128, create=True) as store:
        store.add_templates("Poe", _one())
        cyrillic = "\u0420\u043e\u0435"  # Рое, all Cyrillic: Poe to the eye
        with pytest.raises(InvalidNameError, match="could be taken for 'Poe'"):
            store.add_people([("Ann", {}, _one(1)), (cyrillic, {}, _one(2))])
        with pytest.raises(InvalidNameError, match="could be taken for 'Ian'"):
            store.add_people([("Ian", {}, _one(3)), ("lan", {}, _one(4))])
        assert [p.name for p in store.people()] == ["Poe"]  # all or nothing
        store.add_people([("Ann", {}, _one(1)), ("Ian", {}, _one(3))])
    assert sorted(rows(store_spec, "SELECT name, skeleton FROM people")) == sorted(
        (n, skeleton(n)) for n in ("Ann", "Ian", "Poe")
    )


def test_a_stored_skeleton_is_derived_data(store_spec):
    with open_store(store_spec, MODEL_128, create=True) as store:
        for i, name in enumerate(("Poe", "Bob")):
            store.add_templates(name, _one(i))
    # planted: Poe's skeleton is Alice's (would refuse Alice), Bob's hides him (would let B0b in); on SQLite a
    # skeleton that is not even text
    hidden = "zzz" if is_url(store_spec) else b"bob"
    _change(
        store_spec,
        [
            ("UPDATE people SET skeleton = ? WHERE name = ?", (skeleton("Alice"), "Poe")),
            ("UPDATE people SET skeleton = ? WHERE name = ?", (hidden, "Bob")),
        ],
    )
    with open_store(store_spec) as store:
        store.add_templates("Alice", _one(2))  # Poe's row is found, and its name does not look like Alice
    out = cli("gallery", "migrate", "-g", store_spec, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["skeletons_repaired"] == 2, out
    with open_store(store_spec) as store:
        with pytest.raises(InvalidNameError, match="could be taken for 'Bob'"):
            store.add_templates("B0b", _one(3))
    # skeletons made by another rule (another siamface's confusables) are all computed again by the next change
    # that checks names (opening only reads: a role that may not write opens it too)
    _change(
        store_spec,
        [
            ("UPDATE people SET skeleton = 'zzz' WHERE name = ?", ("Bob",)),
            ("UPDATE meta SET value = '0/old' WHERE key = 'skeleton_rule'", ()),
        ],
    )
    with open_store(store_spec) as store:
        with pytest.raises(InvalidNameError, match="could be taken for 'Bob'"):
            store.add_templates("B0b", _one(3))
        store.add_templates("Ann", _one(4))
    assert rows(store_spec, "SELECT value FROM meta WHERE key = 'skeleton_rule'") == [(skeleton_rule(),)]
    assert sorted(rows(store_spec, "SELECT name, skeleton FROM people")) == sorted(
        (n, skeleton(n)) for n in ("Alice", "Ann", "Bob", "Poe")
    )


PEOPLE = 20_000


def test_a_new_person_is_checked_by_one_lookup_not_a_read_of_every_name(store_spec):
    with open_store(store_spec, MODEL_128, create=True):
        pass
    names = [f"member {i}" for i in range(PEOPLE)]
    if is_url(store_spec):
        _change(
            store_spec,
            [
                (
                    "INSERT INTO people (name, metadata, created, ref, skeleton) SELECT n, '{}', 't', 'r' || i, s "
                    "FROM unnest(?::text[], ?::text[]) WITH ORDINALITY AS v(n, s, i)",
                    (names, [skeleton(n) for n in names]),
                ),
                ("ANALYZE people", ()),
            ],
        )
    else:
        db = sqlite3.connect(store_spec)
        with db:
            db.executemany(
                "INSERT INTO people (name, metadata, created, ref, skeleton) VALUES (?, '{}', 't', ?, ?)",
                [(n, f"r{i}", skeleton(n)) for i, n in enumerate(names)],
            )
        db.close()
    with open_store(store_spec, MODEL_128) as store:
        with pytest.raises(InvalidNameError, match="could be taken for 'member 10'"):
            store.add_templates("member l0", _one())  # l and 1, 0 and O: found among 20,000
        with store._write() as db:
            if is_url(store_spec):
                store._add(db, "newcomer", _one(1), None, True, None)
                read = db.execute(
                    "SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'people'"
                ).fetchone()[0]
            else:  # SQLite's virtual machine steps, in thousands: reading every name takes several per row
                steps = []
                db.set_progress_handler(lambda: steps.append(1), 1000)
                try:
                    store._add(db, "newcomer", _one(1), None, True, None)
                finally:
                    db.set_progress_handler(None, 0)
                read = len(steps) * 1000
        assert read < PEOPLE // 4, read
        assert store.person("newcomer").n_templates == 1


def _reader(url: str, grants: str = "people, templates, meta, siamface_schema") -> str:
    """The URL of `url` for a new role that may only read the gallery's tables (a recognise-only deployment)."""
    return role_url(url, "reader", f"SELECT ON {grants}")


def test_a_reader_role_opens_a_gallery_whose_skeletons_another_rule_made(postgres_gallery):
    """Skeletons made under another rule (the enrolling host runs another Python, or Python was upgraded) were
    all computed again in the transaction that opened the gallery: a role that may only read failed to open it
    at all ("change not saved", a recognise-only door locked out), and every open paid a read of every name.
    They are computed again by the first change that checks names; opening only reads."""
    with open_store(postgres_gallery, MODEL_128, create=True) as store:
        for i, name in enumerate(("Poe", "Bob")):
            store.add_templates(name, _one(i))
    _change(postgres_gallery, [("UPDATE meta SET value = '0/old' WHERE key = 'skeleton_rule'", ())])
    reader = _reader(postgres_gallery)
    out = cli("people", "list", "-g", reader)
    assert out.returncode == 0 and "Poe" in out.stdout and "Bob" in out.stdout, out.stderr
    assert rows(postgres_gallery, "SELECT value FROM meta WHERE key = 'skeleton_rule'") == [("0/old",)]
    with open_store(postgres_gallery) as store:
        with pytest.raises(InvalidNameError, match="could be taken for 'Bob'"):
            store.add_templates("B0b", _one(3))
        store.add_templates("Ann", _one(4))  # a change that commits stores the rule with the skeletons
    assert rows(postgres_gallery, "SELECT value FROM meta WHERE key = 'skeleton_rule'") == [(skeleton_rule(),)]


def test_a_read_only_version_4_gallery_still_identifies_and_verifies(base_gallery, new_gallery, monkeypatch, pipeline):
    """An upgraded siamface refused to open a version-4 gallery it may not migrate (a read-only file, a standby
    database): every door stopped until someone migrated it with write access. Version 5 only added the stored
    skeletons, which only changes use: the gallery is read as it is, changes are refused as on any read-only
    gallery, and `gallery migrate` still says it needs write access."""
    from siamface.gallery import Gallery
    from siamface.gallery.store import ReadOnlyGalleryError

    spec = new_gallery("old")
    _legacy_gallery(spec, base_gallery, monkeypatch, {})
    if is_url(spec):
        database = spec.rsplit("/", 1)[1]
        rows(
            spec.rsplit("/", 1)[0] + "/postgres", f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'
        )
        store = open_store(spec)
        out = cli("gallery", "migrate", "-g", spec)
        assert out.returncode == 2, out.stderr
        assert f"needs migrating to version {postgres.SCHEMA_VERSION}" in out.stderr, out.stderr
    else:
        store = sqlite.SQLiteStore(spec, read_only=True)
        before = spec.read_bytes()
    with Gallery(store, pipeline) as g:
        assert g.store.read_only and g.store.stats()["schema_version"] == 4
        assert g.identify(att(4, 1)).names == ["s4"]
        assert g.verify("s5", att(5, 1)).accepted and not g.verify("s5", att(6, 1)).accepted
        with pytest.raises(ReadOnlyGalleryError):
            g.store.add_templates("Ann", [NewTemplate(unit_vectors(1, g.store.model.embedding_size)[0])])
    assert _version(spec) == 4
    if not is_url(spec):
        assert spec.read_bytes() == before


def test_a_gallery_migrated_by_another_process_while_this_one_opens_it_is_opened(tmp_path, monkeypatch):
    """Opening read the file's schema version and then, through another connection, its schema: when another
    process committed a migration in between (two processes starting on an upgraded siamface, the first one
    migrating a large gallery), the second compared the new schema with the old version's and refused the
    file as not siamface's ("restore a backup"). Both are read in one snapshot now."""
    path = tmp_path / "g.db"
    with monkeypatch.context() as m:
        m.setattr(sqlite, "MIGRATIONS", {v: sqlite.MIGRATIONS[v] for v in range(1, 5)})
        m.setattr(sqlite, "SCHEMA_VERSION", 4)
        sqlite.SQLiteStore(path, MODEL_128, create=True).close()
    _change(path, [("INSERT INTO people (name, metadata, created, ref) VALUES ('Poe', '{}', 'then', 'r0')", ())])
    original = sqlite._schema_changes
    others: list = []

    def another_process_migrates_first(db, version):
        if not others:
            others.append(None)
            others.append(sqlite.SQLiteStore(path))  # migrates to version 5 and commits
        return original(db, version)

    monkeypatch.setattr(sqlite, "_schema_changes", another_process_migrates_first)
    with sqlite.SQLiteStore(path) as store:
        assert [p.name for p in store.people()] == ["Poe"] and store.schema_version() == 5
    others[1].close()
    assert rows(path, "SELECT name, skeleton FROM people") == [("Poe", skeleton("Poe"))]


def test_a_reader_role_opening_a_gallery_to_migrate_is_told_who_can_migrate_it(postgres_gallery, monkeypatch):
    """A role that may read but not alter the tables opening a version-4 gallery: the migration is refused by
    the server, and the error said "change not saved ... grant it the gallery's tables" (no grant lets a role
    ALTER a table it does not own). It says the gallery needs migrating and who can do it; nothing changed."""
    with monkeypatch.context() as m:
        m.setattr(postgres, "MIGRATIONS", {v: postgres.MIGRATIONS[v] for v in range(1, 5)})
        m.setattr(postgres, "SCHEMA_VERSION", 4)
        open_store(postgres_gallery, MODEL_128, create=True).close()
    _change(
        postgres_gallery, [("INSERT INTO people (name, metadata, created, ref) VALUES ('Poe', '{}', 't', 'r0')", ())]
    )
    out = cli("people", "list", "-g", _reader(postgres_gallery))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert (
        f"needs migrating to version {postgres.SCHEMA_VERSION}, which this role may not do (must be owner of table"
        in out.stderr
    )
    assert "`siamface gallery migrate` once as the role that owns" in out.stderr
    assert _version(postgres_gallery) == 4
    assert cli("people", "list", "-g", postgres_gallery).returncode == 0
    assert _version(postgres_gallery) == postgres.SCHEMA_VERSION
