"""Every file in the package's model folders has a provenance record, and none was trained on data whose
terms forbid shipping it (issue 25: the package carried weights fitted on NUAA, replay_crops and
celeba_ids)."""

from __future__ import annotations

import json

import pytest

from siamface import provenance
from siamface.provenance import DATASETS, MODEL_FOLDERS, problems, record_file, shipped_files


def test_every_shipped_model_file_has_a_record_and_may_ship():
    assert shipped_files("liveness/models") and shipped_files("detection/models")
    assert problems() == []


def test_the_default_liveness_check_rests_on_the_pretrained_pair_only():
    files = shipped_files("liveness/models")
    assert sorted(f for f in files if f.endswith(".onnx")) == ["minifasnet_v1se.onnx", "minifasnet_v2.onnx"]
    assert not [f for f in files if "passive_v" in f or f.endswith(".npz")]


@pytest.mark.parametrize(
    "training, message",
    [
        (["nuaa"], "may not ship"),
        (["replay_crops", "upstream:silent-face"], "may not ship"),
        (["celeba_ids"], "may not ship"),
        (["somebody's photos"], "no known terms"),
        ([], None),
        (["upstream:silent-face"], None),
    ],
)
def test_a_file_trained_on_forbidden_data_or_without_a_record_fails(tmp_path, monkeypatch, training, message):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "net.onnx").write_bytes(b"weights")
    (folder / "extra.onnx").write_bytes(b"weights")
    entry = {"source": "here", "licence": "MIT", "training_data": training}
    record_file(folder).write_text(json.dumps({"files": {"net.onnx": entry, "gone.onnx": entry}}))
    found = problems([folder])
    assert any("extra.onnx: no provenance record" in p for p in found)
    assert any("gone.onnx: recorded but not shipped" in p for p in found)
    about_net = [p for p in found if p.startswith(f"{folder}/net.onnx")]
    assert (message is None and not about_net) or (message and message in about_net[0])


def test_the_terms_table_says_the_development_sets_may_not_ship():
    for name in ("nuaa", "replay_crops", "celeba_ids"):
        assert DATASETS[name][1] is False
    assert "liveness/models" in MODEL_FOLDERS and provenance.describe()


def test_the_impostor_tails_are_a_statistic_of_the_fitting_identities_recorded_as_such():
    entry = provenance.records("embedding/models")["impostor_tails.json"]
    assert entry["training_data"] == [] and entry["measured_on"] == ["celeba_ids"]
    tails = json.loads((provenance.record_file("embedding/models").parent / "impostor_tails.json").read_text())
    assert "fitting identities" in tails["source"]
