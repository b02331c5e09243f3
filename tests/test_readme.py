"""The README's shell blocks, copy-pasted: every ```sh block that needs no camera, server, make or outside
data (those say so on a `# needs: ...` line and are skipped) runs line by line in a scratch folder that
holds the repository's bundled files and its .venv, and no command errors (exit 0 or 1, the answers; 2 and
above are errors). The service example is checked against a real server in tests/service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def runnable(block: str) -> bool:
    return not any(line.strip().startswith("# needs:") for line in block.splitlines())


def test_the_readme_is_short_and_links_into_the_site():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        page = ROOT / target
        generated = target in ("docs/reference/cli.md", "docs/reference/http.md")  # written by make docs
        assert page.is_file() or generated, target
    for word in ("/work/", "shared/datasets", "issue 1", "issue 2"):
        assert word not in text, word


@pytest.mark.skipif(not (Path(sys.executable).parent / "siamface").exists(), reason="needs the .venv's siamface")
def test_readme_shell_blocks_run(tmp_path):
    blocks = [b for b in shell_blocks(README.read_text()) if runnable(b)]
    assert blocks, "the README has no runnable shell block"
    (tmp_path / "tests").mkdir()
    for name in ("fixtures",):
        (tmp_path / "tests" / name).symlink_to(ROOT / "tests" / name)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = dict(os.environ, TMPDIR=str(tmp_path))
    for block in blocks:
        script = block.replace("\\\n", " ").replace("/tmp/", f"{tmp_path}/")  # a scratch folder of its own
        done = subprocess.run(
            ["bash", "-c", script.replace("\n", "\nrc=$?; [ $rc -le 1 ] || { echo FAILED $rc >&2; exit $rc; }\n")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode <= 1 and "FAILED" not in done.stderr, (block, done.stdout[-2000:], done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr
