"""Does a face turning between two frames tell a real head from ONE photo warped in 2-D? A measurement, not a
check: the capture sessions do not use it (docs/liveness.md, "One stolen photo, warped": no cue measured here
separates the two with a margin).

    python benchmarks/warp_depth.py [--data ../shared/datasets] [--subjects 20]

Each pair is a reference face (the most frontal of a presentation) and a turned face of the same presentation
(their `yaw_ratio` at least 0.07 apart), both cut out grey and aligned on the eyes (a similarity: eyes level,
32 pixels apart). Cues, each signed and scaled per unit of yaw change so that a head turning gives a positive
value:

* ``dense_h``: dense flow (`cv2.DISOpticalFlow`) over the inner face, a homography fitted jointly with two
  depth shapes along the eye line (a generic face's ellipsoid: its centre forward, its outline back; and a bump
  at the nose): the ellipsoid's coefficient (a head large, a photo turned as a plane zero);
* ``sparse_h``: the same fit on corners tracked by pyramidal Lucas-Kanade (kept where the track back lands
  within half a pixel): no smoothing across the face's outline;
* ``profile``: what the homography leaves of the dense flow along the eye line, its cosine with the mean of
  the real AT&T pairs of the other subjects (a real head's parallax over the whole face);
* ``strip``: in that field, the lower face's (mouth, chin) movement against the outer cheeks as a share of the
  nose's (a rigid head moves its whole central strip; a local warp, its nose);
* ``photo``: the turned face pulled back onto the reference by the dense flow, both at one mean and contrast,
  their difference smoothed (2 pixels) and its root mean square over the inner face (a head hides and shows
  skin and moves its shading; the flow undoes a warp of one photo).

Bona fide: ``att_real``: each AT&T subject's most frontal photo against their other photos turned by at least
0.07 (photos of a real head in different poses; ../shared/datasets/att_faces, subjects s3 on, --subjects of
them), pasted into a scene at 2x as the tests' frames; ``video:...``: the live recordings (apfol_real2, the
Hamilton clip; every 3rd frame), in 2-s windows opened every second, the face followed from the window's first
frame (`follow`), its most frontal face against the others. Attacks, each subject's most frontal photo warped
by 2-D image operations as `tests/service/test_liveness_attacks_found.py` does: ``keystone`` (a perspective
squeeze of one side, 0.1 and 0.2 of the height, either side), ``nose`` (the nose slid by a local Gaussian remap,
sigma 0.45 eye distances, 0.3 and 0.5 eye distances), ``nose_wide`` (sigma 1.0: a crude depth-aware warp),
``keystone_nose`` (both); each also ``+jitter`` (camera noise of 8 grey levels, a blur of 1 pixel, 10 % darker)
and ``+shade`` (the face's light changed smoothly, afresh each frame). Printed per cue and class, per pair and
per presentation (the median of its pairs; a subject's warps of one kind are one presentation): the count,
5th percentile / median / 95th percentile, and against the bona fide ones pooled, the threshold that best
separates them and its error rates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import scene  # noqa: E402

W, H, IOD, EYE_Y = 112, 128, 32.0, 40.0  # the aligned crop: eyes level, IOD apart, EYE_Y from the top
EYES = np.array([[W / 2 - IOD / 2, EYE_Y], [W / 2 + IOD / 2, EYE_Y]])
MIN_TURN = 0.07  # the least yaw change of a pair
CUES = ("dense_h", "sparse_h", "profile", "strip", "photo")
LIVE = ("videos_hamilton/short_hamilton_clip.mp4", "replay_videos/apfol_real2.webm")


def aligned(image: np.ndarray, keypoints) -> tuple[np.ndarray, np.ndarray]:
    """The face's grey crop aligned on its eyes, and its keypoints in the crop."""
    k = np.asarray(keypoints, np.float64)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    have, want = k[1] - k[0], EYES[1] - EYES[0]
    scale = np.linalg.norm(want) / max(float(np.linalg.norm(have)), 1e-6)
    angle = np.arctan2(want[1], want[0]) - np.arctan2(have[1], have[0])
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    m = np.array([[c, -s, 0.0], [s, c, 0.0]])
    m[:, 2] = EYES[0] - m[:, :2] @ k[0]
    crop = cv2.warpAffine(grey, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, k @ m[:, :2].T + m[:, 2]


def shapes(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Over the crop: x and y from the eyes' midpoint (eye distances), the inner face's mask, the ellipsoid's
    depth and the nose bump."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    mid = k[:2].mean(axis=0)
    x, y = (xx - mid[0]) / IOD, (yy - mid[1]) / IOD
    r2 = (x / 1.15) ** 2 + ((y - 0.7) / 1.6) ** 2
    mask = (x / 0.9) ** 2 + ((y - 0.7) / 1.3) ** 2 < 1.0
    nose = np.exp(-((xx - k[2, 0]) ** 2 + (yy - k[2, 1]) ** 2) / (2 * (0.3 * IOD) ** 2))
    return x, y, mask, np.sqrt(np.clip(1 - r2, 0, None)), nose


_flow = []


def dense(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not _flow:
        _flow.append(cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM))
    return _flow[0].calc(a, b, None)


def fit_homography(points: np.ndarray, moved: np.ndarray, depth: np.ndarray, rounds: int = 8) -> float:
    """A homography and depth shapes along the eye line, fitted in turn (pixels): the first shape's coefficient,
    in eye distances."""
    coef = np.zeros(depth.shape[1])
    design = np.column_stack([depth, np.ones(len(depth))])
    for _ in range(rounds):
        flat = moved.copy()
        flat[:, 0] -= depth @ coef * IOD
        h, _ = cv2.findHomography(points, flat, 0)
        if h is None:
            return 0.0
        predicted = cv2.perspectiveTransform(points[None].astype(np.float64), h)[0]
        residual = (moved[:, 0] - predicted[:, 0]) / IOD
        solution, *_ = np.linalg.lstsq(design, residual, rcond=None)
        coef = solution[:-1]
    return float(coef[0])


def tracked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners of `a` inside `mask` tracked into `b` (pyramidal Lucas-Kanade), kept where the track back lands
    within half a pixel."""
    corners = cv2.goodFeaturesToTrack(a, 200, 0.01, 3, mask=mask.astype(np.uint8))
    if corners is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    lk = {"winSize": (11, 11), "maxLevel": 3}
    there, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, corners, None, **lk)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(b, a, there, None, **lk)
    good = (ok.ravel() == 1) & (ok2.ravel() == 1) & (np.linalg.norm((back - corners).reshape(-1, 2), axis=1) < 0.5)
    return corners.reshape(-1, 2)[good].astype(np.float64), there.reshape(-1, 2)[good].astype(np.float64)


def measured(ref: tuple[np.ndarray, np.ndarray], now: tuple[np.ndarray, np.ndarray], turn: float) -> dict:
    """From the reference face to the face now (both `aligned`), `turn` their yaw change: each fitted cue per
    unit of yaw (positive for a head), and the field the homography leaves (along the eye line, per unit of
    yaw, zero outside the inner face) for the cues read from it (`from_field`)."""
    (a, k), (b, _) = ref, now
    _, _, mask, ellipsoid, nose = shapes(k)
    per_yaw = np.sign(turn) / abs(turn)
    flow = dense(a, b)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    points = np.stack([xx[mask], yy[mask]], 1)
    depth = np.stack([ellipsoid[mask], nose[mask]], 1)
    out = {"dense_h": fit_homography(points, points + flow[mask], depth) * per_yaw}
    h, _ = cv2.findHomography(points, points + flow[mask], 0)
    field = np.zeros((H, W), np.float32)
    if h is not None:
        predicted = cv2.perspectiveTransform(points[None], h)[0]
        field[mask] = (points[:, 0] + flow[mask][:, 0] - predicted[:, 0]) / IOD * per_yaw
    out["field"] = field
    out["photo"] = photometric(a, b, flow, mask)
    p, q = tracked(a, b, mask)
    if len(p) >= 12:
        at = np.clip(np.round(p).astype(int), 0, [W - 1, H - 1])
        shape = np.stack([ellipsoid[at[:, 1], at[:, 0]], nose[at[:, 1], at[:, 0]]], 1)
        out["sparse_h"] = fit_homography(p, q, shape) * per_yaw
    return out


def photometric(a: np.ndarray, b: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> float:
    """How much of the face now is not the reference face moved: `b` pulled back onto `a` by the dense flow,
    both brought to one mean and contrast over the inner face, their difference smoothed (a Gaussian of 2
    pixels, against a camera's noise), its root mean square over the inner face (in the face's contrasts). A
    head turning hides and shows skin and moves its shading; a warp of one photo is undone by the flow."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    back = cv2.remap(b, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR).astype(np.float32)
    ref = a.astype(np.float32)
    back = (back - back[mask].mean()) / max(float(back[mask].std()), 1e-3)
    ref = (ref - ref[mask].mean()) / max(float(ref[mask].std()), 1e-3)
    return float(np.sqrt(np.mean(cv2.GaussianBlur(back - ref, (0, 0), 2.0)[mask] ** 2)))


def strip(field: np.ndarray, top: int, bottom: int) -> float:
    """The face's central strip against its outer cheeks, rows `top` to `bottom` of the crop."""
    centre = field[top:bottom, 46:66].mean()
    return float(centre - (field[top:bottom, 28:38].mean() + field[top:bottom, 74:84].mean()) / 2)


def from_field(field: np.ndarray, profile: np.ndarray) -> dict[str, float]:
    """``profile``: the field's cosine with a real head's mean field (AT&T subjects other than the pair's own);
    ``strip``: how far the lower face (mouth, chin) moved against the outer cheeks, as a share of the nose's
    movement against them (a rigid head moves its whole central strip; a warp of the nose, the nose)."""
    cosine = float((field * profile).sum() / max(float(np.linalg.norm(field) * np.linalg.norm(profile)), 1e-9))
    return {"profile": cosine, "strip": strip(field, 70, 86) / max(abs(strip(field, 52, 66)), 0.05)}


def keystone(face: np.ndarray, share: float) -> np.ndarray:
    h, w = face.shape[:2]
    a = abs(share) * h
    squeezed = [[0, a], [w, 0], [w, h], [0, h - a]] if share > 0 else [[0, 0], [w, a], [w, h - a], [0, h]]
    warp = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), np.float32(squeezed))
    return cv2.warpPerspective(face, warp, (w, h), borderMode=cv2.BORDER_REPLICATE)


