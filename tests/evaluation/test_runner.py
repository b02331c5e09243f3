"""siamface.evaluation.runner and .cache on the real AT&T fixtures (tests/fixtures/att, 10 people x 4).

The hog detector misses s33/2.pgm and s33/4.pgm, which gives every protocol failures to detect. Embeddings are shared
between tests through one cache file in the session's temporary folder, so each image is embedded about
once per session; the user's own caches and calibration files are never touched.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ATT, att

from siamface import Pipeline
from siamface.errors import ConfigError
from siamface.evaluation import cache as cache_mod
from siamface.evaluation import runner
from siamface.evaluation.cache import EmbeddingCache, detector_key, detector_options, model_key

pytestmark = pytest.mark.usefixtures("private_model_cache")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    with EmbeddingCache(tmp_path_factory.getbasetemp() / "shared-embeddings.sqlite") as c:
        yield c


@pytest.fixture(scope="module")
def hog():
    return Pipeline(detector="hog", model="dlib-resnet")


class CountingPipeline(Pipeline):
    """A Pipeline that counts how many images' faces it embeds (a faceless image is detected, not embedded)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    def embed_many(self, items):
        self.calls += len(items)
        return super().embed_many(items)


# --------------------------------------------------------------------------------------------------- #
# protocols
# --------------------------------------------------------------------------------------------------- #
def test_folder_protocol_on_fixtures(hog, shared_cache):
    r = runner.evaluate_folder(hog, ATT, seed=0, cache=shared_cache, progress=False)
    assert r.protocol == "folder" and r.model == "dlib-resnet" and r.detector == "hog"
    assert r.n_images == 40 and r.n_genuine == 60 and r.n_impostor == 60
    # hog misses s33/2.pgm and s33/4.pgm: two failures; their genuine pairs are false rejects, and they are counted
    assert r.n_failures == 2 and r.failed_images == ["s33/2.pgm", "s33/4.pgm"]
    assert r.n_failed_genuine == 5 and r.n_failed_pairs == r.n_failed_genuine + r.n_failed_impostor
    assert np.isnan(r.scores).sum() == r.n_failed_pairs
    assert r.at_threshold.fn >= 5 and r.at_threshold.n_failures == r.n_failed_pairs
    assert r.at_threshold.accuracy >= 0.95 and r.best_accuracy.accuracy >= 0.95
    # every other pair is told right: the 5 failed genuine pairs of 60 are the whole of the EER (5/60)
    assert r.at_threshold.fp == 0 and r.at_threshold.fn == 5
    assert r.eer <= 5 / 60 + 1e-9 and 0.8 < r.eer_threshold < 1.0 and r.auc > 0.9
    # 60 impostor pairs: FAR 0.1 is measurable, 0.01 and finer are not
    assert [t.supported for t in r.tar_at_far] == [True, False, False, False]
    d = r.to_dict()
    json.dumps(d, allow_nan=False)  # valid JSON: NaN/inf written as null
    assert d["images"]["failures"] == 2 and "non-match" in d["failure_policy"]
    assert "not supported" in d["tar_at_far"][1]["note"]
    text = runner.format_report(r)
    assert "2 with no usable face: s33/2.pgm, s33/4.pgm" in text and "EER" in text and "n/a" in text


def test_impostor_count_and_seed(hog, shared_cache):
    a = runner.evaluate_folder(hog, ATT, n_impostors=100, seed=1, cache=shared_cache, progress=False)
    b = runner.evaluate_folder(hog, ATT, n_impostors=100, seed=1, cache=shared_cache, progress=False)
    assert a.n_impostor == 100 and a.pairs == b.pairs
    c = runner.evaluate_folder(hog, ATT, impostor_ratio=2.0, seed=0, cache=shared_cache, progress=False)
    assert c.n_impostor == 120 and [t.supported for t in c.tar_at_far][:2] == [True, True]


