"""The `siamface` command: exit codes, text and JSON output, errors. Most run in this process through
`siamface.cli.main` (`run`, see conftest.run_cli); the exit codes 0, 1 and 2 are also checked through a real
process: the installed console script and `python -m siamface`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import att, faceless, run_cli
from PIL import Image

from siamface.embedding import create_encoder
from siamface.pipeline import DEFAULT_MODEL

# the console script installed next to the interpreter running the tests (the venv's bin/)
_BESIDE = Path(sys.executable).parent / "siamface"
SIAMFACE = str(_BESIDE) if _BESIDE.exists() else (shutil.which("siamface") or "")


run = run_cli


def run_process(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    """`siamface ARGS` in a new process: the console script, or `python -m siamface` with `module`."""
    cmd = [sys.executable, "-m", "siamface"] if module or not SIAMFACE else [SIAMFACE]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_entry_point_is_installed():
    assert SIAMFACE, "the siamface console script is not on PATH: pip install -e ."


def test_verify_same_person_exits_0():
    out = run_process("verify", att(11, 1), att(11, 2))  # the console script
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("SAME person") and "threshold" in out.stdout


def test_verify_different_people_exits_1_with_json():
    out = run_process("verify", att(11, 1), att(4, 1), "--json", module=True)
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["same"] is False and data["model"] == DEFAULT_MODEL
    assert data["similarity"] < data["threshold"] and len(data["a"]["box"]) == 4


def test_verify_without_face_exits_2_with_clear_message(tmp_path):
    empty = tmp_path / "wall.png"
    Image.fromarray(faceless()).save(empty)
    out = run("verify", empty, att(11, 1))
    assert out.returncode == 2
    assert "wall.png: no face found" in out.stderr and "Traceback" not in out.stderr


def _half_jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.open(att(11, 1)).save(buf, format="JPEG")
    return buf.getvalue()[:600]


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (_half_jpeg(), "truncated or corrupt"), (b"hello", "not an image")],
    ids=["empty", "truncated", "text"],
)
def test_verify_bad_file_exits_2(tmp_path, content, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    out = run("verify", bad, att(11, 1))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_verify_missing_file_exits_2():
    out = run_process("verify", "no/such/file.jpg", att(11, 1))
    assert out.returncode == 2 and "file not found" in out.stderr


def test_detect_writes_annotated_image(tmp_path, group_scene):
    src, dst = tmp_path / "group.jpg", tmp_path / "annotated.png"
    Image.fromarray(group_scene).save(src, quality=95)
    out = run("detect", src, "--out", dst, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["faces"]) == 3 and len(data["faces"][0]["landmarks"]) == 5
    drawn = np.asarray(Image.open(dst))
    assert drawn.shape == group_scene.shape and not np.array_equal(drawn, group_scene)


def test_detect_out_of_a_suffix_that_cannot_be_written_is_a_usage_error(tmp_path):
    # `detect --out faces.heic` (or a name without a suffix) found the faces, then died with Pillow's
    # "ValueError: unknown file extension" traceback and exit 1, which for detect means "no face"
    for name in ("faces.heic", "faces", "faces.pdf"):
        out = run("detect", att(5, 1), "--out", tmp_path / name)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"{name}: not an image file name to write" in out.stderr and ".png, .jpg" in out.stderr
    assert not list(tmp_path.iterdir())
    out = run("detect", att(5, 1), "--out", tmp_path / "faces.TIF")
    assert out.returncode == 0 and Image.open(tmp_path / "faces.TIF").format == "TIFF"


def test_embed_json_has_unit_embeddings():
    out = run("embed", att(33, 1), "--json", "--detector", "hog")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    vector = np.array(data["faces"][0]["embedding"])
    assert vector.shape == (create_encoder(DEFAULT_MODEL).info.embedding_size,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-4
    assert data["detector"] == "hog"


@pytest.mark.parametrize("command", ["detect", "embed"])
def test_json_into_a_closed_pipe_is_quiet(command):
    """`siamface detect --json ... | head`: the reader leaves early; no traceback, the SIGPIPE exit code."""
    cmd = [SIAMFACE or sys.executable, *([] if SIAMFACE else ["-m", "siamface"]), command, att(3, 1), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the pipe's reader is gone before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_watch_out_help_lists_every_writable_suffix():
    from siamface.live.render import WRITABLE_VIDEO_SUFFIXES

    out = run("watch", "--help")
    text = " ".join(out.stdout.split())
    assert all(suffix in text for suffix in WRITABLE_VIDEO_SUFFIXES)


def test_threshold_option_changes_the_decision():
    assert run("verify", att(11, 1), att(11, 2), "--threshold", "0.9999").returncode == 1


@pytest.mark.parametrize("command", ["verify", "detect", "embed", "models"])
def test_help_on_every_command(command):
    out = run(command, "--help")
    assert out.returncode == 0 and "usage: siamface " + command in out.stdout


def test_unknown_detector_is_a_usage_error():
    out = run("verify", att(11, 1), att(11, 2), "--detector", "yolo")
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["verfy", "a.jpg", "b.jpg"],
            "siamface: error: argument COMMAND: invalid choice: 'verfy' (did you mean verify?)",
        ),
        (
            ["verify", "a.jpg", "b.jpg", "--treshold", "0.9"],
            "siamface verify: error: unrecognized arguments: --treshold 0.9 (did you mean --threshold?)",
        ),
        (["verify", "a.jpg", "--detector", "retina"], "invalid choice: 'retina' (did you mean retinaface?)"),
        (
            ["people", "lst", "-g", "p.db"],
            "siamface people: error: argument ACTION: invalid choice: 'lst' (did you mean list?)",
        ),
        (
            ["gallery", "stats", "-g", "p.db", "--jsn"],
            "siamface gallery stats: error: unrecognized arguments: --jsn (did you mean --json?)",
        ),
        (["enroll", "alice", "a.jpg"], "siamface enroll: error: the following arguments are required: --gallery/-g"),
    ],
)
def test_a_usage_mistake_is_one_line_naming_the_fix(args, line, monkeypatch):
    """A typo in a command, an action, a choice or an option: one line, said by the command it was given to,
    with the nearest word and where the help is; not seven lines of usage above it."""
    monkeypatch.delenv("SIAMFACE_GALLERY", raising=False)
    out = run(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and line in out.stderr and "--help'" in out.stderr, out.stderr


def test_a_choice_with_no_near_one_still_lists_them_all():
    out = run("verify", "a.jpg", "b.jpg", "--detector", "zzz")
    assert out.returncode == 2 and "choose from 'blazeface'" in out.stderr and out.stderr.count("\n") == 1


def test_help_says_what_the_code_does():
    """The help texts a new user reads first, against the code: every gallery command takes a postgresql://
    URL (verify --claim too), `siamface gallery` lists migrate and export-images, serve lists every route, the
    evaluate plots need the plot extra, and train's learning rate is 1e-4 for facenet as for resnet."""

    def words(*command: str) -> str:
        return " ".join(run(*command, "--help").stdout.split())

    assert "FILE|URL" in words("verify") and "postgresql://" in words("verify")
    assert "gallery file" not in words("people") + words("gallery")
    top = words()
    assert "migrate" in top and "kept face images" in top
    assert "/v1/embed" in words("serve") and "/v1/whoami" in words("serve")
    assert "siamface[plot]" in words("evaluate")
    assert "1e-4 resnet and facenet" in words("train") and "(default cosine)" in words("train")


