"""The Python API at its edges: what it raises for odd inputs (always a `SiamfaceError` with a clear message), and
errors that cross a process boundary whole."""

from __future__ import annotations

import io
import json
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from conftest import att, att_rgb, run_cli, scene
from PIL import Image

import siamface
from siamface.errors import ImageError, NoFaceError, OverBudgetError, SiamfaceError
from siamface.gallery.store import (
    GalleryReembeddedError,
    GalleryUnavailableError,
    ModelBinding,
    PersonExistsError,
    StaleRebindError,
    UnknownPersonError,
)


def _truncated_face() -> bytes:
    buf = io.BytesIO()
    Image.open(att(3, 1)).save(buf, format="JPEG")
    return buf.getvalue()[:500]


@pytest.mark.parametrize(
    "error",
    [
        ImageError("a.jpg", "truncated or corrupt image data"),
        NoFaceError("a.jpg", "retinaface"),
        OverBudgetError("detection", 2.5),
        UnknownPersonError("alice", "g.db"),
        PersonExistsError("alice"),
        GalleryUnavailableError("g.db: disk full", "full"),
        StaleRebindError("g.db", [3, 4]),
        GalleryReembeddedError("g.db", ModelBinding("sface", "1", 128), ModelBinding("sface+dlib", "1", 256)),
        siamface.ConfigError("top must be >= 1"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_error_pickles_with_its_message_and_attributes(error):
    # ImageError, OverBudgetError, UnknownPersonError, ... raised TypeError when unpickled, and NoFaceError took
    # its whole message for the file's name ("a.jpg: no face found ...: no face found")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error) and back.args == error.args
    assert vars(back) == vars(error)


def test_an_image_error_in_a_worker_process_reaches_the_caller_as_itself():
    # a pool of processes decoding photos: the worker's ImageError broke the pool's result instead
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(siamface.load_image, _truncated_face())
        with pytest.raises(ImageError, match="truncated") as info:
            future.result(timeout=60)
    assert info.value.source == "<500 bytes>" and isinstance(info.value, SiamfaceError)


def test_an_unknown_face_choice_is_a_config_error_before_any_work():
    # Pipeline.embed_one(image, "middle") detected the faces, then raised a bare ValueError
    pipeline = siamface.Pipeline()
    with pytest.raises(siamface.ConfigError, match="'largest' or 'centre', not 'middle'"):
        pipeline.embed_one(att(3, 1), "middle")
    assert pipeline._detector is None  # refused before the detector was built
    faces = siamface.detect(att(3, 1))
    with pytest.raises(siamface.ConfigError, match="not 'center'"):
        faces.chosen("center", (112, 92))
    assert faces.chosen("centre", (112, 92)) == 0


def test_a_path_given_as_bytes_is_told_to_be_given_as_str():
    # os.fsencode(path), or a name read from a binary file: decoded as an image's contents, it was "not an image,
    # or a format that cannot be decoded", which sent the user looking at a good photo
    path = bytes(att(3, 1))
    for call in (siamface.load_image, siamface.detect, lambda p: siamface.verify(p, att(3, 2))):
        with pytest.raises(
            ImageError,
            match="a line of text like a file name; bytes are taken as.*give a path as a str or a pathlib.Path",
        ):
            call(path)
    assert siamface.verify(str(path, "utf-8"), att(3, 2)).same
    # bytes that are an image, or not text, are what they were
    with pytest.raises(ImageError, match="not an image, or a format"):
        siamface.load_image(bytes(range(256)) * 4)
    with pytest.raises(ImageError, match="not an image, or a format"):
        siamface.load_image(b"a text file\nof two lines\n")
    with pytest.raises(ImageError, match="not an image, or a format"):
        siamface.load_image(b"hello world")


def test_a_closed_gallery_refuses_to_be_used(tmp_path, pipeline):
    # used after close() (after its `with` block), a gallery reopened its database unasked: searches and
    # enrolments went on, leaving a connection open that nothing would close
    from siamface.gallery import Gallery

    with Gallery(tmp_path / "g.db", pipeline, create=True) as gallery:
        gallery.enroll("s3", [att(3, 1), att(3, 2)])
        assert gallery.identify(att(3, 4), audit=False).faces[0].person == "s3"
    for use in (
        lambda: gallery.identify(att(3, 4), audit=False),
        lambda: gallery.verify("s3", att(3, 4)),
        lambda: gallery.enroll("s4", [att(4, 1)]),
    ):
        with pytest.raises(siamface.GalleryError, match="g.db: this gallery was closed; open it again"):
            use()
    gallery.close()  # closing again does nothing
    for nothing in (None, 5, b"g.db"):  # an AttributeError ("'NoneType' object has no attribute 'location'")
        with pytest.raises(siamface.ConfigError, match="a gallery is a path, a postgresql:// URL or a Store, not"):
            Gallery(nothing, pipeline)
    with Gallery(tmp_path / "g.db", pipeline) as again:
        assert [p.name for p in again.store.people()] == ["s3"]


def test_a_pillow_image_is_taken_as_its_file_is():
    # a Pillow image was "unsupported input type", and np.asarray of it, the obvious way round, is another
    # picture for some modes: a CMYK photo's four channels were taken for RGBA and its face was not found
    face = att_rgb(3, 1, (1.0, 0.8, 0.6))
    buf = io.BytesIO()
    Image.fromarray(face).convert("CMYK").save(buf, format="JPEG", quality=95)
    cmyk = Image.open(io.BytesIO(buf.getvalue()))
    with pytest.raises(NoFaceError):
        siamface.verify(np.asarray(cmyk), att(3, 2))
    assert siamface.verify(cmyk, att(3, 2)).same and cmyk.mode == "CMYK"  # the caller's image is left as it was
    assert np.array_equal(siamface.load_image(cmyk), siamface.load_image(buf.getvalue()))
    # EXIF orientation applied as for the file; the file's name names it; one alone is one image to enroll
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(face))).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    sideways = Image.open(io.BytesIO(buf.getvalue()))
    assert siamface.load_image(sideways).shape == face.shape
    with Image.open(att(3, 1)) as opened:
        pass
    with pytest.raises(ImageError, match=r"s3/1.pgm: a Pillow image whose file was closed .* call its load\(\)"):
        siamface.detect(opened)
    with pytest.raises(ImageError, match=r"<RGB image 8x8>: image is 8x8"):
        siamface.load_image(Image.new("RGB", (8, 8)))
    with pytest.raises(ImageError, match="limit of 1000"):
        siamface.load_image(Image.open(att(3, 1)), max_pixels=1000)


def test_a_pillow_image_alone_is_one_image_to_enroll(tmp_path, pipeline):
    from siamface.gallery import Gallery

    with Gallery(tmp_path / "g.db", pipeline, create=True) as gallery:
        report = gallery.enroll("s3", Image.open(att(3, 1)))
        assert len(report.added) == 1 and report.added[0].source.endswith("s3/1.pgm"), report
        assert gallery.verify("s3", Image.open(att(3, 2))).accepted
        with pytest.raises(siamface.ConfigError, match="images must be an image or a list of images, not NoneType"):
            gallery.enroll("s4", None)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_face": 40}, "detector 'retinaface' has no option 'min_face'; its options: min_face_size, upsample"),
        ({"detector": "hog", "max_side": 640}, "detector 'hog' has no option 'max_side'"),
        ({"detector": "retina"}, "unknown detector 'retina'; choose one of: .*retinaface"),
    ],
)
def test_a_misspelt_detector_or_option_is_refused_when_the_pipeline_is_made(options, message):
    # Pipeline(min_face=40) was made, then raised Python's TypeError at its first image
    with pytest.raises(siamface.ConfigError, match=message):
        siamface.Pipeline(**options)
    assert siamface.Pipeline(max_side=640, min_face_size=40).detect(att(3, 1)).boxes.shape == (1, 4)


