"""The embedding cache is a cache, never the truth: entries it did not write (a poisoned cache), damaged ones
and a damaged file are embedded again with a warning, so `calibrate` writes the threshold of the real faces
and never a traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

import numpy as np
import pytest
from conftest import ATT, run_cli

pytestmark = pytest.mark.usefixtures("private_model_cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    for subject in range(3, 9):
        shutil.copytree(ATT / f"s{subject}", root / f"s{subject}")
    return root


def _calibrate(data, cache, written):
    out = run_cli(
        "calibrate", "--folder", data, "--target", "eer", "--detector", "hog", "--cache", cache, "--quiet",
        "--write", written, "--json",
    )  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout)["calibration"]["threshold"], out.stderr


@pytest.fixture(scope="module")
def honest(data, tmp_path_factory):
    """The threshold calibrated without any cache, and a cache filled by a calibration."""
    folder = tmp_path_factory.mktemp("honest")
    cache = folder / "embeddings.sqlite"
    threshold, _ = _calibrate(data, cache, folder / "t.json")
    return threshold, cache


def _copy(cache, tmp_path):
    copy = tmp_path / "embeddings.sqlite"
    shutil.copy(cache, copy)
    return copy


def test_a_poisoned_cache_does_not_change_the_calibrated_threshold(data, honest, tmp_path):
    threshold, cache = honest
    cache = _copy(cache, tmp_path)
    db = sqlite3.connect(cache)
    rng = np.random.default_rng(0)
    for sha, dim in db.execute("SELECT sha256, dim FROM embeddings WHERE embedding IS NOT NULL").fetchall():
        v = rng.normal(size=dim).astype("<f4")  # strangers to everyone: the EER point falls near 0
        db.execute("UPDATE embeddings SET embedding = ? WHERE sha256 = ?", ((v / np.linalg.norm(v)).tobytes(), sha))
    db.commit()
    db.close()
    poisoned, stderr = _calibrate(data, cache, tmp_path / "t.json")
    assert poisoned == pytest.approx(threshold, abs=1e-6)
    assert "did not check" in stderr and "embedded again" in stderr


def test_a_partly_damaged_cache_embeds_the_bad_entries_again_with_a_warning(data, honest, tmp_path):
    threshold, cache = honest
    cache = _copy(cache, tmp_path)
    db = sqlite3.connect(cache)
    db.execute("UPDATE embeddings SET embedding = x'00ff' WHERE sha256 IN (SELECT sha256 FROM embeddings LIMIT 3)")
    db.execute("UPDATE embeddings SET dim = 7 WHERE sha256 IN (SELECT sha256 FROM embeddings LIMIT 5 OFFSET 3)")
    db.commit()
    db.close()
    again, stderr = _calibrate(data, cache, tmp_path / "t.json")
    assert again == pytest.approx(threshold, abs=1e-6) and "did not check" in stderr


def test_a_damaged_cache_file_is_moved_aside_not_a_crash(data, honest, tmp_path):
    threshold, cache = honest
    cache = _copy(cache, tmp_path)
    raw = bytearray(cache.read_bytes())
    raw[4096:] = b"\xff" * (len(raw) - 4096)  # every page after the first
    cache.write_bytes(bytes(raw))
    again, stderr = _calibrate(data, cache, tmp_path / "t.json")
    assert again == pytest.approx(threshold, abs=1e-6) and "damaged" in stderr


def test_every_face_entries_are_signed_and_a_rewritten_one_is_embedded_again(tmp_path, monkeypatch, caplog):
    """The photo-library table (every face of a file) is checked like the largest-face entries: a rewritten
    vector (someone else's face swapped in) or a damaged blob is not returned."""
    from siamface.evaluation.cache import EmbeddingCache

    monkeypatch.setenv("SIAMFACE_CONFIG_DIR", str(tmp_path / "config"))
    path = tmp_path / "embeddings.sqlite"
    boxes = np.array([[1, 2, 30, 40], [50, 60, 90, 100]], np.float32)
    vectors = np.eye(2, 8, dtype=np.float32)
    with EmbeddingCache(path) as cache:
        cache.put_faces("a" * 64, "m@1", "d", boxes, vectors)
        cache.put_faces("b" * 64, "m@1", "d", boxes, vectors)
    with EmbeddingCache(path) as cache:
        entry = cache.get_faces("a" * 64, "m@1", "d")
        assert np.array_equal(entry.embeddings, vectors) and np.array_equal(entry.boxes, boxes)
    db = sqlite3.connect(path)
    swapped = np.eye(2, 8, k=3, dtype="<f4").tobytes()
    db.execute("UPDATE faces SET embeddings = ? WHERE sha256 = ?", (swapped, "a" * 64))
    db.execute("UPDATE faces SET boxes = ? WHERE sha256 = ?", (b"\xff" * 5, "b" * 64))
    db.commit()
    db.close()
    with EmbeddingCache(path) as cache:
        assert cache.get_faces("a" * 64, "m@1", "d") is None
        assert cache.get_faces("b" * 64, "m@1", "d") is None
    assert "embedding again" in caplog.text


@pytest.mark.parametrize("how", ["mode 0644", "mode 0666", "another user's"])
def test_a_cache_key_others_may_read_or_write_signs_nothing(tmp_path, monkeypatch, how):
    # The cache's entries are signed with cache.key in the config folder, and whoever knows that key can sign
    # entries of their own (another person's faces under a photo's digest: cluster and find then read them).
    # A key file another user owns, or that others may read or write, was used as it was; now it is not (a key
    # for this process only, with a warning), so an entry signed with it is embedded again.
    import os

    from siamface.evaluation.cache import KEY_FILE, EmbeddingCache

    if how == "another user's" and (os.name == "nt" or os.getuid() != 0):
        pytest.skip("giving a file to another user needs root")
    config = tmp_path / "config"
    config.mkdir()
    known = b"k" * 32
    (config / KEY_FILE).write_bytes(known)
    if how == "another user's":
        os.chown(config / KEY_FILE, 4321, 4321)
        (config / KEY_FILE).chmod(0o600)
    else:
        (config / KEY_FILE).chmod(int(how.split()[-1], 8))
    monkeypatch.setenv("SIAMFACE_CONFIG_DIR", str(config))
    path = tmp_path / "embeddings.sqlite"
    boxes, vectors = np.array([[1, 2, 30, 40]], np.float32), np.eye(1, 8, dtype=np.float32)
    with EmbeddingCache(path) as forger:
        forger._key = known  # what anyone who may read (or wrote) the key file can sign with
        forger.put_faces("a" * 64, "m@1", "d", boxes, vectors)
    with EmbeddingCache(path) as cache:
        assert cache.get_faces("a" * 64, "m@1", "d") is None


@pytest.mark.parametrize(
    "planted", ["another user's cache", "a cache others may read", "a link", "another user's -wal"]
)
def test_a_cache_file_planted_in_a_shared_folder_gets_no_embedding(tmp_path, planted):
    # The cache is meant to be safe in a shared cache folder (its entries are signed). But a cache file someone
    # else made there first was opened as it was: another user's file (0666), or a link to a file of theirs,
    # received the embeddings of every photo the user clustered (biometric templates, readable by them), and a
    # -wal of theirs beside it was replayed into the cache and received its new pages. A cache file, or a -wal
    # or -shm beside it, that is a link, is another user's or that others may read or write is refused.
    import os
    import shutil

    if "another user" in planted and (os.name == "nt" or os.getuid() != 0):
        pytest.skip("giving a file to another user needs root")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    cache = shared / "embeddings.sqlite"
    theirs = tmp_path / "theirs.sqlite"
    sqlite3.connect(theirs).close()
    if planted == "a link":
        cache.symlink_to(theirs)
    elif planted == "another user's -wal":
        sqlite3.connect(cache).close()
        cache.chmod(0o600)
        (shared / "embeddings.sqlite-wal").write_bytes(b"")
        os.chown(shared / "embeddings.sqlite-wal", 4321, 4321)
    else:
        shutil.copy(theirs, cache)
        cache.chmod(0o666 if planted == "another user's cache" else 0o644)
        if planted == "another user's cache":
            os.chown(cache, 4321, 4321)
    before = {p.name: p.read_bytes() for p in (theirs, *shared.iterdir()) if not p.is_symlink()}
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ATT / "s3" / "1.pgm", folder / "a.pgm")
    out = run_cli("cluster", folder, "--cache", cache)
    assert out.returncode == 2 and "Traceback" not in out.stderr, (out.stdout, out.stderr)
    assert "embedding cache" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    after = {p.name: p.read_bytes() for p in (theirs, *shared.iterdir()) if not p.is_symlink()}
    assert after == before  # nothing written into what was planted


