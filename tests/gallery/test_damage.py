"""What a gallery does with rows it did not write itself or that were damaged (issue 15): a foreign SQLite
file is refused without being touched, new files are private (0600), a read-only gallery can be read, a
tampered template row or unreadable JSON is a clear error naming the row (never a decision, never a
traceback), metadata is bounded, and no file path is stored or handed back as a template's source.
Tests taking `store`/`store_spec` run on SQLite and PostgreSQL; file-level ones are SQLite's."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import att
from gallery_support import MODEL_128 as MODEL  # noqa: F401
from gallery_support import (
    backend,
    cli,
    cli_command,
    is_url,
    new_gallery,
    postgres_gallery,
    rows,
    store_spec,
    unit_vectors,
)

from siamface.errors import GalleryError
from siamface.gallery import Gallery, ModelBinding, NewTemplate, SQLiteStore, open_store
from siamface.gallery.index import index_for
from siamface.gallery.store import DamagedGalleryError, ReadOnlyGalleryError


@pytest.fixture()
def store(store_spec):
    with open_store(store_spec, MODEL, create=True) as s:
        s.add_templates(
            "alice",
            [NewTemplate(v, f"a{i}.png", {"i": i}) for i, v in enumerate(unit_vectors(2))],
            metadata={"badge": 7},
        )
        s.add_templates("bob", [NewTemplate(unit_vectors(1, seed=3)[0], "b.png")])
        yield s


def _tamper(spec, sql: str, params=()) -> None:
    """Change the gallery behind the store's back, as another program (or an attacker) would."""
    if is_url(spec):
        rows(spec, sql, params)
    else:
        db = sqlite3.connect(spec)
        db.execute(sql, params)
        db.commit()
        db.close()


def _first_template(spec, person: str) -> int:
    return rows(
        spec,
        "SELECT t.id FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name = ? ORDER BY t.id",
        (person,),
    )[0][0]


# -- 7: a foreign SQLite file is refused before anything is written to it -----------------------------------
@pytest.mark.parametrize("create", [False, True])
def test_a_foreign_sqlite_file_is_refused_without_a_byte_changed(tmp_path, create):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (x TEXT)")
    db.execute("INSERT INTO notes VALUES ('keep me')")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(GalleryError, match="not a siamface gallery"):
        SQLiteStore(other, MODEL if create else None, create=create)
    assert other.read_bytes() == before  # still a rollback-journal file: no switch to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, -shm left beside it


def test_the_cli_refuses_a_foreign_file_and_leaves_it_alone(tmp_path):
    other = tmp_path / "app.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    done = cli("people", "list", "--gallery", other)
    assert done.returncode == 2 and "not a siamface gallery" in done.stderr and "Traceback" not in done.stderr
    assert other.read_bytes() == before


# -- 8: galleries are private ---------------------------------------------------------------------------
def test_a_new_gallery_and_its_side_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "sub" / "g.db"
        with SQLiteStore(path, MODEL, create=True) as s:
            s.add_templates("alice", [NewTemplate(unit_vectors(1)[0])])
            side = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
            assert all(p.exists() for p in side)
            assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in side} == {"0o600"}
    finally:
        os.umask(old)


def test_the_cli_creates_a_private_gallery(tmp_path, pipeline):
    old = os.umask(0o022)
    try:
        path = tmp_path / "people.db"
        done = cli("enroll", "--gallery", path, "s3", att(3, 2), att(3, 3))
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


# -- 9: read-only galleries are readable, and writes to them say why they fail ---------------------------------
def test_a_store_opened_read_only_reads_and_refuses_writes_without_touching_the_file(tmp_path):
    path = tmp_path / "g.db"
    with SQLiteStore(path, MODEL, create=True) as s:
        s.add_templates("alice", [NewTemplate(unit_vectors(1)[0], "a.png")])
    before = path.read_bytes()
    with SQLiteStore(path, read_only=True) as s:
        assert s.read_only and [p.name for p in s.people()] == ["alice"]
        assert s.matrix()[3].shape == (1, 128)
        with pytest.raises(ReadOnlyGalleryError, match="read-only"):
            s.add_templates("bob", [NewTemplate(unit_vectors(1, seed=2)[0])])
        with pytest.raises(ReadOnlyGalleryError, match="read-only"):
            s.delete("alice")
    assert path.read_bytes() == before


