"""What `siamface serve` and `siamface keys` do with the files around a gallery: a mistyped path makes no
folder, and a server with neither a gallery nor a key (one that could answer nothing) does not start unless
asked to (--allow-empty). Through the real CLI, in this process (`run_cli`)."""

from __future__ import annotations

import json

import pytest
from service_support import require_service

require_service()

from service_support import cli, never_listen  # noqa: E402


@pytest.mark.parametrize("action", [["create"], ["revoke", "0000aaaa"]])
def test_keys_refuses_a_gallery_whose_folder_does_not_exist(tmp_path, action):
    typo = tmp_path / "typo"
    done = cli("keys", *action, "--gallery", typo / "people.db")
    assert done.returncode == 2 and not done.stdout, done.stdout
    assert "does not exist" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not typo.exists()  # no folder, no keys file, no lock file made for a gallery nobody serves


def test_keys_refuses_a_keys_file_whose_folder_does_not_exist(tmp_path):
    done = cli("keys", "create", "--gallery", tmp_path / "people.db", "--keys", tmp_path / "etc" / "keys.json")
    assert done.returncode == 2 and "--keys" in done.stderr and "does not exist" in done.stderr, done.stderr
    assert not (tmp_path / "etc").exists()


def test_keys_create_still_makes_the_keys_file_of_a_gallery_yet_to_be_made(tmp_path):
    # the README's order: a key first (the folder exists, the gallery not yet), then `serve` creates the gallery
    done = cli("keys", "create", "--gallery", tmp_path / "people.db", "--role", "admin", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key"].startswith("sf_") and (tmp_path / "people.db.keys.json").is_file()


def test_serve_refuses_a_gallery_whose_folder_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setattr("uvicorn.run", never_listen)  # in this process: refused before it would listen
    nope = tmp_path / "nope"
    for extra in ([], ["--allow-empty"]):  # an empty server is made in an existing folder only
        done = cli("serve", "--gallery", nope / "x.db", "--port", "1", "--liveness", "off", *extra)
        assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not nope.exists()


def test_serve_refuses_to_start_with_no_gallery_and_no_key(tmp_path, monkeypatch):
    monkeypatch.setattr("uvicorn.run", never_listen)
    gallery = tmp_path / "x.db"
    done = cli("serve", "--gallery", gallery, "--port", "1", "--liveness", "off")
    assert done.returncode == 2, done.stderr
    assert "no gallery" in done.stderr and "siamface keys create" in done.stderr and "--allow-empty" in done.stderr
    assert not gallery.exists() and not list(tmp_path.iterdir())


def test_serve_allow_empty_starts_on_a_new_gallery_without_keys(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.append(app))  # returns at once: "stopped"
    gallery = tmp_path / "x.db"
    done = cli("serve", "--gallery", gallery, "--port", "1", "--liveness", "off", "--allow-empty")
    assert done.returncode == 0 and len(started) == 1, done.stderr
    assert gallery.is_file() and "no API key yet" in done.stderr


@pytest.mark.parametrize(
    "options",
    [["--lockout-seconds", "86400"], ["--lockout-window", "86000", "--lockout-seconds", "401"]],
)
def test_serve_refuses_a_lock_out_reaching_back_further_than_a_pruning_keeps(tmp_path, options, monkeypatch):
    # the lock-out counts the denials in the gallery's audit since (now - window - lock-out); `gallery audit
    # --prune-older-than 1` may remove every row older than a day: a longer reach let a restarted server, or
    # another one of the gallery, forget a lock that still stood
    monkeypatch.setattr("uvicorn.run", never_listen)
    gallery = tmp_path / "x.db"
    assert cli("keys", "create", "--gallery", gallery, "--role", "admin").returncode == 0
    done = cli("serve", "--gallery", gallery, "--port", "1", "--liveness", "off", *options)
    assert done.returncode == 2 and "prune" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not gallery.exists()


def test_a_keys_file_nested_too_deeply_is_a_one_line_error(tmp_path):
    keys = tmp_path / "people.db.keys.json"
    keys.write_text("[" * 100_000 + "]" * 100_000)
    keys.chmod(0o600)
    for action in (["list"], ["create"]):
        done = cli("keys", *action, "--gallery", tmp_path / "people.db")
        assert done.returncode == 2 and "nested too deeply" in done.stderr and "Traceback" not in done.stderr
