"""An honest request's latency while attackers send images tiled with hundreds of faces (issue 24: one 3 MB
image with 400 faces held a worker for 114 s while an honest verify waited 51 s).

    python benchmarks/service_attack.py [--faces 400] [--attackers 2] [--honest 3] [--serve-args "..."]
    python benchmarks/service_attack.py --command "python run_old_checkout.py"   # another siamface's serve

Starts `siamface serve` (2 workers, passive liveness, as deployed by default) over a new gallery of AT&T
subjects 3-9 (service.py's), measures the median latency of an honest POST /v1/verify (a claim and its probe)
on the idle server, then starts `--attackers` clients that each send POST /v1/identify with one PNG tiled with
`--faces` AT&T faces in a loop, and measures `--honest` verifies again (sequentially, 3 s after the attack
began). One figure per line: honest latency idle and under attack (median and max), the attack requests'
latency, status and faces answered. The server is killed at the end (an old one may still be working).
"""

from __future__ import annotations

import argparse
import io
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from service import ATT, PEOPLE, PROBE, Client, image, start_server


def tiled(n: int) -> bytes:
    """A PNG of about `n` AT&T faces (subjects 3-10, images 1-4) in a grid, each with a grey margin."""
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    subjects = [int(p.name[1:]) for p in sorted(ATT.glob("s*")) if int(p.name[1:]) >= 3]
    tiles = []
    for k in range(rows * cols):
        gray = np.asarray(Image.open(ATT / f"s{subjects[k % len(subjects)]}" / f"{1 + (k // len(subjects)) % 4}.pgm"))
        tiles.append(np.pad(gray, 10, constant_values=128))
    grid = np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    out = io.BytesIO()
    Image.fromarray(grid).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def honest(client: Client, n: int) -> list[float]:
    times = []
    for i in range(n):
        s = PEOPLE[i % len(PEOPLE)]
        t = time.perf_counter()
        status, body = client.post("/v1/verify", {"claim": f"s{s}"}, [("image", "probe.pgm", image(s, PROBE))])
        times.append(time.perf_counter() - t)
        if status != 200:
            print(f"honest verify answered {status} {body.get('error')}", file=sys.stderr)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=400)
    ap.add_argument("--attackers", type=int, default=2)
    ap.add_argument("--honest", type=int, default=3)
    ap.add_argument("--serve-args", default="", help="more `siamface serve` options (e.g. '--max-faces 20')")
    ap.add_argument("--command", default=None, help="the siamface command to run (default: the one beside python)")
    args = ap.parse_args(argv)
    attack = tiled(args.faces)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = start_server(
            Path(tmp),
            2,
            "passive",
            tuple(shlex.split(args.serve_args)),
            shlex.split(args.command) if args.command else None,
        )
        try:
            idle = honest(Client(url, key), args.honest)
            results: list[tuple[float, int, int]] = []
            stop = threading.Event()

            def attacker():
                client = Client(url, key)
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        status, body = client.post("/v1/identify", {}, [("image", "tiles.png", attack)])
                    except OSError:  # the client's 120 s timeout
                        status, body = 0, {}
                    results.append((time.perf_counter() - t, status, len(body.get("faces", []))))

            threads = [threading.Thread(target=attacker, daemon=True) for _ in range(args.attackers)]
            for t in threads:
                t.start()
            time.sleep(3)
            busy = honest(Client(url, key), args.honest)
            stop.set()
            print(f"attack image: {args.faces} faces asked, {len(attack) / 1e6:.1f} MB PNG; serve {args.serve_args}")
            print(f"honest verify, idle: median {statistics.median(idle):.2f} s, max {max(idle):.2f} s")
            print(
                f"honest verify, under {args.attackers} attackers: median {statistics.median(busy):.2f} s, "
                f"max {max(busy):.2f} s ({args.honest} requests)"
            )
            if results:
                lat = [r[0] for r in results]
                codes = sorted({r[1] for r in results})
                print(
                    f"attack requests finished: {len(results)}, latency median {statistics.median(lat):.1f} s, "
                    f"max {max(lat):.1f} s, statuses {codes}, faces answered {max(r[2] for r in results)}"
                )
            else:
                print("attack requests finished: 0 (each still running when the honest requests were done)")
        finally:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
