"""`SQLiteStore`: a gallery in one SQLite file.

- WAL journal (readers never block the writer), ``busy_timeout`` (writers from other threads and processes
  wait their turn instead of failing), ``synchronous=FULL``.
- Every change is one ``BEGIN IMMEDIATE`` transaction: a process killed in the middle of an enrollment
  leaves the file as it was before that enrollment, and checks made inside the transaction (duplicate
  names, near-duplicate templates) cannot race with another writer.
- ``foreign_keys=ON`` with ``ON DELETE CASCADE``: deleting a person removes their templates and kept images;
  the audit rows naming them stay (decisions are history), unchanged, with the person's opaque reference,
  linked to nothing once the person is gone (schema version 4; see `siamface.gallery.sqlbase`). ``secure_delete=ON`` overwrites the freed bytes, and the WAL is
  checkpointed and truncated after a deletion so that no copy lingers there either.
- The schema version is ``PRAGMA user_version``; `MIGRATIONS` maps each version to the function that
  brings the file from the previous one, all applied in one transaction when a file is opened.
- Kept images (``keep_images=True`` at creation) are stored **unencrypted**, like everything else in the
  file: protect the file (permissions, encrypted disk) as the biometric data it is.
- A new file is created 0600 (SQLite gives -wal and -shm the same mode). An existing file is identified
  through a read-only connection before anything is written: another program's SQLite file is refused
  untouched. A file this process may not write (or its folder) is opened read-only (``mode=ro``, and
  ``immutable`` when the folder cannot hold the WAL index and no WAL is there): reads work, every change
  raises `ReadOnlyGalleryError`.

One connection per thread (SQLite connections must not be shared across threads while in use).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._files import atomic_leftovers, create_private_file
from ..errors import GalleryError

# MAX_NAME_LENGTH, _blob, _now and check_name are also imported from here by other modules.
from .sqlbase import (  # noqa: F401
    AUDIT_COLUMNS,
    MAX_NAME_LENGTH,
    READABLE_SINCE,
    SKELETONS_SINCE,
    SqlStore,
    _blob,
    _now,
    binding_meta,
    chain_rows,
    check_name,
    json_object,
    lookup_form,
    matrix_from_rows,
    new_ref,
    skeleton,
)
from .store import (
    DamagedGalleryError,
    GalleryUnavailableError,
    ModelBinding,
    NewTemplate,
    Person,
    ReadOnlyGalleryError,
    UnknownPersonError,
)

log = logging.getLogger(__name__)

#: How long a writer waits for another one before giving up, in seconds.
BUSY_TIMEOUT_S = 30.0


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements inside the current transaction (``executescript`` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate_to_1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE people (
            id       INTEGER PRIMARY KEY,
            name     TEXT NOT NULL UNIQUE COLLATE NOCASE,
            metadata TEXT NOT NULL DEFAULT '{}',
            created  TEXT NOT NULL
        );
        CREATE TABLE templates (
            id            INTEGER PRIMARY KEY,
            person_id     INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
            embedding     BLOB NOT NULL,
            model         TEXT NOT NULL,
            model_version TEXT NOT NULL,
            source        TEXT NOT NULL DEFAULT '',
            quality       TEXT NOT NULL DEFAULT '{}',
            created       TEXT NOT NULL,
            image         BLOB
        );
        CREATE INDEX templates_person ON templates(person_id);
        CREATE TABLE audit (
            id          INTEGER PRIMARY KEY,
            time        TEXT NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN ('verify', 'identify')),
            claimed_id  INTEGER REFERENCES people(id) ON DELETE CASCADE,
            returned_id INTEGER REFERENCES people(id) ON DELETE CASCADE,
            score       REAL,
            threshold   REAL NOT NULL,
            accepted    INTEGER NOT NULL,
            rule        TEXT NOT NULL DEFAULT '',
            model       TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX audit_claimed ON audit(claimed_id);
        CREATE INDEX audit_returned ON audit(returned_id);
        INSERT INTO meta (key, value) VALUES ('generation', '0');
    """,
    )


