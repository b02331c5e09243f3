"""The README's shell blocks, copy-pasted: every ```sh block that needs no camera, server, make or outside
data (those say so on a `# needs: ...` line and are skipped) runs line by line in a scratch folder that
holds the repository's bundled files and its .venv, and no command errors (exit 0 or 1, the answers; 2 and
above are errors). The service example is checked against a real server in tests/service."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from shell_blocks import ROOT, run_block, runnable, scratch_folder, shell_blocks, unknown_names

README = ROOT / "README.md"


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
    blocks = [block for _, block in shell_blocks(README.read_text())]
    assert any(runnable(b) for b in blocks), "the README has no runnable shell block"
    assert not [name for b in blocks for name in unknown_names(b)]
    folder = scratch_folder(tmp_path)
    for block in filter(runnable, blocks):
        run_block(block, folder)