def nose_warp(face: np.ndarray, k: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    h, w = face.shape[:2]
    iod = float(np.linalg.norm(k[1] - k[0]))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    near = np.exp(-((xx - k[2, 0]) ** 2 + (yy - k[2, 1]) ** 2) / (2 * (sigma * iod) ** 2))
    return cv2.remap(face, (xx - amount * iod * near).astype(np.float32), yy, cv2.INTER_LINEAR)


def framed(face: np.ndarray, rng: np.random.Generator, jitter: str = "") -> np.ndarray:
    """A grey photo pasted at 2x into the tests' scene, with a camera's noise, grey as RGB; `jitter` "+jitter":
    more noise, a blur, darker; "+shade": the face's light changed smoothly (a gradient of up to 15 % across
    it and a soft spot of up to 15 %, drawn afresh each frame: a 2-D operation that leaves no warp's fit)."""
    face = face.astype(np.float32)
    if jitter == "+shade":
        h, w = face.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.3, 0.8) * h
        spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.15 * w) ** 2))
        light = 1 + rng.uniform(-0.15, 0.15) * (xx / w - 0.5) * 2 + rng.uniform(-0.15, 0.15) * spot
        face = np.clip(face * light[:, :, None], 0, 255)
    frame = scene([(face.astype(np.uint8), 2.0, (174, 100))]).astype(np.float32)
    if jitter == "+jitter":
        frame = cv2.GaussianBlur(frame, (0, 0), 1.0) * 0.9
    frame = np.clip(frame + rng.normal(0, 8.0 if jitter == "+jitter" else 2.0, frame.shape), 0, 255).astype(np.uint8)
    return np.repeat(frame.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)


