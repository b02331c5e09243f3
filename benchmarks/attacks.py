"""Presentation attacks we build ourselves, each through the real service (`siamface serve`, in a thread of this
process, its session clock moved by the benchmark: frames "arrive" at camera rate without waiting) and the
real `authenticate` loop (`siamface.live.Authenticator`, frames timed by their capture time), with APCER per
attack class and BPCER per presentation on the live recordings of ../shared (ISO/IEC 30107-3 terms: a
presentation is one capture session; APCER = share of attack presentations whose liveness session passed,
BPCER = share of bona fide presentations whose session failed).

    python benchmarks/attacks.py [--data ../shared/datasets] [--n 50] [--frames 25] [--faces deepface|celeba] [--only CLASS ...]

Attack classes (faces: the deepface_pairs colour photos in turn, or with ``--faces celeba`` the first photo of each
person of celeba_ids' held-out third; s23 of AT&T for the prompted ones):

* ``print``: a colour photo printed (paper-white margin, duller colours, softer), held up in a colour scene
  with a hand's sway; ``screen``: shown on a phone (dark bezel, brighter gamma, a blue cast, faint lines);
* ``composite``: the colour face cut out and pasted into a colour scene (soft oval edge);
* ``grey_on_colour``: a grey photo enlarged into a colour scene, every other one with a slight colour tint;
  these four against ``--liveness passive`` (the default) on a colour camera;
* ``passive_stills``: stills of one person at different head poses swapped frame by frame: each person of
  celeba_ids' held-out third with at least 3 photos in turn, their photos aligned on the eyes (the face stays
  put, no jump of place or size), a photo drawn at random each frame, pasted into a colour scene as
  ``composite`` (which the passive check calls live) — against ``--liveness passive``;
  ``passive_stills_ordered``: the same photos ordered by yaw, shown up and down that order (the poses as near
  a path as the person's photos allow: the attacker who orders their stills);
* ``stills``: against ``--liveness active``: a frontal still, and when a prompt is shown a still that answers it
  (a turned photo, the frontal one tilted, or enlarged), each frame with fresh camera noise;
* ``replay``: a recorded session of a person following the prompts (s23 turning, tilting, coming closer,
  frame by frame), replayed frame for frame into a new session (``active``);
* ``reuse``: a passed session's id sent again with a claim after its first use.

The passive attacks are presented for ``--frames`` frames each (default 25: 3.75 s at 0.15 s a frame); a session
still pending then (waiting for a movement it never sees) is not granted, and is counted apart as "pending".

Bona fide (``--liveness passive``, colour camera), per presentation: on each live recording of ../shared
(videos_hamilton's clip; replay_videos' apfol_real2.webm), every 3rd frame (10 a second), a session opens at
every second and runs on the following frames until it is decided, the face becomes another person's or the
recording ends. A presentation is one face that stays, of one person: when it leaves the shot for more than
0.5 s the session restarts on the next face; where the face the session follows becomes another person's (a
film's cut: its embedding against the face before under the model's own 1:1 threshold, the test the
sessions make, `identity_cuts`) the presentation ends, as the sessions end theirs. A presentation that ends
undecided is reported apart, not counted in BPCER (it is ISO/IEC 30107-3's bona fide presentation non-response,
BPNRR, printed beside it): "too short" when it ended before it could pass (fewer than the
session's 10 faces or 1.5 s), "pending" when it was long enough but showed no head movement yet; each with
its reason, and per recording the identity cuts found. ``replay_video``: on replay_videos'
apfol_fake2_replay.webm, a phone replaying a person to a webcam (a recorded attack, APCER), a session opened
every second and run to the recording's end (whatever the attacker shows: not cut).
Active-mode BPCER needs people answering prompts; the recordings cannot, so it is not measured here.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "service"))

from conftest import S23_FRONTAL, S23_LEFT, S23_RIGHT, TurningHead, s23_frame, scene  # noqa: E402

FRAME_S = 0.15  # the camera's frame interval
PASSIVE_ATTACKS = (
    "print",
    "screen",
    "composite",
    "grey_on_colour",
    "replay_video",
    "passive_stills",
    "passive_stills_ordered",
)
CLASSES = PASSIVE_ATTACKS + ("stills", "replay", "reuse")
PASSIVE = PASSIVE_ATTACKS + ("bona_fide",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def colour_faces(data: Path, pipeline, source: str = "deepface", limit: int = 64) -> list[np.ndarray]:
    """The largest face of each deepface_pairs photo (or the first photo of each person of celeba_ids' last third:
    people no threshold was chosen on), cut with room around it (RGB), at most `limit`."""
    from siamface.image import load_image

    out = []
    if source == "celeba":
        people = sorted(p for p in (data / "celeba_ids").iterdir() if p.is_dir())
        paths = [sorted(p.glob("*.jpg"))[0] for p in people[2 * len(people) // 3 :]]  # the held-out third
    else:
        paths = sorted((data / "deepface_pairs" / "dataset").glob("*.jpg"))
    for path in paths:
        if len(out) >= limit:
            break
        image = load_image(path)
        faces = pipeline.detect(image)
        if not len(faces):
            continue
        x1, y1, x2, y2 = faces.boxes[int(np.argmax(faces.areas))]
        w, h = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        l, t = int(max(0, cx - 0.9 * w)), int(max(0, cy - 1.0 * h))
        r, b = int(min(image.shape[1], cx + 0.9 * w)), int(min(image.shape[0], cy + 1.0 * h))
        crop = image[t:b, l:r]
        if min(crop.shape[:2]) >= 60:
            out.append(cv2.resize(crop, (150, int(150 * crop.shape[0] / crop.shape[1]))))
    return out


def pose_series(data: Path, pipeline, limit: int = 50) -> list[list[np.ndarray]]:
    """Per person of celeba_ids' held-out third with at least 3 photos (at most `limit` people): their photos'
    largest faces aligned on the eyes (a similarity mapping the eye centres to fixed points of a 150x190 crop),
    ordered by yaw, then back down (a path through their poses: first, ..., last, ..., second)."""
    from siamface.image import load_image
    from siamface.liveness.active import yaw_ratio

    people = sorted(p for p in (data / "celeba_ids").iterdir() if p.is_dir())
    out = []
    for person in people[2 * len(people) // 3 :]:
        if len(out) >= limit:
            break
        posed = []
        for path in sorted(person.glob("*.jpg")):
            image = load_image(path)
            faces = pipeline.detect(image)
            if not len(faces):
                continue
            k = np.asarray(faces.data["keypoints"][int(np.argmax(faces.areas))], np.float32)
            eyes = np.float32([[50, 80], [100, 80]])
            m, _ = cv2.estimateAffinePartial2D(k[:2], eyes)
            if m is not None:
                posed.append((yaw_ratio(k), cv2.warpAffine(image, m, (150, 190), borderMode=cv2.BORDER_REPLICATE)))
        if len(posed) >= 3:
            posed.sort(key=lambda p: p[0])
            stills = [still for _, still in posed]
            out.append(stills + stills[-2:0:-1])
    return out


def held(picture: np.ndarray, rng, k: int) -> np.ndarray:
    """`picture` held in a colour scene by a hand: a sway of a few pixels and a degree, camera noise."""
    angle = 1.5 * np.sin(k / 3.0) + rng.normal(0, 0.3)
    h, w = picture.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    turned = cv2.warpAffine(picture, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    x, y = 220 + int(4 * np.sin(k / 2.0)) + int(rng.integers(-2, 3)), 90 + int(rng.integers(-2, 3))
    frame = scene([(turned, min(1.4, 380 / h, 400 / w), (x, y))]).astype(np.float32)
    return np.clip(frame + rng.normal(0, 2.5, frame.shape), 0, 255).astype(np.uint8)


def printed(face: np.ndarray) -> np.ndarray:
    f = face.astype(np.float32)
    grey = f.mean(axis=2, keepdims=True)
    f = 0.75 * f + 0.25 * grey  # duller inks
    f = 30 + 0.8 * f  # paper: lifted blacks, lower contrast
    f = cv2.GaussianBlur(f, (3, 3), 0.8)
    return np.pad(np.clip(f, 0, 255).astype(np.uint8), ((12, 12), (12, 12), (0, 0)), constant_values=238)


def on_screen(face: np.ndarray) -> np.ndarray:
    f = face.astype(np.float32) / 255.0
    shown = 255 * f**0.7 * np.array([0.92, 0.97, 1.08])
    shown[::3] *= 0.9
    shown = np.clip(shown, 0, 255).astype(np.uint8)
    return np.pad(shown, ((18, 18), (8, 8), (0, 0)), constant_values=15)


def composite(face: np.ndarray, rng, k: int) -> np.ndarray:
    frame = scene([]).astype(np.float32)
    big = cv2.resize(face, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    h, w = big.shape[:2]
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.36), int(h * 0.44)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 7)[:, :, None]
    x, y = 200 + int(3 * np.sin(k / 2.0)), 60 + int(rng.integers(-2, 3))
    h, w = min(h, 480 - y), min(w, 640 - x)
    region = frame[y : y + h, x : x + w]
    frame[y : y + h, x : x + w] = mask[:h, :w] * big[:h, :w] + (1 - mask[:h, :w]) * region
    return np.clip(frame + rng.normal(0, 2.5, frame.shape), 0, 255).astype(np.uint8)


def grey_on_colour(face: np.ndarray, tint: bool, rng, k: int) -> np.ndarray:
    grey = np.repeat(face.astype(np.float32).mean(axis=2, keepdims=True), 3, axis=2)
    if tint:
        grey = grey * np.array([1.05, 0.93, 0.82])
    picture = np.clip(grey, 0, 255).astype(np.uint8)
    factor = min(1.6, 410 / picture.shape[0], 420 / picture.shape[1])
    frame = scene([(picture, factor, (200 + int(3 * np.sin(k / 2.0)), 60))]).astype(np.float32)
    return np.clip(frame + rng.normal(0, 2.5, frame.shape), 0, 255).astype(np.uint8)


def still_for(prompt: str | None, rng) -> np.ndarray:
    """The stills attacker: the frontal photo, or one still answering the prompt shown (grey photos: active
    mode has no passive check)."""
    prompt = prompt or ""
    if "turn" in prompt:
        return s23_frame((S23_LEFT if "left" in prompt else S23_RIGHT)[-1], rng)
    if "tilt" in prompt:
        return s23_frame(S23_FRONTAL[0], rng, roll=16.0 if "left" in prompt else -16.0)
    if "closer" in prompt:
        return s23_frame(S23_FRONTAL[0], rng, scale=2.7)
    return s23_frame(S23_FRONTAL[0], rng)


# -- the two paths ------------------------------------------------------------------------------------------
class Service:
    """`siamface serve` with a liveness mode, s23 and the deepface people's first faces enrolled."""

    def __init__(self, folder: Path, mode: str, camera: str, enroll: dict) -> None:
        from service_support import Server

        self.server = Server(folder / f"{mode}.db", "--liveness", mode, "--camera", camera, "--min-size", "40")
        self.clock = Clock()
        self.server.service.sessions.clock = self.clock
        self.server.service.sessions.per_key = self.server.service.sessions.per_person = 10**6  # a benchmark
        self.server.service.lockout.max_failures = 10**6
        for name, images in enroll.items():
            self.server.request("POST", "/v1/people", fields={"name": name}, files=images)

    def session(self, claim: str, frames, limit: int = 120) -> tuple[dict, str, list]:
        """Open a session and send frames (a callable of the prompt shown, or a list) until it is decided."""
        from service_support import png_bytes

        opened = self.server.request("POST", "/v1/liveness/sessions", fields={"claim": claim})
        assert opened.status == 201, opened.body
        sid, state, sent = opened.body["session_id"], opened.body, []
        for i in range(limit):
            frame = frames(state.get("prompt")) if callable(frames) else (frames[i] if i < len(frames) else None)
            if frame is None:
                break
            answer = self.server.request(
                "POST", f"/v1/liveness/sessions/{sid}/frames", files=[("image", "f.png", png_bytes(frame))]
            )
            if answer.status == 200:
                state = answer.body
            elif answer.status == 422 and "session" in answer.body:
                state = answer.body["session"]
            else:
                raise RuntimeError(answer.body)
            sent.append(frame)
            self.clock.now += FRAME_S
            if state["state"] != "pending":
                break
        self.clock.now += 5.0
        return state, sid, sent

    def verify(self, claim: str, sid: str, probe: np.ndarray):
        from service_support import png_bytes

        fields = {"claim": claim, "liveness_session": sid}
        return self.server.request("POST", "/v1/verify", fields=fields, files=[("image", "p.png", png_bytes(probe))])

    def stop(self) -> None:
        self.server.stop()


