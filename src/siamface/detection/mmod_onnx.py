"""dlib's MMOD CNN face detector with its conv net in ONNX Runtime and the decoding in NumPy.

What dlib's ``cnn_face_detection_model_v1(path)(image, 0)`` does, step by step (dlib/dnn/input.h,
dlib/image_transforms/image_pyramid.h, dlib/dnn/loss.h):

1. input_rgb_image_pyramid<pyramid_down<6>>: the image, normalised ``(pixel - mean) / 256``, is put in the
   top-left of a zero tensor (outer padding 11), and each further pyramid level (5/6 of the previous one,
   down to 5 rows) is a bilinear (align-corners) resize of the previous level, tiled beside it with 10
   pixels of padding;
2. the conv net (ONNX here) gives one score per position of that tiled image;
3. every position scoring above 0 maps back through the convolutions to a point of the tiled image, an
   80x80 (the file's detector window) rectangle centred there maps back to the original image through
   the pyramid level it falls in;
4. greedy non-maximum suppression, best score first, with the file's overlap test.

Only ``upsample=0`` is reproduced (dlib upsamples with its own pyramid_up filter); upsample the image
yourself to find faces smaller than about 80 pixels.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from ..embedding.dlib_dat import (
    DlibFormatError,
    DlibNet,
    Layer,
    S,
    _Reader,
    read_dlib_net,
)
from ..errors import ModelError

__all__ = ["mmod_spec", "load_dlib_mmod", "build_mmod_onnx", "cached_mmod_onnx", "OnnxMmodDetector", "tiled_pyramid"]

MMOD_CONVERTER_VERSION = 1
PYRAMID_N = 6  # pyramid_down<6>


def mmod_spec() -> list[S]:
    """loss_mmod<con<1,9,9,1,1,rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid<pyramid_down<6>>>>>>>>

    rcon5 = relu<affine<con<45,5,5,1,1>>>; downsampler = three relu<affine<con<N,5,5,2,2>>> with N=16,32,32.
    """

    def con(n, k, s):
        return S("con", (("num_filters", n), ("nr", k), ("nc", k), ("stride_y", s), ("stride_x", s)))

    spec = [S("loss_mmod"), con(1, 9, 1)]
    for _ in range(3):
        spec += [S("relu"), S("affine"), con(45, 5, 1)]
    for n in (32, 32, 16):
        spec += [S("relu"), S("affine"), con(n, 5, 2)]
    spec.append(S("input_rgb_image_pyramid"))
    return spec


def _read_loss(r: _Reader, expected: S) -> Layer:
    name = r.str()
    if name != "loss_mmod_":
        raise r._fail(f"loss layer is {name!r}, expected 'loss_mmod_'")
    version = r.int()
    if version != 1:
        raise r._fail(f"mmod_options version {version} is not supported (only 1)")
    width, height = r.int(), r.int()
    p = {
        "windows": [(width, height)],
        "loss_per_false_alarm": r.float(),
        "loss_per_missed_target": r.float(),
        "truth_match_iou_threshold": r.float(),
        "nms_iou": r.float(),
        "nms_covered": r.float(),
        "ignore_iou": r.float(),
        "ignore_covered": r.float(),
    }
    return Layer("loss_mmod", p)


def _read_input(r: _Reader, expected: S) -> Layer:
    name = r.str()
    if name not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise r._fail(f"input layer is {name!r}, expected an input_rgb_image_pyramid")
    p = {"avg_red": r.float(), "avg_green": r.float(), "avg_blue": r.float(), "padding": 10, "outer_padding": 11}
    if name.endswith("2"):
        p["padding"], p["outer_padding"] = r.int(), r.int()
    return Layer("input_rgb_image_pyramid", p)


def load_dlib_mmod(path: str | Path) -> DlibNet:
    """Read ``mmod_human_face_detector.dat``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read dlib model {path}: {exc}") from None
    try:
        return read_dlib_net(data, mmod_spec(), read_input=_read_input, read_loss=_read_loss)
    except DlibFormatError as exc:
        raise DlibFormatError(f"{path}: {exc}") from None


