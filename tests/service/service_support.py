"""Shared by the service tests: a real `siamface serve` in a subprocess on a free port, keys made with the
`siamface keys create` (run in the test's process), and a small HTTP client (standard library only) that speaks multipart."""

from __future__ import annotations

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

from conftest import att, run_cli
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


#: `siamface ARGS` (keys, serve's refusals) run in this process (see conftest.run_cli); `Server` starts a real
#: `siamface serve` process.
cli = run_cli


def never_listen(*args, **kwargs):
    """Stands for `uvicorn.run` where `siamface serve` must refuse to start: listening is a failure (and a
    test that would otherwise serve for ever in its own process)."""
    raise AssertionError("siamface serve got past its checks and would listen")


def fixture_bytes(subject: int, image: int) -> bytes:
    return att(subject, image).read_bytes()


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


class Server:
    """`siamface serve` on a free port over `gallery`, with one key; stopped by `stop()`."""

    def __init__(self, gallery: Path | str, *extra: str, log: Path | None = None, keys: Path | None = None) -> None:
        """`gallery`: a file, or a postgresql:// URL (then `keys` and `log` are needed)."""
        self.gallery = gallery if isinstance(gallery, str) else Path(gallery)
        keys_option = ["--keys", str(keys)] if keys else []
        made = cli("keys", "create", "--gallery", self.gallery, *keys_option, "--name", "tests", "--json")
        assert made.returncode == 0, made.stderr
        self.key = json.loads(made.stdout)["key"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or self.gallery.with_suffix(".log")
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(
            SIAMFACE + ["serve", "--gallery", str(self.gallery), *keys_option, "--port", str(self.port), *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"siamface serve exited ({self.proc.returncode}): {self.log.read_text()}")
            try:
                if self.request("GET", "/v1/health", key=None).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"siamface serve did not answer in time: {self.log.read_text()}")
            time.sleep(0.25)

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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