def authenticate(pipeline, gallery, claim: str, mode: str, camera: str, frames, limit: int = 120) -> bool | None:
    """The real `authenticate` loop on frames (a callable of the last prompt, or a list): did its capture
    session pass (None: still pending when the frames ran out)?"""
    result = authenticator(pipeline, gallery, claim, mode, camera, frames, limit).capture.result
    return None if result is None else result.passed


def authenticator(pipeline, gallery, claim: str, mode: str, camera: str, frames, limit: int = 120):
    """`authenticate`'s loop after the frames (its capture session: `.capture`)."""
    from siamface.live import Authenticator, GalleryMatcher
    from siamface.liveness import PassiveCheck
    from siamface.video import Frame

    events: list[dict] = []
    passive = PassiveCheck(camera=camera) if mode in ("passive", "both") else None
    auth = Authenticator(
        pipeline, GalleryMatcher(gallery), claim, timeout=30, liveness=mode, passive=passive, on_event=events.append
    )
    for i in range(limit):
        prompts = [e["prompt"] for e in events if e["event"] == "challenge"]
        prompt = prompts[-1] if prompts else None
        frame = frames(prompt) if callable(frames) else (frames[i] if i < len(frames) else None)
        if frame is None:
            break
        auth.process(Frame(i, i * FRAME_S, frame, time.perf_counter()))
        if auth.capture.result is not None:
            break
    return auth


