"""`siamface authenticate --liveness passive` on the real recordings in ../shared: is the enrolled live
person granted, and is every attack recording denied?

    python benchmarks/liveness_sessions.py [--data ../shared/datasets] [--liveness passive] [--timeout 120]

The gallery (a temporary file, the default model): the replay_videos person ("apfol") enrolled from 3 frames
of the live recording (frames 30, 90 and 150), the two people of videos_hamilton from their reference photos,
and NUAA subjects 0007-0009 (held out from every liveness model's training) from the first 4 frames of their
live folders. Each recording is then claimed, exactly as a user would run the command (a subprocess of the
installed package's CLI with ``--json``), and its decision printed: granted or denied, why, the frames seen
and how many of them the passive check called not live. The expectation of each row is in the table; the
last line counts the rows that met it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
NUAA_SUBJECTS = ("0007", "0008", "0009")


def cli(*args: str) -> subprocess.CompletedProcess:
    env_src = str(HERE.parent / "src")
    cmd = [
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {env_src!r}); from siamface.cli import main; sys.exit(main())",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def frames_of(video: Path, indices: list[int], out: Path) -> list[str]:
    cap = cv2.VideoCapture(str(video))
    paths, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i in indices:
            paths.append(str(out / f"{video.stem}_{i}.png"))
            cv2.imwrite(paths[-1], frame)
        i += 1
    cap.release()
    if len(paths) != len(indices):
        raise SystemExit(f"{video}: could not read frames {indices}")
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--liveness", default="passive", choices=("off", "passive", "both"))
    ap.add_argument("--timeout", default="120")
    args = ap.parse_args(argv)
    data = Path(args.data)
    replay, hamilton, nuaa = data / "replay_videos", data / "videos_hamilton", data / "nuaa_train"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = str(tmp / "people.db")
        enrolments = {
            "apfol": frames_of(replay / "apfol_real2.webm", [30, 90, 150], tmp),
            "lin-manuel-miranda": [str(hamilton / "lin-manuel-miranda.png")],
            "alex-lacamoire": [str(hamilton / "alex-lacamoire.png")],
            **{f"nuaa_{s}": [str(p) for p in sorted((nuaa / "live" / s).iterdir())[:4]] for s in NUAA_SUBJECTS},
        }
        for name, images in enrolments.items():
            out = cli("enroll", "-g", g, name, *images)
            if out.returncode != 0:
                raise SystemExit(f"enrolling {name} failed: {out.stderr.strip()}")
        runs = [
            ("replay_videos live recording", replay / "apfol_real2.webm", "apfol", True),
            ("replay_videos phone replay", replay / "apfol_fake2_replay.webm", "apfol", False),
            ("videos_hamilton clip", hamilton / "short_hamilton_clip.mp4", "lin-manuel-miranda", True),
            *((f"NUAA {s} live frames", nuaa / "live" / s, f"nuaa_{s}", True) for s in NUAA_SUBJECTS),
            *((f"NUAA {s} printed photos", nuaa / "photo" / s, f"nuaa_{s}", False) for s in NUAA_SUBJECTS),
        ]
        met = 0
        print("| recording | claim | expected | decision | reason | frames | not live |")
        print("|---|---|---|---|---|---|---|")
        for title, source, claim, expect in runs:
            out = cli(
                "authenticate", "-g", g, "--claim", claim, "--source", str(source),
                "--liveness", args.liveness, "--timeout", args.timeout, "--json",
            )  # fmt: skip
            events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            decided = [e for e in events if e.get("event") in ("granted", "denied")]
            if out.returncode not in (0, 1) or not decided:
                print(f"| {title} | {claim} | | error | {out.stderr.strip()[-200:]} | | |")
                continue
            d = decided[-1]
            passive = (d.get("liveness") or {}).get("passive") or {}
            met += d["granted"] == expect
            print(
                f"| {title} | {claim} | {'grant' if expect else 'deny'} | "
                f"{'GRANTED' if d['granted'] else 'DENIED'} | {d['reason']} | {d['frames']} | "
                f"{passive.get('frames_not_live', '–')} |",
                flush=True,
            )
        print(f"\nexpected decisions: {met} of {len(runs)} (liveness {args.liveness})")
    return 0 if met == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
