"""Load on the HTTP service: N concurrent clients for S seconds against a local `siamface serve`.

    python benchmarks/service.py [--clients 50] [--seconds 60] [--workers N]
    python benchmarks/service.py --url http://127.0.0.1:8000 --key sf_...   # an existing server

Without --url it makes a temporary gallery, enrolls AT&T subjects 3-9 (images 2-4) over the API, creates a
key and starts `siamface serve` on a free port. Each client keeps one HTTP/1.1 connection and alternates
POST /v1/identify and POST /v1/verify (claim + probe) with the held-out image 1 of a random subject; only
claims checked to be granted are used, so that no lock-out can trigger. The server runs with `--liveness off`
unless --liveness says otherwise: AT&T's grey photos are not live to the passive check, so with it no claim is
granted and every request is an identification (verify_claims says how many people's claims were used).
Prints one figure per line: requests/s, p50/p99 latency, errors (any answer other than 200; must be 0).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
ATT = ROOT / "tests" / "fixtures" / "att"
PEOPLE, ENROLLED, PROBE = (3, 4, 5, 6, 7, 8, 9), (2, 3, 4), 1


def image(subject: int, number: int) -> bytes:
    return (ATT / f"s{subject}" / f"{number}.pgm").read_bytes()


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "----bench" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.key = key
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, fields: dict, files: list) -> tuple[int, dict]:
        body, ctype = multipart(fields, files)
        for attempt in (0, 1):  # a keep-alive connection the server closed: reconnect once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request(
                    "POST", path, body=body, headers={"Content-Type": ctype, "Authorization": f"Bearer {self.key}"}
                )
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, (json.loads(raw) if raw else {})
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def start_server(
    folder: Path, workers: int | None, liveness: str, extra_args: tuple[str, ...] = (), command: list[str] | None = None
) -> tuple[subprocess.Popen, str, str]:
    """`siamface serve` (or `command`, e.g. another checkout's) over a new gallery with PEOPLE enrolled."""
    beside = Path(sys.executable).parent / "siamface"
    cmd = command or ([str(beside)] if beside.exists() else [shutil.which("siamface") or "siamface"])
    gallery = folder / "bench.db"
    made = subprocess.run(
        cmd + ["keys", "create", "--gallery", str(gallery), "--json"], capture_output=True, text=True, check=True
    )
    key = json.loads(made.stdout)["key"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen(
        cmd
        + ["serve", "--gallery", str(gallery), "--port", str(port), "--min-size", "40", "--liveness", liveness]
        + extra
        + list(extra_args),
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/health")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start: {(folder / 'server.log').read_text()}")
        time.sleep(0.25)
    client = Client(url, key)
    for s in PEOPLE:
        status, body = client.post(
            "/v1/people", {"name": f"s{s}"}, [("images", f"{i}.pgm", image(s, i)) for i in ENROLLED]
        )
        if status != 201:
            raise SystemExit(f"enrolling s{s} failed: {status} {body}")
    return proc, url, key


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=None, help="the server's inference threads (default: its own)")
    ap.add_argument("--url", help="an existing server (enrolled s3-s9 as above) instead of starting one")
    ap.add_argument("--key", help="with --url: an API key")
    ap.add_argument(
        "--liveness",
        default="off",
        choices=("off", "passive"),
        help="the started server's liveness mode (default: off, so that verify claims are granted)",
    )
    args = ap.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="siamface-bench-"))
    proc = None
    try:
        if args.url:
            url, key = args.url, args.key or os.environ.get("SIAMFACE_KEY", "")
        else:
            proc, url, key = start_server(folder, args.workers, args.liveness)
        probes = {s: image(s, PROBE) for s in PEOPLE}
        checker = Client(url, key)
        claims = [
            s
            for s in PEOPLE
            if checker.post("/v1/verify", {"claim": f"s{s}"}, [("image", "p.pgm", probes[s])])[1].get("granted")
        ]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds
        start = threading.Barrier(args.clients + 1)

        def run(n: int) -> None:
            rng = random.Random(n)
            client = Client(url, key)
            start.wait()
            i = n
            while time.monotonic() < stop_at:
                if i % 2 == 0 or not claims:
                    s = rng.choice(PEOPLE)
                    path, fields = "/v1/identify", {}
                else:
                    s = rng.choice(claims)
                    path, fields = "/v1/verify", {"claim": f"s{s}"}
                t0 = time.perf_counter()
                try:
                    status, body = client.post(path, fields, [("image", "probe.pgm", probes[s])])
                    ok = status == 200
                    why = f"{path} {status} {body.get('error')}"
                except OSError as exc:
                    ok, why = False, f"{path} {type(exc).__name__}"
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(why)
                i += 1

        threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(args.clients)]
        for t in threads:
            t.start()
        start.wait()
        began = time.monotonic()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        latencies.sort()
        pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
        print(f"clients: {args.clients}")
        print(f"duration_s: {elapsed:.1f}")
        print(f"cpu_cores: {os.cpu_count()}")
        print(f"requests: {len(latencies)}")
        print(f"requests_per_s: {len(latencies) / elapsed:.1f}")
        print(f"latency_p50_ms: {pct(0.50):.0f}")
        print(f"latency_p99_ms: {pct(0.99):.0f}")
        print(f"errors: {len(errors)}")
        print(f"verify_claims: {len(claims)} of {len(PEOPLE)} people")
        if errors:
            print("first_errors: " + "; ".join(errors[:5]))
        return 1 if errors else 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
