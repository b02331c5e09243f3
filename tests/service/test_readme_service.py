"""The README's service example, as written, with the photos that ship: its `siamface serve` options start a
real server, and its curl calls (enrol, claim, identify) get the answers its comments promise. With serve's
default liveness (a capture session from a camera) the claim with a bundled grey photo is denied, so the
example must say how to start a server that takes uploaded photos."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from service_support import require_service

require_service()
from service_support import Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _server_block() -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    return next(b for b in blocks if "# needs: server" in b)


def _curl_calls(block: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each curl call: its path and its -F fields, continuation lines joined."""
    calls = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("curl "):
            path = re.search(r"http://127\.0\.0\.1:8000(/\S+)", line).group(1)
            calls.append((path, re.findall(r"-F (\w+)=(\S+)", line)))
    return calls


def test_the_readme_service_example_works_with_the_bundled_photos(tmp_path):
    block = _server_block()
    serve = next(line for line in block.splitlines() if line.startswith("siamface serve"))
    words = shlex.split(serve.split("#")[0].rstrip(" &"))
    options = words[words.index("--gallery") + 2 :]  # the example's options besides the gallery
    fixtures = {"$F": str(ROOT / "tests" / "fixtures" / "att")}
    server = Server(tmp_path / "people.db", *options)
    try:
        answers = []
        for path, fields in _curl_calls(block):
            form, files = {}, []
            for name, value in fields:
                if value.startswith("@"):
                    file = Path(value[1:].replace("$F", fixtures["$F"]))
                    files.append((name, file.name, file.read_bytes()))
                else:
                    form[name] = value
            answers.append(server.request("POST", path, fields=form, files=files))
    finally:
        server.stop()
    enrolled, claim, identified = answers
    assert enrolled.status == 201, enrolled.body
    assert claim.status == 200 and claim.body["granted"] is True, claim.body
    assert identified.status == 200 and identified.body["faces"][0]["status"] == "unknown", identified.body
