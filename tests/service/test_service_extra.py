"""Without the service extra, every service test module skips, saying why, instead of failing: checked by a
pytest of its own that collects them where python-multipart cannot be imported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from service_support import SERVICE_EXTRA_MISSING

HERE = Path(__file__).parent


def test_every_service_module_skips_without_the_extra(tmp_path):
    blocked = tmp_path / "multipart"  # found before the installed one: importing it fails as if it were missing
    blocked.mkdir()
    (blocked / "__init__.py").write_text("raise ModuleNotFoundError('blocked by the test', name='multipart')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    modules = sorted(p.name for p in HERE.glob("test_service_*.py") if p.name != Path(__file__).name)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:cacheprovider", *modules],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # module-level skips are reported together, counted: `SKIPPED [5] service_support.py:NN: <reason>`
    skips = re.findall(rf"^SKIPPED \[(\d+)\] .*{re.escape(SERVICE_EXTRA_MISSING)}$", out.stdout, re.MULTILINE)
    assert sum(map(int, skips)) == len(modules), out.stdout + out.stderr
    assert out.returncode == 5 and "::" not in out.stdout, out.stdout + out.stderr  # 5: no test collected, no error
