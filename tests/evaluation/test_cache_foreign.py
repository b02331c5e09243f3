"""`--cache PATH` naming a file that is not an embedding cache: the file is left as it was and the command stops
in one line. A gallery given by mistake got the cache's tables (and siamface then refused to open it), and a
file that is not SQLite (the gallery's keys) was moved aside as a "damaged cache"."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ATT, att, run_cli

pytestmark = pytest.mark.usefixtures("private_model_cache")


def _calibrate(tmp_path, cache):
    data = tmp_path / "faces"
    for subject in (3, 4):
        shutil.copytree(ATT / f"s{subject}", data / f"s{subject}")
    return run_cli(
        "calibrate", "--folder", data, "--target", "eer", "--detector", "hog", "--cache", cache, "--quiet",
        "--write", tmp_path / "t.json",
    )  # fmt: skip


@pytest.mark.parametrize("given", ["gallery", "keys"])
def test_a_cache_path_naming_a_gallery_or_its_keys_leaves_them_untouched(tmp_path, given):
    gallery = tmp_path / "people.db"
    assert run_cli("enroll", "--gallery", gallery, "--min-size", "40", "s5", att(5, 2)).returncode == 0
    assert run_cli("keys", "create", "--gallery", gallery).returncode == 0
    target = gallery if given == "gallery" else tmp_path / "people.db.keys.json"
    before = target.read_bytes()
    done = _calibrate(tmp_path, target)
    assert done.returncode == 2 and "left untouched" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert target.read_bytes() == before and not list(tmp_path.glob("*.damaged-*"))
    listed = run_cli("people", "list", "-g", gallery, "--json")
    assert listed.returncode == 0 and [p["name"] for p in json.loads(listed.stdout)["people"]] == ["s5"], listed.stderr
    assert "1 active" in run_cli("keys", "list", "--gallery", gallery).stdout
