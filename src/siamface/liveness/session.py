"""A capture session: "live" is a property of frames arriving from a camera, never of one image.

`CaptureSession.observe(t, face)` is fed every frame of one presentation, in order, with the time it arrived
(the server's monotonic clock over HTTP, the frame's capture time at the camera) and what was seen of its
largest face (`Seen`: keypoints, box, the passive check's verdict, a small signature of its pixels; None
for a frame with no face). It decides once: passed or failed, with a reason. The same class serves the HTTP
service (`siamface.service.sessions`) and `authenticate` (`siamface.live.authenticate`).

Every mode checks:

* **timing**: frames at camera rate: two frames closer than `min_interval` are a burst, a silence longer than
  `max_gap` a gap, and the whole capture must end within `timeout`;
* **stills**: a camera never gives the same pixels twice in a row; `max_repeats` repeated faces in a row (the
  same picture sent again) fail;
* **continuity**: between consecutive frames the face may not jump (its centre by more than `max_jump` eye
  distances, its box's width by more than `max_zoom`): a still swapped for another is a jump. The face
  followed is the one nearest the last frame's (`follow`), not always the largest: another person passing
  behind does not break the session (and is not the one checked);
* **the passive check** on every frame's face: at least `live_share` of them live (a session fails as soon as
  more than that share, or more than 2 faces, were refused).

``passive`` mode (no prompts) passes after `min_frames` faces over at least `min_seconds`, once the face has
shown a **3-D movement** (`passive_parallax`: the nose off the plane of the eyes and mouth corners, as in
`active.parallax`, measured against the most frontal face of the presentation): a photo, a screen or a face
pasted into a scene moves as a plane, however it is held, shifted or turned; a live head never holds that
still. The movement must be a **path** (`jumped`, as a prompted turn): from the last face near the frontal
reference to where it got, at least `passive_path_frames` faces in between and no single frame carrying more
than `passive_max_step` of the way; stills of the person at different head poses swapped frame by frame
are jumps. Along the path the face's **light** stays steady (`light_change`: no channel's log mean changing
by more than `passive_max_light` between two faces): a camera's frames keep it, a person's photos taken
apart (another day, lamp or camera) change it, even when ordered into a path of poses. And the head's
**pose** (`pose_point`: the nose against the eyes, in two dimensions) goes through the poses in between
(`pose_jump`: no frame carrying more than `passive_max_pose_step` of the way): the parallax path measures
only the distance from the frontal face, which stills from both sides of it can climb step by step while
the pose jumps from side to side. It waits for such a movement until the timeout (asking for a small movement), then fails ("moved
like a flat picture", or "the movement jumped" when the parallax came only in jumps). A **presentation** is
one face that stays: in ``passive`` mode, when the face has been gone for more than `max_absent` seconds
(it left the shot), the session starts again from the next face (`restarts`) instead of deciding on a
face that left; the timeout still counts from the first frame, and a session fails after `max_restarts`
(each restart is a new try: failed sessions count towards the lock-out, restarts must not evade it). A
presentation is also **one person**: given `same_person` (the face model's own 1:1 threshold) and each face's
embedding (`Seen.embedding`), two faces in a row less similar than that to the last face before them (a
film's cut; a live accomplice swapped for a photo of the victim after making the movement) end the
presentation (one such face alone is skipped: neither counted nor followed from; a fast head movement blurs
a single frame so: the live recordings' one, 0.39 against the face before, 0.66 from the next):
in ``passive`` mode with `other_person` "restart" the session starts again from the new face (a restart as
above), otherwise (``active`` mode; the HTTP service, whose verification requires every face of the session
to be the claimed person anyway) it fails. The movement is never built across two people. The face is
compared with the last face, not the first: a live head turning in dim light drifts far from its first
face (the Hamilton clip: one person's faces within one shot down to 0.27 against the shot's first, under
sface's 0.389), while a cut falls at once (0.20 there); a slow cross-fade from one person into another is
left to the claim's verification of every face (`authenticate`, the service). ``active`` mode
adds prompts: `count` kinds drawn at random from `PROMPTS` (at least one head turn: it is what shows
parallax), revealed **one at a time**, each after the face has held frontal for a random time (`hold`,
continuous, drawn per prompt), to be begun within `react` seconds of its reveal (a quarter of the way) and
met within `respond`:

* a turn before its prompt is shown fails (anticipation: a recording replays its own moments);
* a turn must be a path (`jumped`): the yaw passes through at least `path_frames` intermediate frames between
  frontal and turned, and no single frame carries more than `max_step` of the turn (stills per prompt are a
  jump);
* the parallax of a 3-D head (`active.parallax`): the nose leaves the plane of the eyes and mouth corners
  by at least `parallax_min` eye distances during the turns.

With 5 prompt kinds, 3 drawn in a random order and random moments, a recording made for one session does
not follow another: it turns at its own moments, and the prompts it answers are probably not the ones asked.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .active import parallax, yaw_ratio
from .colour import face_colour

PENDING, PASSED, FAILED = "pending", "passed", "failed"
MODES = ("passive", "active")
#: the prompt kinds, and what the user is asked (left and right are the user's own, as in a mirror)
PROMPTS = {
    "turn_left": "turn your head to your left",
    "turn_right": "turn your head to your right",
    "closer": "come closer to the camera",
    "tilt_left": "tilt your head towards your left shoulder",
    "tilt_right": "tilt your head towards your right shoulder",
}
TURNS = ("turn_left", "turn_right")
FRONTAL = "look straight at the camera"
HOLD = "hold still, looking at the camera"
MOVE = "look at the camera and move your head a little"


def roll_degrees(keypoints: np.ndarray) -> float:
    """The eye line's angle in the image, degrees, positive when the user's left eye (image right) is lower."""
    k = np.asarray(keypoints, np.float64)
    dx, dy = k[1] - k[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def eye_distance(keypoints: np.ndarray) -> float:
    k = np.asarray(keypoints, np.float64)
    return float(max(np.linalg.norm(k[1] - k[0]), 1e-6))


def face_signature(image: np.ndarray, box) -> bytes:
    """The face's pixels, exactly: a camera never gives the same twice in a row, a still sent again does."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    h, w = image.shape[:2]
    patch = np.ascontiguousarray(image[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)])
    return patch.tobytes() + str(patch.shape).encode("ascii")