LIVE = ("videos_hamilton/short_hamilton_clip.mp4", "replay_videos/apfol_real2.webm")
REPLAYED = ("replay_videos/apfol_fake2_replay.webm",)


def recordings(data: Path, names=LIVE) -> list[tuple[str, list[np.ndarray]]]:
    """Presentations on recordings: from every second (10 frames at 10 a second) to the recording's end."""
    return [(Path(name).stem, frames[s:]) for name, frames in recorded(data, names) for s in windows(frames)]


def recorded(data: Path, names) -> list[tuple[str, list[np.ndarray]]]:
    """Each recording's frames, every 3rd (10 a second)."""
    from siamface.liveness.evaluate import video_frames

    return [(name, list(video_frames(data / name, 10_000))[::3]) for name in names]


def windows(frames: list) -> range:
    """Where the presentations open: every second (10 frames), while 15 frames remain."""
    return range(0, len(frames) - 15, 10)


class Faces:
    """Every face of a recording's frames, detected and embedded once (what a session is told of the face at
    index `pick` of frame `i`: `see`'s, with the passive check), for `identity_cuts`."""

    def __init__(self, pipeline, frames: list[np.ndarray], passive) -> None:
        self.pipeline, self.frames, self.passive = pipeline, frames, passive
        self.found: dict[int, object] = {}
        self.seen: dict[tuple[int, int], object] = {}

    def __call__(self, i: int):
        if i not in self.found:
            faces = self.pipeline.detect(self.frames[i])
            self.found[i] = self.pipeline.embed(self.frames[i], faces) if len(faces) else faces
        return self.found[i]

    def see(self, i: int, pick: int):
        from siamface.liveness.session import see

        if (i, pick) not in self.seen:
            faces = self(i)
            keypoints, embedding = faces.data["keypoints"][pick], faces.embeddings[pick]
            self.seen[(i, pick)] = see(self.frames[i], faces.boxes[pick], keypoints, self.passive, embedding)[0]
        return self.seen[(i, pick)]


