"""Training data: split by identity, pairs, batches and augmentation on the AT&T fixture faces."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ATT

from siamface.errors import ConfigError
from siamface.training.augment import Augment
from siamface.training.data import load_faces, split_identities, verification_pairs
from siamface.training.sampling import batch_pairs, pk_batches


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return load_faces(ATT, aligned=True, cache_dir=tmp_path_factory.mktemp("chips"))


def test_aligned_faces_are_read_per_identity(faces):
    assert len(faces.identities) == 10 and len(faces) == 40
    assert faces.chips.shape == (40, 150, 150, 3)
    assert np.bincount(faces.labels).tolist() == [4] * 10
    assert faces.paths[0] == "s3/1.pgm"


def test_detected_faces_are_cached(tmp_path):
    first = load_faces(ATT, max_per_identity=2, cache_dir=tmp_path)
    assert len(first) >= 18  # retinaface finds (nearly) every fixture face
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = load_faces(ATT, max_per_identity=2, cache_dir=tmp_path)
    assert np.array_equal(first.chips, again.chips) and first.paths == again.paths


@pytest.mark.parametrize("val, test, sizes", [(2, 3, (5, 2, 3)), (0.2, 0.3, (5, 2, 3)), (0, 2, (8, 0, 2))])
def test_split_is_by_identity_and_seeded(faces, val, test, sizes):
    split = split_identities(faces.identities, val, test, seed=3)
    assert tuple(len(split[k]) for k in ("train", "val", "test")) == sizes
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set.union(*parts) == set(faces.identities)
    assert split == split_identities(faces.identities, val, test, seed=3)
    assert split != split_identities(faces.identities, val, test, seed=4)
    subsets = [faces.subset(split[k]) for k in ("train", "val", "test")]
    files = [set(s.paths) for s in subsets]
    assert not (files[0] & files[2]) and sum(len(s) for s in subsets) == len(faces)


def test_verification_pairs_are_balanced(faces):
    a, b, same = verification_pairs(faces.labels, seed=1)
    assert same.sum() == 10 * 6 and (~same).sum() == 60  # all genuine pairs, as many impostors
    assert np.array_equal(faces.labels[a] == faces.labels[b], same)
    assert len(set(zip(a.tolist(), b.tolist()))) == len(a)


def test_batches_and_pairs(faces):
    rng = np.random.default_rng(0)
    batches = pk_batches(faces.labels, 16, 4, rng)
    assert len(batches) == 3 and all(len(ix) == 16 for ix in batches)
    assert all(np.bincount(faces.labels[ix], minlength=10).max() == 4 for ix in batches)
    labels = faces.labels[batches[0]]
    a, b, y = batch_pairs(labels, rng)
    assert y.sum() == 16 and (1 - y).sum() == 16
    assert np.array_equal(labels[a] == labels[b], y == 1) and not np.any(a == b)
    dist = np.abs(np.subtract.outer(np.arange(16.0), np.arange(16.0)))
    a, b, y = batch_pairs(labels, rng, dist)
    neg = y == 0
    for i, j in zip(a[neg], b[neg]):  # hard negatives: the nearest image of another identity
        others = np.flatnonzero(labels != labels[i])
        assert dist[i, j] == dist[i, others].min()


def test_augmentation_is_seeded_and_changes_images(faces):
    chips = faces.chips[:6]
    aug = Augment()
    one = aug(chips, np.random.default_rng(5))
    assert one.shape == chips.shape and one.dtype == np.uint8
    assert np.array_equal(one, aug(chips, np.random.default_rng(5)))
    assert not np.array_equal(one, aug(chips, np.random.default_rng(6)))
    assert np.abs(one.astype(int) - chips).mean() > 3
    assert np.array_equal(Augment.none()(chips, np.random.default_rng(5)), chips)
    flip = Augment.parse("flip=1,rotate=0,scale=0,shift=0,contrast=0,brightness=0,blur=0")
    assert np.array_equal(flip(chips, np.random.default_rng(0)), chips[:, :, ::-1])


def test_a_shared_chip_cache_neither_writes_through_a_link_nor_reads_another_users_chips(tmp_path, faces):
    # The aligned chips of `siamface train` are cached in siamface's cache folder, which may be shared (the
    # docs' own case: the embedding cache signs its entries for it). The chips were written to a name anyone
    # could predict (.KEY.npz.PID.tmp.npz, then renamed): a link planted there made the trainer overwrite the
    # link's target (any file of its user); and a chips file another user put at KEY.npz (its name is a digest
    # of the dataset's paths, sizes and times: anyone who may list the dataset computes it) was trained on.
    import os

    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o1777)
    victim = tmp_path / "victims-file"
    victim.write_bytes(b"keep me")
    from siamface.training import data

    files = data.folder_identities(ATT)
    from siamface.alignment import ChipSpec

    key = data._cache_key(ATT, files, "retinaface", True, ChipSpec(150, 0.25))
    (cache / f".{key}.npz.{os.getpid()}.tmp.npz").symlink_to(victim)
    honest = load_faces(ATT, aligned=True, chip=ChipSpec(150, 0.25), cache_dir=cache)
    assert victim.read_bytes() == b"keep me"
    assert np.array_equal(honest.chips, faces.chips)
    if os.name == "nt" or os.getuid() != 0:
        return  # giving a file to another user needs root
    planted = cache / f"{key}.npz"
    planted.unlink(missing_ok=True)
    np.savez(
        planted,
        chips=np.zeros_like(honest.chips),
        paths=np.array(honest.paths, str),
        identities=np.array([honest.identities[k] for k in honest.labels], str),
        skipped=np.array([], str),
    )
    os.chown(planted, 4321, 4321)
    again = load_faces(ATT, aligned=True, chip=ChipSpec(150, 0.25), cache_dir=cache)
    assert np.array_equal(again.chips, honest.chips)


def test_identities_left_out_are_named(tmp_path, caplog):
    # a person with one photo, or only unreadable ones, was dropped without a word (the run then had fewer
    # identities than the dataset's folders, and no line said which or why)
    import shutil

    for person in ("s3", "s4", "s5"):
        shutil.copytree(ATT / person, tmp_path / person)
    (tmp_path / "one").mkdir()
    shutil.copy(ATT / "s6" / "1.pgm", tmp_path / "one" / "1.pgm")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"not a photo")
    with caplog.at_level("WARNING", logger="siamface.training.data"):
        faces = load_faces(tmp_path, aligned=True, cache_dir="none", min_per_identity=2)
    assert faces.identities == ["s3", "s4", "s5"]
    assert "2 identities left out: fewer than 2 usable images (junk, one)" in caplog.text


def test_a_damaged_chips_cache_is_aligned_again(tmp_path, caplog):
    # The chips file is written without fsync: cut short by a machine stopping, it was numpy's BadZipFile
    # traceback; one holding other chips (another layout) was trained on as it was, here with every identity
    # 'left out'. A cache that cannot be read, or does not hold this dataset's chips, is aligned again.
    first = load_faces(ATT, aligned=True, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.npz")
    data = cached.read_bytes()
    for damaged in (
        data[: len(data) // 2],
        _npz(chips=np.zeros((3, 150, 150, 3), np.uint8), paths=["a"], identities=["x"], skipped=[]),
    ):
        cached.write_bytes(damaged)
        with caplog.at_level("WARNING", logger="siamface.training.data"):
            again = load_faces(ATT, aligned=True, cache_dir=tmp_path)
        assert np.array_equal(again.chips, first.chips) and again.identities == first.identities
        assert "aligning again" in caplog.text
        caplog.clear()


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.array(v, np.uint8 if k == "chips" else str) for k, v in arrays.items()})
    return buf.getvalue()


def test_few_identities_say_how_to_train_on_them():
    # 3 people at the default fractions: a test split of one person (no impostor pair: 'EER nan%') was made; a
    # fraction coming to one takes two, and the refusal says how to leave the split out
    with pytest.raises(ConfigError, match=r"3 identities cannot give 2 test .* \(--test 0 and --val 0 leave"):
        split_identities(["a", "b", "c"], 0.1, 0.25, seed=0)
    assert split_identities(["a", "b", "c"], 0, 0, seed=0)["train"] == ["a", "b", "c"]
