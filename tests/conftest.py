"""Shared fixtures. Every face image comes from tests/fixtures/att (AT&T faces, see fixtures/SOURCE.md);
colour, rotated, scaled, multi-face and faceless images are derived from them here, at test time."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
ATT = FIXTURES / "att"
TURN = FIXTURES / "att_turn" / "s26"
FRONTAL, TURNED_RIGHT, FRONTAL_2, TURNED_LEFT = 1, 2, 3, 5  # s26: yaw about -0.04, -0.21, 0.01, +0.32


def att(subject: int, image: int) -> Path:
    return ATT / f"s{subject}" / f"{image}.pgm"


def planted_gallery(folder: Path) -> Path:
    """An empty file `folder`/people.db owned by nobody (uid 65534) and writable by all: what another user
    plants where a gallery will be made (the tests run as root, who may give it away)."""
    folder.mkdir(exist_ok=True)
    planted = folder / "people.db"
    planted.touch()
    os.chown(planted, 65534, 65534)
    planted.chmod(0o666)
    return planted


def att_rgb(subject: int, image: int, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    """An AT&T face as an RGB array, optionally tinted (per-channel gain) to make it colour."""
    gray = np.asarray(Image.open(att(subject, image)), np.float32)
    rgb = np.stack([gray * t for t in tint], axis=2)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def scene(faces: list[tuple[np.ndarray, float, tuple[int, int]]], size=(480, 640)) -> np.ndarray:
    """A textured background with faces pasted at (x, y), each scaled by its factor."""
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = (90 + 40 * np.sin(xx / 37.0) + 30 * np.cos(yy / 23.0)).astype(np.float32)
    canvas = np.stack([base * 0.9, base, base * 1.1], axis=2) + rng.normal(0, 4, (h, w, 3))
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    for face, factor, (x, y) in faces:
        img = Image.fromarray(face).resize(
            (round(face.shape[1] * factor), round(face.shape[0] * factor)), Image.BICUBIC
        )
        arr = np.asarray(img)
        canvas[y : y + arr.shape[0], x : x + arr.shape[1]] = arr
    return canvas


def s26(image: int) -> np.ndarray:
    """s26's photo (grey) enlarged into a 640x480 frame, as a webcam would see a face."""
    face = np.repeat(np.asarray(Image.open(TURN / f"{image}.pgm").convert("L"))[:, :, None], 3, axis=2)
    return scene([(face, 2.0, (220, 100))])