def _migrate_to_2(db: sqlite3.Connection) -> None:
    """Audit rows outlive the people they name: removing a person sets the row's person ids to NULL and
    writes an opaque tombstone id in their place (random, the same for every row of that person, linked to
    nothing), instead of deleting the rows."""
    _run_script(
        db,
        """
        CREATE TABLE audit_v2 (
            id                 INTEGER PRIMARY KEY,
            time               TEXT NOT NULL,
            kind               TEXT NOT NULL CHECK (kind IN ('verify', 'identify')),
            claimed_id         INTEGER REFERENCES people(id) ON DELETE SET NULL,
            returned_id        INTEGER REFERENCES people(id) ON DELETE SET NULL,
            claimed_tombstone  TEXT,
            returned_tombstone TEXT,
            score              REAL,
            threshold          REAL NOT NULL,
            accepted           INTEGER NOT NULL,
            rule               TEXT NOT NULL DEFAULT '',
            model              TEXT NOT NULL DEFAULT ''
        );
        INSERT INTO audit_v2 (id, time, kind, claimed_id, returned_id, score, threshold, accepted, rule, model)
            SELECT id, time, kind, claimed_id, returned_id, score, threshold, accepted, rule, model FROM audit;
        DROP TABLE audit;
        ALTER TABLE audit_v2 RENAME TO audit;
        CREATE INDEX audit_claimed ON audit(claimed_id);
        CREATE INDEX audit_returned ON audit(returned_id)
    """,
    )


def _migrate_to_3(db: sqlite3.Connection) -> None:
    """A log of template changes (ids only, no biometric data), written by triggers whatever writes the
    file: what a process's 1:N index reads to catch up with a change made elsewhere without reloading
    every template. `SQLiteStore.changes` reads it; a change keeps the last `CHANGE_LOG_KEEP` entries."""
    db.execute("CREATE TABLE template_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, template_id INTEGER NOT NULL)")
    db.execute(
        "CREATE TRIGGER template_added AFTER INSERT ON templates BEGIN "
        "INSERT INTO template_changes (template_id) VALUES (new.id); END"
    )
    db.execute(
        "CREATE TRIGGER template_removed AFTER DELETE ON templates BEGIN "
        "INSERT INTO template_changes (template_id) VALUES (old.id); END"
    )
    db.execute(
        "CREATE TRIGGER template_changed AFTER UPDATE OF id, person_id, embedding ON templates BEGIN "
        "INSERT INTO template_changes (template_id) VALUES (old.id); "
        "INSERT INTO template_changes (template_id) VALUES (new.id); END"
    )
    # the log keeps its last CHANGE_LOG_KEEP entries (pruned every 1000), whichever code writes the file
    db.execute(
        f"CREATE TRIGGER template_changes_pruned AFTER INSERT ON template_changes "
        f"WHEN new.seq % 1000 = 0 BEGIN "
        f"DELETE FROM template_changes WHERE seq <= new.seq - {CHANGE_LOG_KEEP}; END"
    )
    # the starting point: nothing logged yet, an index built from now on reads from here
    db.execute("INSERT INTO template_changes (template_id) VALUES (0)")


