"""One folder reader, one identity split and one pair sampler for evaluation, training and enrollment."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ATT

from siamface import datasets
from siamface.errors import ImageError
from siamface.evaluation.protocols import make_pairs
from siamface.evaluation.protocols import split_identities as eval_split
from siamface.gallery.enroll import image_files, person_folders
from siamface.training.data import split_identities as train_split
from siamface.training.data import verification_pairs


def test_natural_order_for_every_reader(tmp_path):
    for person in ("s10", "s2", "S1", ".hidden", "empty"):
        (tmp_path / person).mkdir()
    for person, names in {"s10": ["10.pgm", "2.pgm"], "s2": ["b.JPG", "a.png"], "S1": ["1.pgm"]}.items():
        for n in names:
            (tmp_path / person / n).write_bytes(b"")
    (tmp_path / "README.txt").write_text("not a person")
    ids = datasets.folder_identities(tmp_path)
    assert list(ids) == ["S1", "s2", "s10"]
    assert [p.name for p in ids["s10"]] == ["2.pgm", "10.pgm"] and [p.name for p in ids["s2"]] == ["a.png", "b.JPG"]
    people = person_folders(tmp_path)  # enrollment reads the same, keeping a folder with no image
    assert [(name, files) for name, files in people if files] == list(ids.items())
    assert ("empty", []) in people and [n for n, _ in people] == ["empty", "S1", "s2", "s10"]
    assert image_files(tmp_path / "s10") == ids["s10"]
    with pytest.raises(ImageError, match="not a folder"):
        person_folders(tmp_path / "nope")


def test_training_split_is_the_evaluation_split_by_counts():
    names = [f"p{i}" for i in range(20)]
    split = train_split(names, val=3, test=5, seed=7)
    test, val, train = eval_split(names, (5 / 20, 3 / 20, 12 / 20), seed=7)
    assert (split["test"], split["val"], split["train"]) == (test, val, train)
    assert datasets.split_by_counts(names, [5, 3, 12], seed=7) == (test, val, train)


def test_training_pairs_are_the_evaluation_sampler_sorted():
    """On a folder-per-person dataset, training's pairs are make_pairs' genuine pairs and the same
    seeded impostors (sorted), so both sides see one sample."""
    ids = datasets.folder_identities(ATT)
    files = [f for fs in ids.values() for f in fs]
    labels = np.repeat(np.arange(len(ids)), [len(v) for v in ids.values()])
    a, b, same = verification_pairs(labels, seed=4)
    pairs = make_pairs(ids, seed=4)
    index = {f: i for i, f in enumerate(files)}
    expected = [(index[p.a], index[p.b], p.same) for p in pairs]
    n_gen = sum(p.same for p in pairs)
    expected = expected[:n_gen] + sorted(expected[n_gen:])
    assert list(zip(a.tolist(), b.tolist(), same.tolist())) == expected


def test_impostor_indices_are_distinct_cross_identity_pairs():
    sizes = [3, 1, 4, 2]
    owner = np.repeat(np.arange(4), sizes)
    total = datasets.count_impostor_pairs(sizes)
    i, j = datasets.impostor_indices(sizes, total, np.random.default_rng(0))
    assert total == 35 and len(set(zip(i.tolist(), j.tolist()))) == total
    assert (i < j).all() and (owner[i] != owner[j]).all()
    with pytest.raises(ValueError, match="only 35"):
        datasets.impostor_indices(sizes, 36, np.random.default_rng(0))
    gi, gj = datasets.genuine_indices(sizes)
    assert list(zip(gi.tolist(), gj.tolist())) == [
        (0, 1),
        (0, 2),
        (1, 2),
        (4, 5),
        (4, 6),
        (4, 7),
        (5, 6),
        (5, 7),
        (6, 7),
        (8, 9),
    ]
