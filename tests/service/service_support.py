"""Shared by the service tests: the skip of a module without the service extra (`require_service`),
`siamface serve` on a free port (in a thread of the test process, or a real process), keys made with
`siamface keys create` (run in the test's process), a clock the tests move forward, and a small HTTP client
(standard library only) that speaks multipart."""

from __future__ import annotations

import functools
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import att, att_rgb, run_cli
from PIL import Image

_BESIDE = Path(sys.executable).parent / "siamface"
SIAMFACE = (
    [str(_BESIDE)]
    if _BESIDE.exists()
    else ([shutil.which("siamface")] if shutil.which("siamface") else [sys.executable, "-m", "siamface.cli"])
)
#: Enrolled with images 2, 3, 4; image 1 is the probe (the AT&T faces the gallery tests use the same way).
PEOPLE = (3, 4, 5, 6, 7, 8, 9)
ENROLLED = (2, 3, 4)
PROBE = 1


#: Why a service test module is skipped (see `require_service`).
SERVICE_EXTRA_MISSING = "the service extra is not installed (pip install -e '.[service]')"


def require_service() -> None:
    """Skip the calling test module unless the service extra's FastAPI and python-multipart (its form parser)
    can be imported: call it at the top of the module, before anything imports the service."""
    for module in ("fastapi", "multipart"):
        pytest.importorskip(module, reason=SERVICE_EXTRA_MISSING)


#: `siamface ARGS` (keys, serve's refusals) run in this process (see conftest.run_cli); `Server` starts a real
#: `siamface serve` process.
cli = run_cli


def never_listen(*args, **kwargs):
    """Stands for `uvicorn.run` where `siamface serve` must refuse to start: listening is a failure (and a
    test that would otherwise serve for ever in its own process)."""
    raise AssertionError("siamface serve got past its checks and would listen")


def _limit_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def fixture_bytes(subject: int, image: int) -> bytes:
    return att(subject, image).read_bytes()


def images(subject: int, *numbers: int) -> list[tuple[str, str, bytes]]:
    """Multipart `images` fields: AT&T fixture photos `numbers` of `subject`."""
    return [("images", f"{subject}-{i}.pgm", fixture_bytes(subject, i)) for i in numbers]


def probe(subject: int, image: int = PROBE) -> list[tuple[str, str, bytes]]:
    """The multipart `image` field of one fixture photo (the probe, by default)."""
    return [("image", f"s{subject}-{image}.pgm", fixture_bytes(subject, image))]


def enrolled_server(folder: Path, people, *options: str) -> Server:
    """A server without liveness (faces of 40 px and up, `options` besides) where `people` (AT&T subjects) are
    enrolled from their ENROLLED photos by its own admin key; stopped again when that fails."""
    srv = Server(folder / "people.db", "--liveness", "off", "--min-size", "40", *options)
    try:
        for s in people:
            answer = srv.request("POST", "/v1/people", fields={"name": f"s{s}"}, files=images(s, *ENROLLED))
            assert answer.status == 201, answer.body
    except BaseException:
        srv.stop()
        raise
    return srv


def role_server(folder: Path, lock_failures: int, lock_seconds: int) -> Server:
    """A server without liveness where PEOPLE are enrolled from their ENROLLED photos (by its own admin key),
    with a recognise key (`.recognise`) and an enrol key (`.enrol`): for the tests of what each role may do."""
    srv = enrolled_server(
        folder,
        PEOPLE,
        "--lockout-failures",
        str(lock_failures),
        "--lockout-window",
        "60",
        "--lockout-seconds",
        str(lock_seconds),
    )
    try:
        srv.recognise = srv.new_key("recognise", "door")
        srv.enrol = srv.new_key("enrol", "desk")
    except BaseException:
        srv.stop()
        raise
    return srv


