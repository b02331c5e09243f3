"""The calibration file as several processes write and read it: `siamface calibrate` (`save_calibration`)
beside another writer, or beside a reader (`siamface verify`, a server), in real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from siamface.thresholds import read_calibrations

#: A process that saves `n` calibrations (models MODEL-0 ... MODEL-(n-1)) once told to go on stdin, so that two
#: of them write at the same time (their start-up, the import, is not part of the race).
_WRITER = """
import sys
from pathlib import Path
from siamface.thresholds import Calibration, save_calibration
path, model, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    save_calibration(Calibration(f"{model}-{i}", 0.5, "eer", 0.01, 0.02), path)
"""


def test_two_processes_saving_calibrations_at_once_lose_no_entry_and_a_reader_sees_whole_files(tmp_path):
    target = tmp_path / "people.db.thresholds.json"
    n = 30
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), model, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in ("a", "b")
    ]
    try:
        for w in writers:
            assert w.stdout.readline().strip() == "ready", w.stderr.read()
        for w in writers:
            w.stdin.write("go\n")
            w.stdin.flush()
        seen = 0
        while any(w.poll() is None for w in writers):
            seen = max(seen, len(read_calibrations(target)))  # never a ConfigError: a file read whole
        for w in writers:
            assert w.wait() == 0, w.stderr.read()
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    entries = read_calibrations(target)
    lost = sorted({f"{m}-{i}" for m in "ab" for i in range(n)} - set(entries))
    assert not lost, f"{len(lost)} of {2 * n} calibrations lost: {lost[:5]}"
    assert len(json.loads(target.read_text())) == 2 * n and seen <= 2 * n
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_a_calibration_nested_too_deeply_beside_a_gallery_is_a_one_line_error(tmp_path):
    from conftest import att, run_cli

    gallery = tmp_path / "people.db"
    assert run_cli("enroll", "--gallery", gallery, "--min-size", "40", "s3", att(3, 2)).returncode == 0
    (tmp_path / "people.db.thresholds.json").write_text("[" * 100_000 + "]" * 100_000)
    done = run_cli("verify", "--gallery", gallery, "--claim", "s3", att(3, 1))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "nested too deeply" in done.stderr and len(done.stderr.strip().splitlines()) == 1