def identity_cuts(faces: Faces, start: int, threshold: float) -> list[tuple[int, float]]:
    """Where the face a passive session opened at frame `start` follows becomes another person's: (frame,
    similarity to the face before) each time (the first of the two faces in a row unlike the one before), found by the sessions' own code (`CaptureSession` with
    `same_person`, fed as `authenticate` feeds it: the face nearest the last one, `follow`; restarts when the
    face leaves), with every other limit lifted so that it goes on to the recording's end unless a rule
    fails the session there (a jump, a repeat: the real sessions fail there too, before any later cut)."""
    from siamface.liveness.session import CaptureRules, CaptureSession, follow, similarity

    rules = CaptureRules(timeout=1e9, min_frames=10**9, max_restarts=10**9, live_share=0.0)
    session = CaptureSession("passive", rules, same_person=threshold)
    cuts, unlike = [], None
    for i in range(start, len(faces.frames)):
        found = faces(i)
        pick = follow(found.boxes, session.previous, rules.max_jump)
        seen = None if pick is None else faces.see(i, pick)
        before, score = session.other_people, None if seen is None else similarity(session.previous, seen)
        if session.observe((i - start) * FRAME_S, seen) is not None:
            break
        if session.other_people > before:  # two faces in a row unlike the one before: the first was the cut
            cuts.append(unlike)
        unlike = (i, score) if session.unlike is not None else None
    return cuts