def planar_turn(frame: np.ndarray, degrees: float) -> np.ndarray:
    """The frame as a flat picture turned about its vertical axis (perspective), as a photo held and
    rotated in front of the camera would look."""
    import cv2

    h, w = frame.shape[:2]
    a, f = np.deg2rad(degrees), 700.0
    corners = np.float32([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    seen = [[f * x * np.cos(a) / (x * np.sin(a) + f) + w / 2, f * y / (x * np.sin(a) + f) + h / 2] for x, y in corners]
    m = cv2.getPerspectiveTransform(corners + np.float32([w / 2, h / 2]), np.float32(seen))
    return cv2.warpPerspective(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def held_photo(subject: int, image: int) -> np.ndarray:
    """An AT&T photo with a white paper margin, held up in a scene: a printed photo's straight border."""
    photo = np.pad(att_rgb(subject, image), ((10, 10), (10, 10), (0, 0)), constant_values=235)
    return scene([(photo, 2.0, (200, 80))])


def blended_face(subject: int, image: int) -> np.ndarray:
    """The same face melted into the scene through a soft oval: a head with no straight edge around it."""
    import cv2

    frame = scene([])
    face = cv2.resize(att_rgb(subject, image), None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    h, w = face.shape[:2]
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2 + 10), (int(w * 0.36), int(h * 0.42)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 9)[:, :, None]
    region = frame[80 : 80 + h, 200 : 200 + w].astype(np.float32)
    frame[80 : 80 + h, 200 : 200 + w] = (mask * face + (1 - mask) * region).astype(np.uint8)
    return frame


def phone_screen(subject: int, image: int, scan_lines: bool = True) -> np.ndarray:
    """An AT&T face shown on a phone held up in a scene: a dark bezel around a backlit screen (brighter
    gamma, a blue cast, faint scan lines).

    The scan lines (every third row 15 % darker, a 6 px stripe in the scene) are a strong screen cue for the
    liveness tests, but a phone's pixel rows are far finer than a camera at arm's length resolves, and
    FaceNet, half of the default model, cannot read a face through them (s3/1: FaceNet cosine 0.14 to the
    person's own photos, 0.93 without them): a test that needs the screen to match its person (so that only
    liveness can deny it) takes ``scan_lines=False``."""
    face = att_rgb(subject, image).astype(np.float32) / 255.0
    shown = 255 * face**0.7 * np.array([0.92, 0.97, 1.08])
    if scan_lines:
        shown[::3] *= 0.85
    shown = np.pad(np.clip(shown, 0, 255).astype(np.uint8), ((18, 18), (8, 8), (0, 0)), constant_values=15)
    return scene([(shown, 2.0, (200, 60))])


def faceless(size=(240, 320)) -> np.ndarray:
    """A real-looking but faceless image: smooth gradients, stripes and noise."""
    rng = np.random.default_rng(1)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    r = 120 + 80 * np.sin(xx / 17.0)
    g = 100 + 60 * np.cos(yy / 11.0)
    b = 80 + 50 * np.sin((xx + yy) / 29.0)
    img = np.stack([r, g, b], axis=2) + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def run_cli(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`siamface ARGS` run in this process through `siamface.cli.main`, shaped as `subprocess.run` returns it
    (returncode, stdout, stderr as text): the models loaded by an earlier call are reused, no interpreter is
    started. Each call is isolated as a fresh process would be: its own stdout, stderr and empty stdin, the
    logging set up by `main` removed afterwards, `env` (added to the environment) and the working folder
    restored; SystemExit gives the exit code (argparse's usage errors, --help, --version), and an uncaught
    exception the traceback on stderr with exit code 1, as the interpreter would.

    One call at a time (stdout and stderr are swapped process-wide). Tests that need a real process (exit
    status through the OS, signals, the console script, another user) use subprocess."""
    from siamface.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    saved_env = dict(os.environ)
    saved_cwd, saved_stdin = os.getcwd(), sys.stdin
    root.handlers = []  # as in a new process: main's logging.basicConfig writes to this call's stderr
    os.environ.update(env or {})
    sys.stdin = io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, level = saved_logging
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["siamface", *argv], code, out.getvalue(), err.getvalue())


def pytest_collection_modifyitems(items):
    """`slow` (registered in pyproject.toml) also marks every test that uses the PostgreSQL server: the
    backend="postgres" runs and the PostgreSQL-only tests (the cluster's start-up, a database per test)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "postgres_gallery" in item.fixturenames or (callspec and callspec.params.get("backend") == "postgres"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _isolated_config(tmp_path_factory):
    """Tests never read or write the user's calibration file."""
    import os

    os.environ["SIAMFACE_CONFIG_DIR"] = str(tmp_path_factory.mktemp("config"))
    yield


@pytest.fixture(scope="session")
def pipeline():
    from siamface import Pipeline

    return Pipeline()


@pytest.fixture(scope="session")
def group_scene() -> np.ndarray:
    """Three different people in one 640x480 picture: s3 largest, then s5, then s7."""
    return scene(
        [
            (att_rgb(3, 1, (1.05, 0.95, 0.85)), 2.2, (30, 120)),
            (att_rgb(5, 1, (0.9, 1.0, 1.1)), 1.5, (300, 60)),
            (att_rgb(7, 1), 1.0, (500, 300)),
        ]
    )


@pytest.fixture(scope="module")
def private_model_cache(tmp_path_factory):
    """A private $SIAMFACE_CACHE for a module whose subprocesses write caches, reusing the read-only
    converted ONNX models by symlink (no re-conversion)."""
    from siamface.embedding.dlib_onnx import default_cache_dir

    target = tmp_path_factory.getbasetemp() / "siamface-cache"
    target.mkdir(exist_ok=True)
    source = default_cache_dir()
    if source.is_dir():
        for onnx in source.glob("*.onnx"):
            link = target / onnx.name
            if not link.exists():
                os.symlink(onnx, link)
    old = os.environ.get("SIAMFACE_CACHE")
    os.environ["SIAMFACE_CACHE"] = str(target)
    yield target
    if old is None:
        os.environ.pop("SIAMFACE_CACHE", None)
    else:
        os.environ["SIAMFACE_CACHE"] = old


# -- a head turning, frame by frame (liveness sessions) ---------------------------------------------------
TURN_S23 = FIXTURES / "att_turn" / "s23"
#: s23's photos (mirrored: "m"), ordered by yaw: a path from frontal to turned, each way (yaw in eye distances,
#: positive towards the image's right: the user's own left)
S23_FRONTAL = ["7", "1", "m7", "m1"]
S23_RIGHT = ["10", "m3", "m5", "4", "6", "9"]  # -0.07 ... -0.24
S23_LEFT = ["m10", "3", "5", "m4", "m6", "m9"]  # +0.07 ... +0.24
#: s23's poses for a head that moves a little (a passive session needs its 3-D movement): frontal, a small turn
#: to the user's left (yaw up to +0.13) and back. Swapped frame by frame they are stills, which jump
S23_POSES = ["7", "1", "m10", "3", "5", "3", "m10", "1"]
#: the live stand-in: the same poses as a continuous movement, each photo cross-faded into the next over 5 frames
#: (a camera sees the poses in between; `s23_face` reads a (photo, next photo, weight of the next) triple)
S23_MOVING = [(a, b, j / 5) for a, b in zip(S23_POSES, S23_POSES[1:] + S23_POSES[:1]) for j in range(5)]


def s23_face(name) -> np.ndarray:
    """One of s23's photos ("m" first: mirrored), grey, as an RGB array; or a cross-fade (photo, next, weight)."""
    if isinstance(name, tuple):
        a, b, weight = name
        blend = (1 - weight) * s23_face(a).astype(np.float32) + weight * s23_face(b).astype(np.float32)
        return blend.round().astype(np.uint8)
    mirrored = name.startswith("m")
    grey = np.asarray(Image.open(TURN_S23 / f"{name.lstrip('m')}.pgm").convert("L"))
    grey = grey[:, ::-1] if mirrored else grey
    return np.repeat(grey[:, :, None], 3, axis=2)


def camera_frame(name: str, rng: np.random.Generator, grey: bool = True) -> np.ndarray:
    """s23's photo `name` in a 640x480 scene as a camera would give it: never the same pixels twice (sensor
    noise, a pixel or two of sway); grey for a grey camera."""
    return s23_frame(name, rng, grey)


def s23_frame(name: str, rng: np.random.Generator, grey: bool = True, scale: float = 2.0, roll: float = 0.0):
    """`camera_frame` with the head nearer (`scale`) or tilted in the image plane (`roll` degrees, positive
    towards the image's right: the user's own left shoulder)."""
    import cv2

    face = s23_face(name)
    if roll:
        h, w = face.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), -roll, 1.0)
        face = cv2.warpAffine(face, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
    x, y = int(266 - 46 * scale) + dx, int(212 - 56 * scale) + dy  # the face's centre stays put
    frame = scene([(face, scale, (x, y))]).astype(np.float32)
    frame = np.clip(frame + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8)
    if grey:
        frame = np.repeat(frame.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    return frame


def att_frame(subject: int, image: int, rng: np.random.Generator) -> np.ndarray:
    """An AT&T subject's photo where `camera_frame` puts s23's face (same size and place, a camera's noise and
    sway, grey): a still of another person swapped in for s23 without a jump."""
    dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
    frame = scene([(att_rgb(subject, image), 2.0, (174 + dx, 100 + dy))]).astype(np.float32)
    frame = np.clip(frame + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8)
    return np.repeat(frame.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)


class TurningHead:
    """A person in front of a camera who follows the prompts: frontal while asked to look or hold, and when a
    prompt comes, a continuous movement (one step further each frame: a turn through s23's photos ordered by
    yaw, a tilt of 3 degrees, or coming closer by 6 %), then back to frontal."""

    def __init__(self, seed: int = 0, grey: bool = True) -> None:
        self.rng = np.random.default_rng(seed)
        self.grey = grey
        self.doing = None
        self.step = 0
        self.i = 0

    def frame(self, prompt: str | None) -> np.ndarray:
        prompt = prompt or ""
        doing = next((w for w in ("turn", "tilt", "closer") if w in prompt), None)
        side = "left" if "left" in prompt else "right"
        if doing is not None:
            key = (doing, side)
            self.step = self.step + 1 if self.doing == key else 1
            self.doing = key
        else:
            self.doing, self.step = None, 0
        frontal = S23_FRONTAL[self.i % len(S23_FRONTAL)]
        self.i += 1
        if doing == "turn":
            path = S23_LEFT if side == "left" else S23_RIGHT
            return s23_frame(path[min(self.step, len(path)) - 1], self.rng, self.grey)
        if doing == "tilt":
            roll = min(3.0 * self.step, 18.0) * (1 if side == "left" else -1)
            return s23_frame(frontal, self.rng, self.grey, roll=roll)
        if doing == "closer":
            return s23_frame(frontal, self.rng, self.grey, scale=2.0 * (1 + 0.06 * min(self.step, 6)))
        if "move" in prompt:  # a passive session asks for a small movement
            return s23_frame(S23_MOVING[self.i % len(S23_MOVING)], self.rng, self.grey)
        return s23_frame(frontal, self.rng, self.grey)


#: Browsers the headless page tests drive (Debian's chromium first).
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium_paths() -> tuple[str, str]:
    """The headless browser and its chromedriver, or skip the test: `make test` installs them as root."""
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "headless Chromium needs Debian's chromium and chromium-driver "
            f"(found browser: {binary}, chromedriver: {driver}); `make test` installs them as root"
        )
    return binary, driver


def plant_links(folder: Path, names, victims: Path) -> list[Path]:
    """A link at each of `names` in `folder` (made) to a file of `victims` holding b"keep me", as someone
    who may write a shared output folder plants them; returns the targets (compare with `b"keep me"` later)."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = []
    for name in names:
        target = victims / f"victim-{name}"
        target.write_bytes(b"keep me")
        (folder / name).symlink_to(target)
        targets.append(target)
    return targets


def exported_model(
    weight: float = 0.1,
    name: str | None = None,
    *,
    meta: dict | None = None,
    batch="n",
    output=("n", 4),
    external: str = "",
) -> bytes:
    """A tiny model in the format `siamface train` exports (input 'input' (n, 3, 8, 8), output 'embedding', 4-d,
    siamface.* metadata), whose one weight tells it apart (a float, or an array of shape (192, 4)). `meta`:
    entries replacing the metadata's (a str value starting ``raw:`` is stored as it is, not as JSON);
    `batch`, `output`: the input's first dimension and the output shape the graph declares; `external`: its weight kept in that file instead (ONNX
    external data), not in the model."""
    from onnx import TensorProto, helper, numpy_helper

    values = np.broadcast_to(np.asarray(weight, np.float32), (192, 4))
    w = numpy_helper.from_array(np.ascontiguousarray(values), "w")
    if external:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("length", str(values.nbytes))):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, list(output))],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    entries = {"input_size": 8, "channels": 3, "mean": 0, "std": 1, "embedding_size": 4, "metric": "cosine"}
    entries |= {"threshold": 0.5, "chip": {"size": 8, "padding": 0.25}} | ({"name": name} if name is not None else {})
    entries |= meta or {}
    stored = {k: v[4:] if isinstance(v, str) and v.startswith("raw:") else json.dumps(v) for k, v in entries.items()}
    helper.set_model_props(model, {f"siamface.{k}": v for k, v in stored.items()})
    return model.SerializeToString()