def follow(boxes, previous: Seen | None, reach: float = 1.5) -> int | None:
    """Which of a frame's faces (boxes, largest first) continues the session: the one whose centre is nearest
    the last face's, if within `reach` of that face's eye distances (None: the session's face is not in this
    frame, only someone else's), or the largest when there is no last face."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if previous is None or not len(boxes):
        return 0 if len(boxes) else None
    before = np.asarray(previous.box, np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = np.linalg.norm(centres - (before[:2] + before[2:]) / 2, axis=1)
    nearest = int(np.argmin(distance))
    return nearest if distance[nearest] <= reach * eye_distance(previous.keypoints) else None


def jumped(path: Sequence[float], goal: float, frames: int, max_step: float) -> tuple[int, float] | None:
    """Was a movement a jump? `path`: one value a frame, from where it started to where it reached `goal`. A
    movement passes through at least `frames` frames in between (past a fifth of the way, short of the goal)
    and no single frame carries more than `max_step` of the way; otherwise (frames in between, the largest
    step's share of the way). Stills swapped frame by frame are jumps."""
    path = np.asarray(path, np.float64)
    start, total = path[0], path[-1] - path[0]
    if len(path) < 2 or total <= 0:
        return None
    between = path[1:-1]
    middle = int(np.sum((between > start + 0.2 * (goal - start)) & (between < goal)))
    share = float(np.max(np.diff(path))) / total
    return None if middle >= frames and share <= max_step else (middle, share)


def pose_point(keypoints: np.ndarray) -> np.ndarray:
    """Where the nose is relative to the eyes, in the eyes' own frame (along the eye line, across it), in eye
    distances: the head's pose (yaw, pitch), whatever the face's place, size or roll in the image and
    whatever the mouth does (an expression moves the mouth corners, not the nose against the eyes)."""
    k = np.asarray(keypoints, np.float64)
    along = (k[1] - k[0]) / eye_distance(k)
    across = np.array([-along[1], along[0]])
    nose = k[2] - (k[0] + k[1]) / 2
    return np.array([nose @ along, nose @ across]) / eye_distance(k)


def pose_jump(path: Sequence[np.ndarray]) -> float:
    """The largest single step of a movement's pose (`pose_point`, one a face) as a share of the way from its
    first to its last pose. A head moves through the poses in between, and its way is nearly straight:
    in the live recordings of the development data at most 0.59 at 10 frames a second; stills of a person's
    photos at different poses swapped frame by frame step from one side of the way to the other (a nose to
    the left, then to the right, of the frontal one: each pose as far from the frontal as the path needs,
    the way itself short)."""
    points = np.asarray(path, np.float64).reshape(-1, 2)
    if len(points) < 2:
        return 0.0
    way = float(np.linalg.norm(points[-1] - points[0]))
    step = float(np.max(np.linalg.norm(np.diff(points, axis=0), axis=1)))
    return step / max(way, 1e-6)


def light_change(before: Seen | None, now: Seen) -> float:
    """How much the face's light (`Seen.light`) changed between two consecutive faces: the largest change of
    a channel's log mean (0 when either was not read). A camera's frames change little, even with the head
    turning (the live recordings of the development data: at most 0.24 at 10 frames a second); photos of a
    person taken apart change it (stills of different photos: half of the swaps over 0.19)."""
    if before is None or before.light is None or now.light is None:
        return 0.0
    return float(np.max(np.abs(np.asarray(now.light) - np.asarray(before.light))))


def draw_prompts(count: int, rng: secrets.SystemRandom | None = None) -> list[str]:
    """`count` distinct prompt kinds in a random order, at least one of them a head turn."""
    rng = rng or secrets.SystemRandom()
    count = max(1, min(count, len(PROMPTS)))
    while True:
        drawn = rng.sample(list(PROMPTS), count)
        if any(p in TURNS for p in drawn):
            return drawn


@dataclass(frozen=True)
class Seen:
    """What one frame showed of its largest face: its 5 keypoints, box, the passive check's verdict (None:
    not checked), a signature of its pixels (None: not compared), whether the passive check could read it
    at all (False: too small or too dark: the face is followed, but neither counts for nor against), its
    light (`colour.face_colour`: log mean per channel; None: not compared) and its embedding (None: whose
    face it is, not compared)."""

    keypoints: np.ndarray
    box: Sequence[float]
    live: bool | None = None
    signature: bytes | None = None
    readable: bool = True
    light: np.ndarray | None = None
    embedding: np.ndarray | None = None


def see(image: np.ndarray, box, keypoints, passive=None, embedding=None) -> tuple[Seen, Any]:
    """What a session is told of one frame's face, the same at the camera and over HTTP: its keypoints and box,
    the passive check's verdict (with `passive`, a `PassiveCheck`; its score is returned too, else None), a
    signature of its pixels, its light and its `embedding` (whose face it is)."""
    checked = None if passive is None else passive.score(image, box)
    live = None if checked is None else bool(checked.live)
    readable = checked is None or checked.readable
    vector = None if embedding is None else np.asarray(embedding, np.float32).ravel()
    return Seen(keypoints, box, live, face_signature(image, box), readable, face_colour(image, box), vector), checked


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine similarity of two embeddings, whether or not they are unit length."""
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def similarity(before: Seen | None, now: Seen) -> float | None:
    """The cosine similarity of two faces' embeddings (None when either has none)."""
    if before is None or before.embedding is None or now.embedding is None:
        return None
    return cosine(before.embedding, now.embedding)


@dataclass
class CaptureRules:
    """The session's limits (seconds, eye distances); defaults for a webcam at 5-30 frames a second."""

    timeout: float = 20.0
    min_interval: float = 0.03
    max_gap: float = 1.5
    max_repeats: int = 2
    max_jump: float = 1.5
    max_zoom: float = 0.5
    live_share: float = 0.8
    min_frames: int = 10
    min_seconds: float = 1.5
    count: int = 3
    hold: tuple[float, float] = (0.6, 3.0)
    react: float = 1.5
    respond: float = 5.0
    frontal: float = 0.10
    turn: float = 0.18
    tilt: float = 12.0
    closer: float = 1.25
    path_frames: int = 1
    max_step: float = 0.75
    parallax_min: float = 0.10
    passive_parallax: float = 0.15
    passive_path_frames: int = 3
    passive_max_step: float = 0.5
    passive_max_light: float = 0.3
    passive_max_pose_step: float = 0.75
    max_absent: float = 0.5
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_gap <= self.min_interval or self.min_frames < 1:
            raise ConfigError("a capture session needs a positive timeout, max_gap > min_interval, min_frames >= 1")


@dataclass
class CaptureResult:
    passed: bool
    reason: str
    mode: str
    prompts: list[str]
    completed: int
    parallax: float
    seconds: float
    frames: int
    faces: int
    live_faces: int
    restarts: int = 0
    other_people: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "mode": self.mode,
            "challenges": self.prompts,
            "completed": self.completed,
            "parallax": round(self.parallax, 4),
            "seconds": round(self.seconds, 2),
            "frames": self.frames,
            "faces": self.faces,
            "live_faces": self.live_faces,
            "restarts": self.restarts,
            "other_people": self.other_people,
        }