def _lfw_layout(tmp_path: Path) -> tuple[Path, Path]:
    """Fixtures copied into LFW's layout (name/name_0001.jpg, bytes unchanged) and a 2-fold pairs file."""
    root = tmp_path / "lfw"
    subjects = (33, 11, 3, 4, 5, 6, 7, 8, 9, 10)  # Person_A is s33, Person_B s11, Person_C s3 ...
    names = {k: f"Person_{chr(ord('A') + k - 1)}" for k in range(1, 11)}
    for k, name in names.items():
        (root / name).mkdir(parents=True)
        for i in range(1, 5):
            shutil.copy(att(subjects[k - 1], i), root / name / f"{name}_{i:04d}.jpg")
    n = names
    fold1 = [
        f"{n[2]}\t1\t2",
        f"{n[3]}\t1\t3",
        f"{n[4]}\t2\t4",
        f"{n[5]}\t1\t4",
        f"{n[2]}\t1\t{n[3]}\t1",
        f"{n[4]}\t2\t{n[5]}\t3",
        f"{n[1]}\t1\t{n[2]}\t4",
        f"{n[3]}\t2\t{n[4]}\t1",
    ]
    fold2 = [
        f"{n[6]}\t1\t2",
        f"{n[7]}\t3\t4",
        f"{n[8]}\t1\t3",
        f"{n[1]}\t1\t2",
        f"{n[6]}\t1\t{n[7]}\t1",
        f"{n[8]}\t2\t{n[9]}\t2",
        f"{n[9]}\t4\t{n[10]}\t1",
        f"{n[10]}\t2\t{n[6]}\t3",
    ]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t4\n" + "\n".join(fold1 + fold2) + "\n")
    return pairs, root


def test_lfw_pairs_two_folds(tmp_path, hog, shared_cache):
    pairs, root = _lfw_layout(tmp_path)
    r = runner.evaluate_lfw(hog, pairs, root, cache=shared_cache, progress=False)
    assert r.protocol == "lfw" and r.n_pairs == 16 and r.n_genuine == 8
    assert r.kfold is not None and len(r.kfold.accuracies) == 2 and r.kfold.fold_sizes == (8, 8)
    assert r.kfold.mean >= 0.8 and r.kfold.std >= 0
    # Person_A_0002 is s33/2.pgm: hog finds no face there; the genuine pair "Person_A 1 2" is a false reject
    assert r.n_failures == 1 and r.failed_images == ["Person_A/Person_A_0002.jpg"] and r.n_failed_genuine == 1
    assert r.to_dict()["kfold"]["mean"] == pytest.approx(r.kfold.mean)


def test_pair_lists(tmp_path, hog, shared_cache):
    same = tmp_path / "same.txt"
    diff = tmp_path / "diff.txt"
    same.write_text("s11/1.pgm s11/2.pgm\ns3/1.pgm s3/4.pgm\ns4/2.pgm s4/3.pgm\n")
    diff.write_text("s11/1.pgm s3/1.pgm\ns4/1.pgm s5/1.pgm\ns6/1.pgm s7/2.pgm\n# comment\n")
    r = runner.evaluate_pair_lists(hog, same, diff, ATT, cache=shared_cache, progress=False)
    assert (r.n_genuine, r.n_impostor, r.n_failures) == (3, 3, 0)
    assert r.at_threshold.accuracy == 1.0 and r.pairs[0] == ("s11/1.pgm", "s11/2.pgm")


