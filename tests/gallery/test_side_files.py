"""The files a gallery command writes beside a gallery, and what it does with a file already there: through
the real CLI (`run_cli`)."""

from __future__ import annotations

import json

import pytest
from conftest import att, run_cli


def _gallery(folder):
    gallery = folder / "people.db"
    done = run_cli("enroll", "--gallery", gallery, "--min-size", "40", "s3", att(3, 2), att(3, 3))
    assert done.returncode == 0, done.stderr
    return gallery


@pytest.mark.parametrize("name", ["people.db", "people.db.keys.json", "people.db.thresholds.json", "notes.txt"])
def test_gallery_export_replaces_no_file_but_an_earlier_export(tmp_path, name):
    # `gallery export -g people.db people.db` replaced the gallery (and its audit) with the export, and an export
    # named like the keys file replaced every key
    gallery = _gallery(tmp_path)
    assert run_cli("keys", "create", "--gallery", gallery).returncode == 0
    target = tmp_path / name
    if not target.exists():
        target.write_text("{}\n" if name.endswith(".json") else "my notes\n")
    before = target.read_bytes()
    done = run_cli("gallery", "export", "-g", gallery, target)
    assert done.returncode == 2 and "not replaced" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert target.read_bytes() == before
    listed = run_cli("people", "list", "-g", gallery, "--json")
    assert listed.returncode == 0 and [p["name"] for p in json.loads(listed.stdout)["people"]] == ["s3"]


def test_gallery_export_replaces_an_earlier_export_and_no_link(tmp_path):
    gallery = _gallery(tmp_path)
    export = tmp_path / "out.jsonl"
    for _ in range(2):  # the second replaces the first, as before
        assert run_cli("gallery", "export", "-g", gallery, export).returncode == 0
    link = tmp_path / "link.jsonl"
    link.symlink_to(export)
    done = run_cli("gallery", "export", "-g", gallery, link)
    assert done.returncode == 2 and "a link" in done.stderr and link.is_symlink(), done.stderr