def test_a_gallery_on_a_read_only_folder_is_opened_read_only(tmp_path, monkeypatch):
    """The choice the store makes by itself: a file it may not write is opened read-only (root may write
    anything, so the permission check is what is tested here; the CLI test below runs unprivileged)."""
    path = tmp_path / "g.db"
    SQLiteStore(path, MODEL, create=True).close()
    writable = {str(path): False, str(tmp_path): False}
    monkeypatch.setattr(os, "access", lambda p, mode: writable.get(str(p), True))
    with SQLiteStore(path) as s:
        assert s.read_only
    writable[str(path)] = writable[str(tmp_path)] = True
    with SQLiteStore(path) as s:
        assert not s.read_only


def test_decisions_on_a_read_only_gallery_are_made_and_say_they_are_not_audited(tmp_path, pipeline):
    from siamface.gallery.core import NOT_AUDITED
    from siamface.live import GalleryMatcher

    path = tmp_path / "people.db"
    with Gallery(path, pipeline, create=True) as g:
        g.enroll("s3", [att(3, 2), att(3, 3)])
    before = path.read_bytes()
    with Gallery(SQLiteStore(path, read_only=True), pipeline) as g:
        claim = g.verify("s3", att(3, 1))
        assert claim.accepted and NOT_AUDITED in claim.notes
        found = g.identify(att(3, 1))
        assert found.names == ["s3"] and NOT_AUDITED in found.notes
        assert GalleryMatcher(g).log_claim("s3", True, 0.97) == (NOT_AUDITED,)  # `authenticate`'s log
        assert [e.kind for e in g.store.audit()] == ["enrol"]  # the enrolment only: no decision
    assert path.read_bytes() == before


