"""A model file `siamface train` exported (``--model FILE``) states its contract in its metadata: input size,
channels, normalisation, embedding size, metric, threshold, chip. A file whose metadata is wrong (hand-edited,
or another tool's), whose graph disagrees with it, whose weights give NaN, or whose weights are kept in another
file, is refused with the reason (`ModelError`, exit 2), never a traceback, an allocation of gigabytes, a NaN
similarity or a template stored from weights the version does not cover."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import att, exported_model, run_cli

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from siamface.embedding.onnx_file import OnnxFileEncoder  # noqa: E402
from siamface.errors import ModelError  # noqa: E402


def _file(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


CHIPS = np.full((2, 8, 8, 3), 128, np.uint8)


@pytest.mark.parametrize(
    "meta, why",
    [
        # a side of 100,000 pixels: every face resized to a 112 GiB buffer (numpy's ArrayMemoryError, a traceback)
        ({"input_size": 100000}, "input_size 100000 is not a whole number in 1..1024"),
        ({"input_size": -8}, "input_size -8 is not a whole number"),  # was 'negative dimensions are not allowed'
        ({"input_size": 8.5}, "input_size 8.5 is not a whole number"),  # was run at 8, silently
        ({"input_size": 16}, "the graph's input is ['n', 3, 8, 8], the metadata says (n, 3, 16, 16)"),
        ({"channels": 1}, "the graph's input is ['n', 3, 8, 8], the metadata says (n, 1, 8, 8)"),
        ({"channels": 2}, "channels 2 is neither 1 (grey) nor 3 (RGB)"),
        ({"std": 0}, "std 0 is not above 0"),  # was a NaN similarity, 'different people'
        ({"std": "raw:NaN"}, "std nan is not a finite number"),
        ({"mean": [1, 2, 3, 4, 5]}, "mean [1, 2, 3, 4, 5] has 5 values for 3 channel(s)"),
        ({"embedding_size": 8}, "the graph's output is ['n', 4], the metadata says (n, 8)"),
        ({"embedding_size": -1}, "embedding_size -1 is not a whole number"),
        ({"metric": "euclidean"}, "metric 'euclidean' is not cosine"),  # was compared by cosine all the same
        ({"threshold": "abc"}, "threshold 'abc' is not a number"),
        ({"threshold": "raw:NaN"}, "threshold nan is not a finite number"),
        ({"chip": {"size": 100000}}, "chip size 100000 is not a whole number"),  # a 30 GB crop per face
        ({"chip": {"size": 8, "padding": -3}}, "padding and margin must be >= 0"),
        ({"chip": "x"}, "chip 'x': not an object with a size"),
    ],
)
def test_a_model_file_whose_metadata_is_wrong_is_refused_when_loaded(tmp_path, meta, why):
    path = _file(tmp_path / "edited.onnx", exported_model(meta=meta))
    with pytest.raises(ModelError, match=re.escape(why)):
        OnnxFileEncoder(path, num_threads=1)


def test_verify_with_a_model_file_asking_for_a_huge_input_is_one_line_not_a_traceback(tmp_path):
    path = _file(tmp_path / "huge.onnx", exported_model(meta={"input_size": 100000}))
    result = run_cli("verify", "--model", path, att(11, 1), att(11, 2))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "input_size 100000" in result.stderr


def test_a_model_whose_output_is_not_what_it_states_is_refused_when_it_runs(tmp_path):
    # The graph names its dimensions, so only running it shows that it gives 4 values, not the 8 its metadata
    # states: numpy's concatenation error was a traceback (or a gallery of the wrong width).
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(exported_model(meta={"embedding_size": 8}, output=("n", "d")))
    proto.graph.node[1].output[0] = "product"  # reshaped to its own shape: onnxruntime cannot infer the size
    proto.graph.node.extend(
        [
            helper.make_node("Shape", ["product"], ["shape"]),
            helper.make_node("Reshape", ["product", "shape"], ["embedding"]),
        ]
    )
    encoder = OnnxFileEncoder(_file(tmp_path / "named.onnx", proto.SerializeToString()), num_threads=1)
    with pytest.raises(ModelError, match=re.escape("an output of shape (2, 4), not (2, 8)")):
        encoder.embed(CHIPS)


def test_a_model_giving_nan_is_refused_not_stored_as_a_template(tmp_path):
    # Weights that give NaN made every comparison 'different people' with similarity NaN, and enrolled a NaN
    # template: the model's output is checked before it is used.
    path = _file(tmp_path / "nan.onnx", exported_model(float("nan")))
    with pytest.raises(ModelError, match="non-finite values"):
        OnnxFileEncoder(path, num_threads=1).embed(CHIPS)
    gallery = tmp_path / "g.db"
    result = run_cli("enroll", "-g", gallery, "--model", path, "alice", att(11, 1))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "non-finite" in result.stderr
    assert run_cli("identify", "-g", gallery, "--model", path, att(11, 2)).returncode == 2


def test_a_model_that_onnx_runtime_cannot_run_is_a_model_error(tmp_path):
    # 192 values a face reshaped by 7: onnxruntime fails only when it runs (its own exception type, a traceback)
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(exported_model())
    graph = proto.graph
    del graph.node[:]
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 7], np.int64), "shape"))
    graph.node.extend(
        [
            helper.make_node("Reshape", ["input", "shape"], ["sevens"]),
            helper.make_node("ReduceMean", ["sevens"], ["mean"], axes=[1], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "one"], ["col"]),
            helper.make_node("Expand", ["col", "four"], ["embedding"]),
        ]
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([1, 4], np.int64), "four"),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 4]))
    encoder = OnnxFileEncoder(_file(tmp_path / "seven.onnx", proto.SerializeToString()), num_threads=1)
    with pytest.raises(ModelError, match="onnxruntime could not run the model"):
        encoder.embed(CHIPS[:1])


def test_a_model_whose_weights_are_in_another_file_is_refused(tmp_path, monkeypatch):
    # ONNX external data: made from the bytes read (so that the version is the digest of what runs), the
    # session read 'w.bin' from the working folder, not the model's: whoever could put a file of that name
    # where a command runs chose the weights, under the version of the model galleries trust.
    weights = np.random.default_rng(0).normal(size=(192, 4)).astype(np.float32)
    model = _file(tmp_path / "models" / "model.onnx", exported_model(weights, external="w.bin"))
    weights.tofile(tmp_path / "models" / "w.bin")
    (-weights).tofile(tmp_path / "w.bin")  # the weights of whoever may write the working folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=re.escape("tensor 'w' keeps its weights in another file")):
        OnnxFileEncoder(model, num_threads=1)
    result = run_cli("verify", "--model", model, att(11, 1), att(11, 2))
    assert result.returncode == 2 and "external data" in result.stderr, result.stderr
    # the same weights inside the file are fine
    assert OnnxFileEncoder(_file(tmp_path / "whole.onnx", exported_model(weights)), num_threads=1).embed(CHIPS).shape


def test_a_gallery_refuses_another_model_file_of_the_same_name_and_says_to_name_the_file(tmp_path):
    # A gallery binds a model file by the digest of its bytes: another model saved in its place under the same
    # name is refused. The refusal said 'Use --model mine' (the file's name for itself), which names no
    # registered model; it says to use the model's file.
    rng = np.random.default_rng(0)
    path, gallery = tmp_path / "mine.onnx", tmp_path / "g.db"
    _file(path, exported_model(rng.normal(size=(192, 4)), "mine", meta={"mean": 127, "std": 50}))
    assert run_cli("enroll", "-g", gallery, "--model", path, "alice", att(11, 1)).returncode == 0
    _file(path, exported_model(rng.normal(size=(192, 4)), "mine", meta={"mean": 127, "std": 50}))  # replaced
    enrol = run_cli("enroll", "-g", gallery, "--model", path, "bob", att(12, 1))
    search = run_cli("identify", "-g", gallery, "--model", path, att(11, 2))
    for result in (enrol, search):
        assert result.returncode == 2 and "embeddings of different models cannot be compared" in result.stderr
        assert "Use --model with the model file of 'mine' version" in result.stderr, result.stderr
        assert "reembed --model FILE.onnx" in result.stderr and "Use --model mine" not in result.stderr


def test_a_graph_made_for_batches_of_one_runs_one_face_at_a_time(tmp_path):
    # A graph exported with a fixed batch of one (as converters often leave it) failed at the second face of a
    # batch, in onnxruntime; it runs face by face. One of a fixed batch of four cannot take any number of faces.
    chips = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    weights = np.random.default_rng(1).normal(size=(192, 4))
    one = OnnxFileEncoder(_file(tmp_path / "one.onnx", exported_model(weights, batch=1)), num_threads=1)
    free = OnnxFileEncoder(_file(tmp_path / "free.onnx", exported_model(weights)), num_threads=1)
    assert np.allclose(one.embed(chips), free.embed(chips), atol=1e-6)
    with pytest.raises(ModelError, match="the graph takes batches of exactly 4 faces"):
        OnnxFileEncoder(_file(tmp_path / "four.onnx", exported_model(weights, batch=4)), num_threads=1)


def test_a_calibration_of_another_model_of_the_same_name_is_not_used(tmp_path, monkeypatch):
    # Calibrations are kept by model name: a model trained again into the same run folder (or another run's of
    # that folder name) is named as the first, and verify used the threshold measured on the first model's
    # embeddings. A calibration now records the version it measured; one of another version is passed over.
    from siamface.thresholds import Calibration, save_calibration

    monkeypatch.setenv("SIAMFACE_CONFIG_DIR", str(tmp_path / "config"))
    rng = np.random.default_rng(0)
    stats = {"mean": 127, "std": 50}
    first = _file(tmp_path / "a" / "mine.onnx", exported_model(rng.normal(size=(192, 4)), "mine", meta=stats))
    version = OnnxFileEncoder(first, num_threads=1).info.version
    save_calibration(Calibration("mine", 0.9, "eer", 0.01, 0.02, model_version=version))
    faces = (att(11, 1), att(11, 2))
    calibrated = run_cli("verify", "--model", first, "--json", *faces)
    assert calibrated.returncode in (0, 1) and json.loads(calibrated.stdout)["threshold"] == 0.9
    second = _file(tmp_path / "b" / "mine.onnx", exported_model(rng.normal(size=(192, 4)), "mine", meta=stats))
    other = run_cli("verify", "--model", second, "--json", *faces)
    assert other.returncode in (0, 1) and json.loads(other.stdout)["threshold"] == 0.5  # the file's own
    assert f"the calibration of mine is of its version {version}" in other.stderr and "not used" in other.stderr


def test_a_file_the_onnx_parser_cannot_read_is_refused_before_onnxruntime_sees_it(tmp_path):
    # the external-data check parses the model; what it cannot parse is refused, not handed to onnxruntime
    # (which might read, say, nesting deeper than this parser's limit, and the external data in it)
    path = _file(tmp_path / "garbage.onnx", b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 100)
    with pytest.raises(ModelError, match="not an ONNX model"):
        OnnxFileEncoder(path, num_threads=1)
    result = run_cli("verify", "--model", path, att(11, 1), att(11, 2))
    assert result.returncode == 2 and "not an ONNX model" in result.stderr and "Traceback" not in result.stderr
