"""A crafted SQLite gallery file (one a user is asked to open, or one someone could write once): SQL stored in
it (views, triggers, generated columns, virtual tables) never runs, the open is refused at once naming what
is not siamface's, before anything is written; rows of the wrong type or a missing meta row are a one-line
error, not a traceback. SQLite only (a PostgreSQL gallery's schema is its server's)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from gallery_support import MODEL_128 as MODEL
from gallery_support import cli, cli_command, unit_vectors

from siamface.errors import GalleryError
from siamface.gallery import NewTemplate, SQLiteStore


def _gallery(path: Path) -> Path:
    with SQLiteStore(path, MODEL, create=True) as store:
        store.add_templates("alice", [NewTemplate(unit_vectors(1)[0], "a.png")])
    return path


def _run(path: Path, *statements: str) -> None:
    """Change the file as whoever crafted it would, with SQLite's own tools."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_gallery_whose_templates_are_an_endless_view_is_refused_at_once_not_hung(tmp_path):
    """`templates` replaced by a view that never ends (a recursive query, a 100-byte change to a real file):
    `people list` counted its rows for ever (killed after 60 s); now the open is refused, naming the view."""
    path = _gallery(tmp_path / "crafted.db")
    _run(
        path,
        "DROP TABLE templates",
        "CREATE VIEW templates AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT i AS id, 1 AS person_id, zeroblob(512) AS embedding, 'test-model' AS model, '1' AS model_version, "
        "'' AS source, '{}' AS quality, '' AS created, NULL AS image FROM n",
    )
    try:
        done = subprocess.run(
            [*cli_command(), "people", "list", "--gallery", str(path)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`people list` on a gallery whose templates are an endless view did not end in 60 s")
    assert done.returncode == 2, done.stderr
    assert "not opened" in done.stderr and "view 'templates'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_trigger_planted_in_a_gallery_never_runs(tmp_path):
    """A trigger written once into the file (by whoever could write it, or in a gallery handed over) would add
    mallory's template to every person enrolled afterwards: mallory then verifies as each of them, and the
    enrolment looked normal. Opening such a file is refused before any query touches its tables, and not a
    byte of it changes."""
    path = _gallery(tmp_path / "planted.db")
    mallory = unit_vectors(1, seed=9)[0].astype("<f4").tobytes().hex()
    _run(
        path,
        "CREATE TRIGGER follow_new_people AFTER INSERT ON people BEGIN "
        "INSERT INTO templates (person_id, embedding, model, model_version, created) "
        f"VALUES (new.id, x'{mallory}', 'test-model', '1', ''); END",
    )
    before = _digest(path)
    with pytest.raises(GalleryError, match="not opened.*trigger 'follow_new_people'"):
        with SQLiteStore(path, MODEL) as store:
            store.add_templates("bob", [NewTemplate(unit_vectors(1, seed=4)[0], "b.png")])
    assert _digest(path) == before
    db = sqlite3.connect(path)
    assert db.execute("SELECT name FROM people").fetchall() == [("alice",)]
    db.close()


CRAFTED = {
    # reading a template's embedding computes a 900 MB value (or anything else the writer chose)
    "generated-column": [
        "DROP TRIGGER template_added",
        "DROP TRIGGER template_removed",
        "DROP TRIGGER template_changed",
        "DROP TABLE templates",
        "CREATE TABLE templates (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL, model TEXT NOT NULL, "
        "model_version TEXT NOT NULL, source TEXT NOT NULL DEFAULT '', quality TEXT NOT NULL DEFAULT '{}', "
        "created TEXT NOT NULL, image BLOB, embedding BLOB GENERATED ALWAYS AS (zeroblob(900000000)) VIRTUAL)",
    ],
    # a virtual table's module reads shadow tables the writer chose (where SQLite's memory bugs were found)
    "virtual-table": ["DROP TABLE meta", "CREATE VIRTUAL TABLE meta USING fts5(key, value)"],
    # a table worded otherwise: a CHECK that refuses one person's enrolment, an index of an expression
    "changed-table": [
        "DROP TABLE meta",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL CHECK (value <> 'bob'))",
    ],
    "extra-index": ["CREATE INDEX people_upper ON people(upper(name))"],
}


@pytest.mark.parametrize("craft", sorted(CRAFTED))
def test_a_gallery_with_sql_of_its_own_is_refused_naming_it(tmp_path, craft):
    path = _gallery(tmp_path / "crafted.db")
    _run(path, *CRAFTED[craft])
    before = _digest(path)
    with pytest.raises(GalleryError, match="not opened: its schema is not the one siamface writes"):
        SQLiteStore(path, MODEL)
    assert _digest(path) == before


def test_a_gallery_sqlite_analysed_still_opens(tmp_path):
    """SQLite's own statistics tables (`ANALYZE`) are not the writer's SQL: the gallery opens and searches."""
    path = _gallery(tmp_path / "analysed.db")
    _run(path, "ANALYZE")
    with SQLiteStore(path, MODEL) as store:
        assert [p.name for p in store.people()] == ["alice"]
        assert store.matrix()[3].shape == (1, 128)


@pytest.mark.parametrize(
    ("craft", "message"),
    [
        ("UPDATE templates SET embedding = substr(hex(embedding), 1, 512)", "stored as str, not as the bytes"),
        ("DELETE FROM meta WHERE key = 'generation'", "meta rows are missing or damaged"),
        ("UPDATE meta SET value = '0' WHERE key = 'embedding_size'", "meta rows are missing or damaged"),
    ],
)
def test_rows_of_the_wrong_type_or_a_missing_meta_row_are_a_one_line_error(tmp_path, craft, message):
    """A template stored as text of the right length, or a gallery without its generation row: `gallery
    export` ended in a TypeError traceback (exit 1); now exit 2 and one line saying what is damaged."""
    path = _gallery(tmp_path / "odd.db")
    _run(path, craft)
    done = cli("gallery", "export", tmp_path / "out.jsonl", "--gallery", path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_crafted_older_gallery_is_refused_before_its_migration_runs_its_sql(tmp_path, monkeypatch):
    """A schema-version-1 file (what an older siamface wrote) with a trigger on ``meta``: the migration to
    version 4 writes a meta row, and the trigger gave alice mallory's face as a second template while the
    file was brought up to date. The file is refused as found, before any migration step."""
    from siamface.gallery import sqlite as module

    path = tmp_path / "old.db"
    with monkeypatch.context() as m:  # a file written by the version-1 code
        m.setattr(module, "MIGRATIONS", {1: module.MIGRATIONS[1]})
        m.setattr(module, "SCHEMA_VERSION", 1)
        SQLiteStore(path, MODEL, create=True).close()
    mallory = unit_vectors(1, seed=9)[0].astype("<f4").tobytes().hex()
    _run(
        path,
        "INSERT INTO people (id, name, metadata, created) VALUES (1, 'alice', '{}', 't')",
        "CREATE TRIGGER on_migration AFTER INSERT ON meta BEGIN "
        "INSERT INTO templates (person_id, embedding, model, model_version, created) "
        f"SELECT id, x'{mallory}', 'test-model', '1', '' FROM people; END",
    )
    before = _digest(path)
    with pytest.raises(GalleryError, match=r"not opened.*\(version 1\): trigger 'on_migration'"):
        SQLiteStore(path, MODEL)
    assert _digest(path) == before


def test_a_damaged_page_is_a_one_line_error_not_a_traceback(tmp_path):
    """A page of the people table overwritten (a failing disk, a crafted file): `people list` ended in an
    sqlite3 traceback (exit 1); now exit 2 and one line saying SQLite finds the file damaged."""
    path = _gallery(tmp_path / "damaged.db")
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'people'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(path, "r+b") as f:  # the page's header: its cell count and content offset
        f.seek((root - 1) * page_size + 3)
        f.write(b"\xff\xff\xff\xff")
    done = cli("people", "list", "--gallery", path)
    assert done.returncode == 2, done.stderr
    assert "SQLite finds it damaged" in done.stderr and "Traceback" not in done.stderr


def test_a_value_over_the_limit_is_refused_and_a_long_source_label_cut(tmp_path, monkeypatch):
    """No value of a gallery is read past `MAX_VALUE_BYTES` (SQLite's limit was 1 GB: a crafted 200 MB file
    made `people show` take 2 GB and 35 s): shown here with the limit at 1 MiB and a 2 MB label. Under the
    limit, a label is shown cut to its last `MAX_SOURCE` characters."""
    from siamface.gallery import sqlite as module
    from siamface.gallery.store import MAX_SOURCE
    from siamface.image import MAX_PIXELS

    assert module.MAX_VALUE_BYTES > 3 * MAX_PIXELS * 1.05  # a kept PNG crop of the largest image still reads
    monkeypatch.setattr(module, "MAX_VALUE_BYTES", 1024 * 1024)
    path = _gallery(tmp_path / "long.db")
    _run(path, "UPDATE templates SET source = hex(zeroblob(1000000))")  # 2 MB of text
    done = cli("people", "show", "alice", "--gallery", path)
    assert done.returncode == 2, done.stderr
    assert "holds a value over 1 MiB" in done.stderr and "Traceback" not in done.stderr
    _run(path, "UPDATE templates SET source = hex(zeroblob(250000))")  # 500 kB
    done = cli("people", "show", "alice", "--gallery", path)
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) < MAX_SOURCE + 100


def test_names_and_labels_of_a_crafted_gallery_reach_no_terminal_raw(tmp_path):
    """A name no enrolment accepts (an OSC sequence setting the terminal's title, BEL, a right-to-left
    override) written into the file, and a template label with a colour sequence: `people list`, `people
    show` and `gallery audit` printed them raw, so the file's writer could set the operator's title or
    clipboard (OSC 52) or rewrite the lines above. Every such character reaches stdout as '?'; the JSON
    output stays as it was (ASCII, escaped)."""
    path = _gallery(tmp_path / "escapes.db")
    crafted = "ev\x1b]0;pwned\x07il\u202e"
    db = sqlite3.connect(path)
    db.execute("UPDATE people SET name = ?", (crafted,))
    db.execute("UPDATE templates SET source = 'x\x1b[31m.png'")
    db.commit()
    db.close()
    shown = "ev?]0;pwned?il?"
    for args in (["people", "list"], ["people", "show", crafted], ["gallery", "audit"]):
        done = cli(*args, "--gallery", path)
        assert done.returncode == 0, done.stderr
        assert shown in done.stdout and "\x1b" not in done.stdout and "\u202e" not in done.stdout, done.stdout
    listed = cli("people", "list", "--gallery", path, "--json")
    assert crafted in [p["name"] for p in json.loads(listed.stdout)["people"]]
