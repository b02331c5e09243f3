"""The documentation site's shell blocks, as a reader copies them (tests/test_readme.py does the same for the
README): every ```sh block of docs/*.md that needs nothing outside the repository runs in a scratch folder
(each command exits 0 or 1, or the code its `# exit N:` comment says; no traceback); a block that needs
something (a camera, a server, datasets, your own photos ...) says so on a `# needs: ...` line and is not
run, but every siamface command, action and option it names, and every script with its options, must exist."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from shell_blocks import ROOT, run_block, runnable, scratch_folder, shell_blocks, unknown_names

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [(page, line, block) for page in PAGES for line, block in shell_blocks(page.read_text())]
RUNNABLE = [(page, line, block) for page, line, block in BLOCKS if runnable(block)]


def _id(item) -> str:
    page, line, _ = item
    return f"{page.name}:{line}"


def test_the_pages_have_shell_blocks_and_some_run():
    assert len(BLOCKS) >= 10 and RUNNABLE, [_id(b) for b in BLOCKS]


@pytest.mark.parametrize("item", BLOCKS, ids=_id)
def test_every_command_a_block_names_exists(item):
    page, line, block = item
    assert not unknown_names(block), f"{page.name}:{line}: {unknown_names(block)}"


@pytest.mark.skipif(not (Path(sys.executable).parent / "siamface").exists(), reason="needs the .venv's siamface")
@pytest.mark.parametrize("item", RUNNABLE, ids=_id)
def test_docs_shell_blocks_run(item, tmp_path, private_model_cache):
    run_block(item[2], scratch_folder(tmp_path))