def test_pair_lists_use_the_face_nearest_the_centre(tmp_path, hog):
    from conftest import att_rgb, scene
    from PIL import Image

    # s5 big in a corner, s11 smaller in the middle: the subject of the picture is s11
    group = scene([(att_rgb(5, 1), 2.2, (0, 0)), (att_rgb(11, 1), 1.6, (246, 150))])
    Image.fromarray(group).save(tmp_path / "group.png")
    shutil.copy(att(11, 2), tmp_path / "s11.pgm")
    shutil.copy(att(5, 2), tmp_path / "s5.pgm")
    same, diff = tmp_path / "same.txt", tmp_path / "diff.txt"
    same.write_text("group.png s11.pgm\n")
    diff.write_text("group.png s5.pgm\n")
    centre = runner.evaluate_pair_lists(hog, same, diff, tmp_path, cache=None, progress=False)
    largest = runner.evaluate_pair_lists(hog, same, diff, tmp_path, cache=None, progress=False, face="largest")
    assert centre.face == "centre" and centre.to_dict()["images"]["face_used"] == "centre"
    assert centre.n_multi_face == 1 and "the one nearest the centre used" in runner.format_report(centre)
    assert centre.scores[0] > centre.scores[1] + 0.1  # group's face is s11
    assert largest.scores[1] > largest.scores[0] + 0.1  # group's face is s5
    assert "the largest used" in runner.format_report(largest)


def test_open_set_identification(hog, shared_cache):
    r = runner.evaluate_identification(
        hog, ATT, gallery_per_id=1, unknown_fraction=0.2, seed=0, cache=shared_cache, progress=False
    )
    i = r.identification
    # 10 people: 2 unknown (8 non-mated probes), 8 enrolled with one image each (24 mated probes)
    assert (i.n_gallery_ids, i.n_gallery_images, i.n_mated, i.n_non_mated) == (8, 8, 24, 8)
    assert i.n_probe_failures + i.n_gallery_failures == 2  # s33/2.pgm, s33/4.pgm
    assert i.rank1.rate >= 0.9 and i.rank5.rate >= i.rank1.rate
    assert 0.0 <= i.open_set.fpir <= 0.25 and 0.0 <= i.open_set.fnir <= 0.2
    assert i.open_set.threshold == r.threshold
    # verification figures over every probe x template comparison
    assert r.n_pairs == 32 * 8 and r.n_genuine == 24 and r.eer < 0.1
    assert r.pairs is None
    assert "rank-1" in runner.format_report(r)


def test_missing_images_are_an_error(tmp_path, hog):
    same = tmp_path / "same.txt"
    same.write_text("s11/1.pgm s11/2.pgm\n")
    different = tmp_path / "different.txt"
    different.write_text("s11/1.pgm s12/1.pgm\n")
    with pytest.raises(ConfigError, match="3 of 3 images not found"):
        runner.evaluate_pair_lists(hog, same, different, tmp_path, cache=None, progress=False)


def test_explicit_threshold_is_reported(hog, shared_cache):
    r = runner.evaluate_folder(hog, ATT, cache=shared_cache, progress=False, threshold=0.84)
    assert r.threshold == 0.84 and r.threshold_source == "given by the caller"
    assert r.at_threshold.far > 0.2  # many strangers look alike at 0.84 for dlib-resnet (its floor is 0.83)


# --------------------------------------------------------------------------------------------------- #
# cache
# --------------------------------------------------------------------------------------------------- #
def test_second_run_hits_the_cache(tmp_path):
    data = tmp_path / "faces"
    for s in (33, 11, 3):
        shutil.copytree(ATT / f"s{s}", data / f"s{s}")
    db = tmp_path / "cache.sqlite"
    first = CountingPipeline(detector="hog")
    with EmbeddingCache(db) as c:
        r1 = runner.evaluate_folder(first, data, cache=c, progress=False)
    # 12 distinct images in 18 genuine + 18 impostor pairs, each once: 10 faces embedded, s33/2 and /4 faceless
    assert first.calls == 10
    assert (r1.n_computed, r1.n_from_cache, r1.n_failures) == (12, 0, 2)

    second = CountingPipeline(detector="hog")
    with EmbeddingCache(db) as c:
        assert len(c) == 12  # the "no face" of s33/2.pgm and s33/4.pgm is cached too
        r2 = runner.evaluate_folder(second, data, cache=c, progress=False, threshold=0.95)
    assert second.calls == 0
    assert (r2.n_computed, r2.n_from_cache, r2.n_failures) == (0, 12, 2)
    np.testing.assert_array_equal(r1.scores, r2.scores)  # NaN positions included

    other = CountingPipeline(detector="hog", min_face_size=30)  # another detector setting: another key
    with EmbeddingCache(db) as c:
        runner.evaluate_folder(other, data, cache=c, progress=False)
    assert other.calls == 10


