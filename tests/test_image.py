"""Decoding at the edge: every supported format, normalisations, limits, and a clear error per bad input."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import att, att_rgb
from PIL import Image

import siamface
from siamface.errors import ImageError
from siamface.image import load_image


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **params) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


FACE = att_rgb(11, 1, (1.0, 0.8, 0.6))


@pytest.mark.parametrize(
    "fmt, mode, lossless",
    [
        ("JPEG", None, False),
        ("PNG", None, True),
        ("BMP", None, True),
        ("PPM", None, True),
        ("TIFF", None, True),
        ("WEBP", None, False),
        ("GIF", "P", False),
        ("PNG", "L", False),
    ],
)
def test_formats_decode_to_rgb_uint8(fmt, mode, lossless):
    image = load_image(encode(FACE, fmt, mode))
    assert image.dtype == np.uint8 and image.shape == FACE.shape and image.flags.c_contiguous
    if lossless:
        assert np.array_equal(image, FACE)
    else:
        assert np.abs(image.astype(int) - FACE).mean() < 20


def test_pgm_from_path_is_grey_rgb():
    image = load_image(att(33, 1))
    assert image.shape == (112, 92, 3)
    assert np.array_equal(image[:, :, 0], image[:, :, 2])


def test_path_bytes_file_and_array_agree(tmp_path):
    path = tmp_path / "face.png"
    path.write_bytes(encode(FACE, "PNG"))
    from_path = load_image(path)
    assert np.array_equal(from_path, load_image(str(path)))
    assert np.array_equal(from_path, load_image(path.read_bytes()))
    with open(path, "rb") as fh:
        assert np.array_equal(from_path, load_image(fh))
    assert np.array_equal(from_path, load_image(FACE))


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90-degree clockwise turn
    rotated = np.ascontiguousarray(np.rot90(FACE, k=1))  # what a camera held sideways stores
    image = load_image(encode(rotated, "JPEG", exif=exif.tobytes(), quality=95))
    assert image.shape == FACE.shape  # turned back upright: 112 high, 92 wide
    assert np.abs(image.astype(int) - FACE).mean() < 12


def test_alpha_is_composited_on_white():
    rgba = np.dstack([FACE, np.full(FACE.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    image = load_image(encode(rgba, "PNG"))
    assert image.shape == FACE.shape
    assert (image[:10, :10] == 255).all() and np.array_equal(image[50:, 50:], FACE[50:, 50:])


def test_16_bit_grey_png_is_scaled_to_8_bit():
    gray16 = np.asarray(Image.open(att(11, 1)), np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(gray16).save(buf, format="PNG")
    image = load_image(buf.getvalue())
    assert image.dtype == np.uint8
    assert np.array_equal(image[:, :, 0], np.asarray(Image.open(att(11, 1))))


def test_big_endian_16_bit_tiffs_and_arrays_are_decoded_not_refused():
    # A 16-bit TIFF in big-endian ("MM") byte order, as Macs, scanners and scientific cameras write it, decodes
    # to Pillow's I;16B: it was refused as "unsupported array dtype >u2", and so was a big-endian array (one
    # read from a file made on another machine), while the same pixels little-endian were a face.
    gray = np.asarray(Image.open(att(3, 1)), np.uint16) * 257
    buf = io.BytesIO()
    Image.frombytes("I;16B", (gray.shape[1], gray.shape[0]), gray.astype(">u2").tobytes()).save(buf, format="TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16B"
    image = load_image(buf.getvalue())
    assert np.array_equal(image[:, :, 0], np.asarray(Image.open(att(3, 1))))
    assert siamface.verify(buf.getvalue(), att(3, 2)).same
    face = att_rgb(3, 1)
    for array in (face.astype(">u2") * 257, face.astype(">i4"), face.astype(">f8") / 255.0):
        assert np.array_equal(load_image(array), face)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.zeros((40, 30), np.uint8), (40, 30, 3)),
        (np.zeros((40, 30, 1), np.uint8), (40, 30, 3)),
        (np.full((40, 30, 3), 65535, np.uint16), (40, 30, 3)),
        (np.full((40, 30, 4), 0.5, np.float32), (40, 30, 3)),
    ],
)
def test_arrays_are_normalised(array, expected):
    assert load_image(array).shape == expected


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


JPEG = encode(FACE, "JPEG")


@pytest.mark.parametrize(
    "source, reason",
    [
        (b"", "empty"),
        (JPEG[: len(JPEG) // 2], "truncated"),
        (b"this is a text file, not a picture\n" * 20, "not an image"),
        (_png_header_only(100_000, 100_000), "limit"),
        (np.zeros((8, 8, 3), np.uint8), "at least"),
        (np.zeros((20, 20, 2), np.uint8), "expected an array"),
        (np.full((20, 20), np.nan, np.float32), "NaN"),
        (np.zeros((20, 20), np.complex64), "dtype"),
        (12345, "unsupported input type"),
    ],
    ids=["empty", "truncated", "text", "bomb", "tiny", "two-channel", "nan", "complex", "int"],
)
def test_bad_inputs_raise_image_error(source, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(source)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found") as info:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(info.value)
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb_is_refused_before_decoding():
    # 60,000 x 60,000 RGB would need 10.8 GB; the header alone must be enough to refuse it.
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(_png_header_only(60_000, 60_000))


def test_custom_pixel_limit():
    with pytest.raises(ImageError, match="limit"):
        load_image(JPEG, max_pixels=1000)


def test_an_array_of_another_scale_is_an_image_error_never_another_picture():
    # a network's input (-1..1, or mean-subtracted), a float copy of a 16-bit picture: they were clipped into
    # a picture of another face without a word (s3's embedding from its -1..1 copy: cosine 0.64 with its own)
    face = att_rgb(3, 1)
    for array in (
        face / 127.5 - 1.0,
        face.astype(np.float32) - face.mean(),
        face.astype(np.float32) * 257.0,
        face.astype(np.int32) - 128,
        face.astype(np.int64) * 1000,
    ):
        with pytest.raises(ImageError, match="pixel values from .* expected"):
            siamface.embed(array)
    # a 0..1 picture a resize left a little over 1 (or under 0) is still that picture, not a black one
    overshoot = face / 255.0
    overshoot[0, 0, 0], overshoot[0, 1, 0] = 1.04, -0.02
    decoded = load_image(overshoot)
    assert np.array_equal(decoded[1:], face[1:]) and decoded[0, 0, 0] == 255 and decoded[0, 1, 0] == 0


def test_a_corrupt_exif_block_is_not_warned_of(recwarn):
    # a phone's photo with a broken EXIF block made Pillow warn "Corrupt EXIF data" on stderr, naming Pillow's
    # own source file, once per photo of a library; the picture itself is good and is read
    jpeg = encode(FACE, "JPEG", quality=95)
    tiff = b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 50) + b"\x12\x01\x03\x00"  # 50 entries claimed, 1 there
    app1 = b"Exif\x00\x00" + tiff
    broken = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    image = load_image(broken, name="IMG_0001.jpg")
    assert image.shape == FACE.shape and np.abs(image.astype(int) - FACE).mean() < 12
    assert not [w for w in recwarn if "EXIF" in str(w.message)]


def test_a_picture_read_from_an_unbuffered_pipe_in_parts_is_whole():
    # one read(n) of an unbuffered file object returns what has arrived: a JPEG sent down a pipe in parts was
    # refused as "truncated or corrupt image data"
    import os
    import threading

    read_end, write_end = os.pipe()

    def send():
        with open(write_end, "wb", buffering=0) as pipe:
            for start in range(0, len(JPEG), 1000):
                pipe.write(JPEG[start : start + 1000])
                time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    with open(read_end, "rb", buffering=0) as pipe:
        image = load_image(pipe)
    sender.join()
    assert np.array_equal(image, load_image(JPEG))


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding():
    # each scan of a progressive JPEG is a pass over the whole picture, and libjpeg decodes a scan repeated (it
    # only warns): a 150 KB file of 24 MP with one scan 300 times took 11 s, thousands would take minutes, in a
    # call no time budget stops (a service worker held; a photo library stalled)
    progressive = encode(FACE, "JPEG", progressive=True, quality=90)
    last = progressive.rindex(b"\xff\xda")  # the last scan: from its SOS marker to the end-of-image marker

    def repeated(times: int) -> bytes:
        return progressive[:-2] + progressive[last:-2] * times + b"\xff\xd9"

    assert progressive.count(b"\xff\xda") == 10  # libjpeg's progressive script
    assert np.abs(load_image(progressive).astype(int) - FACE).mean() < 12
    assert load_image(repeated(40)).shape == FACE.shape  # 50 scans: decoded
    start = time.perf_counter()
    with pytest.raises(ImageError, match="a JPEG of 3010 scans, more than the 64 decoded"):
        load_image(repeated(3000))
    assert time.perf_counter() - start < 0.5


def test_a_float_photo_is_converted_without_copies_of_its_size():
    # a 12-megapixel float64 photo (skimage's img_as_float) took 2.4 s and three float64 copies of itself to
    # convert, 15 times its detection; now a block of rows at a time, the same bits
    import tracemalloc

    photo = np.random.default_rng(0).random((2000, 1500, 3))  # 72 MB
    expected = np.clip(photo * 255.0, 0, 255).round().astype(np.uint8)
    tracemalloc.start()
    try:
        image = load_image(photo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(image, expected)
    assert peak < 36_000_000, peak  # the 9 MB result and a block's temporaries, 27 MB (was 144 MB)