def _migrate_to_4(db: sqlite3.Connection) -> None:
    """A tamper-evident audit of every decision and change (see `siamface.gallery.sqlbase`): each person gets
    an opaque reference (``people.ref``); audit rows keep the reference instead of the person's id (a
    tombstone of a person removed before becomes that row's reference), have no foreign key (a decision is
    written even when its person was removed meanwhile), say who asked (``actor``) and what changed
    (``detail``), and are chained by hash from the first row on (rows written before are chained as found)."""
    db.execute("ALTER TABLE people ADD COLUMN ref TEXT")
    for (person_id,) in db.execute("SELECT id FROM people").fetchall():
        db.execute("UPDATE people SET ref = ? WHERE id = ?", (new_ref(), person_id))
    _run_script(
        db,
        """
        CREATE UNIQUE INDEX people_ref ON people(ref);
        CREATE TABLE audit_v4 (
            id           INTEGER PRIMARY KEY,
            time         TEXT NOT NULL,
            kind         TEXT NOT NULL,
            claimed_ref  TEXT,
            returned_ref TEXT,
            score        REAL,
            threshold    REAL,
            accepted     INTEGER NOT NULL,
            rule         TEXT NOT NULL DEFAULT '',
            model        TEXT NOT NULL DEFAULT '',
            actor        TEXT NOT NULL DEFAULT '',
            detail       TEXT NOT NULL DEFAULT '',
            prev_hash    TEXT NOT NULL DEFAULT '',
            hash         TEXT NOT NULL DEFAULT ''
        );
        INSERT INTO audit_v4 (id, time, kind, claimed_ref, returned_ref, score, threshold, accepted, rule, model)
            SELECT a.id, a.time, a.kind, coalesce(c.ref, a.claimed_tombstone), coalesce(r.ref, a.returned_tombstone),
                   a.score, a.threshold, a.accepted, a.rule, a.model
            FROM audit a LEFT JOIN people c ON c.id = a.claimed_id LEFT JOIN people r ON r.id = a.returned_id;
        DROP TABLE audit;
        ALTER TABLE audit_v4 RENAME TO audit;
        CREATE INDEX audit_claimed ON audit(claimed_ref);
        CREATE INDEX audit_returned ON audit(returned_ref)
    """,
    )
    rows = db.execute(f"SELECT id, {AUDIT_COLUMNS} FROM audit ORDER BY id").fetchall()
    head = chain_rows(db, lambda q: q, rows)
    db.execute("INSERT INTO meta (key, value) VALUES ('audit_head', ?)", (head,))


def _migrate_to_5(db: sqlite3.Connection) -> None:
    """Each person's confusable skeleton (`siamface.gallery.names.skeleton`) stored, with an index: the check
    that a new name does not look like another person's is one lookup instead of a read of every name. The
    column is filled in the same transaction, right after the migrations (`SqlStore._refresh_skeletons`: the
    gallery has no ``skeleton_rule`` yet). Not unique: people enrolled before the check whose names look alike
    all stay (each new look-alike of theirs is refused)."""
    db.execute("ALTER TABLE people ADD COLUMN skeleton TEXT")
    db.execute("CREATE INDEX people_skeleton ON people(skeleton)")


#: Entries of the template change log kept (older ones are dropped; an index further behind rebuilds).
#: Part of schema version 3 (its trigger): never change it; a new value needs a migration.
CHANGE_LOG_KEEP = 200_000

#: Schema migrations: version -> function bringing a file at version - 1 to that version (inside the
#: opening transaction; never commit in one). Add a new entry for every schema change; never edit one.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
    3: _migrate_to_3,
    4: _migrate_to_4,
    5: _migrate_to_5,
}
SCHEMA_VERSION = max(MIGRATIONS)


#: Tables SQLite itself may add to a gallery (``ANALYZE``'s statistics), whatever the schema version.
_SQLITE_STATISTICS = {"sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"}


def _schema_object(row: Sequence) -> tuple[str, str, str, str]:
    """(type, name, table, SQL) of a row of ``sqlite_master``, its SQL without quotes and with single spaces
    (so that the wording SQLite gives a renamed table, quoted or not, compares equal)."""
    kind, name, table, sql = row
    return str(kind), str(name), str(table), " ".join(str(sql or "").replace('"', "").split())