def test_models_lists_detectors_and_models():
    out = run("models", "--json")
    data = json.loads(out.stdout)
    models = {m["name"]: m for m in data["models"]}
    assert "retinaface" in data["detectors"] and models["dlib-resnet"]["embedding_size"] == 128
    facenet, fused = models["facenet"], models["dlib-flip+facenet"]
    assert facenet["embedding_size"] == 512 and "160x160 RGB box crop" in facenet["input"]
    assert fused["embedding_size"] == 640 and " + " in fused["input"]
    mirror = ", averaged with its mirror image"
    assert fused["input"].split(" + ")[0].endswith(mirror) and mirror not in fused["input"].split(" + ")[1]
    assert mirror not in models["dlib+facenet"]["input"] and fused["input"] != models["dlib+facenet"]["input"]
    for m in (facenet, fused):  # 1:N by FPIR: stricter as the gallery grows
        by_size = list(m["identify_threshold_by_templates"].values())
        assert m["identify_fpir"] == 0.01 and by_size == sorted(by_size) and m["threshold"] < by_size[-1] < 1
    assert [m["name"] for m in data["models"] if m["default"]] == [DEFAULT_MODEL] == ["sface+dlib"]
    assert data["default_detector"] == "retinaface"
    liveness = {m["name"]: m for m in data["liveness"]}
    assert {"passive_v5", "passive_v5-grey", "minifasnet_v2", "minifasnet_v1se", "colour", "frame"} <= set(liveness)
    assert [m["name"] for m in data["liveness"] if m.get("default")] == ["passive_v5"]
    shipped = {f["file"]: f for f in data["shipped_files"]}
    assert shipped["liveness/models/minifasnet_v2.onnx"]["training_data"][0].startswith("upstream:silent-face")
    assert not [f for f in shipped if "passive_v" in f]
    assert (
        liveness["minifasnet_v2"]["licence"].startswith("Apache-2.0")
        and "Silent-Face" in liveness["minifasnet_v2"]["source"]
    )
    text = run("models").stdout
    assert (
        "  sface+dlib (default): 256-d" in text
        and "  dlib-flip+facenet: 640-d" in text
        and "retinaface (default)" in text
    )
    assert "liveness models:" in text and "licence: Apache-2.0" in text and "training data:" in text


def test_serve_takes_no_json_option():
    # serve prints a start line and a log: --json would be accepted and do nothing, so it is not offered
    # (a usage error, exit 2, where it is given); its keys commands keep theirs
    out = run("serve", "--help")
    assert out.returncode == 0 and "--threshold" in out.stdout and "--json" not in out.stdout
    assert "--json" in run("keys", "list", "--help").stdout


def test_only_evaluate_lists_the_liveness_data_option():
    assert "--liveness DIR" in run("evaluate", "--help").stdout
    calibrate = run("calibrate", "--help").stdout
    assert "--identify DIR" in calibrate and "--liveness" not in calibrate