def test_cache_roundtrip_and_keys(tmp_path):
    vec = np.linspace(-1, 1, 128).astype(np.float32)
    with EmbeddingCache(tmp_path / "c.sqlite", commit_every=1) as c:
        c.put("aa", "m@1", "hog {}", vec, 2)
        c.put("bb", "m@1", "hog {}", None, 0)
        assert c.get("aa", "m@1", "hog {}").n_faces == 2
        np.testing.assert_array_equal(c.get("aa", "m@1", "hog {}").embedding, vec)
        assert c.get("bb", "m@1", "hog {}").found is False
        assert c.get("aa", "m@2", "hog {}") is None and c.get("aa", "m@1", "cnn {}") is None
        assert set(c.get_many(["aa", "bb", "cc"], "m@1", "hog {}")) == {"aa", "bb"}
    import sqlite3

    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"

    from siamface.detection import create_detector

    a = create_detector("retinaface", threads=1)
    b = create_detector("retinaface", threads=4)
    assert detector_key(a) == detector_key(b)  # thread count does not change the faces found
    assert detector_key(a) != detector_key(create_detector("retinaface", min_face_size=40))
    assert detector_options(create_detector("hog"))["upsample"] == 1
    assert model_key(Pipeline(model="dlib-resnet").encoder.info) == "dlib-resnet@dlib_face_recognition_resnet_model_v1"


def test_default_cache_path_follows_siamface_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SIAMFACE_CACHE", str(tmp_path))
    assert cache_mod.default_cache_path() == tmp_path / "embeddings.sqlite"
    monkeypatch.delenv("SIAMFACE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_cache_path() == tmp_path / "xdg" / "siamface" / "embeddings.sqlite"


# --------------------------------------------------------------------------------------------------- #
# calibration choice, progress, outputs
# --------------------------------------------------------------------------------------------------- #
def _synthetic(n_gen=100, n_imp=100, seed=0):
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(0.95, 0.02, n_gen), rng.normal(0.85, 0.03, n_imp)])
    y = np.concatenate([np.ones(n_gen, bool), np.zeros(n_imp, bool)])
    return s, y


def test_choose_threshold_criteria():
    s, y = _synthetic()
    e = runner.choose_threshold(s, y, "eer")
    assert e.criterion == "eer" and abs(e.far - e.frr) < 0.03
    b = runner.choose_threshold(s, y, "best-accuracy")
    assert b.criterion == "best-accuracy"
    f = runner.choose_threshold(s, y, "far=0.01")
    assert f.criterion == "far=0.01" and f.far <= 0.01 and f.supported
    with pytest.raises(runner.UnsupportedTargetError, match=r"at least 1,000 impostor.*there are 100.*--force"):
        runner.choose_threshold(s, y, "far=1e-3")
    forced = runner.choose_threshold(s, y, "far=1e-3", force=True)
    assert not forced.supported and forced.far == 0.0 and "forced" in forced.note
    with pytest.raises(ConfigError, match="expected far=RATE"):
        runner.parse_target("fnr=0.1")
    with pytest.raises(ConfigError):
        runner.parse_target("far=2")


def test_training_chooses_its_threshold_as_calibrate_does(hog, shared_cache):
    """A trained model's threshold is `siamface calibrate`'s choice on the same comparisons: the FAR target
    when the data measures it, else the EER; a FAR that no threshold reaches (impostors tied at the top, as
    one photo filed under two people gives) is a clear error, not a threshold of +inf that refuses everyone."""
    from siamface.training.trainer import calibrate_threshold

    r = runner.evaluate_folder(hog, ATT, n_impostors=100, seed=1, cache=shared_cache, progress=False)
    s, y = r.scores, r.labels
    assert calibrate_threshold(s, y, 0.01) == (runner.choose_threshold(s, y, "far=0.01").threshold, "FAR 0.01")
    assert calibrate_threshold(s, y, 1e-3) == (
        runner.choose_threshold(s, y, "eer").threshold,
        "EER (100 impostor pairs are too few for FAR 0.001)",
    )
    duplicated = np.append(s, [1.0, 1.0]), np.append(y, [False, False])
    with pytest.raises(ConfigError, match="no threshold reaches FAR <= 0.01"):
        calibrate_threshold(*duplicated, 0.01)