def tiled(rows: int, cols: int) -> bytes:
    """A PNG of rows x cols AT&T faces (subjects 3-9), each with a grey margin: many faces in one upload."""
    subjects = (3, 4, 5, 6, 7, 8, 9)
    tiles = [
        np.pad(att_rgb(subjects[k % len(subjects)], 1 + (k // len(subjects)) % 4), ((10, 10), (10, 10), (0, 0)))
        for k in range(rows * cols)
    ]
    grid = np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    out = io.BytesIO()
    Image.fromarray(grid).save(out, format="PNG")
    return out.getvalue()


def png_bytes(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict

    @property
    def error(self) -> str | None:
        return self.body.get("error")


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "----siamface" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Clock:
    """`time.monotonic` plus an offset a test moves forward: a server's lock-outs and liveness sessions see
    time pass (`advance`) without the test waiting for it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Server:
    """`siamface serve` on a free port over `gallery`, with one key; stopped by `stop()`.

    By default the command runs in a thread of the test process (`main(["serve", ...])`, uvicorn's server
    started by it, stopped as Ctrl-C would): the models the tests already loaded are reused, and `service`
    (its lock-out book and liveness sessions) runs on `clock`, a `Clock` the test moves forward. With
    `process=True` it is a real `siamface serve` process, stopped with SIGTERM, writing to `log`."""

    def __init__(
        self,
        gallery: Path | str,
        *extra: str,
        log: Path | None = None,
        keys: Path | None = None,
        process: bool = False,
        files: int | None = None,
    ) -> None:
        """`gallery`: a file, or a postgresql:// URL (then `keys` and `log` are needed). `files`: the
        process's limit of open files (with `process`)."""
        self.gallery = gallery if isinstance(gallery, str) else Path(gallery)
        keys_option = ["--keys", str(keys)] if keys else []
        self.keys_option = keys_option
        self.key = self.new_key("admin", "tests")  # the tests' own key may do everything
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = ["serve", "--gallery", str(self.gallery), *keys_option, "--port", str(self.port), *extra]
        self.clock = Clock()
        self.proc = self._thread = self._uvicorn = self.service = None
        if process:
            self.log = log or self.gallery.with_suffix(".log")
            self._log = open(self.log, "w")
            self.proc = subprocess.Popen(
                SIAMFACE + argv,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=None if files is None else functools.partial(_limit_files, files),
            )
        else:
            self._serve_in_thread(argv)
        deadline = time.monotonic() + 180
        while True:
            if not self._running():
                raise RuntimeError(f"siamface serve exited: {self._output()}")
            try:
                if self.request("GET", "/v1/health", key=None).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"siamface serve did not answer in time: {self._output()}")
            time.sleep(0.1)

    def new_key(self, role: str, name: str = "device") -> str:
        """A key of `role` made with `siamface keys create --role` (the server sees it at once)."""
        made = cli(
            "keys", "create", "--gallery", self.gallery, *self.keys_option, "--name", name, "--role", role, "--json"
        )
        assert made.returncode == 0, made.stderr
        return json.loads(made.stdout)["key"]

    def _serve_in_thread(self, argv: list[str]) -> None:
        import threading

        import uvicorn

        from siamface.cli import main

        started = threading.Event()
        original = uvicorn.run

        def run(app, **options):  # what `siamface serve` calls: uvicorn.run(app, host=..., port=..., ...)
            self.service = app.state.service
            self.service.lockout.clock = self.service.sessions.clock = self.service.quota.clock = self.clock
            self.service.wall = lambda: time.time() + self.clock.offset  # the additions window's
            self._uvicorn = uvicorn.Server(uvicorn.Config(app, **options))
            started.set()
            self._uvicorn.run()

        def serve():
            try:
                self.exit_code = main(argv)
            finally:
                started.set()

        uvicorn.run = run
        try:
            self._thread = threading.Thread(target=serve, name=f"siamface serve :{self.port}", daemon=True)
            self._thread.start()
            started.wait(180)
        finally:
            uvicorn.run = original

    def _running(self) -> bool:
        return self.proc.poll() is None if self.proc is not None else self._thread.is_alive()

    def _output(self) -> str:
        if self.proc is not None:
            return self.log.read_text()
        return f"exit code {getattr(self, 'exit_code', None)} (its messages are in the test's captured stderr)"

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None | bool = True,
        fields: dict | None = None,
        files: list[tuple[str, str, bytes]] | None = None,
        json_body: dict | None = None,
        headers: dict | None = None,
        timeout: float = 120,
    ) -> Answer:
        """One HTTP request. `key`: True for the server's key, a string for that one, None for none."""
        hdrs = dict(headers or {})
        if key is True:
            hdrs["Authorization"] = f"Bearer {self.key}"
        elif isinstance(key, str):
            hdrs["Authorization"] = f"Bearer {key}"
        data = None
        if fields is not None or files is not None:
            data, ctype = multipart(fields or {}, files or [])
            hdrs["Content-Type"] = ctype
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, status, got = r.read(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            raw, status, got = e.read(), e.code, dict(e.headers)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_text": raw.decode("utf-8", "replace")}
        return Answer(status, body, {k.lower(): v for k, v in got.items()})

    def stop(self) -> None:
        if self.proc is None:
            if self._uvicorn is not None:
                self._uvicorn.should_exit = True  # as on Ctrl-C: finish the requests, then the lifespan ends
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "siamface serve did not stop"
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
