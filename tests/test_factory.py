"""siamface.factory: a command's options, or the service's settings, to the chain and its gallery."""

from __future__ import annotations

from types import SimpleNamespace

from siamface.factory import build_pipeline, open_gallery
from siamface.gallery import ModelBinding, calibration_file_for, open_store
from siamface.pipeline import DEFAULT_MODEL
from siamface.service.settings import Settings
from siamface.thresholds import Calibration, save_calibration

OTHER = "facenet"  # a registered model that is not the default


def options(**given):
    """Parsed chain options; no `threshold` attribute, as for a command without --threshold."""
    return SimpleNamespace(**{"detector": "haar", "model": None, "min_face": 20, "upsample": None, **given})


def test_without_a_gallery_the_options_name_the_chain(tmp_path):
    pipe, note = build_pipeline(options())
    assert note is None and pipe.encoder.info.name == DEFAULT_MODEL and pipe.detector.name == "haar"
    pipe, _ = build_pipeline(options(model=OTHER, threshold=0.7))
    assert pipe.encoder.info.name == OTHER and pipe.threshold == 0.7


def test_a_gallery_brings_its_model_and_its_calibration(tmp_path):
    gallery = tmp_path / "people.db"
    with open_store(gallery, ModelBinding(OTHER, "1", 512), create=True):
        pass
    save_calibration(
        Calibration(model=OTHER, threshold=0.42, criterion="eer", far=0.01, frr=0.02), calibration_file_for(gallery)
    )
    for given in (options(), Settings(gallery=gallery, detector="haar")):  # the CLI's options, the service's
        pipe, note = build_pipeline(given, gallery=gallery)
        assert pipe.encoder.info.name == OTHER and f"bound to model {OTHER}" in note
        assert pipe.threshold == 0.42 and "calibrated (eer)" in pipe.threshold_source
    pipe, note = build_pipeline(options(model=DEFAULT_MODEL, threshold=0.8), gallery=gallery)
    assert note is None and pipe.encoder.info.name == DEFAULT_MODEL and pipe.threshold == 0.8
    with open_gallery(gallery) as opened:  # no pipeline: one with the gallery's own model
        assert opened.store.model.name == OTHER and opened.pipeline.encoder.info.name == OTHER