def test_one_pipeline_and_gallery_shared_by_eight_threads_answer_as_one_thread(tmp_path, pipeline):
    # every kind of input at once, from 8 threads, on one Pipeline and one Gallery: the same bits as alone
    from siamface.gallery import Gallery

    jpeg = io.BytesIO()
    Image.open(att(5, 4)).save(jpeg, format="JPEG", quality=95)
    probes = [
        att(3, 4),
        str(att(4, 4)),
        jpeg.getvalue(),
        Image.open(att(6, 4)),
        att_rgb(3, 3).astype(np.float32) / 255,
        att_rgb(4, 3)[:, ::-1],
        np.asarray(Image.open(att(11, 4))),
    ]
    with Gallery(tmp_path / "g.db", pipeline, create=True) as gallery:
        for s in (3, 4, 5, 6):
            gallery.enroll(f"s{s}", [att(s, 1), att(s, 2)])

        def answer(k):
            probe = probes[k % len(probes)]
            embedding = pipeline.embed(probe).embeddings[0]
            found = gallery.identify(probe, audit=False)
            return embedding, pipeline.verify(probe, att(3, 1)).similarity, found.names, found.faces[0].similarity

        alone = [answer(k) for k in range(len(probes))]
        with ThreadPoolExecutor(8) as pool:
            shared = list(pool.map(answer, range(4 * len(probes))))
    for k, (embedding, similarity, names, best) in enumerate(shared):
        expected = alone[k % len(probes)]
        assert np.array_equal(embedding, expected[0]) and (similarity, names, best) == expected[1:]
    assert [a[2] for a in alone] == [["s3"], ["s4"], ["s5"], ["s6"], ["s3"], ["s4"], ["unknown"]]