def photo_pairs(pipeline, data: Path, subjects: int, rng) -> list[dict]:
    """AT&T subjects' real poses and the 2-D warps of their most frontal photo (see the module's docstring):
    one record a pair (class, presentation: the class and subject, subject, `measured`)."""
    from PIL import Image

    from siamface.liveness.active import yaw_ratio

    out: list[dict] = []

    def keypoints(frame):
        found = pipeline.detect(frame)
        return None if not len(found) else np.asarray(found.data["keypoints"][0], np.float64)

    def pair(cls: str, subject: int, ref, frame) -> None:
        k = keypoints(frame)
        if k is None or abs(yaw_ratio(k) - ref[2]) < MIN_TURN:
            return
        values = measured(ref[:2], aligned(frame, k), yaw_ratio(k) - ref[2])
        out.append({"class": cls, "presentation": (cls, subject), "subject": subject, **values})

    for subject in range(3, 3 + subjects):
        photos = sorted((data / "att_faces" / f"s{subject}").glob("*.pgm"))
        faces = [np.repeat(np.asarray(Image.open(p))[:, :, None], 3, axis=2) for p in photos]
        frames = [framed(f, rng) for f in faces]
        found = [keypoints(f) for f in frames]
        yaws = [abs(yaw_ratio(k)) if k is not None else np.inf for k in found]
        best = int(np.argmin(yaws))
        photo, k0 = faces[best], keypoints(faces[best])
        if not np.isfinite(yaws[best]) or k0 is None:
            continue
        ref = (*aligned(frames[best], found[best]), yaw_ratio(found[best]))
        for i, frame in enumerate(frames):
            if i != best:
                pair("att_real", subject, ref, frame)
        for jitter in ("", "+jitter", "+shade"):
            warps = {
                "keystone": [keystone(photo, s) for s in (0.1, -0.1, 0.2, -0.2)],
                "nose": [nose_warp(photo, k0, s, 0.45) for s in (0.3, -0.3, 0.5, -0.5)],
                "nose_wide": [nose_warp(photo, k0, s, 1.0) for s in (0.2, -0.2, 0.4, -0.4)],
                "keystone_nose": [nose_warp(keystone(photo, s), k0, 3 * s, 0.45) for s in (0.1, -0.1, 0.2, -0.2)],
            }
            for cls, warped in warps.items():
                for face in warped:
                    pair(cls + jitter, subject, ref, framed(face, rng, jitter))
    return out