def test_progress_bar_only_on_a_terminal():
    quiet = io.StringIO()
    with runner.Progress(10, "embedding", stream=quiet) as bar:
        for _ in range(10):
            bar.update()
    assert quiet.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    with runner.Progress(3, "embedding", stream=tty, interval=0) as bar:
        for _ in range(3):
            bar.update()
    out = tty.getvalue()
    assert out.startswith("\rembedding [") and "3/3" in out and out.endswith("\n")
    off = Tty()
    with runner.Progress(3, stream=off, enabled=False) as bar:
        bar.update(3)
    assert off.getvalue() == ""


def test_outputs_with_and_without_matplotlib(tmp_path, hog, shared_cache, monkeypatch):
    r = runner.evaluate_folder(hog, ATT, cache=shared_cache, progress=False)
    pytest.importorskip("matplotlib")
    written, skipped = runner.write_outputs(r, tmp_path / "with")
    assert skipped is None
    assert {p.name for p in written} == {"report.json", "scores.csv", "roc.png", "scores.png"}
    assert json.loads((tmp_path / "with" / "report.json").read_text())["images"]["n"] == 40
    lines = (tmp_path / "with" / "scores.csv").read_text().splitlines()
    assert lines[0] == "a,b,label,score" and len(lines) == 121 and "s33/2.pgm" in "".join(lines)

    from siamface.evaluation import plots

    def no_matplotlib():
        raise ImportError("no matplotlib")

    monkeypatch.setattr(plots, "_pyplot", no_matplotlib)
    written, skipped = runner.write_outputs(r, tmp_path / "without")
    assert "matplotlib" in skipped and "siamface[plot]" in skipped
    assert sorted(p.name for p in written) == ["report.json", "scores.csv"]
    assert not (tmp_path / "without" / "roc.png").exists()
    assert math.isfinite(r.eer)


def test_a_new_embedding_cache_is_readable_by_its_owner_only(tmp_path):
    """Cached embeddings are biometric templates: the file, and the WAL files SQLite makes beside it, are 0600."""
    path = tmp_path / "sub" / "emb.sqlite"
    with EmbeddingCache(path) as c:
        c.put("0" * 64, "m", "d", np.ones(4, np.float32) / 2, n_faces=1)
        c.flush()
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    assert modes["emb.sqlite"] == 0o600 and all(m == 0o600 for m in modes.values()), modes
    assert EmbeddingCache(path).get("0" * 64, "m", "d").n_faces == 1  # an existing cache opens as before


def test_embeddings_without_keypoint_refinement_are_not_taken_from_the_cache_for_refined_ones(tmp_path):
    # An evaluation or calibration run with --no-keypoint-refinement was given the embeddings a refined run had
    # cached (the key named the model and the detector's settings only), and the other way round: AT&T's faces,
    # under 112 px, are refined by default, so the two runs embed them differently.
    from siamface.evaluation.embed import embed_images

    photos = [att(3, 1), att(4, 1)]
    fresh = {
        refine: list(embed_images(Pipeline(refine_keypoints=refine), photos, progress=False).outcomes.values())
        for refine in (True, False)
    }
    assert not np.allclose(fresh[True][0].embedding, fresh[False][0].embedding)
    with EmbeddingCache(tmp_path / "cache.sqlite") as c:
        for refine in (True, False):
            run = embed_images(Pipeline(refine_keypoints=refine), photos, cache=c, progress=False)
            assert run.n_cached == 0, refine  # the other run's entries are not this one's
            for got, want in zip(run.outcomes.values(), fresh[refine]):
                np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6)