def _phone_photo(orientation: int) -> bytes:
    """s3's face in a 360x480 portrait scene, stored as a phone held sideways stores it: the pixels turned, the
    EXIF orientation saying how to turn them back."""
    upright = scene([(att_rgb(3, 1), 2.0, (90, 150))], size=(480, 360))
    stored = {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def test_a_phone_photo_stored_sideways_is_read_upright_on_every_path(tmp_path, pipeline):
    # verify, detect --out, enrol, identify and find each read the photo upright (one decoder for all): a path
    # that read the stored pixels would see the face turned, and reject it (see how-it-works, Decode)
    photos = tmp_path / "photos"
    photos.mkdir()
    for o in (3, 6, 8):
        (photos / f"IMG_{o}.jpg").write_bytes(_phone_photo(o))
        assert Image.open(photos / f"IMG_{o}.jpg").size == ((360, 480) if o == 3 else (480, 360))  # (w, h) stored
        result = siamface.verify(photos / f"IMG_{o}.jpg", att(3, 2))
        x1, y1, x2, y2 = result.box_a  # where the face is upright: about (90, 150) to (274, 374)
        assert result.same and abs((x1 + x2) / 2 - 182) < 20 and abs((y1 + y2) / 2 - 262) < 30
    out = run_cli("detect", photos / "IMG_6.jpg", "--out", tmp_path / "drawn.png")
    assert out.returncode == 0 and np.asarray(Image.open(tmp_path / "drawn.png")).shape == (480, 360, 3)
    gallery = tmp_path / "g.db"
    out = run_cli("enroll", "-g", gallery, "s3", photos / "IMG_6.jpg", photos / "IMG_8.jpg")
    assert out.returncode == 0, out.stderr
    out = run_cli("identify", "-g", gallery, att(3, 4), "--json")
    assert json.loads(out.stdout)["results"][0]["faces"][0]["person"] == "s3", out.stdout
    out = run_cli("find", "-g", gallery, "s3", photos, "--no-cache", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["found"]) == 3, out.stdout


def test_a_pipeline_goes_to_a_worker_process_and_decides_there_as_here():
    # pool.submit(pipeline.verify, a, b) pickles the pipeline: its lock and loaded networks raised TypeError
    # ("cannot pickle '_thread.lock' object"); it travels as what it was made from, its thresholds as resolved
    made = siamface.Pipeline(threshold=0.8, max_side=640)
    here = made.verify(att(3, 1), att(3, 2))
    copy = pickle.loads(pickle.dumps(made))
    assert copy._detector is None and copy._encoder is None and copy.threshold == 0.8
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(made.verify, att(3, 1), att(3, 2)).result(timeout=120)
    assert there == here and there.threshold == 0.8


def test_identify_converts_an_array_of_floats_once(tmp_path, pipeline, monkeypatch):
    # Gallery.identify passed a float array on as it was, and detect and embed each converted it (0.6 s apiece
    # for a 12 MP photo)
    import siamface.image
    from siamface.gallery import Gallery

    calls = []
    convert = siamface.image._from_array
    monkeypatch.setattr(siamface.image, "_from_array", lambda *a: calls.append(a[0].dtype) or convert(*a))
    with Gallery(tmp_path / "g.db", pipeline, create=True) as gallery:
        gallery.enroll("s3", [att(3, 1), att(3, 2)])
        calls.clear()
        assert gallery.identify(att_rgb(3, 4) / 255.0, audit=False).names == ["s3"]
    assert calls == [np.float64]


def test_a_url_is_said_not_to_be_fetched():
    # "https://example.com/a.jpg: file not found" left a user wondering whether it was downloaded and missing
    for url in ("https://example.com/alice.jpg", "http://10.0.0.2/cam.jpg", "s3://bucket/alice.jpg"):
        with pytest.raises(ImageError, match=f"^{url}: file not found: a URL is not fetched"):
            siamface.detect(url)
    with pytest.raises(ImageError, match=r"nope.jpg: file not found$"):
        siamface.detect("nope.jpg")


def test_an_upload_of_a_line_of_text_is_not_told_about_python_paths():
    # the hint about str and pathlib.Path is for a caller's bytes; the service's uploads (named by it) are contents
    with pytest.raises(ImageError, match="^upload 'a': not an image, or a format that cannot be decoded"):
        siamface.load_image(b"photos/alice.jpg", name="upload 'a'")


def test_compare_takes_one_face_each_and_refuses_other_models_embeddings():
    # two faces' embeddings each were flattened into one vector: the sum of two cosines, clipped to 1.0, called
    # the same person; and embeddings of two models raised a bare ValueError
    pipeline = siamface.Pipeline()
    pair = pipeline.embed(scene([(att_rgb(3, 1), 1.5, (40, 60)), (att_rgb(4, 1), 1.5, (360, 60))])).embeddings
    stranger = siamface.embed(att(11, 1)).embeddings
    assert pair.shape[0] == 2 and pipeline.compare(pair[0], pair[1]) < 0.7
    assert pipeline.compare(pair[:1], pair[1]) == pipeline.compare(pair[0], pair[1])  # one row is one face
    with pytest.raises(siamface.ConfigError, match=r"one face's embedding as a, got an array of shape \(2, 256\)"):
        pipeline.compare(pair, np.concatenate([stranger, stranger]))
    with pytest.raises(siamface.ModelMismatchError, match="different sizes .256 and 128.: made by different models"):
        pipeline.compare(pair[0], pair[0][:128])


def test_embed_many_takes_the_images_embed_takes():
    # a float or grey image given to embed_many was warped into chips as it was: a 0..1 photo's embedding
    # matched its own at 0.61 (below the threshold: "another person"), a grey one raised IndexError, a path
    # an OpenCV error; boxes as a list an AttributeError
    pipeline = siamface.Pipeline()
    face = att_rgb(3, 1)
    found = pipeline.detect(face)
    expected = pipeline.embed(face, found[:]).embeddings
    for image in (face / 255.0, face.astype(np.float32), face[:, :, 0], att(3, 1), face.copy(order="F")):
        (faces,) = pipeline.embed_many([(image, found[:])])
        assert np.array_equal(faces.embeddings, expected)
    with pytest.raises(siamface.ConfigError, match="faces must be a Faces .what detect returns., not list"):
        pipeline.embed(face, [[8, 18, 84, 108]])