def video_pairs(pipeline, data: Path) -> list[dict]:
    """The live recordings' 2-s windows, one opened every second (see the module's docstring)."""
    from siamface.liveness.active import yaw_ratio
    from siamface.liveness.evaluate import video_frames
    from siamface.liveness.session import Seen, follow

    out = []
    for name in LIVE:
        frames = list(video_frames(data / name, 10_000))[::3]
        found = [pipeline.detect(f) for f in frames]
        for start in range(0, len(frames) - 15, 10):
            faces, before = [], None
            for i in range(start, min(start + 20, len(frames))):
                boxes = np.asarray(found[i].boxes).reshape(-1, 4)
                pick = follow(boxes, before)
                if pick is None:
                    continue
                k = np.asarray(found[i].data["keypoints"][pick], np.float64)
                before = Seen(k, boxes[pick])
                faces.append((i, k))
            if len(faces) < 5:
                continue
            yaws = [yaw_ratio(k) for _, k in faces]
            best = int(np.argmin(np.abs(yaws)))
            ref = aligned(frames[faces[best][0]], faces[best][1])
            for (i, k), yaw in zip(faces, yaws):
                if abs(yaw - yaws[best]) >= MIN_TURN:
                    values = measured(ref, aligned(frames[i], k), yaw - yaws[best])
                    cls = f"video:{Path(name).stem}"
                    out.append({"class": cls, "presentation": (cls, start), "subject": None, **values})
    return out


def add_field_cues(pairs: list[dict]) -> None:
    """Each pair's ``profile`` and ``strip``, the profile being the mean field of the real AT&T pairs of the
    other subjects (never the pair's own subject: a warp is of that subject's photo)."""
    real = [(p["subject"], p["field"]) for p in pairs if p["class"] == "att_real"]
    for p in pairs:
        others = [f for subject, f in real if subject != p["subject"]]
        p.update(from_field(p["field"], np.mean(others, axis=0)))


def separation(live: np.ndarray, attack: np.ndarray) -> tuple[float, float, float]:
    """The threshold (bona fide at or above it) with the lowest larger error, and its two error rates."""
    best = (np.inf, 0.0, 1.0, 1.0)
    for t in np.unique(np.concatenate([live, attack])):
        refused, passed = float(np.mean(live < t)), float(np.mean(attack >= t))
        if max(refused, passed) < best[0]:
            best = (max(refused, passed), float(t), refused, passed)
    return best[1:]


def table(pairs: list[dict], cue: str, per: str) -> None:
    """One cue's values per class (per pair, or per presentation: the median of its pairs), and how well a
    threshold separates each attack class from the bona fide ones pooled."""
    groups: dict[str, dict] = {}
    for p in pairs:
        if cue in p:
            key = id(p) if per == "pair" else p["presentation"]
            groups.setdefault(p["class"], {}).setdefault(key, []).append(p[cue])
    values = {cls: np.array([np.median(v) for v in g.values()]) for cls, g in groups.items()}
    live = np.concatenate([v for cls, v in values.items() if cls == "att_real" or cls.startswith("video")])
    print(f"{cue}, per {per} (count, 5th pct / median / 95th pct)")
    for cls, v in values.items():
        low, mid, high = np.percentile(v, [5, 50, 95])
        line = f"  {cls:<28} {len(v):4d}  {low:+7.2f} {mid:+7.2f} {high:+7.2f}"
        if cls != "att_real" and not cls.startswith("video"):
            t, refused, passed = separation(live, v)
            line += f"  | best threshold {t:+.2f}: bona fide refused {refused:.0%}, attack passed {passed:.0%}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--subjects", type=int, default=20, help="AT&T subjects from s3 on (default 20)")
    args = ap.parse_args()
    from siamface.pipeline import Pipeline

    pipeline = Pipeline(detector="retinaface")
    pairs = photo_pairs(pipeline, args.data, args.subjects, np.random.default_rng(0)) + video_pairs(pipeline, args.data)
    add_field_cues(pairs)
    for cue in CUES:
        for per in ("pair", "presentation"):
            table(pairs, cue, per)


if __name__ == "__main__":
    main()