def test_a_photo_changed_during_a_run_is_cached_under_its_own_digest(pipeline, tmp_path):
    # embed_images hashed every file first (the cache's keys), then read them batch by batch: a photo changed in
    # between (a dataset being written to, or someone who may write it) had the new photo's embedding cached
    # under the old photo's digest, and every later run that held the old photo (anywhere, under any name) took
    # the new face for it. Each image is hashed from the bytes it is decoded from.
    from siamface.evaluation.cache import EmbeddingCache, detector_key, model_key
    from siamface.evaluation.embed import embed_images

    folder = tmp_path / "photos"
    folder.mkdir()
    first, second = folder / "1.pgm", folder / "2.pgm"
    shutil.copy(ATT / "s3" / "1.pgm", first)
    shutil.copy(ATT / "s4" / "1.pgm", second)
    old = hashlib.sha256(second.read_bytes()).hexdigest()

    class ChangesTheSecondPhoto:
        """The pipeline, but the second photo is replaced (by s5's) while the first is being detected."""

        def __getattr__(self, name):
            return getattr(pipeline, name)

        def detect(self, image):
            shutil.copy(ATT / "s5" / "1.pgm", second)
            return pipeline.detect(image)

    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        run = embed_images(ChangesTheSecondPhoto(), [first, second], cache, progress=False)
        fives = pipeline.embed(pipeline.load_image(ATT / "s5" / "1.pgm")).embeddings[0]
        assert float(run.outcomes[second].embedding @ fives) > 0.99  # what was read: s5's photo
        entry = cache.get_many([old], model_key(pipeline.encoder.info), detector_key(pipeline.detector)).get(old)
        assert entry is None  # s4's photo's digest holds nothing of s5's face


