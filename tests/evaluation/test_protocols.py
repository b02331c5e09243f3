"""Checks of siamface.evaluation.protocols on tiny files written in tmp_path."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from siamface.evaluation import (
    LfwPair,
    flatten_folds,
    folder_identities,
    genuine_pairs,
    impostor_pairs,
    lfw_image_path,
    make_pairs,
    open_set_split,
    pair_labels,
    read_lfw_pairs,
    read_pairs_file,
    split_identities,
)

# --------------------------------------------------------------------------- #
# LFW pairs.txt
# --------------------------------------------------------------------------- #
# Exactly LFW's layout: header "folds<TAB>pairs-per-class", then per fold the
# matched lines "name<TAB>i<TAB>j" and the mismatched lines "name1<TAB>i<TAB>name2<TAB>j".
LFW_2x2 = (
    "2\t2\n"
    "Abel_Pacheco\t1\t4\n"
    "Akhmed_Zakayev\t1\t3\n"
    "AJ_Cook\t1\tMarsha_Thomason\t1\n"
    "Aaron_Sorkin\t2\tFrank_Keating\t1\n"
    "Abdullah_Gul\t13\t14\n"
    "Abdullah_Gul\t13\t16\n"
    "Abdel_Madi_Shabneh\t1\tDean_Barker\t1\n"
    "Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1\n"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def test_read_lfw_pairs_standard(tmp_path):
    folds = read_lfw_pairs(write(tmp_path, "pairs.txt", LFW_2x2))
    assert len(folds) == 2 and [len(f) for f in folds] == [4, 4]
    assert folds[0][0] == LfwPair("Abel_Pacheco", 1, "Abel_Pacheco", 4)
    assert folds[0][2] == LfwPair("AJ_Cook", 1, "Marsha_Thomason", 1)
    assert folds[1][1] == LfwPair("Abdullah_Gul", 13, "Abdullah_Gul", 16)
    assert [p.label for p in folds[0]] == [1, 1, 0, 0]
    assert [p.same for p in folds[1]] == [True, True, False, False]
    pairs, labels, fold_ids = flatten_folds(folds)
    assert len(pairs) == 8
    assert labels.tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert fold_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_read_lfw_pairs_spaces_crlf_blank_lines(tmp_path):
    text = LFW_2x2.replace("\t", " ").replace("\n", "\r\n") + "\r\n\r\n"
    folds = read_lfw_pairs(write(tmp_path, "pairs.txt", text))
    assert folds == read_lfw_pairs(write(tmp_path, "pairs_tab.txt", LFW_2x2))


def test_read_lfw_pairs_single_number_header(tmp_path):
    # pairsDevTrain.txt style: one number N, then N matched and N mismatched lines (one fold)
    text = "1\nAbel_Pacheco\t1\t4\nAJ_Cook\t1\tMarsha_Thomason\t1\n"
    folds = read_lfw_pairs(write(tmp_path, "pairsDevTrain.txt", text))
    assert folds == [[LfwPair("Abel_Pacheco", 1, "Abel_Pacheco", 4), LfwPair("AJ_Cook", 1, "Marsha_Thomason", 1)]]


def test_read_lfw_pairs_headerless(tmp_path):
    text = "AJ_Cook 1 Marsha_Thomason 1\nAbel_Pacheco 1 4\nAbdullah_Gul 13 14\n"
    folds = read_lfw_pairs(write(tmp_path, "p.txt", text))
    assert len(folds) == 1
    assert [p.label for p in folds[0]] == [0, 1, 1]  # file order kept


@pytest.mark.parametrize(
    "text,match",
    [
        ("2\t2\nAbel_Pacheco\t1\t4\n", "header says 2 fold"),  # truncated
        # a mismatched line where a matched one is expected
        ("1\t1\nAJ_Cook\t1\tMarsha_Thomason\t1\nAbel_Pacheco\t1\t4\n", "matched line"),
        ("1\t1\nAbel_Pacheco\tx\t4\nAJ_Cook\t1\tMarsha_Thomason\t1\n", "integers"),
        ("Abel_Pacheco 1\n", "expected 'name i j'"),
        ("\n\n", "empty"),
        # pairs whose label is false were counted as labelled: one image with itself as a genuine success (a
        # perfect score), one person's two images as an impostor pair
        ("1\t1\nAbel_Pacheco\t4\t4\nAJ_Cook\t1\tMarsha_Thomason\t1\n", "a matched pair of one image with itself"),
        ("1\t1\nAbel_Pacheco\t1\t4\nAJ_Cook\t1\tAJ_Cook\t2\n", "a mismatched pair naming one person twice"),
        ("AJ_Cook 1 AJ_Cook 2\n", "naming one person twice"),
        ("Abel_Pacheco 0 4\n", "image numbers start at 1"),
    ],
)
def test_read_lfw_pairs_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_lfw_pairs(write(tmp_path, "bad.txt", text))


def test_lfw_image_path(tmp_path):
    assert lfw_image_path("/data/lfw", "Abel_Pacheco", 4) == Path("/data/lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg")
    assert LfwPair("AJ_Cook", 1, "Marsha_Thomason", 12).paths(tmp_path) == (
        tmp_path / "AJ_Cook" / "AJ_Cook_0001.jpg",
        tmp_path / "Marsha_Thomason" / "Marsha_Thomason_0012.jpg",
    )


# --------------------------------------------------------------------------- #
# folder-per-person datasets
# --------------------------------------------------------------------------- #
def make_tree(root: Path, layout: dict[str, list[str]]) -> None:
    for ident, files in layout.items():
        d = root / ident
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            (d / f).write_bytes(b"x")


@pytest.fixture
def att_like(tmp_path):
    """AT&T-like: s1 (3 images), s2 (2), s10 (1) + noise that must be ignored."""
    root = tmp_path / "faces"
    make_tree(
        root,
        {
            "s1": ["10.pgm", "2.pgm", "1.pgm", "notes.txt", ".hidden.pgm"],
            "s10": ["1.PGM"],
            "s2": ["b.jpg", "a.png"],
            "empty": ["readme.md"],
        },
    )
    (root / "README").write_text("not an identity")
    (root / "SOURCE.txt").write_text("not an identity")
    return root


def test_folder_identities(att_like):
    ids = folder_identities(att_like)
    assert list(ids) == ["s1", "s2", "s10"]  # natural order; "empty" has no image
    assert [f.name for f in ids["s1"]] == ["1.pgm", "2.pgm", "10.pgm"]
    assert [f.name for f in ids["s2"]] == ["a.png", "b.jpg"]
    assert [f.name for f in ids["s10"]] == ["1.PGM"]  # extension match is case-insensitive
    only_jpg = folder_identities(att_like, exts=["jpg"])
    assert {k: [f.name for f in v] for k, v in only_jpg.items()} == {"s2": ["b.jpg"]}


def test_folder_identities_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        folder_identities(tmp_path / "nope")


def test_genuine_pairs(att_like):
    ids = folder_identities(att_like)
    pairs = genuine_pairs(ids)
    # s1: C(3,2) = 3, s2: 1, s10: 0
    got = [(p.a.name, p.b.name, p.id_a) for p in pairs]
    assert got == [
        ("1.pgm", "2.pgm", "s1"),
        ("1.pgm", "10.pgm", "s1"),
        ("2.pgm", "10.pgm", "s1"),
        ("a.png", "b.jpg", "s2"),
    ]
    assert all(p.label == 1 for p in pairs)


def all_cross_pairs(ids):
    return {frozenset((a, b)) for (ka, fa), (kb, fb) in combinations(ids.items(), 2) for a in fa for b in fb}


def test_impostor_pairs_all_and_unique(att_like):
    ids = folder_identities(att_like)
    # sizes 3, 2, 1 -> 3*2 + 3*1 + 2*1 = 11 different-person pairs
    pairs = impostor_pairs(ids, 11, seed=0)
    assert len(pairs) == 11
    assert {frozenset((p.a, p.b)) for p in pairs} == all_cross_pairs(ids)
    assert all(p.id_a != p.id_b and p.label == 0 for p in pairs)
    with pytest.raises(ValueError, match="only 11"):
        impostor_pairs(ids, 12, seed=0)
    with pytest.raises(ValueError):
        impostor_pairs(ids, -1)
    assert impostor_pairs(ids, 0) == []


def test_impostor_pairs_seeded_sample():
    ids = {f"p{k}": [Path(f"p{k}/{i}.jpg") for i in range(5)] for k in range(20)}
    a = impostor_pairs(ids, 300, seed=7)
    b = impostor_pairs(ids, 300, seed=7)
    assert a == b  # deterministic
    assert len({frozenset((p.a, p.b)) for p in a}) == 300  # no duplicates, either order
    assert all(p.id_a != p.id_b for p in a)
    assert all(p.a.parent.name == p.id_a and p.b.parent.name == p.id_b for p in a)


def test_make_pairs(att_like):
    pairs = make_pairs(att_like, seed=3)
    # 4 genuine, ratio 1.0 -> 4 impostors, genuine first
    assert pair_labels(pairs).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    pairs = make_pairs(att_like, n_impostors=2, seed=3)
    assert pair_labels(pairs).tolist() == [1, 1, 1, 1, 0, 0]
    # ratio 10 would ask for 40 but only 11 exist: capped
    assert len(make_pairs(att_like, impostor_ratio=10.0)) == 4 + 11
    assert make_pairs(att_like, seed=3) == make_pairs(att_like, seed=3)
    # --impostor-ratio nan or inf: was numpy's 'cannot convert float NaN to integer' (an OverflowError for inf)
    for ratio in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="impostor_ratio must be a finite number >= 0"):
            make_pairs(att_like, impostor_ratio=ratio)


@pytest.mark.parametrize(
    "n,fractions,sizes",
    [
        (40, (0.7, 0.15, 0.15), (28, 6, 6)),
        # 7, 1.5, 1.5 -> floors 7,1,1; the one left goes to the earlier tied remainder
        (10, (0.7, 0.15, 0.15), (7, 2, 1)),
        (5, (0.5, 0.5), (3, 2)),
        (3, (1.0,), (3,)),
        (0, (0.7, 0.15, 0.15), (0, 0, 0)),
    ],
)
def test_split_identities_sizes(n, fractions, sizes):
    ids = [f"id{i:03d}" for i in range(n)]
    parts = split_identities(ids, fractions, seed=1)
    assert tuple(len(p) for p in parts) == sizes
    flat = [x for p in parts for x in p]
    assert sorted(flat) == ids  # disjoint and complete
    assert all(p == sorted(p) for p in parts)
    assert split_identities(list(reversed(ids)), fractions, seed=1) == parts  # input order does not matter


def test_split_identities_duplicates_and_seed():
    per_image = ["b", "a", "b", "c", "a", "d"]
    parts = split_identities(per_image, (0.5, 0.5), seed=0)
    assert sorted(parts[0] + parts[1]) == ["a", "b", "c", "d"]
    assert not set(parts[0]) & set(parts[1])


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (1.2, -0.2), ()])
def test_split_identities_bad_fractions(fractions):
    with pytest.raises(ValueError):
        split_identities(["a", "b"], fractions)


def test_read_pairs_file(tmp_path):
    p = write(
        tmp_path,
        "pairs_same.txt",
        "07399/000093.jpg 07399/004668.jpg\n\n# comment\n07399/000093.jpg\t07399/036881.jpg\n",
    )
    assert read_pairs_file(p) == [
        ("07399/000093.jpg", "07399/004668.jpg"),
        ("07399/000093.jpg", "07399/036881.jpg"),
    ]
    rooted = read_pairs_file(p, root=tmp_path)
    assert rooted[0] == (tmp_path / "07399/000093.jpg", tmp_path / "07399/004668.jpg")
    bad = write(tmp_path, "bad.txt", "a b\na b c\n")
    with pytest.raises(ValueError, match=":2:"):
        read_pairs_file(bad)


# --------------------------------------------------------------------------- #
# open-set 1:N split
# --------------------------------------------------------------------------- #
def test_open_set_split(tmp_path):
    root = tmp_path / "ds"
    # 5 identities x 3 images, plus one with a single image
    make_tree(root, {f"p{k}": ["1.jpg", "2.jpg", "3.jpg"] for k in range(5)} | {"solo": ["1.jpg"]})
    s = open_set_split(root, n_gallery_per_id=1, unknown_fraction=1 / 3, seed=5)
    # round(6/3) = 2 unknown identities, 4 known
    assert len(s.unknown_ids) == 2 and len(s.known_ids) == 4
    assert set(s.gallery) == set(s.known_ids)
    assert not set(s.unknown_ids) & set(s.gallery)
    for files in s.gallery.values():
        assert len(files) == 1
    # mated probes: 2 per known 3-image identity (solo, if known, is enrolled whole: 0 probes)
    n_known_3 = sum(1 for k in s.known_ids if k != "solo")
    n_unknown_imgs = sum(3 if k != "solo" else 1 for k in s.unknown_ids)
    assert s.n_mated == 2 * n_known_3
    assert len(s.probes) == 2 * n_known_3 + n_unknown_imgs
    # a probe image is never also enrolled
    enrolled = {f for f, _ in s.gallery_files}
    assert not enrolled & {f for f, _ in s.probes}
    assert s.probe_ids == [k for _, k in s.probes]
    assert open_set_split(root, 1, 1 / 3, seed=5) == s  # deterministic


def test_open_set_split_mapping_and_errors():
    ids = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"]}
    s = open_set_split(ids, n_gallery_per_id=2, unknown_fraction=0.0)
    assert s.unknown_ids == [] and s.known_ids == ["a", "b"]
    assert [len(v) for v in s.gallery.values()] == [2, 2]
    # b (2 images) is enrolled whole; a keeps one probe, not among its enrolled images
    assert len(s.probes) == 1 and s.probes[0][1] == "a"
    assert s.probes[0][0] not in s.gallery["a"]
    with pytest.raises(ValueError):
        open_set_split(ids, n_gallery_per_id=0)
    with pytest.raises(ValueError):
        open_set_split(ids, unknown_fraction=1.0)
    with pytest.raises(ValueError, match="no identity"):
        open_set_split(ids, unknown_fraction=0.9)  # round(1.8) = 2 = all
