"""Where the threshold comes from: caller, calibration file beside a gallery, user file, model default."""

from __future__ import annotations

import pytest
from conftest import att

from siamface import Pipeline
from siamface.errors import ConfigError
from siamface.pipeline import DEFAULT_MODEL
from siamface.thresholds import Calibration, load_calibration, save_calibration, user_calibration_file


def cal(threshold: float, model: str = DEFAULT_MODEL) -> Calibration:
    return Calibration(
        model=model,
        threshold=threshold,
        criterion="far=0.001",
        far=0.0009,
        frr=0.08,
        dataset="unit",
        n_genuine=10,
        n_impostor=1000,
    )


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "g.thresholds.json"
    save_calibration(cal(0.91), path)
    save_calibration(cal(0.5, model="other"), path)
    assert load_calibration(DEFAULT_MODEL, path).threshold == 0.91
    assert load_calibration("other", path).threshold == 0.5
    assert load_calibration("missing", path) is None
    assert not list(tmp_path.glob("*.tmp"))


def test_precedence(tmp_path):
    default = Pipeline().encoder.info.threshold
    assert Pipeline().threshold == default
    # 1:N by FPIR from the model's shipped impostor tail: stricter as the gallery grows
    assert Pipeline().identify_threshold_source.startswith("FPIR 0.01 for 1 people")
    grown = [Pipeline().thresholds.for_gallery(n, n).identify.value for n in (1, 100, 10_000)]
    assert grown == sorted(grown) and grown[0] < grown[-1]
    assert Pipeline(threshold=0.8).identify_threshold == 0.8
    save_calibration(cal(0.93))  # the user's file
    try:
        p = Pipeline()
        assert p.threshold == 0.93 and "FAR 0.0900%" in p.threshold_source
        assert p.identify_threshold == 0.93  # a calibration is the user's point for 1:1 and 1:N
        beside = tmp_path / "gallery.thresholds.json"
        save_calibration(cal(0.95), beside)
        assert Pipeline(calibration_file=beside).threshold == 0.95
        assert Pipeline(threshold=0.8, calibration_file=beside).threshold == 0.8
        result = Pipeline().verify(att(11, 1), att(11, 2))
        assert result.threshold == 0.93 and "calibrated (far=0.001)" in result.threshold_source
    finally:
        user_calibration_file().unlink()


def test_corrupt_calibration_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="t.json: not a readable calibration file"):
        load_calibration(DEFAULT_MODEL, bad)