def test_a_user_private_group_is_no_other_user(tmp_path):
    # With umask 002 (Debian and Ubuntu give each user a group of their own, and that umask) siamface's folders
    # and files are group-writable; the checks of who else may change a cache or a calibration took that group
    # for other users, and refused the user's own default cache. A group of one user, named as them, is theirs.
    import os

    from siamface._files import _private_group

    if os.name == "nt" or not _private_group(os.getgid(), os.getuid()):
        pytest.skip("this user has no user private group")
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ATT / "s3" / "1.pgm", folder / "a.pgm")
    env = {"SIAMFACE_CACHE": str(tmp_path / "cache"), "SIAMFACE_CONFIG_DIR": str(tmp_path / "config")}
    old = os.umask(0o002)
    try:
        first = run_cli("cluster", folder, env=env)
        again = run_cli("cluster", folder, env=env)
        config = tmp_path / "config" / "thresholds.json"
        entry = {"model": "m", "threshold": 0.9, "criterion": "far=0.001", "far": 0.001, "frr": 0.0}
        from siamface.pipeline import DEFAULT_MODEL

        config.write_text(json.dumps({DEFAULT_MODEL: {**entry, "model": DEFAULT_MODEL}}))
        config.chmod(0o664)
        verified = run_cli("verify", ATT / "s3" / "1.pgm", ATT / "s3" / "2.pgm", "--json", env=env)
    finally:
        os.umask(old)
    assert (tmp_path / "cache").stat().st_mode & 0o020  # group-writable, as umask 002 makes it
    assert first.returncode == 0 and "1 files embedded" in first.stdout, first.stderr
    assert again.returncode == 0 and "1 from the cache" in again.stdout and "WARNING" not in again.stderr, again.stderr
    assert verified.returncode in (0, 1) and json.loads(verified.stdout)["threshold"] == 0.9, verified.stderr