@functools.cache
def _expected_schema(steps: tuple[Callable[[sqlite3.Connection], None], ...]) -> frozenset[tuple[str, str, str, str]]:
    """The objects (`_schema_object`) of a gallery made by the migrations `steps` (in memory)."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.execute("BEGIN")
        for step in steps:
            step(db)
        return frozenset(map(_schema_object, db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")))
    finally:
        db.close()


def _schema_changes(db: sqlite3.Connection, version: int) -> list[str]:
    """What the file's schema has that a gallery of `version` does not (a view, a trigger, a table or index
    worded otherwise), each as '<type> <name>'; empty when it is the schema siamface wrote."""
    expected = _expected_schema(tuple(MIGRATIONS[target] for target in range(1, version + 1)))
    found = {_schema_object(r) for r in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}
    extra = [o for o in found - expected if not (o[0] == "table" and o[1] in _SQLITE_STATISTICS)]
    missing = [o for o in expected - found if (o[0], o[1]) not in {(e[0], e[1]) for e in extra}]
    return sorted(f"{kind} {name!r}" for kind, name, _, _ in extra) + sorted(
        f"{kind} {name!r} (missing)" for kind, name, _, _ in missing
    )


def _writable(path: Path) -> bool:
    """Whether this process may change the gallery: write the file, and create its WAL and WAL index
    (-wal, -shm) in its folder."""
    return os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)


def _create_private(path: Path) -> None:
    """Create the empty gallery file readable by its owner only (0600): it will hold biometric templates.
    SQLite gives the -wal and -shm files it makes beside it the same permissions."""
    try:
        create_private_file(path)  # another process may have created it first: then it is checked as any other
    except OSError as exc:
        raise GalleryError(f"cannot create gallery {path}: {exc.strerror}") from None


#: SQLite's messages for a disk that is full or failing (SQLITE_FULL, SQLITE_IOERR).
STORAGE_ERRORS = ("database or disk is full", "disk I/O error")


#: The longest value (text or blob) a gallery's rows are read with: SQLite's own limit is 1 GB, and a crafted
#: file of 200 MB (one template's source) made `people show` take 2 GB. Above the largest kept face image (a
#: PNG crop of an image of `siamface.image.MAX_PIXELS`, at most about 150 MB) and far above any other value.
MAX_VALUE_BYTES = 256 * 1024 * 1024


def _damage(db: sqlite3.Connection, exc: sqlite3.DatabaseError) -> None:
    """`DamagedGalleryError` for SQLite's errors of a damaged file (a malformed page, not a database) or of a
    value over `MAX_VALUE_BYTES`; nothing for any other error (the caller re-raises it)."""
    code = getattr(exc, "sqlite_errorname", "")
    where = getattr(db, "location", "the gallery")
    if code == "SQLITE_TOOBIG":
        raise DamagedGalleryError(
            f"{where}: not a usable gallery file: it holds a value over {MAX_VALUE_BYTES // 2**20} MiB, which "
            "siamface never writes; restore a backup"
        ) from None
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        raise DamagedGalleryError(
            f"{where}: not a usable gallery file: SQLite finds it damaged ({exc}); no decision is made from it: "
            "restore a backup"
        ) from None


def _mapped(method: Callable) -> Callable:
    """`method` of a cursor with SQLite's errors of a damaged file raised as `DamagedGalleryError`."""

    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            _damage(self.connection, exc)
            raise

    return run


class _Cursor(sqlite3.Cursor):
    """A cursor whose errors of a damaged file are `DamagedGalleryError` (see `_damage`) where SQLite meets the
    damage: running a query and fetching its rows (a command ended in an sqlite3 traceback). Iterating over
    the cursor is left as SQLite's (a Python step per row would cost 0.5 s per million rows read so)."""

    execute = _mapped(sqlite3.Cursor.execute)
    executemany = _mapped(sqlite3.Cursor.executemany)
    fetchone = _mapped(sqlite3.Cursor.fetchone)
    fetchmany = _mapped(sqlite3.Cursor.fetchmany)
    fetchall = _mapped(sqlite3.Cursor.fetchall)


class _Connection(sqlite3.Connection):
    """A gallery's connection: its queries run on `_Cursor`, its values are read up to `MAX_VALUE_BYTES`."""

    location = "the gallery"

    def execute(self, sql, parameters=()):
        return _Cursor(self).execute(sql, parameters)

    def executemany(self, sql, parameters):
        return _Cursor(self).executemany(sql, parameters)


#: Meta rows keeping the highest id a table has given, written before a deletion: SQLite gives a new row the
#: largest id + 1, so removing the newest person or template gave their id to the next one, and whatever held
#: the id meanwhile (a re-embedding under way, a search's hits before their names are read) took the newcomer
#: for the removed one. Ids are never reused now, as PostgreSQL's identity columns never reuse them.
_ID_HIGH = {"people": "people_id_high", "templates": "template_id_high"}


