"""Decoding at the edge: the one place where files, bytes and foreign arrays become images.

Everything deeper in siamface takes an RGB ``uint8`` array of shape (H, W, 3), C-contiguous. `load_image`
accepts a path, raw bytes, a binary file object, a Pillow image or a NumPy array and returns exactly that, or
raises `ImageError` naming the input and the reason. Decoding is done by Pillow: JPEG, PNG, BMP, PGM/PPM, TIFF,
WebP, GIF (first frame). The EXIF orientation is applied; grayscale, palette, alpha (composited over
white), CMYK and 16-bit inputs (either byte order) are normalised. The pixel count is checked from the header *before*
the pixels are decoded, so a decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import stat
import sys
import warnings
from typing import IO

import numpy as np

from ._files import open_for_reading
from .errors import ConfigError, ImageError

#: Largest image decoded by default, in pixels (about 8000 x 6000). Override per call with `max_pixels`.
MAX_PIXELS = 48_000_000
#: Largest encoded input read, in bytes.
MAX_BYTES = 100 * 1024 * 1024
#: Smallest side accepted, in pixels: below it there is no face to find.
MIN_SIDE = 16
#: The Pillow readers tried, and no other (each reader is a parser a crafted file may aim at): JPEG (MPO, the
#: JPEG of many cameras, included), PNG, BMP, PGM/PPM/PBM, TIFF, WebP, GIF.
FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "GIF")

#: What `save_image` writes, by suffix: pictures that `load_image` reads back.
SAVED_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
    ".ppm": "PPM",
}

#: Most scans (SOS markers) in a JPEG file that is decoded. A photo has 1 to about 12 (a progressive one, 10 by
#: libjpeg's script; an MPO's later pictures and an EXIF thumbnail add a few), but each scan is a pass over the
#: whole picture: a 150 KB progressive JPEG of 24 MP repeating one scan 300 times took 11 s to decode, 10,000 times
#: (560 KB) would take about 6 minutes, in one call no time budget can stop.
MAX_JPEG_SCANS = 64

#: The brands of an ISO media file (``ftyp``) that is a HEIF still image (HEIC of phones, AVIF): not decoded.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})

log = logging.getLogger(__name__)

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | np.ndarray


def describe(source: object) -> str:
    """A short human name for an input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {source.shape}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if is_pil_image(source):
        filename = getattr(source, "filename", None)
        return (
            filename
            if isinstance(filename, str) and filename
            else f"<{source.mode} image {source.width}x{source.height}>"
        )
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(source).__name__}>"


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Return the image as an RGB uint8 array (H, W, 3), or raise `ImageError`.

    Arrays are taken as RGB (or gray) already: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), in either byte order;
    uint8, uint16 (scaled down), int32/int64/uint32 in 0..255 or 0..65535, or float in 0..1 or 0..255 (0..1 when no value is
    over 1.1; a 10 % overshoot, as a resize leaves, is clipped) are accepted; values outside are an
    `ImageError`, never clipped into another picture. OpenCV users must convert BGR to RGB first.

    A Pillow image is converted by its mode, as a file is (CMYK, palette, 16-bit, alpha), its EXIF orientation
    applied, and the caller's image left as it was; ``np.asarray`` of it would give the array of another picture
    for some modes (CMYK's four channels taken for RGBA, a palette's indices for grey levels). An image turned
    upright by hand (``rotate``) keeps its file's orientation tag and would be turned again: turn it with
    ``ImageOps.exif_transpose``, which drops the tag.
    """
    label = name or describe(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, label, max_pixels)
    if is_pil_image(source):
        if getattr(source, "tile", None) and getattr(source, "fp", None) is None:  # Pillow asserts on it
            raise ImageError(
                label,
                "a Pillow image whose file was closed before its pixels were read: call its load() inside the "
                "with block, or give the path",
            )
        return _upright_rgb(lambda: source, label, max_pixels)
    data = _read_bytes(source, label)
    # bytes a caller holds may be a path as bytes; an upload's or a file's (named by its reader) are contents
    path_like = name is None and isinstance(source, (bytes, bytearray, memoryview))
    return _decode(data, label, max_pixels, path_like)


def read_image_file(path: str | os.PathLike, label: str | None = None) -> bytes:
    """The bytes of the image file `path` (at most `MAX_BYTES`), or `ImageError`. What is read is what was
    checked: the file is opened first (without waiting: a FIFO has no writer to wait for) and the open file is
    asked whether it is a regular file, so a pipe, socket or device is never read (a FIFO would wait for a
    writer for ever, /dev/zero never ends), even one put in the file's place after a check by name."""
    label = label or os.fspath(path)
    try:
        fd, info = open_for_reading(path)
    except FileNotFoundError:
        if "://" in os.fspath(path)[:16]:  # https://, s3://, file://: a name, not a file here
            raise ImageError(
                label, "file not found: a URL is not fetched (siamface works offline); give a file"
            ) from None
        raise ImageError(label, "file not found") from None
    except PermissionError:
        raise ImageError(label, "permission denied") from None
    except OSError as exc:
        raise ImageError(label, f"could not be read ({exc.strerror or exc})") from None
    try:
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(label, "is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(label, "not a regular file (a pipe, socket or device): not read")
        if info.st_size > MAX_BYTES:
            raise ImageError(label, f"file is {info.st_size} bytes, more than the {MAX_BYTES}-byte limit")
        chunks, size = [], 0
        while size <= MAX_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise ImageError(label, f"could not be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # grown since it was asked its size
        raise ImageError(label, f"more than the {MAX_BYTES}-byte limit")
    return data


def _read_bytes(source: object, label: str) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        data = read_image_file(source, label)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = _read_all(source, label)
    else:
        raise ImageError(
            label,
            f"unsupported input type {type(source).__name__}; "
            "give a path, bytes, a binary file object, a Pillow image or a NumPy array",
        )
    if not data:
        raise ImageError(label, "empty file (0 bytes)")
    return data


def _read_all(source: IO[bytes], label: str) -> bytes:
    """What a file object holds, to its end (at most `MAX_BYTES`). Read until it says the end: one ``read(n)``
    of an unbuffered file object (a pipe's, a socket's) returns what has arrived so far, and a good picture sent
    in parts was refused as truncated."""
    chunks, size = [], 0
    while size <= MAX_BYTES:
        try:
            chunk = source.read(MAX_BYTES + 1 - size)
        except OSError as exc:
            raise ImageError(label, f"could not be read ({exc})") from None
        if chunk is None:  # a non-blocking file object with nothing to read now
            raise ImageError(label, "a non-blocking file object had no data ready: give a blocking one or the bytes")
        if not isinstance(chunk, (bytes, bytearray)):
            raise ImageError(label, "file object must be opened in binary mode")
        if not chunk:
            break
        chunks.append(bytes(chunk))
        size += len(chunk)
    if size > MAX_BYTES:
        raise ImageError(label, f"more than the {MAX_BYTES}-byte limit")
    return b"".join(chunks)


def is_pil_image(source: object) -> bool:
    """Whether `source` is a Pillow image (told without importing Pillow: none exists before it is imported)."""
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(source, module.Image)


def _decode(data: bytes, label: str, max_pixels: int, path_like: bool = False) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    # Every SOS marker is FF DA, and entropy-coded data never holds one (an FF there is followed by 00 or a
    # restart's D0-D7), so the count bounds the scans (a segment's payload holding FF DA only counts high).
    if data[:2] == b"\xff\xd8" and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise ImageError(
            label,
            f"a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} decoded (a photo has about 1 to 12; each is "
            "a pass over the whole picture, so thousands take minutes to decode)",
        )
    try:
        return _upright_rgb(lambda: Image.open(io.BytesIO(data), formats=FORMATS), label, max_pixels)
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
            raise ImageError(
                label, "a HEIF/HEIC or AVIF photo, which is not decoded: convert it to JPEG or PNG"
            ) from None
        if path_like and _looks_like_a_path(data):
            raise ImageError(
                label,
                "not an image: these bytes are a line of text like a file name; bytes are taken as the image file's "
                "contents; give a path as a str or a pathlib.Path",
            ) from None
        raise ImageError(
            label,
            "not an image, or a format that cannot be decoded (JPEG, PNG, BMP, PGM/PPM, TIFF, WebP, GIF are supported)",
        ) from None


def _upright_rgb(opened, label: str, max_pixels: int) -> np.ndarray:
    """The Pillow image `opened()` returns, its size checked from the header before its pixels are decoded, as an
    upright (EXIF orientation applied) RGB uint8 array; Pillow's errors as `ImageError` (an unidentified file's
    `UnidentifiedImageError` left to the caller, which knows its bytes)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises) on its own bomb limit; our limit, checked below, is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _quiet_pillow()
            img = opened()
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(label, f"invalid size {width}x{height}")
            if width * height > max_pixels:
                raise ImageError(
                    label,
                    f"{width}x{height} = {width * height} pixels is more than the limit of "
                    f"{max_pixels} (a decompression bomb or a needlessly huge image)",
                )
            img.load()
    except (ImageError, UnidentifiedImageError):
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            label, f"refused as a decompression bomb: far more pixels than the limit of {max_pixels}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(label, f"truncated or corrupt image data ({exc})") from None

    with warnings.catch_warnings():
        _quiet_pillow()
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good image
            log.info("%s: its EXIF orientation is not applied: the EXIF block cannot be read (%s)", label, exc)
    try:
        return _to_rgb_array(img, label)
    except ValueError as exc:  # a mode Pillow cannot turn into RGB (a Pillow image made in one, mostly)
        if isinstance(exc, ImageError):
            raise
        raise ImageError(label, f"an image of mode {img.mode} that cannot be turned into RGB ({exc})") from None


def _quiet_pillow() -> None:
    """Within a `warnings.catch_warnings` block: Pillow's own warnings not shown. It warns "Corrupt EXIF data" of
    many a phone's photo, which is read all the same: printed to stderr as a Python warning naming Pillow's source
    file, once per photo of a library. (Filters, not ``record=True``: blocks of two threads that overlap may leave
    the other's settings behind, and a left recorder would swallow every later warning of the process.)"""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _looks_like_a_path(data: bytes) -> bool:
    """Short bytes that are one line of printable text with a folder or a suffix in it: a path given as bytes
    (``os.fsencode(path)``, a name read from a file), taken for the image's contents. Told by their form alone: no
    file is looked up (the bytes of an upload would otherwise ask the server's disk whether a path exists)."""
    if len(data) > 4096:
        return False
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return False
    return text.isprintable() and ("/" in text or os.sep in text or bool(os.path.splitext(text)[1]))


def _to_rgb_array(img, label: str) -> np.ndarray:
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        return _from_array(arr, label, MAX_PIXELS * 4)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    _check_side(arr, label)
    return np.ascontiguousarray(arr)


def _from_array(arr: np.ndarray, label: str, max_pixels: int) -> np.ndarray:
    if not arr.dtype.isnative:  # big-endian samples (a 16-bit TIFF in "MM" order, Pillow's I;16B): the same values
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(label, f"expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageError(label, f"{arr.shape[1]}x{arr.shape[0]} pixels is more than the limit of {max_pixels}")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr >> 8).astype(np.uint8)
    elif arr.dtype in (np.int32, np.int64, np.uint32):
        lowest, highest = float(arr.min(initial=0)), float(arr.max(initial=0))
        top = 65535 if highest > 255 else 255
        _check_range(lowest, highest, 0, top, "integer", "0..255 or 0..65535", label)
        out = _in_blocks(arr, lambda rows: (rows * (255.0 / top)).round().astype(np.uint8))
    elif np.issubdtype(arr.dtype, np.floating):
        lowest, highest = float(arr.min(initial=0)), float(arr.max(initial=0))  # NaN and infinity carry through
        if not (math.isfinite(lowest) and math.isfinite(highest)):
            raise ImageError(label, "array contains NaN or infinite values")
        top = 1.0 if highest <= 1.1 else 255.0  # a resize's overshoot of 0..1 is still 0..1
        _check_range(lowest, highest, -0.1 * top, 1.1 * top, "float", "0..1 or 0..255", label)
        out = _in_blocks(arr, lambda rows: np.clip(rows * (255.0 / top), 0, 255).round().astype(np.uint8))
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    else:
        raise ImageError(label, f"unsupported array dtype {arr.dtype}")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 4:
        out = _in_blocks(out, _over_white, channels=3)
    _check_side(out, label)
    return np.ascontiguousarray(out)


#: Rows of an array converted at a time: the float temporaries of a conversion stay a few tens of MB. Whole, a
#: 12-megapixel float64 photo took 2.4 s and 550 MB more than itself (three float64 copies); 48 MP, over 2 GB.
BLOCK_ROWS = 256


def _in_blocks(arr: np.ndarray, convert, channels: int | None = None) -> np.ndarray:
    """`convert` (rows of `arr` -> the same rows as uint8, with `channels` channels if given) applied to a block
    of `BLOCK_ROWS` rows at a time; the same result as applied to the whole array."""
    shape = arr.shape if channels is None else (*arr.shape[:2], channels)
    out = np.empty(shape, np.uint8)
    for top in range(0, arr.shape[0], BLOCK_ROWS):
        out[top : top + BLOCK_ROWS] = convert(arr[top : top + BLOCK_ROWS])
    return out


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 rows composited over white, as RGB uint8."""
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    return (rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)


def _check_range(lowest: float, highest: float, low: float, high: float, kind: str, expected: str, label: str) -> None:
    """`ImageError` for pixel values (`lowest` to `highest`) outside [low, high]: a normalised array (-1..1,
    mean-subtracted) or one of another scale (0..65535 as floats) would otherwise be clipped into a wrong picture
    without a word."""
    if lowest < low or highest > high:
        raise ImageError(
            label,
            f"{kind} pixel values from {lowest:g} to {highest:g}: expected {expected} (a normalised array must be "
            "turned back into an image first)",
        )


def _check_side(arr: np.ndarray, label: str) -> None:
    if min(arr.shape[0], arr.shape[1]) < MIN_SIDE:
        raise ImageError(label, f"image is {arr.shape[1]}x{arr.shape[0]} pixels; each side must be at least {MIN_SIDE}")


def to_bgr(image: np.ndarray) -> np.ndarray:
    """RGB -> BGR for OpenCV calls (the only conversion siamface does, at its own edges)."""
    return np.ascontiguousarray(image[:, :, ::-1])


def output_format(path: str | os.PathLike) -> str:
    """The format `save_image` writes for `path`, from its suffix (one of `SAVED_FORMATS`), or `ConfigError`:
    asked before the work whose picture it is, so a name like ``faces.heic`` or a folder is refused first."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in SAVED_FORMATS:
        raise ConfigError(
            f"{os.fspath(path)}: not an image file name to write ({suffix or 'no suffix'}); give one ending "
            + ", ".join(SAVED_FORMATS)
        )
    return SAVED_FORMATS[suffix]


def save_image(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write an RGB uint8 image; the format comes from the file's suffix (`output_format`: `ConfigError` for
    another). A picture of faces (`identify --out` names them): written 0600 and atomically, so it appears whole
    and a link at `path` is replaced, never written through."""
    from pathlib import Path

    from PIL import Image

    from ._files import atomic_write_bytes

    target = Path(path)
    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, format=output_format(target))
    atomic_write_bytes(target, encoded.getvalue(), mode=0o600)