def bona_fide(pipeline, data: Path, passive) -> list[tuple[str, float, list[np.ndarray], str]]:
    """The live recordings' presentations: (recording, opening second, frames, how it ends: at the recording's
    end, or where the face became another person's), after printing each recording's identity cuts (followed
    from its first frame)."""
    threshold = float(pipeline.encoder.info.threshold)
    out = []
    for name, frames in recorded(data, LIVE):
        faces = Faces(pipeline, frames, passive)
        found = identity_cuts(faces, 0, threshold)
        listed = ", ".join(f"{i / 10:.1f} s ({sim:.2f})" for i, sim in found) or "none"
        print(
            f"  {name}: {len(frames)} frames; identity cuts of the face followed from its start: {len(found)}: {listed}"
        )
        for start in windows(frames):
            cuts = identity_cuts(faces, start, threshold)
            end = cuts[0][0] if cuts else len(frames)
            why = (
                f"the face became another person's at {end / 10:.1f} s (similarity {cuts[0][1]:.2f})"
                if cuts
                else "the recording ended"
            )
            out.append((Path(name).stem, start / 10, frames[start:end], why))
    return out


def undecided(capture, frames: list, why: str) -> str:
    """Why a bona fide presentation ended undecided (`capture`: `authenticate`'s session after its frames):
    too short to pass at all since the session's last restart, or no head movement yet."""
    r = capture.rules
    seconds = 0.0 if capture.t0 is None else capture.t - capture.t0
    since = f"since its restart {capture.restarts} (the face left)" if capture.restarts else "from its opening"
    told = f"{why} after {len(frames)} frames; {capture.faces} faces over {seconds:.2f} s {since}"
    if capture.faces < r.min_frames or seconds < r.min_seconds:
        return f"too short: {told} (a session passes after {r.min_frames} faces over {r.min_seconds:g} s)"
    return f"pending: {told}, no head movement along a path yet (parallax {capture.parallax:.3f})"


def rate(values) -> str:
    values = [v is True for v in values]  # None (pending) is not passed
    return f"{np.mean(values):.1%} ({int(np.sum(values))}/{len(values)})" if values else "n/a"


def summary(paths: dict[str, list]) -> str:
    """Per path: sessions passed / failed / still pending at the end of their frames."""
    return ", ".join(
        f"{path} {sum(v is True for v in values)} passed, {sum(v is False for v in values)} failed, "
        f"{sum(v is None for v in values)} pending"
        for path, values in paths.items()
        if path != "presentation"
    )