def build_mmod_onnx(dat_path: str | Path) -> tuple[bytes, DlibNet]:
    from ..embedding.dlib_onnx import net_to_onnx

    net = load_dlib_mmod(dat_path)
    model = net_to_onnx(
        net, doc="dlib MMOD face detector conv net; input: dlib's tiled pyramid tensor", name="mmod_human_face_detector"
    )
    return model.SerializeToString(), net


def cached_mmod_onnx(dat_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The ONNX conversion of the MMOD conv net, made once into the cache dir (atomic write)."""
    from .._files import cached_model

    dat_path = Path(dat_path)
    return cached_model(
        dat_path,
        dat_path.stem,
        MMOD_CONVERTER_VERSION,
        lambda: build_mmod_onnx(dat_path)[0],
        cache_dir=cache_dir,
        what="dlib model",
    )


# --------------------------------------------------------------------------------------------------
# the tiled pyramid (rectangles are [left, top, right, bottom], inclusive, as in dlib)


def _pyramid_rects(nr: int, nc: int, padding: int, outer: int):
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    sizes = [(nc, nr)]
    while True:
        nr = math.floor(rate * nr)
        nc = math.floor(rate * nc)
        if nr * nc == 0 or nr < 5:
            break
        sizes.append((nc, nr))
    total_height = sum(h + padding for _, h in sizes) - 2 * padding
    height = 0
    prev_width = 0
    w0, h0 = sizes[0]
    for w, h in sizes:
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= (total_height - h0):
            break
        height += h + padding
        prev_width = w
    height -= padding
    out_nr, out_nc = height + 2 * outer, w0 + 2 * outer
    rects: list[tuple[int, int, int, int]] = []
    y = outer
    i = 0
    while y < height + outer and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer, y, outer + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    while i < len(sizes):
        w, h = sizes[i]
        x1, y1 = outer + w0 - 1, y - 1
        rect = (x1 - (w - 1), y1 - (h - 1), x1, y1)
        r0 = rects[0]
        if not (rect[2] < r0[0] or rect[0] > r0[2] or rect[3] < r0[1] or rect[1] > r0[3]):
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, out_nr, out_nc


def _resize_bilinear(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """dlib's resize_image with interpolate_bilinear (align-corners) on a (C, H, W) float32 array."""
    _, h, w = src.shape
    ys = np.arange(out_h) * ((h - 1) / max(out_h - 1, 1))
    xs = np.arange(out_w) * ((w - 1) / max(out_w - 1, 1))
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (ys - y0).astype(np.float32)[None, :, None]
    fx = (xs - x0).astype(np.float32)[None, None, :]
    top = src[:, y0][:, :, x0] * (1 - fx) + src[:, y0][:, :, x1] * fx
    bot = src[:, y1][:, :, x0] * (1 - fx) + src[:, y1][:, :, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def tiled_pyramid(image: np.ndarray, means, padding: int = 10, outer: int = 11):
    """dlib's input tensor for input_rgb_image_pyramid<pyramid_down<6>>: ((1,3,H,W) float32, rects)."""
    nr, nc = image.shape[:2]
    rects, out_nr, out_nc = _pyramid_rects(nr, nc, padding, outer)
    data = np.zeros((3, out_nr, out_nc), np.float32)
    l, t, r, b = rects[0]
    norm = (image.astype(np.float32).transpose(2, 0, 1) - np.asarray(means, np.float32)[:, None, None]) / 256.0
    data[:, t : b + 1, l : r + 1] = norm
    for (pl, pt, pr, pb), (l, t, r, b) in zip(rects, rects[1:]):
        data[:, t : b + 1, l : r + 1] = _resize_bilinear(data[:, pt : pb + 1, pl : pr + 1], b - t + 1, r - l + 1)
    return data[None], rects


# --------------------------------------------------------------------------------------------------
# decoding


def _output_to_input(net: DlibNet, x: np.ndarray, y: np.ndarray):
    """output_tensor_to_input_tensor: map positions down through every conv (p*stride - pad + size/2)."""
    for layer in reversed(net.layers):
        if layer.kind == "con":
            p = layer.params
            x = x * p["stride_x"] - p["padding_x"] + p["nc"] // 2
            y = y * p["stride_y"] - p["padding_y"] + p["nr"] // 2
    return x, y


def _nearest_rect(rects, px: float, py: float) -> int:
    best, best_d = 0, math.inf
    for i, (l, t, r, b) in enumerate(rects):
        dx = max(l - px, 0.0, px - r)
        dy = max(t - py, 0.0, py - b)
        d = dx * dx + dy * dy
        if d < best_d:
            best, best_d = i, d
    return best


def _round_rect(rect):
    return tuple(int(math.floor(v + 0.5)) for v in rect)


def _overlaps(a, b, iou_thresh: float, covered_thresh: float) -> bool:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    outer = (max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1)
    return inner / outer > iou_thresh or inner / area_a > covered_thresh or inner / area_b > covered_thresh


def decode(net: DlibNet, scores: np.ndarray, rects, adjust_threshold: float = 0.0):
    """Scores (1, K, h, w) -> list of ((left, top, right, bottom) inclusive ints, confidence), best first."""
    loss = net.loss.params
    rate_up = PYRAMID_N / (PYRAMID_N - 1.0)
    dets = []
    for k, (win_w, win_h) in enumerate(loss["windows"]):
        rr, cc = np.nonzero(scores[0, k] > adjust_threshold)
        xs, ys = _output_to_input(net, cc.astype(np.int64), rr.astype(np.int64))
        for r, c, x, y in zip(rr, cc, xs, ys):
            hw, hh = (win_w - 1) / 2.0, (win_h - 1) / 2.0  # centered_drect
            box = [x - hw, y - hh, x + hw, y + hh]
            level = _nearest_rect(rects, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            ox, oy = rects[level][0], rects[level][1]
            box = [box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy]
            for _ in range(level):  # point_up: p * N/(N-1) + 0.3
                box = [v * rate_up + 0.3 for v in box]
            dets.append((float(scores[0, k, r, c]), box))
    dets.sort(key=lambda d: d[0], reverse=True)
    final: list[tuple[tuple[int, int, int, int], float]] = []
    for score, box in dets:
        rb = _round_rect(box)
        if any(_overlaps(f[0], rb, loss["nms_iou"], loss["nms_covered"]) for f in final):
            continue
        final.append((rb, score))
    return final


class OnnxMmodDetector:
    """dlib's MMOD face detector (``mmod_human_face_detector.dat``) with the conv net in ONNX Runtime.

    detect(image) -> (boxes (M, 4) float32 [left, top, right+1, bottom+1], scores (M,) float32), like
    ``dlib.cnn_face_detection_model_v1(path)(image, 0)``.
    """

    def __init__(
        self,
        dat_path: str | os.PathLike | None = None,
        *,
        num_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        adjust_threshold: float = 0.0,
    ) -> None:
        self._dat = Path(dat_path) if dat_path is not None else None
        self._cache_dir = cache_dir
        self.num_threads = num_threads
        self.adjust_threshold = float(adjust_threshold)
        self._session = None
        self._net: DlibNet | None = None
        self._lock = threading.Lock()

    def _ensure(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from .._files import accepted_digest
                    from .._onnx import shared_session
                    from ..embedding.onnx_runtime import default_num_threads

                    dat = self._dat
                    if dat is None:
                        from .._models import dlib_model_path

                        dat = dlib_model_path("mmod")
                    path = cached_mmod_onnx(dat, self._cache_dir)
                    self._net = load_dlib_mmod(dat)
                    self._session = shared_session(
                        path, self.num_threads or default_num_threads(), sha256=accepted_digest(path)
                    )
        return self._session, self._net

    def detect(self, image: np.ndarray):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        session, net = self._ensure()
        inp = net.input.params
        tensor, rects = tiled_pyramid(
            image, (inp["avg_red"], inp["avg_green"], inp["avg_blue"]), inp["padding"], inp["outer_padding"]
        )
        (scores,) = session.run(["scores"], {"image_tensor": tensor})
        dets = decode(net, scores, rects, self.adjust_threshold)
        boxes = np.array([[l, t, r + 1, b + 1] for (l, t, r, b), _ in dets], np.float32).reshape(-1, 4)
        conf = np.array([s for _, s in dets], np.float32)
        return boxes, conf