def _unprivileged(tmp_root: Path) -> list[str]:
    """A command prefix that runs as an ordinary user (the tests may run as root, which ignores permission
    bits), or a skip."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot run the CLI as an ordinary user")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def test_read_only_gallery_identify_and_people_list_work_and_enroll_says_read_only(pipeline):
    root = Path(tempfile.mkdtemp(prefix="siamface-ro-"))  # outside pytest's 0700 tmp: `nobody` can enter
    try:
        root.chmod(0o755)
        folder = root / "gallery"
        folder.mkdir()
        path = folder / "people.db"
        with Gallery(path, pipeline, create=True) as g:
            g.enroll("s3", [att(3, 2), att(3, 3), att(3, 4)])
        path.chmod(0o444)
        folder.chmod(0o555)
        before = path.read_bytes()
        prefix = _unprivileged(root)
        cache = root / "cache"  # the converted models, where the unprivileged user can read and write
        cache.mkdir(mode=0o777)
        cache.chmod(0o777)
        from siamface.embedding.dlib_onnx import default_cache_dir

        for converted in default_cache_dir().glob("dlib_face_recognition_resnet_model_v1-*.onnx"):
            shutil.copy(converted, cache / converted.name)
            (cache / converted.name).chmod(0o644)
        (root / "config").mkdir()
        env = {
            **os.environ,
            "HOME": str(root),
            "SIAMFACE_CACHE": str(cache),
            "SIAMFACE_CONFIG_DIR": str(root / "config"),
        }

        def run(*args):
            return subprocess.run(
                prefix + cli_command() + [str(a) for a in args], capture_output=True, text=True, timeout=180, env=env
            )

        listed = run("people", "list", "--gallery", path)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith("s3\t")
        probe = folder.parent / "probe.pgm"
        shutil.copy(att(3, 1), probe)
        probe.chmod(0o644)
        found = run("identify", "--gallery", path, probe)
        assert found.returncode == 0, found.stderr
        assert "s3" in found.stdout and "not audited" in found.stdout
        refused = run("enroll", "--gallery", path, "s4", att(4, 2))
        assert refused.returncode == 2 and "read-only" in refused.stderr and "Traceback" not in refused.stderr
        assert path.read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["people.db"]
    finally:
        for p in (root / "gallery",):
            if p.exists():
                p.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


# -- 5: damaged template rows ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda v: v[:100], "100 bytes"),
        (lambda v: np.full(128, np.nan, "<f4").tobytes(), "NaN or infinity"),
        (lambda v: np.r_[np.full(127, 0.0), [np.inf]].astype("<f4").tobytes(), "NaN or infinity"),
        (lambda v: (np.frombuffer(v, "<f4") * 1e6).astype("<f4").tobytes(), "not of length 1"),
    ],
)
def test_a_damaged_embedding_is_an_error_naming_the_row_never_a_score(store, store_spec, damage, why):
    template = _first_template(store_spec, "alice")
    blob = rows(store_spec, "SELECT embedding FROM templates WHERE id = ?", (template,))[0][0]
    bad = damage(bytes(blob))
    if is_url(store_spec):  # a pgvector column: the server itself refuses a wrong size, NaN or infinity
        vector = np.frombuffer(bad, "<f4")
        if why != "not of length 1":
            import psycopg

            with pytest.raises(psycopg.DataError, match="dimensions|NaN|infinite"):
                _tamper(store_spec, "UPDATE templates SET embedding = ? WHERE id = ?", (vector, template))
            assert rows(store_spec, "SELECT embedding FROM templates WHERE id = ?", (template,))[0][0] == blob
            return
        bad = vector
    _tamper(store_spec, "UPDATE templates SET embedding = ? WHERE id = ?", (bad, template))
    with open_store(store_spec) as s:
        with pytest.raises(DamagedGalleryError, match=f"template {template} of 'alice'.*{why}"):
            s.matrix()
        with pytest.raises(DamagedGalleryError, match=f"template {template} of 'alice'"):
            s.templates(embeddings=True)
        # Neither search turns it into a score: 1:N (in process or inside PostgreSQL) and alice's 1:1.
        index = index_for(s)
        probe = np.frombuffer(blob, "<f4")[None]
        with pytest.raises(DamagedGalleryError, match=f"template {template} of 'alice'"):
            index.search(probe, k=2)
        with pytest.raises(DamagedGalleryError, match=f"template {template} of 'alice'"):
            index.person_scores(probe, s.person("alice").id)
        if is_url(store_spec):  # what `serve` runs at start-up on an index that lives in the database
            with pytest.raises(DamagedGalleryError, match=f"template {template} of 'alice'.*{why}"):
                index.check()
        # The repair the message suggests works on the damaged person.
        assert s.delete("alice") == 2
        assert s.matrix()[3].shape == (1, 128)


@pytest.mark.parametrize(
    "column, table, value",
    [
        ("quality", "templates", "{not json"),
        ("quality", "templates", "[1, 2]"),
        ("metadata", "people", '{"a": '),
        ("metadata", "people", "[" * 5000 + "]" * 5000),
    ],
)
def test_unreadable_json_in_a_row_is_an_error_naming_it(store, store_spec, column, table, value):
    if table == "people":
        _tamper(store_spec, "UPDATE people SET metadata = ? WHERE name = 'alice'", (value,))
        read = [lambda s: s.people(), lambda s: s.person("alice")]
    else:
        _tamper(
            store_spec, "UPDATE templates SET quality = ? WHERE id = ?", (value, _first_template(store_spec, "alice"))
        )
        read = [lambda s: s.templates("alice"), lambda s: s.templates()]
    with open_store(store_spec) as s:
        for how in read:
            with pytest.raises(DamagedGalleryError, match=f"{column} of .*'alice'"):
                how(s)
        assert s.person("bob").name == "bob"  # the others are still readable one by one
        assert s.matrix()[3].shape == (3, 128)  # and decisions, which read no JSON, still work
        if table == "people":
            assert s.set_metadata("alice", {"fixed": True}).metadata == {"fixed": True}
        else:
            assert s.delete("alice") == 2


def test_the_cli_reports_a_damaged_gallery_with_exit_code_2(tmp_path):
    path = tmp_path / "g.db"
    with SQLiteStore(path, ModelBinding("dlib-resnet", "x", 128), create=True) as s:
        s.add_templates("alice", [NewTemplate(unit_vectors(1)[0], "a.png")])
    _tamper(path, "UPDATE templates SET embedding = ?", (b"\0" * 12,))
    done = cli("gallery", "export", "--gallery", path, tmp_path / "out.jsonl")
    assert done.returncode == 2 and "template 1 of 'alice' is damaged" in done.stderr
    assert "Traceback" not in done.stderr


# -- 6: metadata is bounded at input -------------------------------------------------------------------
@pytest.mark.parametrize(
    "metadata, why",
    [
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}, "nested"),
        ({"blob": "x" * 70_000}, "KiB"),
        ({"x": float("nan")}, "NaN"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_metadata_is_bounded_on_every_way_in(store, metadata, why):
    with pytest.raises(GalleryError, match=why):
        store.add_templates("carol", [NewTemplate(unit_vectors(1, seed=9)[0])], metadata=metadata)
    with pytest.raises(GalleryError, match=why):
        store.set_metadata("alice", metadata)
    with pytest.raises(GalleryError, match=why):
        store.add_people([("dave", metadata, [NewTemplate(unit_vectors(1, seed=8)[0])])])
    assert [p.name for p in store.people()] == ["alice", "bob"]


def test_the_cli_refuses_deeply_nested_metadata_plainly(tmp_path):
    deep = "{" + '"a": {' * 5000 + "}" * 5001
    done = cli("enroll", "--gallery", tmp_path / "g.db", "--metadata", deep, "s3", att(3, 2))
    assert done.returncode == 2 and "nested" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "g.db").exists()


# -- 4: sources are file names, never paths ----------------------------------------------------------------
def test_sources_are_stored_and_read_back_as_file_names(store, store_spec):
    store.add_templates(
        "carol",
        [
            NewTemplate(unit_vectors(1, seed=5)[0], "/home/x/photos/c 1.jpg"),
            NewTemplate(unit_vectors(1, seed=6)[0], "C:\\faces\\c2.png"),
            NewTemplate(unit_vectors(1, seed=7)[0], "/srv/clip.mp4#frame=12"),
        ],
    )
    assert [t.source for t in store.templates("carol")] == ["c 1.jpg", "c2.png", "clip.mp4#frame=12"]
    stored = [
        r[0]
        for r in rows(
            store_spec,
            "SELECT source FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name = 'carol' ORDER BY t.id",
        )
    ]
    assert stored == ["c 1.jpg", "c2.png", "clip.mp4#frame=12"]
    # A gallery written by older code, which kept the path: read back without it.
    _tamper(store_spec, "UPDATE templates SET source = '/data/att_faces/s3/4.pgm'")
    assert {t.source for t in store.templates()} == {"4.pgm"}


def test_an_import_file_with_deeply_nested_metadata_is_refused_plainly(tmp_path):
    header = {
        "format": "siamface-gallery",
        "version": 1,
        "embedding_encoding": "base64 float32 little-endian",
        "model": {"name": "m", "version": "1", "embedding_size": 128},
    }
    deep = '{"name": "x", "templates": [], "metadata": ' + "[" * 5000 + "]" * 5000 + "}"
    shallow = json.dumps(
        {"name": "y", "templates": [], "metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {}}}}}}}}}}}
    )
    for line in (deep, shallow):
        path = tmp_path / "in.jsonl"
        path.write_text(json.dumps(header) + "\n" + line + "\n")
        done = cli("gallery", "import", "--gallery", tmp_path / "g.db", path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "nested" in done.stderr and not (tmp_path / "g.db").exists()