def per_recording(paths: dict[str, list]) -> None:
    """The bona fide presentations per recording and path: passed / refused / undecided."""
    names = paths["presentation"]
    for name in dict.fromkeys(names):
        for path in ("service", "authenticate"):
            values = [v for n, v in zip(names, paths[path]) if n == name]
            decided = values.count(True) + values.count(False)
            print(
                f"  {name} via {path}: {values.count(True)} passed, {values.count(False)} refused, "
                f"{values.count(None)} undecided (BPCER {values.count(False)}/{decided}, "
                f"BPNRR {values.count(None)}/{len(values)})"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--n", type=int, default=50, help="presentations per attack class (default 50)")
    ap.add_argument("--frames", type=int, default=25, help="frames per passive attack presentation (default 25)")
    ap.add_argument(
        "--faces",
        choices=("deepface", "celeba"),
        default="deepface",
        help="whose photos the print, screen, composite and grey attacks show: deepface_pairs' 64, or the first "
        "photo of each person of celeba_ids' last third (people no threshold was chosen on; default deepface)",
    )
    ap.add_argument("--only", nargs="+", choices=CLASSES + ("bona_fide",), help="these classes only")
    args = ap.parse_args()
    import tempfile

    from service_support import png_bytes

    from siamface import Pipeline
    from siamface.gallery import Gallery
    from siamface.liveness import PassiveCheck

    todo = set(args.only or CLASSES + ("bona_fide",))
    pipeline = Pipeline(detector="retinaface")
    faces = colour_faces(args.data, pipeline, args.faces, max(args.n, 64))
    series = pose_series(args.data, pipeline, args.n) if todo & {"passive_stills", "passive_stills_ordered"} else []
    if series:
        print(
            f"pose series (passive_stills): {len(series)} people, {np.mean([len(s) for s in series]):.0f} frames a cycle"
        )
    rng = np.random.default_rng(0)
    print(f"colour faces: {len(faces)} ({args.faces}); presentations per class: {args.n}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="siamface-attacks-"))
    s23 = [("images", f"{n}.png", png_bytes(s23_frame(n, np.random.default_rng(9)))) for n in ("7", "1", "10")]
    gallery = Gallery(folder / "auth.db", pipeline, create=True)
    gallery.enroll("s23", [s23_frame(n, np.random.default_rng(9)) for n in ("7", "1", "10")])
    results: dict[str, dict[str, list[bool]]] = {}

    def record(cls: str, path: str, passed: bool | None) -> None:
        results.setdefault(cls, {}).setdefault(path, []).append(passed)

    passive_classes = [c for c in PASSIVE if c in todo]
    if passive_classes:
        service = Service(folder / "passive", "passive", "colour", {"s23": s23})
        try:
            for cls in passive_classes:
                t0 = time.time()
                ends = {}
                if cls == "bona_fide":
                    live = bona_fide(pipeline, args.data, PassiveCheck())
                    presentations = [(f"{name} from {start:.0f} s", frames) for name, start, frames, _ in live]
                    ends = {i: why for i, (_, _, _, why) in enumerate(live)}
                elif cls == "replay_video":
                    presentations = recordings(args.data, REPLAYED)
                else:
                    presentations = []
                    for i in range(args.n):
                        face = faces[i % len(faces)]
                        make = {
                            "print": lambda k, f=face: held(printed(f), rng, k),
                            "screen": lambda k, f=face: held(on_screen(f), rng, k),
                            "composite": lambda k, f=face: composite(f, rng, k),
                            "grey_on_colour": lambda k, f=face, i=i: grey_on_colour(f, i % 2 == 1, rng, k),
                            "passive_stills": lambda k, i=i: composite(
                                series[i % len(series)][int(rng.integers(len(series[i % len(series)])))], rng, k
                            ),
                            "passive_stills_ordered": lambda k, i=i: composite(
                                series[i % len(series)][k % len(series[i % len(series)])], rng, k
                            ),
                        }[cls]
                        presentations.append(("", [make(k) for k in range(args.frames)]))
                for i, (source, frames) in enumerate(presentations):  # the claim does not change the verdict
                    state, _, _ = service.session("s23", frames, limit=len(frames))
                    auth = authenticator(pipeline, gallery, "s23", "passive", "colour", frames)
                    passed = None if auth.capture.result is None else auth.capture.result.passed
                    if cls == "bona_fide":
                        served = None if state["state"] == "pending" else state["state"] == "passed"
                        said = {True: "passed", False: "refused", None: "undecided"}
                        line = f"  {source}: serve {said[served]}, authenticate {said[passed]}"
                        if state["state"] == "failed":
                            line += f"; serve's reason: {state.get('reason')}"
                        if served is None or passed is None:
                            line += f"; {undecided(auth.capture, frames, ends[i])}"
                        print(line, flush=True)
                        record(cls, "presentation", source.split(" from ")[0])
                    record(cls, "service", None if state["state"] == "pending" else state["state"] == "passed")
                    record(cls, "authenticate", passed)
                if cls == "bona_fide":
                    per_recording(results[cls])
                print(f"{cls}: {summary(results[cls])} ({time.time() - t0:.0f} s)", flush=True)
        finally:
            service.stop()

    active_classes = [c for c in ("stills", "replay", "reuse") if c in todo]
    if active_classes:
        service = Service(folder / "active", "active", "grey", {"s23": s23})
        service.server.service.sessions.rng = random.Random(1)
        try:
            if "stills" in todo:
                for _ in range(args.n):
                    state, _, _ = service.session("s23", lambda p: still_for(p, rng))
                    record("stills", "service", state["state"] == "passed")
                    record(
                        "stills",
                        "authenticate",
                        authenticate(pipeline, gallery, "s23", "active", "grey", lambda p: still_for(p, rng)),
                    )
                print(
                    f"stills: service {rate(results['stills']['service'])}, authenticate "
                    f"{rate(results['stills']['authenticate'])} passed",
                    flush=True,
                )
            if "replay" in todo or "reuse" in todo:
                recorded, genuine = [], []
                for seed in range(5):  # genuine sessions, recorded
                    state, sid, sent = service.session("s23", TurningHead(seed).frame)
                    genuine.append(state["state"] == "passed")
                    if state["state"] == "passed":
                        recorded.append(sent)
                        granted = service.verify("s23", sid, sent[0])
                        if "reuse" in todo:  # the passed session's id, again and again
                            for _ in range(args.n // 5):
                                again = service.verify("s23", sid, sent[0])
                                record("reuse", "service", again.status == 200 and again.body.get("granted"))
                        genuine.append(granted.body.get("granted") is True)
                print(f"genuine sessions (s23 following the prompts) passed and granted: {rate(genuine)}", flush=True)
                if "replay" in todo:
                    for i in range(args.n):
                        sent = recorded[i % len(recorded)]
                        state, _, _ = service.session("s23", sent)
                        record("replay", "service", state["state"] == "passed")
                        record("replay", "authenticate", authenticate(pipeline, gallery, "s23", "active", "grey", sent))
                    print(
                        f"replay: service {rate(results['replay']['service'])}, authenticate "
                        f"{rate(results['replay']['authenticate'])} passed",
                        flush=True,
                    )
                if "reuse" in todo:
                    print(f"reuse: service {rate(results['reuse']['service'])} granted", flush=True)
        finally:
            service.stop()
    gallery.close()

    print(
        "\nper presentation (APCER: attack sessions that passed, of all; BPCER: live sessions that failed, of the "
        "decided ones; pending: not decided when the frames ran out)"
    )
    for cls, paths in results.items():
        for path, values in paths.items():
            if path == "presentation":
                continue
            if cls == "bona_fide":
                decided = [v for v in values if v is not None]
                print(
                    f"BPCER {cls} via {path}: {rate([not v for v in decided])} of the decided, "
                    f"{len(values) - len(decided)} undecided (counted as refused: {rate([v is not True for v in values])})"
                )
            else:
                print(f"APCER {cls} via {path}: {rate([v is True for v in values])}, {values.count(None)} pending")


if __name__ == "__main__":
    main()
