"""`siamface evaluate` and `siamface calibrate` on the AT&T fixtures, in-process through cli.main, and the
calibration read back by the real `siamface verify` console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ATT, att, plant_links, run_cli

from siamface.cli import build_parser, main
from siamface.embedding import create_encoder
from siamface.pipeline import DEFAULT_MODEL
from siamface.thresholds import read_calibrations

_BESIDE = Path(sys.executable).parent / "siamface"
SIAMFACE = str(_BESIDE) if _BESIDE.exists() else (shutil.which("siamface") or "")


pytestmark = pytest.mark.usefixtures("private_model_cache")


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory) -> str:
    """One embedding cache for the module (and test_runner's): each fixture image is embedded once."""
    return str(tmp_path_factory.getbasetemp() / "shared-embeddings.sqlite")


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    """Each test its own calibration folder: nothing leaks into the session's or the user's."""
    d = tmp_path / "config"
    monkeypatch.setenv("SIAMFACE_CONFIG_DIR", str(d))
    return d


def test_commands_are_registered():
    help_text = build_parser().format_help()
    assert "evaluate" in help_text and "calibrate" in help_text


def test_evaluate_folder_writes_report_and_plots(tmp_path, cache_file, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(
        ["evaluate", "--folder", str(ATT), "--detector", "hog", "--out", str(out), "--cache", cache_file, "--quiet"]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "2 with no usable face: s33/2.pgm, s33/4.pgm" in text and "EER" in text and "TAR @ FAR" in text
    assert "accuracy" in text and "ROC AUC" in text and "wrote" in text
    for name in ("report.json", "roc.png", "scores.png", "scores.csv"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"] == "folder" and report["images"]["failures"] == 2
    assert report["at_threshold"]["accuracy"] >= 0.95 and report["comparisons"]["genuine"] == 60


def test_evaluate_writes_no_output_through_a_link(tmp_path, cache_file, capsys):
    # report.json, scores.csv and the plots were opened by name for writing: a link planted at one of those
    # names in the output folder (a shared place, or the default out/evaluate-<dataset>-<protocol>) made
    # `evaluate` overwrite the link's target. Each is written under a random name and renamed into place.
    out = tmp_path / "out"
    planted = ["report.json", "scores.csv"] + (["roc.png", "scores.png"] if _has_matplotlib() else [])
    victims = plant_links(out, planted, tmp_path)
    code = main(
        ["evaluate", "--folder", str(ATT), "--detector", "hog", "--out", str(out), "--cache", cache_file, "--quiet"]
    )
    capsys.readouterr()
    assert code == 0
    assert [v.read_bytes() for v in victims] == [b"keep me"] * len(planted)
    for name in planted:
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text())["protocol"] == "folder"


def test_a_dataset_or_model_name_with_dollars_is_drawn_as_written(tmp_path, cache_file):
    # The dataset's folder name and the model's name are put into the plots' titles and legends: a '$' started
    # matplotlib's mathtext, and one it could not parse ('\\foo') was a traceback when the figure was drawn,
    # after the report was printed, with no plots written. They are shown as written.
    pytest.importorskip("matplotlib")
    data = tmp_path / "my$\\foo{$set"
    for person in ("s3", "s4", "s5"):
        shutil.copytree(ATT / person, data / person)
    out = tmp_path / "out"
    result = run_cli("evaluate", "--folder", data, "--detector", "hog", "--out", out, "--cache", cache_file, "--quiet")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (out / "roc.png").stat().st_size > 0 and (out / "scores.png").stat().st_size > 0


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_evaluate_default_out_dir_and_json(tmp_path, cache_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["evaluate", "--identify", str(ATT), "--detector", "hog", "--cache", cache_file, "--json"])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)  # stdout is the JSON alone; what was written goes to stderr
    ident = report["identification"]
    assert ident["rank1"]["rate"] >= 0.9 and ident["rank5"]["rate"] >= ident["rank1"]["rate"]
    assert ident["open_set"]["fpir"] is not None and ident["open_set"]["fnir"] is not None
    assert (tmp_path / "out" / "evaluate-att-identify" / "report.json").exists()
    assert "wrote" in captured.err


def test_evaluate_lfw_pairs(tmp_path, cache_file, capsys):
    root = tmp_path / "lfw"
    for s, name in ((11, "Ann"), (3, "Bob"), (4, "Cid")):
        (root / name).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(att(s, i), root / name / f"{name}_{i:04d}.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2 2\nAnn 1 2\nBob 1 3\nAnn 1 Bob 1\nBob 2 Cid 2\nCid 1 3\nAnn 2 3\nCid 1 Ann 3\nBob 3 Ann 2\n")
    code = main(
        [
            "evaluate",
            "--lfw-pairs",
            str(pairs),
            "--root",
            str(root),
            "--detector",
            "hog",
            "--out",
            str(tmp_path / "o"),
            "--cache",
            cache_file,
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "2-fold accuracy" in text and "the one nearest the centre used" in text
    code = main(
        [
            "evaluate",
            "--lfw-pairs",
            str(pairs),
            "--root",
            str(root),
            "--detector",
            "hog",
            "--face",
            "largest",
            "--out",
            str(tmp_path / "o"),
            "--cache",
            cache_file,
            "--quiet",
            "--json",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["images"]["face_used"] == "largest"


def test_calibrate_then_verify_uses_it(tmp_path, cache_file, config_dir, capsys):
    # retinaface: hog misses two of s33's faces, whose forced false rejects (5 of 60 genuine pairs) would put
    # the EER point above the 5 % FAR a calibration may write
    code = main(
        ["calibrate", "--folder", str(ATT), "--detector", "retinaface", "--target", "eer"]
        + ["--cache", cache_file, "--quiet"]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    written = config_dir / "thresholds.json"
    assert f"wrote {written}" in text and "now uses this threshold" in text
    cal = read_calibrations(written)[DEFAULT_MODEL]
    assert cal.criterion == "eer" and cal.detector == "retinaface" and cal.dataset == str(ATT.resolve())
    assert (cal.n_genuine, cal.n_impostor) == (60, 60) and cal.created[:4].isdigit()
    floor = create_encoder(DEFAULT_MODEL).info.impostor_median  # the model's plausible range starts there
    assert floor < cal.threshold < 1.0 and 0 <= cal.far <= 0.1 and 0 <= cal.frr <= 0.1

    # the real console script, in a fresh process, reads the user calibration file
    assert SIAMFACE, "the siamface console script is not installed"
    env = dict(os.environ, SIAMFACE_CONFIG_DIR=str(config_dir))
    out = subprocess.run(
        [SIAMFACE, "verify", str(att(11, 1)), str(att(11, 2)), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["threshold"] == pytest.approx(cal.threshold)
    assert (
        result["threshold_source"].startswith("calibrated (eer) on ")
        and str(ATT.resolve()) in result["threshold_source"]
    )


def test_calibrate_write_file_and_json(tmp_path, cache_file, config_dir, capsys):
    target = tmp_path / "elsewhere" / "cal.json"
    code = main(
        [
            "calibrate",
            "--folder",
            str(ATT),
            "--detector",
            "hog",
            "--target",
            "best-accuracy",
            "--write",
            str(target),
            "--cache",
            cache_file,
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["file"] == str(target) and data["read_by_verify"] is False
    assert read_calibrations(target)[DEFAULT_MODEL].criterion == "best-accuracy"
    # the version measured, so that another model of the name is not given this threshold
    assert read_calibrations(target)[DEFAULT_MODEL].model_version == create_encoder(DEFAULT_MODEL).info.version
    assert not (config_dir / "thresholds.json").exists()


def test_calibrate_beside_a_gallery_says_who_reads_it(tmp_path, cache_file, config_dir, capsys):
    target = tmp_path / "people.db.thresholds.json"
    args = ["calibrate", "--folder", str(ATT), "--detector", "hog", "--target", "best-accuracy"]
    code = main([*args, "--write", str(target), "--cache", cache_file, "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and f"note: the gallery {tmp_path / 'people.db'} uses it" in out, out


def test_calibrate_refuses_an_unsupported_far_target(tmp_path, cache_file, config_dir, capsys):
    args = [
        "calibrate",
        "--folder",
        str(ATT),
        "--detector",
        "hog",
        "--target",
        "far=0.001",
        "--cache",
        cache_file,
        "--quiet",
    ]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "far=0.001 cannot be measured" in err and "1,000 impostor" in err and "there are 60" in err
    assert "--force" in err and "Traceback" not in err
    assert not (config_dir / "thresholds.json").exists()

    # more impostor pairs make it measurable...
    assert main(args[:-3] + ["--target", "far=0.01", "--impostors", "100"] + args[-3:]) == 0
    assert read_calibrations(config_dir / "thresholds.json")[DEFAULT_MODEL].criterion == "far=0.01"
    capsys.readouterr()
    # ...and --force saves it anyway, with a warning
    assert main(args + ["--force"]) == 0
    assert "warning: forced" in capsys.readouterr().out
    assert read_calibrations(config_dir / "thresholds.json")[DEFAULT_MODEL].criterion == "far=0.001"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--lfw-pairs", "pairs.txt"], "needs --root"),
        (["evaluate", "--pairs-same", "a.txt", "--root", "."], "needs --pairs-different"),
        (["evaluate", "--folder", "no/such/folder"], "not a directory"),
        (["evaluate", "--lfw-pairs", "no/such/pairs.txt", "--root", "."], "file not found"),
        (["calibrate", "--folder", "x", "--target", "far=high"], "the FAR must be a number"),
        (["calibrate", "--folder", "x", "--target", "fnr=0.1"], "expected far=RATE"),
        (["evaluate", "--identify", "x", "--face", "centre"], "--face centre is not for --identify"),
    ],
    ids=["no-root", "no-different", "no-folder", "no-pairs-file", "bad-far", "bad-target", "identify-centre"],
)
def test_errors_exit_2_with_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv + ["--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_data_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate"])
    assert exc.value.code == 2


def test_calibrate_counts_a_repeated_pair_once(tmp_path, cache_file, config_dir):
    # one impostor pair listed 1,000 times made 'far=0.001' measurable: a threshold saved from 6 comparisons
    same = tmp_path / "same.txt"
    same.write_text(
        "".join(f"s{s}/1.pgm s{s}/2.pgm\n" for s in (3, 4, 5, 6)) + "s3/2.pgm s3/1.pgm\ns7/1.pgm s7/1.pgm\n"
    )
    different = [f"s{s}/1.pgm s{s + 1}/1.pgm\n" for s in (3, 4, 5, 6, 7)] + ["s3/1.pgm s4/1.pgm\n"] * 1000
    (tmp_path / "different.txt").write_text("".join(different))
    args = ["calibrate", "--pairs-same", same, "--pairs-different", tmp_path / "different.txt", "--root", ATT]
    args += ["--target", "far=0.001", "--cache", cache_file, "--quiet", "--out", tmp_path / "out"]
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert "1,000 impostor comparisons and there are 5" in done.stderr, done.stderr
    assert "1002 pair(s) repeated or of an image with itself" in done.stderr
    assert not (config_dir / "thresholds.json").exists()
    (tmp_path / "different.txt").write_text("".join(different) + "s3/1.pgm s3/2.pgm\n")
    done = run_cli(*args)
    assert done.returncode == 2 and "s3/2.pgm is listed as both the same person and" in done.stderr, done.stderr


@pytest.mark.parametrize("flag", ["--lfw-pairs", "--pairs-same"])
def test_a_pairs_file_that_is_a_fifo_or_not_utf8_is_a_one_line_error(tmp_path, flag):
    # A dataset handed over (a tar extracts FIFOs) whose pairs file is a FIFO: `evaluate` and `calibrate`
    # waited for ever for a writer (killed after 60 s); a pairs file that is not UTF-8 was an error naming
    # neither the file nor the place. Both are one line naming the file, at once.
    fifo, other = tmp_path / "pairs.txt", tmp_path / "different.txt"
    os.mkfifo(fifo)
    other.write_text("a.jpg\tb.jpg\n")
    extra = ["--pairs-different", str(other)] if flag == "--pairs-same" else []
    command = [SIAMFACE] if SIAMFACE else [sys.executable, "-m", "siamface"]
    try:
        done = subprocess.run(
            [*command, "evaluate", flag, str(fifo), *extra, "--root", str(tmp_path), "--no-cache", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"evaluate {flag} FIFO did not end in 60 s")
    assert done.returncode == 2 and f"{fifo}: not a regular file" in done.stderr, done.stderr
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Jos\xe9\t1\t2\n".encode("latin-1"))
    done = run_cli("calibrate", flag, latin, *extra, "--root", tmp_path, "--target", "eer", "--no-cache", "--quiet")
    assert done.returncode == 2 and f"{latin}: not UTF-8 text (byte 3" in done.stderr, done.stderr
