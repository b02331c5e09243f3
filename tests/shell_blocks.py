"""The shell blocks of a Markdown page, as a reader copies them: the README's and the docs site's tests run the
ones that need nothing outside the repository (a block that does says so on a `# needs: ...` line) and check
the commands every block names against the real command line."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: a fenced block of a shell (```sh, also ```bash, ```shell, ```console), at any indent (a tab of the site)
_FENCE = re.compile(r"^( *)```(?:sh|bash|shell|console)\n(.*?)^\1```", flags=re.S | re.M)
#: a comment that says what a line answers: `# exit 0: the same person`
_EXPECTED_EXIT = re.compile(r"#\s*exit (\d+):")


def shell_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the fence, the block's text without its indent) for every shell block."""
    return [(text[: m.start()].count("\n") + 1, textwrap.dedent(m.group(2))) for m in _FENCE.finditer(text)]


def runnable(block: str) -> bool:
    return not any(line.strip().startswith("# needs:") for line in block.splitlines())


def scratch_folder(tmp_path: Path) -> Path:
    """A folder that holds what a block may name: the bundled faces (tests/fixtures) and the .venv."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    return tmp_path


def run_block(block: str, folder: Path) -> None:
    """Run `block` line by line in `folder` as bash would, /tmp/ being `folder`: every command exits 0 or 1
    (the answers; 2 and above are errors), or the code its `# exit N:` comment says, and nothing prints a
    traceback."""
    lines = []
    for line in block.replace("\\\n", " ").replace("/tmp/", f"{folder}/").splitlines():
        expected = _EXPECTED_EXIT.search(line)
        check = f"[ $rc -eq {expected.group(1)} ]" if expected else "[ $rc -le 1 ]"
        lines += [line, f"rc=$?; {check} || {{ echo FAILED rc=$rc: {_quoted(line)} >&2; exit 3; }}"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        cwd=folder,
        env=dict(os.environ, TMPDIR=str(folder)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "FAILED" not in done.stderr, (block, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr


def _quoted(line: str) -> str:
    return "'" + line.replace("'", "'\\''") + "'"


# -- what a block names: siamface's commands and options, the scripts of the repository ----------------------
_SIAMFACE = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?siamface ([a-z][\w-]*)(.*)")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
_SCRIPT = re.compile(r"(?:^|\s)((?:benchmarks|tools|examples)/[\w/]+\.py|-m siamface\.[\w.]+)([^#;&|]*)")


def unknown_names(block: str) -> list[str]:
    """Every command, action, option or script a block names that does not exist: `siamface CMD [ACTION]
    --option` against the real parser (actions written `list|show NAME|...` each checked, their options
    against them all), `benchmarks/X.py --option` (and `python -m siamface.X --option`) against its source."""
    from siamface.cli import build_parser

    commands = _subparsers(build_parser())
    wrong = []
    for line in block.replace("\\\n", " ").splitlines():
        code = line.split(" # ")[0]
        for m in (m for part in re.split(r";|&&|\|\|", code) for m in _SIAMFACE.finditer(part)):
            command, rest = m.group(1), m.group(2)
            if command not in commands:
                wrong.append(f"siamface {command}")
                continue
            parsers = [commands[command]]
            actions = _subparsers(parsers[0])
            if actions and rest.split() and not rest.split()[0].startswith("-"):
                # `list|show NAME|rename OLD NEW`: each alternative's first word is an action
                chosen = [a.split()[0] for a in re.split(r"(?<! )\|(?! )", rest) if a.split()]
                wrong += [f"siamface {command} {a}" for a in chosen if a not in actions]
                parsers = [actions[a] for a in chosen if a in actions] or parsers
            known = {o for p in parsers for a in p._actions for o in a.option_strings}
            wrong += [f"siamface {command} {o}" for o in _OPTION.findall(rest) if o not in known]
        for m in _SCRIPT.finditer(code):  # a script, or a module run with -m: its source file
            name = m.group(1)
            script = ROOT / ("src/" + name[3:].replace(".", "/") + ".py" if name.startswith("-m ") else name)
            if not script.is_file():
                wrong.append(m.group(1))
                continue
            source = script.read_text()
            wrong += [f"{m.group(1)} {o}" for o in _OPTION.findall(m.group(2)) if f'"{o}"' not in source]
    return wrong


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
