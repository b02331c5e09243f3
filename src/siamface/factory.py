"""Options to a working chain: the one place a command or the service turns its options into a `Pipeline`
and opens its `Gallery`.

    >>> pipeline, note = build_pipeline(args, gallery=args.gallery)   # args: parsed options, or Settings
    >>> gallery = open_gallery(args.gallery, pipeline, create=True)

With a gallery, the pipeline runs the model the gallery is bound to when none is named (`note` then says
so, see `gallery.core.model_for_gallery`), and reads the calibration file beside the gallery
(``<gallery>.thresholds.json``, written by ``siamface calibrate``) before the user's. Library code: it
returns the note, the caller decides where it goes.
"""

from __future__ import annotations

import os
from typing import Any

from ._onnx import use_device
from .decision import Thresholds
from .gallery.core import Gallery, calibration_beside, model_for_gallery
from .pipeline import DEFAULT_MODEL, Pipeline


def build_pipeline(options: Any, gallery: str | os.PathLike | None = None) -> tuple[Pipeline, str | None]:
    """The chain `options` name: anything with ``detector``, ``model`` (None: the default, or the gallery's
    own), ``min_face``, ``upsample`` (None: the detector's own) and optionally ``threshold``, ``device``
    (auto, cpu or cuda; None: ``$SIAMFACE_DEVICE``, else cpu: see `siamface._onnx`) and ``refine_keypoints``
    (False: no second detector pass on small faces' keypoints, see `RetinaFaceDetector`) attributes, such as a
    command's parsed options or the service's `Settings`. Returns (pipeline, note or None)."""
    use_device(getattr(options, "device", None))
    model, note, calibration = options.model, None, None
    if gallery is not None:
        model, note, calibration = _on_gallery(gallery, model)
    detector_options: dict[str, Any] = {"min_face_size": options.min_face}
    if options.upsample is not None:
        detector_options["upsample"] = options.upsample
    pipeline = Pipeline(
        detector=options.detector,
        model=model or DEFAULT_MODEL,
        threshold=getattr(options, "threshold", None),
        calibration_file=calibration,
        refine_keypoints=getattr(options, "refine_keypoints", True) is not False,
        **detector_options,
    )
    return pipeline, note


def gallery_thresholds(gallery: str | os.PathLike) -> Thresholds:
    """The thresholds in force on `gallery` when no threshold is given: those of the model it is bound to,
    or of the calibration beside it, or of the user's, as its commands decide."""
    model, _, calibration = _on_gallery(gallery, None)
    return Pipeline(model=model, calibration_file=calibration).thresholds


def _on_gallery(gallery: str | os.PathLike, model: str | None) -> tuple[str, str | None, os.PathLike | None]:
    """(model, note, calibration file) of a command on `gallery`: see `build_pipeline`."""
    model, note = model_for_gallery(gallery, model, DEFAULT_MODEL)
    return model, note, calibration_beside(gallery)


def open_gallery(
    spec: str | os.PathLike,
    pipeline: Pipeline | None = None,
    *,
    create: bool = False,
    keep_images: bool = False,
    fpir: float | None = None,
) -> Gallery:
    """The gallery `spec` names (an SQLite file or a ``postgresql://`` URL), searched with `pipeline` (None:
    one with the model the gallery is bound to and the calibration beside it, as `build_pipeline` builds).
    `create`: made, bound to the pipeline's model, when it does not exist; `keep_images` then decides whether
    face crops are kept. `fpir`: the 1:N FPIR target (see `Gallery`)."""
    return Gallery(spec, pipeline, create=create, keep_images=keep_images, fpir=fpir)
