"""`Pipeline`: the one chain decode -> detect -> landmarks -> align -> embed -> compare.

It holds the loaded detector and encoder (built on first use, not at construction or import) and is
reused across calls; the CLI, the API functions and later the gallery, video loop and HTTP service all go
through it, so no stage is re-implemented elsewhere. Thread-safe for concurrent calls once built.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from . import _budget
from ._onnx import BATCH, CPU, embed_batch
from .decision import Thresholds, ThresholdsInForce, find_calibration, resolve, same
from .detection import Detector, check_detector, create_detector
from .embedding import Encoder, create_encoder, encoder_chips, uses_keypoints
from .errors import ConfigError, ImageError, NoFaceError
from .image import ImageSource, describe, load_image
from .matching import cosine_similarity, similarity_to_distance
from .thresholds import Calibration
from .types import Faces, Verification, check_face_choice

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "retinaface"
#: SFace fused with dlib's ResNet (256-d: 128 + 128, weight 0.3 on SFace's part), chosen by the rule of
#: benchmarks/DEFAULT_RULE.md (docs: *How it works*, "Encoders"): among the chains whose embedding cost per
#: face is at most half of the former default `dlib-flip+facenet`'s, the most accurate on celeba_ids held-out
#: identities that is not worse on the other sets. `sface` (128-d) was the default before. Galleries bound to
#: another model keep it (see `gallery.core.model_for_gallery`) and say how to move (`siamface gallery reembed`).
DEFAULT_MODEL = "sface+dlib"
#: Faces embedded in one call of the encoder on the CPU (a time budget is checked between calls); on a GPU,
#: `siamface._onnx.BATCH` (see `embed_batch`).
EMBED_BATCH = BATCH[CPU]


class Pipeline(ThresholdsInForce):
    """Detect, align and embed faces, and verify pairs.

    >>> p = Pipeline()                       # nothing loaded yet
    >>> result = p.verify("a.jpg", "b.jpg")  # models load here, once
    >>> result.same, result.similarity
    """

    def __init__(
        self,
        detector: str | Detector = DEFAULT_DETECTOR,
        model: str | Encoder = DEFAULT_MODEL,
        threshold: float | None = None,
        threshold_source: str | None = None,
        calibration_file: str | os.PathLike | None = None,
        refine_keypoints: bool = True,
        **detector_options,
    ) -> None:
        if isinstance(detector, str):  # a misspelt name or option is refused here, not at the first image
            check_detector(detector, **detector_options)
        self.refine_keypoints = refine_keypoints  # False: chips warped from the detector's first keypoints
        self._detector_spec = detector
        self._detector_options = detector_options
        self._model_spec = model
        self._detector: Detector | None = detector if not isinstance(detector, str) else None
        self._encoder: Encoder | None = model if not isinstance(model, str) else None
        self._threshold = threshold
        self._threshold_source = threshold_source
        self._calibration_file = Path(calibration_file) if calibration_file is not None else None
        self._thresholds: Thresholds | None = None  # resolved on first use
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Pickled (a worker process's copy: ``pool.submit(pipeline.verify, a, b)``) as what it was made from: the
        detector and model named by their names are built again on first use there (a loaded network cannot be
        pickled, nor a lock; it raised TypeError); the thresholds resolved here travel as they are."""
        state = dict(self.__dict__)
        del state["_lock"]
        if isinstance(self._detector_spec, str):
            state["_detector"] = None
        if isinstance(self._model_spec, str):
            state["_encoder"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- stages, built lazily -------------------------------------------------------------------
    @property
    def detector(self) -> Detector:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = create_detector(self._detector_spec, **self._detector_options)
        return self._detector

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = create_encoder(self._model_spec)
        return self._encoder

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds in force (1:1 and 1:N, each with its source), resolved once by the rule of
        `siamface.decision`: the caller's, else the calibration (explicit file, then the user's), else
        the model's measured defaults."""
        if self._thresholds is None:
            info = self.encoder.info
            if self._threshold is not None:
                found = resolve(info, given=self._threshold, given_source=self._threshold_source)
            else:
                found = resolve(info, calibration=find_calibration(info.name, self._calibration_file, info))
            self._thresholds = found
        return self._thresholds

    @property
    def calibration(self) -> Calibration | None:
        """The calibration in force for this pipeline's model (explicit file, then the user's), or None
        (also when the caller gave a threshold)."""
        return self.thresholds.calibration

    # -- verbs ------------------------------------------------------------------------------------
    def load_image(self, source: ImageSource) -> np.ndarray:
        return load_image(source)

    def detect(self, image: ImageSource) -> Faces:
        """All faces in an image, biggest first, with boxes, scores and landmarks."""
        array = _as_array(image)
        _budget.check("detection")
        return self.detector.detect(array)

    def embed(self, image: ImageSource, faces: Faces | None = None) -> Faces:
        """Faces of an image (all those `detect` finds, or the `faces` given, a `Faces`) with aligned chips and
        L2-normalised embeddings filled in."""
        array = _as_array(image)
        if faces is None:
            _budget.check("detection")
            faces = self.detector.detect(array)
        return self.embed_many([(array, faces)])[0]

    def embed_many(self, items: list[tuple[np.ndarray, Faces]]) -> list[Faces]:
        """`embed` for several images at once: every face of every (RGB array, `Faces`) pair is cropped, and
        the chips go through the network together, `EMBED_BATCH` at a time on the CPU, more on a GPU (a
        request's time budget is checked between batches), so a folder or a group of photos costs one forward pass per batch rather than one
        per image. Each image is any image `embed` takes (an RGB uint8 array is used as it is); `faces` must be a
        `Faces` (from `detect`)."""
        # A float or grey array was warped into chips as it was: a 0..1 photo's embedding matched its own at 0.61
        # (a stranger's), a grey one raised IndexError; a path reached OpenCV.
        items = [(_as_array(image), _as_faces(faces)) for image, faces in items]
        encoder = self.encoder
        per_image = [
            encoder_chips(encoder, image, faces.boxes, faces.landmarks, self._chip_keypoints(image, faces))
            for image, faces in items
        ]
        total = sum(len(faces) for _, faces in items)
        parts = [np.zeros((0, encoder.info.embedding_size), np.float32)]
        if total:
            fused = isinstance(per_image[0], tuple)  # a fused model: one chip array per part
            chips = tuple(np.concatenate(part) for part in zip(*per_image)) if fused else np.concatenate(per_image)
            step = embed_batch()
            for lo in range(0, total, step):
                _budget.check("embedding")
                batch = tuple(c[lo : lo + step] for c in chips) if fused else chips[lo : lo + step]
                parts.append(encoder.embed(batch))
        embeddings = np.concatenate(parts)
        out, start = [], 0
        for (_, faces), chips in zip(items, per_image):
            n = len(faces)
            faces.chips = chips[0] if isinstance(chips, tuple) else chips  # a fused model: its first part's
            faces.embeddings = embeddings[start : start + n]
            start += n
            out.append(faces)
        return out

    def _chip_keypoints(self, image: np.ndarray, faces: Faces) -> np.ndarray | None:
        """The keypoints the encoder's chips are warped from: the detector's, with those of small faces found
        again (`RetinaFaceDetector.refine_keypoints`) when the encoder's chips are warped from keypoints and
        the faces came from this pipeline's detector, which can refine them. `faces` is left unchanged."""
        keypoints = faces.data.get("keypoints")
        refine = getattr(self.detector, "refine_keypoints", None) if self.refine_keypoints else None
        if keypoints is None or refine is None or not len(faces) or not uses_keypoints(self.encoder):
            return keypoints
        if faces.detector != getattr(self.detector, "name", None):
            return keypoints
        _budget.check("keypoint refinement")  # a pass per small face: a request's time budget holds
        return refine(image, faces.boxes, keypoints)

    def embed_largest(self, image: ImageSource) -> tuple[Faces, int]:
        """The largest face of an image (a `Faces` of length 1) and how many faces were found.

        Raises `NoFaceError` when there is none. Only the largest face is aligned and embedded.
        """
        return self.embed_one(image, "largest")

    def embed_one(self, image: ImageSource, face: str = "largest") -> tuple[Faces, int]:
        """One face of an image, ``"largest"`` or the one nearest the ``"centre"`` (see `Faces.chosen`), as a
        `Faces` of length 1, and how many faces were found. Raises `NoFaceError` when there is none, `ConfigError`
        for another `face` (before the image is read)."""
        check_face_choice(face)
        array = _as_array(image)
        _budget.check("detection")
        found = self.detector.detect(array)
        if len(found) == 0:
            raise NoFaceError(
                describe(image) if not isinstance(image, np.ndarray) else "image", getattr(self.detector, "name", "")
            )
        k = found.chosen(face, array.shape)
        return self.embed(array, found[k]), len(found)

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two embeddings, each one face's (1-D, or one row: ``faces.embeddings[i]`` or a
        `Faces` of one face's ``embeddings``). `ConfigError` for several faces' at once, `ModelMismatchError` for
        embeddings of different sizes (made by different models)."""
        return float(cosine_similarity(_one_embedding(a, "a"), _one_embedding(b, "b")))

    def verify(self, a: ImageSource, b: ImageSource, threshold: float | None = None) -> Verification:
        """Are the (largest) faces of two images the same person?

        Raises `ImageError` for an unreadable input and `NoFaceError` when an image has no face.
        """
        face_a, n_a = self.embed_largest(a)
        face_b, n_b = self.embed_largest(b)
        similarity = self.compare(face_a.embeddings[0], face_b.embeddings[0])
        notes = []
        for label, n in (("a", n_a), ("b", n_b)):
            if n > 1:
                notes.append(f"{label}: {n} faces found, the largest was used")
        return same(similarity, self.thresholds.given(threshold).verify).extend(
            Verification,
            distance=float(similarity_to_distance(similarity)),
            model=self.encoder.info.name,
            detector=getattr(self.detector, "name", type(self.detector).__name__),
            box_a=tuple(float(v) for v in face_a.boxes[0]),
            box_b=tuple(float(v) for v in face_b.boxes[0]),
            faces_a=n_a,
            faces_b=n_b,
            notes=tuple(notes),
        )


def _as_faces(faces) -> Faces:
    if not isinstance(faces, Faces):  # boxes as a list went on to fail with "'list' object has no attribute 'boxes'"
        raise ConfigError(f"faces must be a Faces (what detect returns), not {type(faces).__name__}")
    return faces


def _one_embedding(embedding, which: str) -> np.ndarray:
    # The embeddings of two faces each were flattened into one long vector: their similarity, the sum of two
    # cosines, was clipped to 1.0 and called the same person.
    vector = np.squeeze(np.asarray(embedding, np.float32))
    if vector.ndim != 1:
        raise ConfigError(
            f"compare takes one face's embedding as {which}, got an array of shape {np.shape(embedding)} "
            "(faces.embeddings[i] is face i's)"
        )
    return vector


def _as_array(image: ImageSource) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        if not image.shape[0] or not image.shape[1]:  # what else an RGB array holds is the caller's to choose
            raise ImageError(describe(image), f"an image of {image.shape[1]}x{image.shape[0]}: no pixels")
        return np.ascontiguousarray(image)
    return load_image(image)


_default: Pipeline | None = None
_default_lock = threading.Lock()


def default_pipeline() -> Pipeline:
    """The process-wide pipeline behind the module-level functions (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Pipeline()
        return _default
