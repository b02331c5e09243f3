"""The contact sheet of a grouping: one self-contained HTML page (thumbnails embedded as JPEG data URIs),
one row per group, largest first, then the faces that belong to no group; file names are escaped.

    html = contact_sheet(grouping, pipeline.load_image)
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .groups import Grouping
from .media import LibraryFace, is_video

#: Thumbnails shown per row at most (the row says how many more there are).
PER_ROW = 40
THUMB = 96


def contact_sheet(grouping: Grouping, load_image: Callable[[str], np.ndarray], per_row: int = PER_ROW) -> str:
    rows = [(f"group {k}, key {key}", group) for k, (key, group) in enumerate(zip(grouping.keys, grouping.clusters))]
    if grouping.unclustered:
        rows.append(("unclustered", grouping.unclustered))
    shown = [face for _, faces in rows for face in faces[:per_row]]
    thumbs = _thumbnails(shown, load_image)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>siamface cluster</title>',
        "<style>body{font-family:sans-serif;margin:1em}div.row{margin:0 0 1em}img{margin:2px;"
        "vertical-align:top}h2{font-size:1em;margin:.5em 0 .2em}</style></head><body>",
        f"<p>{sum(len(g) for g in grouping.clusters)} faces in {len(grouping.clusters)} groups, "
        f"{len(grouping.unclustered)} alone; model {html.escape(grouping.model)}, method "
        f"{html.escape(grouping.method)}, threshold {grouping.threshold:.4f}</p>",
    ]
    for title, faces in rows:
        more = f", {len(faces) - per_row} more not shown" if len(faces) > per_row else ""
        parts.append(f'<div class="row"><h2>{html.escape(title)}: {len(faces)} face(s){more}</h2>')
        for face in faces[:per_row]:
            label = html.escape(_label(face), quote=True)
            data = thumbs.get(id(face))
            if data is None:
                parts.append(f'<span title="{label}">[{label}]</span>')
            else:
                parts.append(
                    f'<img src="data:image/jpeg;base64,{data}" alt="{label}" title="{label}" '
                    f'width="{THUMB}" height="{THUMB}">'
                )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _label(face: LibraryFace) -> str:
    if face.time is None:
        return face.file
    return f"{face.file} {face.time[0]:.1f}-{face.time[1]:.1f} s"


def _thumbnails(faces: Sequence[LibraryFace], load_image: Callable[[str], np.ndarray]) -> dict[int, str]:
    """Base64 JPEG thumbnails by ``id(face)``; a file that can no longer be read gets none."""
    from ..errors import ImageError, SourceError

    by_file: dict[str, list[LibraryFace]] = {}
    for face in faces:
        by_file.setdefault(face.file, []).append(face)
    out: dict[int, str] = {}
    for file, group in by_file.items():
        try:
            images = _video_frames(file, group) if is_video(file) else {id(f): load_image(file) for f in group}
        except (ImageError, SourceError, OSError):
            continue
        for face in group:
            image = images.get(id(face))
            if image is None:
                continue
            jpeg = thumbnail_jpeg(image, face.box)
            if jpeg is not None:
                out[id(face)] = base64.b64encode(jpeg).decode("ascii")
    return out


def thumbnail_jpeg(image: np.ndarray, box: Any, side: int = THUMB) -> bytes | None:
    """A `side` x `side` JPEG of the square around `box` in the RGB `image` (None if it cannot be encoded)."""
    import cv2

    thumb = cv2.resize(_square(image, box), (side, side), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return jpeg.tobytes() if ok else None


def _square(image: np.ndarray, box: Any, margin: float = 0.25) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = image.shape[:2]
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    crop = image[b:d, a:c]
    return crop if crop.size else image


def _video_frames(file: str, faces: Sequence[LibraryFace]) -> dict[int, np.ndarray]:
    """The frame at each face track's start, reading the video once."""
    from ..video import open_source

    wanted = sorted(faces, key=lambda f: f.time[0])
    out: dict[int, np.ndarray] = {}
    k = 0
    with open_source(file) as source:
        for frame in source:
            while k < len(wanted) and frame.time + 1e-6 >= wanted[k].time[0]:
                out[id(wanted[k])] = frame.image
                k += 1
            if k == len(wanted):
                break
    return out