def _new_id(table: str) -> str:
    """SQL for the id of a new row of `table` (people or templates): past every id it ever gave."""
    return (
        f"(SELECT max(coalesce((SELECT max(id) FROM {table}), 0), "
        f"coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{_ID_HIGH[table]}'), 0)) + 1)"
    )


#: SQLite's NOCASE: A-Z as a-z, nothing else.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SQLiteStore(SqlStore):
    """A gallery store in one SQLite file, bound to one model.

    >>> store = SQLiteStore("people.db", model=ModelBinding("dlib-resnet", "v1", 128), create=True)

    `model` is required to create a file and, when given for an existing one, must match it
    (`ModelMismatchError`); `keep_images` is decided at creation and stored in the file.
    """

    SCHEMA_VERSION = SCHEMA_VERSION

    def __init__(
        self,
        path: str | os.PathLike,
        model: ModelBinding | None = None,
        *,
        create: bool = False,
        keep_images: bool = False,
        busy_timeout: float = BUSY_TIMEOUT_S,
        read_only: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._busy_timeout = float(busy_timeout)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        if self.path.is_dir():
            raise GalleryError(f"{self.path} is a directory, not a gallery file")
        exists = self.path.exists()
        if not exists and not create:
            raise GalleryError(f"no gallery at {self.path} (enroll someone to create it)")
        self.read_only = bool(read_only) if read_only is not None else exists and not _writable(self.path)
        if not exists:
            if model is None:
                raise GalleryError(f"creating gallery {self.path} needs the model it will be bound to")
            if self.read_only:
                raise ReadOnlyGalleryError(f"{self.path}: cannot create a gallery read-only")
            _create_private(self.path)
        version = self._identify()  # read-only: nothing is written to a file that is not a gallery
        if self.read_only:
            self._open_read_only(version)
        else:
            self._open_and_migrate(model, keep_images)
        if model is not None:
            self.model.check(model, self.location)

    # -- connections and transactions --------------------------------------------------------------
    def _read_only_uri(self) -> str:
        """The URI that opens the file read-only. Without write access to the folder SQLite cannot make the
        WAL index (-shm) a WAL-mode reader needs; when no WAL is there either, nothing can be writing to the
        file, and it is opened immutable (no WAL, no locks)."""
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        side = [Path(f"{self.path}{suffix}").exists() for suffix in ("-wal", "-shm")]
        if not side[0] and not (side[1] or os.access(self.path.resolve().parent, os.W_OK)):
            uri += "&immutable=1"
        return uri

    def _identify(self) -> int:
        """The file's schema version, read through a read-only connection: `GalleryError` for a file that is
        not SQLite, an SQLite file of another program or a newer schema, before anything is written."""
        db = self._open_connection(read_only=True)
        try:
            # one snapshot: another process may commit a migration meanwhile (its schema is not this version's)
            db.execute("BEGIN")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and tables:
                raise GalleryError(f"{self.path}: an SQLite file that is not a siamface gallery")
            if version > SCHEMA_VERSION:
                raise GalleryError(
                    f"{self.path}: gallery schema version {version} is newer than this siamface "
                    f"understands ({SCHEMA_VERSION}); upgrade siamface"
                )
            self._check_schema(db, version)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        finally:
            db.close()
        return version

    def _check_schema(self, db: sqlite3.Connection, version: int) -> None:
        """`GalleryError` unless the file holds exactly the tables, indexes and triggers siamface makes at
        `version` (read through `_identify`'s read-only connection, before any other query touches them): a view
        in place of a table, a trigger or a generated column runs the SQL of whoever wrote the file on every read
        or change (an endless view hung `people list`; a trigger could add a face to every person enrolled)."""
        if version == 0:
            return
        changed = _schema_changes(db, version)
        if changed:
            shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise GalleryError(
                f"{self.path}: not opened: its schema is not the one siamface writes (version {version}): "
                f"{shown}. SQL stored in a gallery runs on every read or change; restore a backup"
            )

    def _limit(self, db: _Connection) -> None:
        db.location = str(self.path)
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)

    def _open_connection(self, read_only: bool) -> sqlite3.Connection:
        # Switching to WAL (and reading a WAL another process is creating) can answer "database is locked"
        # at once, without SQLite's busy handler: retry that until the busy timeout, like any writer wait.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            db = None
            try:
                db = sqlite3.connect(
                    self._read_only_uri() if read_only else self.path,
                    uri=read_only,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                    factory=_Connection,
                )
                self._limit(db)
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                db.execute("PRAGMA trusted_schema = OFF")  # see `_check_schema`: functions in its SQL are not run
                if read_only:
                    db.execute("PRAGMA user_version").fetchone()  # reads the header: a bad file fails here
                    return db
                db.execute("PRAGMA foreign_keys = ON")
                db.execute("PRAGMA secure_delete = ON")
                db.execute("PRAGMA synchronous = FULL")
                mode = db.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if db is not None:
                    db.close()
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    # a full disk cannot take the WAL index (-shm): not a damaged gallery, nothing to restore
                    self._raise_if_storage(exc, "cannot open it")
                    raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
                time.sleep(0.02)
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        if str(mode).lower() != "wal":
            log.warning("%s: journal mode is %s, not WAL", self.path, mode)
        return db

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is not None:
            return db
        db = self._open_connection(self.read_only)
        self._local.db = db
        with self._connections_lock:
            self._connections.append(db)
        return db

    def _refuse_write(self) -> ReadOnlyGalleryError:
        return ReadOnlyGalleryError(
            f"{self.path}: the gallery is read-only (this process may not write the "
            "file or its folder); reading it works, changing it needs write access"
        )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that reads inside it are current."""
        if self.read_only:
            raise self._refuse_write()
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc):
                raise self._refuse_write() from None
            self._raise_if_storage(exc)
            raise GalleryError(f"{self.path}: cannot start a change ({exc})") from None
        try:
            yield db
        except sqlite3.OperationalError as exc:
            self._rollback(db)
            if "readonly" in str(exc):  # e.g. a file system mounted read-only
                raise self._refuse_write() from None
            self._raise_if_storage(exc)
            raise
        except BaseException:
            self._rollback(db)
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback(db)
                if "readonly" in str(exc):
                    raise self._refuse_write() from None
                self._raise_if_storage(exc)
                raise GalleryError(f"{self.path}: change not saved ({exc})") from None

    def _raise_if_storage(self, exc: sqlite3.Error, what: str = "change not saved") -> None:
        """`GalleryUnavailableError` ("full") for SQLite's errors of a full or failing disk."""
        if any(text in str(exc) for text in STORAGE_ERRORS):
            raise GalleryUnavailableError(f"{self.path}: {what}: the disk is full or failing ({exc})", "full") from None

    @contextmanager
    def outages(self) -> Iterator[None]:
        """Work on the gallery, with a full or failing disk met anywhere in it as `GalleryUnavailableError`."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            self._raise_if_storage(exc)
            raise

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may have rolled back already
                log.debug("rollback: %s", exc)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read snapshot (several SELECTs that see the same state)."""
        db = self._connect()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def change_seq(self) -> int:
        """Where the template change log stands (read it before `matrix`, then `changes` from here)."""
        return int(self._connect().execute("SELECT coalesce(max(seq), 0) FROM template_changes").fetchone()[0])

    def changes(self, since: int):
        """The templates changed after log entry `since`, in one snapshot: (generation, log position now,
        ids of every template touched, (ids, person ids, embeddings) of those that are there now, checked
        as `matrix` checks them); None when the log no longer reaches back to `since` (rebuild instead)."""
        with self._read() as db:
            generation = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            low, high = db.execute("SELECT min(seq), max(seq) FROM template_changes").fetchone()
            if low is None or since < low:
                return None
            touched = sorted(
                {int(r[0]) for r in db.execute("SELECT template_id FROM template_changes WHERE seq > ?", (since,))}
                - {0}
            )
            rows = []
            for lo in range(0, len(touched), 500):
                part = touched[lo : lo + 500]
                rows += db.execute(
                    f"SELECT id, person_id, embedding FROM templates WHERE id IN "
                    f"({','.join('?' * len(part))}) ORDER BY person_id, id",
                    part,
                ).fetchall()
        _, ids, people, matrix = self._matrix(generation, rows)
        return generation, int(high), np.array(touched, np.int64), (ids, people, matrix)

    def _open_read_only(self, version: int) -> None:
        if version == 0:
            raise ReadOnlyGalleryError(f"{self.path}: an empty file, not a gallery yet, and read-only")
        if version < READABLE_SINCE:
            raise ReadOnlyGalleryError(
                f"{self.path}: the gallery's schema (version {version}) needs migrating "
                f"to version {SCHEMA_VERSION}, and it is read-only: run `siamface gallery "
                "migrate` once with write access"
            )
        self.opened_version = version
        try:
            meta = dict(self._connect().execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        self._bind(meta)

    def _bind(self, meta: dict[str, str]) -> None:
        try:
            self.model = ModelBinding(meta["model_name"], meta["model_version"], int(meta["embedding_size"]))
            int(meta["generation"])  # read by every search: a file without it is damaged, not a traceback later
            if self.model.embedding_size < 1:
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise GalleryError(
                f"{self.path}: gallery is not bound to a model (its meta rows are missing or damaged)"
            ) from None
        self.keep_images = meta.get("keep_images") == "1"
        self.created = meta.get("created", "")

    def _open_and_migrate(self, model: ModelBinding | None, keep_images: bool) -> None:
        try:
            with self._write() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise GalleryError(
                        f"{self.path}: gallery schema version {version} is newer than this "
                        f"siamface understands ({SCHEMA_VERSION}); upgrade siamface"
                    )
                if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise GalleryError(f"{self.path}: an SQLite file that is not a siamface gallery")
                self.opened_version = version
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    log.info("%s: migrating gallery schema to version %d", self.path, target)
                    MIGRATIONS[target](db)
                    db.execute(f"PRAGMA user_version = {target}")
                meta = dict(db.execute("SELECT key, value FROM meta"))
                if "model_name" not in meta:
                    binding = binding_meta(str(self.path), model, keep_images)
                    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", binding.items())
                    meta.update(binding)
                if version < SKELETONS_SINCE <= SCHEMA_VERSION:  # the column was just added: fill it
                    self._refresh_skeletons(db)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        self._bind(meta)
        if model is not None and keep_images and not self.keep_images:
            log.warning("%s: this gallery was created without keep_images; images will not be kept", self.path)

    def schema_version(self) -> int:
        """The file's schema version (`SCHEMA_VERSION` once opened: opening migrates)."""
        return int(self._connect().execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r}, model={self.model.describe()})"

    # -- reads ---------------------------------------------------------------------------------------
    @staticmethod
    def name_key(name: str) -> str:
        """The form by which this store tells names apart: SQLite's NOCASE folds ASCII letters only."""
        return lookup_form(name).translate(_ASCII_LOWER)

    def _find(self, db: sqlite3.Connection, name: str, metadata: bool = True) -> Person | None:
        row = db.execute(self._PERSON_SELECT + " WHERE p.name = ?", (lookup_form(name),)).fetchone()
        return self._person(row, metadata) if row else None

    def person(self, name: str, *, metadata: bool = True) -> Person:
        found = self._find(self._connect(), name, metadata)
        if found is None:
            raise UnknownPersonError(name, self.location)
        return found

    def people(self) -> list[Person]:
        rows = self._connect().execute(self._PERSON_SELECT + " ORDER BY p.name").fetchall()
        return [self._person(r) for r in rows]

    def names(self, person_ids: Sequence[int]) -> dict[int, str]:
        ids = sorted({int(i) for i in person_ids})
        out: dict[int, str] = {}
        db = self._connect()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(db.execute(f"SELECT id, name FROM people WHERE id IN ({marks})", chunk).fetchall())
        return out

    def matrix(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        with self._read() as db:
            generation = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            rows = db.execute("SELECT id, person_id, embedding FROM templates ORDER BY person_id, id").fetchall()
        return self._matrix(generation, rows)

    def image(self, template_id: int) -> bytes | None:
        row = self._connect().execute("SELECT image FROM templates WHERE id = ?", (int(template_id),)).fetchone()
        if row is None:
            raise GalleryError(f"no template {template_id} in {self.location}")
        return row[0]

    def _storage_size(self, db: sqlite3.Connection) -> tuple[str, int]:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        return "file_bytes", page_size * pages

    # -- writes --------------------------------------------------------------------------------------
    def _insert_template(self, db: sqlite3.Connection, person_id: int, template: NewTemplate, now: str) -> int:
        cursor = db.execute(
            "INSERT INTO templates (id, person_id, embedding, model, model_version, source, quality, created, image) "
            f"VALUES ({_new_id('templates')}, ?, ?, ?, ?, ?, ?, ?, ?)",
            self._template_row(person_id, template, now, _blob),
        )
        return int(cursor.lastrowid)

    def _insert_person(self, db: sqlite3.Connection, name: str, metadata_json: str, now: str) -> int:
        cursor = db.execute(
            f"INSERT INTO people (id, name, metadata, created, ref, skeleton) VALUES ({_new_id('people')}, ?, ?, ?, ?, ?)",
            (name, metadata_json, now, new_ref(), skeleton(name)),
        )
        return int(cursor.lastrowid)

    def _before_delete(self, db: sqlite3.Connection) -> None:
        for table, key in _ID_HIGH.items():  # the ids about to go are never given again
            self._set_meta(db, key, db.execute(f"SELECT {_new_id(table)} - 1").fetchone()[0])
        self._remove_index_files()

    def _write_skeletons(self, db: sqlite3.Connection, changed: Sequence[tuple[str | None, int]]) -> None:
        db.executemany("UPDATE people SET skeleton = ? WHERE id = ?", changed)

    def _insert_templates(
        self, db: sqlite3.Connection, person_id: int, templates: Sequence[NewTemplate], now: str
    ) -> list[int]:
        return [self._insert_template(db, person_id, t, now) for t in templates]

    def _name_clashes(self, db: sqlite3.Connection, names: Sequence[str]) -> list[str]:
        return [n for n in names if self._find(db, n) is not None]

    def _after_delete(self) -> None:
        self._flush_wal()
        self._remove_index_files()

    def _remove_index_files(self) -> None:
        """Remove the in-process FAISS index saved beside the gallery, which holds the removed templates (an
        index in memory catches up from the change log and writes a new one), and the copies of it a process
        killed while saving left (first: a save under way now fails instead of landing). Done before the
        removal commits (a process killed after the commit leaves none) and again after (a save made meanwhile)."""
        index = Path(f"{self.path}.faiss")
        for stale in [*atomic_leftovers(index), index]:
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("%s: not removed (%s); delete it by hand", stale, exc.strerror)

    def _after_prune(self) -> None:
        # the removed audit rows stayed readable in the file until the next checkpoint (with a server holding
        # the gallery open, as when pruning from cron), and in the WAL
        self._flush_wal()

    def _flush_wal(self) -> None:
        """Copy the WAL into the main file (where secure_delete has zeroed the freed bytes) and truncate it,
        so that deleted biometric data does not survive in the WAL. Skipped (logged) while readers hold it."""
        try:
            busy, _, _ = self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:
            busy = 1
            log.debug("checkpoint failed: %s", exc)
        if busy:
            log.warning(
                "%s: the WAL could not be truncated now (another reader is active); deleted data "
                "leaves it at the next checkpoint",
                self.location,
            )

    def rebind(self, model: ModelBinding, embeddings: dict[int, np.ndarray]) -> None:
        with self._write() as db:
            ids = {r[0] for r in db.execute("SELECT id FROM templates")}
            embeddings = self._rebind_cover(ids, embeddings)
            for template_id, vector in embeddings.items():
                db.execute(
                    "UPDATE templates SET embedding = ?, model = ?, model_version = ? WHERE id = ?",
                    (_blob(vector, model.embedding_size), model.name, model.version, template_id),
                )
            db.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [
                    (model.name, "model_name"),
                    (model.version, "model_version"),
                    (str(model.embedding_size), "embedding_size"),
                ],
            )
            self._bump(db)
        self.model = model
        self._flush_wal()

    def integrity(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks (empty when the file is sound)."""
        db = self._connect()
        problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in db.execute("PRAGMA foreign_key_check").fetchall()]
        return problems