@dataclass
class CaptureSession:
    """One presentation's frames, decided once (see the module docstring). `prompts`: a fixed list (tests
    only: a recording can follow a known list); None draws `rules.count` at random. `rng`: the source of
    the random draws (a `secrets.SystemRandom` by default). `same_person`: the face model's 1:1 threshold
    (cosine; None: faces' identities not compared); `other_person`: what a passive session does when the face
    becomes another person's: "restart" (a new presentation from that face) or "fail" (active sessions
    always fail)."""

    mode: str = "active"
    rules: CaptureRules = field(default_factory=CaptureRules)
    prompts: Sequence[str] | None = None
    rng: Any = None
    same_person: float | None = None
    other_person: str = "restart"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"capture mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.other_person not in ("restart", "fail"):
            raise ConfigError(f"other_person must be 'restart' or 'fail', not {self.other_person!r}")
        self.rng = self.rng or secrets.SystemRandom()
        if self.mode == "passive":
            self.prompts = []
        elif self.prompts is None:
            self.prompts = draw_prompts(self.rules.count, self.rng)
        self.prompts = list(self.prompts)
        unknown = [p for p in self.prompts if p not in PROMPTS]
        if unknown or (self.mode == "active" and not any(p in TURNS for p in self.prompts)):
            raise ConfigError(
                f"unknown or no head-turn prompts {self.prompts}; choose from {', '.join(PROMPTS)} (one a turn)"
            )
        self.result: CaptureResult | None = None
        self.t0 = self.t = None
        self.started = None  # the first frame's time: the timeout counts from it, across restarts
        self.restarts = 0
        self.other_people = 0  # times the face became another person's (each ended a presentation)
        self.unlike: float | None = None  # the last face's similarity to the one before, when under same_person
        self.absent_since = None  # the face has been gone since (None: it is here)
        self.frames = self.faces = self.live_faces = 0
        self.step = 0  # prompts met
        self.revealed = False  # is prompt `step` shown?
        self.revealed_at = None
        self.frontal_since = None  # the face has been frontal since (None: not frontal)
        self.hold_for = self._draw_hold()
        self.repeats = 0
        self.previous: Seen | None = None
        self.reference = None  # a frontal face's keypoints, for parallax
        self.reference_yaw = None
        self.parallax = 0.0
        self.moves: list[float] = []  # passive: this presentation's parallax, one value a face
        self.kept: list[np.ndarray] = []  # passive: this presentation's keypoints, one a face
        self.lights: list[float] = []  # passive: how much the face's light changed since the face before
        self.moved = False  # passive: the 3-D movement was reached along a path
        self.jump: tuple[int, float] | None = None  # passive: the last movement that jumped
        self.start_width = None
        self.path: list[float] = []  # the prompted measure since the reveal, one value a frame

    # -- what the client is told -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return PENDING if self.result is None else (PASSED if self.result.passed else FAILED)

    @property
    def prompt(self) -> str:
        """What to ask the user now ("" once decided): only the current prompt, never the ones after it."""
        if self.result is not None:
            return ""
        if self.mode == "passive":
            return MOVE if self.faces >= self.rules.min_frames else FRONTAL
        if self.revealed:
            return PROMPTS[self.prompts[self.step]]
        return HOLD if self.frontal_since is not None else FRONTAL

    @property
    def shown(self) -> list[str]:
        """The prompts revealed so far (the rest stay secret until their moment)."""
        return list(self.prompts[: self.step + (1 if self.revealed else 0)])

    def _draw_hold(self) -> float:
        low, high = self.rules.hold
        return low + (high - low) * self.rng.random()

    def _finish(self, passed: bool, reason: str) -> CaptureResult:
        self.result = CaptureResult(
            passed,
            reason,
            self.mode,
            list(self.prompts),
            self.step,
            self.parallax,
            0.0 if self.t0 is None else self.t - self.t0,
            self.frames,
            self.faces,
            self.live_faces,
            self.restarts,
            self.other_people,
        )
        return self.result

    def fail(self, reason: str) -> CaptureResult:
        """Fail the session from outside (too many frames, a face that is not the claimed person)."""
        return self.result or self._finish(False, reason)

    # -- one frame --------------------------------------------------------------------------------------
    def observe(self, t: float, seen: Seen | None) -> CaptureResult | None:
        """One frame at time `t` (seconds, monotonic), with its largest face or None; the result once decided."""
        if self.result is not None:
            return self.result
        r = self.rules
        if self.t is not None:
            gap = t - self.t
            if gap < r.min_interval:
                return self._finish(
                    False, f"frames arrived in a burst ({gap:.3f} s apart; a camera needs >= {r.min_interval:g} s)"
                )
            if gap > r.max_gap:
                return self._finish(False, f"a gap of {gap:.2f} s between frames (at most {r.max_gap:g} s)")
        if self.started is None:
            self.started = t
        self.t = t
        self.frames += 1
        if t - self.started > r.timeout:
            if self.mode == "passive" and self.faces and not self.moved:
                return self._finish(False, self._flat() if self.jump is None else self._jumped())
            return self._finish(False, f"timeout after {r.timeout:g} s at '{self.prompt}'")
        if seen is None:  # the last face stays the reference: a faceless frame does not hide a jump
            self.frontal_since = None
            if self.absent_since is None:
                self.absent_since = t
            if self.mode == "passive" and self.faces and t - self.absent_since > r.max_absent:
                if self.restarts >= r.max_restarts:  # each restart would be a new try inside one session
                    return self._finish(False, f"the presentation restarted {self.restarts + 1} times (the face left)")
                self._restart()
            return None
        self.absent_since = None
        score = self._unlike(seen)
        if score is None:
            self.unlike = None
        elif self.unlike is None:  # once: a blurred frame of the same person, or another person (the next says)
            self.unlike, self.frontal_since = score, None
            return None  # neither counted nor followed from
        else:  # a presentation is one person: never build the evidence across two
            other = (
                f"the face became another person's (similarity {self.unlike:.2f}, then {score:.2f}, to the face "
                f"before, under the same-person threshold {self.same_person:g}): one presentation is one person"
            )
            self.unlike = None
            self.other_people += 1
            if self.mode != "passive" or self.other_person == "fail":
                return self._finish(False, other)
            if self.restarts >= r.max_restarts:
                return self._finish(False, f"{other}; the presentation restarted {self.restarts + 1} times")
            self._restart()
        k = np.asarray(seen.keypoints, np.float64)
        if not seen.readable:  # followed (no jump, no repeat), not counted: it waits for a face it can read
            failed = self._continuity(seen, k) if self.previous is not None else None
            if failed:
                return self._finish(False, failed)
            self.previous = seen
            return None
        if self.faces == 0:  # the presentation begins with its first face
            self.t0 = t
        self.faces += 1
        self.live_faces += seen.live is not False
        refused = self.faces - self.live_faces
        if refused > max(2.0, (1 - r.live_share) * max(self.faces, r.min_frames)):  # the share is out of reach
            return self._finish(False, self._live_enough() or f"{refused} faces not live by the passive check")
        failed = self._continuity(seen, k)
        if failed:
            return self._finish(False, failed)
        light = light_change(self.previous, seen)
        self.previous = seen
        yaw = yaw_ratio(k)
        frontal_enough = abs(yaw) < r.frontal or self.mode == "passive"  # passive: the most frontal so far
        if frontal_enough and (self.reference is None or abs(yaw) < abs(self.reference_yaw)):
            self.reference, self.reference_yaw = k, yaw
        if self.reference is not None:
            now = parallax(self.reference, k)
            self.parallax = max(self.parallax, now)
            if self.mode == "passive":
                self._follow_movement(now, k, light)
        if self.mode == "passive":
            return self._passive_done(t)
        return self._prompted(t, k, seen)

    def _unlike(self, seen: Seen) -> float | None:
        """The face's similarity to the last face followed when it is under `same_person` (None: the same
        person, or not compared)."""
        score = None if self.same_person is None else similarity(self.previous, seen)
        return None if score is None or score >= self.same_person else score

    def _restart(self) -> None:
        """The face left the shot, or became another person's: a new presentation begins with the next face
        (passive mode)."""
        self.restarts += 1
        self.t0 = None
        self.faces = self.live_faces = self.repeats = 0
        self.previous = self.reference = self.reference_yaw = None
        self.parallax = 0.0
        self.moves, self.kept, self.lights, self.moved, self.jump = [], [], [], False, None
        self.absent_since = self.unlike = None

    def _flat(self) -> str:
        return (
            f"the face moved like a flat picture for {self.t - self.started:.1f} s (parallax {self.parallax:.3f} "
            f"< {self.rules.passive_parallax}): a photo, a screen or a composite?"
        )

    def _jumped(self) -> str:
        middle, share, light, pose = self.jump
        r = self.rules
        if light > r.passive_max_light:
            return (
                f"the movement jumped: the face's light changed by {light:.2f} between two frames on the way "
                f"(at most {r.passive_max_light}): stills of different photos swapped?"
            )
        if pose > r.passive_max_pose_step:
            return (
                f"the movement jumped: one frame moved the head's pose by {pose:.0%} of the way (at most "
                f"{r.passive_max_pose_step:.0%}), from one side of the path to the other: stills of "
                f"different poses swapped?"
            )
        return (
            f"the movement jumped: the parallax reached {self.parallax:.3f} with {middle} frames in between "
            f"(at least {r.passive_path_frames}) and one step {share:.0%} of the way (at most "
            f"{r.passive_max_step:.0%}): stills swapped?"
        )

    def _follow_movement(self, now: float, k: np.ndarray, light: float) -> None:
        """Passive mode: the 3-D movement counts once reached along a path (`jumped`, the way measured to where
        it got: `now`, at least `passive_parallax`), from the last face near the frontal reference (a fifth of
        `passive_parallax`; else the lowest so far), every face measured against the same (latest) reference,
        the face's light steady along it (no change over `passive_max_light` between two faces of the
        path: `light_change`) and its pose moving through the poses in between (`pose_jump`: no step over
        `passive_max_pose_step` of the way, in the two dimensions of `pose_point`)."""
        r = self.rules
        self.moves.append(now)
        self.kept.append(k)
        self.lights.append(light)
        if self.moved or now < r.passive_parallax or len(self.moves) < 2:
            return
        self.moves = [parallax(self.reference, old) for old in self.kept]  # against one reference
        before = np.asarray(self.moves[:-1])
        near = np.flatnonzero(before <= 0.2 * r.passive_parallax)
        start = int(near[-1]) if len(near) else int(len(before) - 1 - np.argmin(before[::-1]))
        light = max(self.lights[start + 1 :])
        pose = pose_jump([pose_point(old) for old in self.kept[start:]])
        jump = jumped(self.moves[start:], now, r.passive_path_frames, r.passive_max_step)
        if jump is None and (light > r.passive_max_light or pose > r.passive_max_pose_step):
            jump = (0, 1.0)
        self.jump = None if jump is None else (*jump, light, pose)
        self.moved = self.jump is None

    def _continuity(self, seen: Seen, k: np.ndarray) -> str | None:
        r, before = self.rules, self.previous
        if before is None:
            return None
        if seen.signature is not None and seen.signature == before.signature:
            self.repeats += 1
            if self.repeats >= r.max_repeats:
                return f"the same picture {self.repeats + 1} times in a row (a camera never repeats itself)"
        else:
            self.repeats = 0
        old = np.asarray(before.keypoints, np.float64)
        iod = eye_distance(old)
        moved = float(np.linalg.norm(k.mean(axis=0) - old.mean(axis=0)) / iod)
        zoom = abs(float(seen.box[2] - seen.box[0]) / max(float(before.box[2] - before.box[0]), 1e-6) - 1)
        if moved > r.max_jump or zoom > r.max_zoom:
            return f"the face jumped between two frames (moved {moved:.2f} eye distances, size {zoom:+.0%})"
        return None

    def _live_enough(self) -> str | None:
        share = self.live_faces / max(self.faces, 1)
        if share < self.rules.live_share:
            return (
                f"{self.faces - self.live_faces} of {self.faces} faces not live by the passive check "
                f"(at least {self.rules.live_share:.0%} must be)"
            )
        return None

    def _passive_done(self, t: float) -> CaptureResult | None:
        r = self.rules
        if self.faces >= r.min_frames and t - self.t0 >= r.min_seconds:
            failed = self._live_enough()
            if failed:
                return self._finish(False, failed)
            if not self.moved:
                return (
                    None  # no 3-D movement (along a path) yet: wait for one (the prompt asks for it) until the timeout
                )
            return self._finish(
                True, f"{self.faces} faces over {t - self.t0:.1f} s at camera rate, moving as a head (3-D)"
            )
        return None

    def _measure(self, prompt: str, k: np.ndarray, width: float) -> float:
        """How far the face has gone towards `prompt` (a turn: yaw in its direction; a tilt: roll in its
        direction; closer: the width's growth since the prompt's reveal)."""
        if prompt == "turn_left":
            return yaw_ratio(k)
        if prompt == "turn_right":
            return -yaw_ratio(k)
        if prompt == "tilt_left":
            return roll_degrees(k)
        if prompt == "tilt_right":
            return -roll_degrees(k)
        return width / self.start_width

    def _goal(self, prompt: str) -> float:
        r = self.rules
        return {"turn_left": r.turn, "turn_right": r.turn, "tilt_left": r.tilt, "tilt_right": r.tilt}.get(
            prompt, r.closer
        )

    def _prompted(self, t: float, k: np.ndarray, seen: Seen) -> CaptureResult | None:
        r = self.rules
        yaw, width = yaw_ratio(k), float(seen.box[2] - seen.box[0])
        frontal = abs(yaw) < r.frontal and abs(roll_degrees(k)) < r.tilt / 2
        if not self.revealed:
            if abs(yaw) >= r.turn or abs(roll_degrees(k)) >= r.tilt:
                if self.frontal_since is not None:  # it had faced the camera: it moved before being asked
                    return self._finish(False, "the head moved before the prompt was shown")
            if not frontal:
                self.frontal_since = None
                return None
            if self.frontal_since is None:
                self.frontal_since = t
            if t - self.frontal_since >= self.hold_for:  # reveal the next prompt, at a random moment
                self.revealed, self.revealed_at = True, t
                self.start_width = width
                self.path = [self._measure(self.prompts[self.step], k, width)]
            return None
        prompt = self.prompts[self.step]
        if t - self.revealed_at > r.respond:
            return self._finish(False, f"'{PROMPTS[prompt]}' not done within {r.respond:g} s")
        value = self._measure(prompt, k, width)
        self.path.append(value)
        start, goal = self.path[0], self._goal(prompt)
        if t - self.revealed_at > r.react and max(self.path) < start + 0.25 * (goal - start):
            return self._finish(False, f"no movement towards '{PROMPTS[prompt]}' within {r.react:g} s of it")
        if value < goal:
            return None
        failed = self._path_check(prompt)
        if failed:
            return self._finish(False, failed)
        self.step += 1
        self.revealed, self.frontal_since, self.hold_for = False, None, self._draw_hold()
        if self.step < len(self.prompts):
            return None
        if self.parallax < r.parallax_min:
            return self._finish(
                False,
                f"prompts met but the face moved like a flat picture (parallax {self.parallax:.3f} < {r.parallax_min})",
            )
        failed = self._live_enough()
        if failed:
            return self._finish(False, failed)
        return self._finish(True, f"{len(self.prompts)} prompts met with a 3-D face at camera rate")

    def _path_check(self, prompt: str) -> str | None:
        """A prompt met by a path, not a jump (`jumped`)."""
        jump = jumped(self.path, self._goal(prompt), self.rules.path_frames, self.rules.max_step)
        if jump is None:
            return None
        middle, share = jump
        return (
            f"'{PROMPTS[prompt]}' was a jump, not a movement ({middle} frames in between, one step "
            f"{share:.0%} of the way): stills swapped per prompt?"
        )
