"""Converted models in the cache folder are caches, never the truth: a cached file is used only when its bytes
are the conversion's, as recorded inside the package (`siamface._conversions`); a replaced one (another valid
graph that returns a constant, a truncated file) is converted again, with a warning."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import att, exported_model, run_cli

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from siamface._conversions import KNOWN_CONVERSIONS  # noqa: E402
from siamface._files import file_sha256  # noqa: E402
from siamface._models import dlib_model_path  # noqa: E402
from siamface.detection.mmod_onnx import MMOD_CONVERTER_VERSION, build_mmod_onnx  # noqa: E402
from siamface.embedding.dlib_onnx import CONVERTER_VERSION, build_resnet_onnx  # noqa: E402
from siamface.errors import ModelError  # noqa: E402


def _constant_graph() -> bytes:
    """A valid ONNX graph with dlib's ResNet's input and output that answers the same vector for every face."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["chips"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["col"]),
        helper.make_node("Mul", ["col", "zero"], ["z"]),
        helper.make_node("Add", ["z", "vec"], ["embedding"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.zeros((1, 128), np.float32), "zero"),
        numpy_helper.from_array(np.linspace(-1, 1, 128, dtype=np.float32)[None], "vec"),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", 150, 150, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_the_conversions_are_deterministic_and_their_hashes_ship_in_the_package():
    for source, build, version in (
        (dlib_model_path("resnet"), build_resnet_onnx, CONVERTER_VERSION),
        (dlib_model_path("mmod"), lambda p: build_mmod_onnx(p)[0], MMOD_CONVERTER_VERSION),
    ):
        made = hashlib.sha256(build(source)).hexdigest()
        assert KNOWN_CONVERSIONS[(file_sha256(source), version)] == made


def test_a_cached_model_replaced_by_a_graph_that_answers_a_constant_is_converted_again(tmp_path):
    dat = dlib_model_path("resnet")
    cache = tmp_path / "cache"
    cache.mkdir()
    planted = cache / f"{dat.stem}-{file_sha256(dat)[:16]}-c{CONVERTER_VERSION}.onnx"
    planted.write_bytes(_constant_graph())
    env = {"SIAMFACE_CACHE": str(cache)}
    out = run_cli("verify", att(3, 1), att(4, 1), "--model", "dlib-resnet", "--json", env=env)
    assert out.returncode == 1, out.stdout + out.stderr  # two people, told apart (the constant said "same")
    assert json.loads(out.stdout)["similarity"] < 0.9
    assert "does not match the conversion" in out.stderr and "Traceback" not in out.stderr
    assert file_sha256(planted) == KNOWN_CONVERSIONS[(file_sha256(dat), CONVERTER_VERSION)]  # rewritten
    same = run_cli("verify", att(3, 1), att(3, 2), "--model", "dlib-resnet", env=env)
    assert same.returncode == 0 and "does not match" not in same.stderr


def test_a_truncated_cached_model_is_converted_again_not_a_crash(tmp_path):
    dat = dlib_model_path("resnet")
    cache = tmp_path / "cache"
    cache.mkdir()
    planted = cache / f"{dat.stem}-{file_sha256(dat)[:16]}-c{CONVERTER_VERSION}.onnx"
    planted.write_bytes(b"\x08\x07" + b"\xff" * 1000)
    out = run_cli("verify", att(3, 1), att(3, 2), "--model", "dlib-resnet", env={"SIAMFACE_CACHE": str(cache)})
    assert out.returncode == 0, out.stderr
    assert "converted again" in out.stderr and "Traceback" not in out.stderr


def test_a_model_files_version_is_the_digest_of_the_bytes_loaded(tmp_path, monkeypatch):
    # An exported model (--model FILE) is bound to galleries by its version, the digest of its file, which was read
    # again after ONNX Runtime had loaded the file by its path: another model put in the file's place (by whoever
    # may write it), swapped back once loaded, ran under the version of the model galleries trust. The bytes
    # hashed are the bytes loaded. The swap is made at its window: right after the session is made.
    import siamface.embedding.onnx_file as onnx_file
    from siamface.embedding.onnx_file import OnnxFileEncoder

    trusted, other = exported_model(0.1), exported_model(-0.3)
    path = tmp_path / "model.onnx"
    path.write_bytes(other)  # in the file's place when it is loaded
    loaded = []
    made = onnx_file.new_session

    def swapped_back(model, *args, **kw):
        session = made(model, *args, **kw)
        loaded.append(model if isinstance(model, bytes) else open(model, "rb").read())
        path.write_bytes(trusted)
        return session

    monkeypatch.setattr(onnx_file, "new_session", swapped_back)
    encoder = OnnxFileEncoder(path, num_threads=1)
    assert loaded == [other]
    assert encoder.info.version == hashlib.sha256(other).hexdigest()[:16] != hashlib.sha256(trusted).hexdigest()[:16]


@pytest.mark.parametrize("name", ["\x1b]52;c;ZWNobyBwd25lZA==\x07mine", "alice\u202e", "a\nb", "m" * 201])
def test_a_model_file_whose_name_could_write_to_the_terminal_is_refused(tmp_path, name):
    """A model's name (printed by every command, stored in the galleries bound to it) comes from the file's
    metadata: a crafted file's ESC sequence (OSC 52 sets the clipboard), bidirectional override, line break or
    an endless name is refused with the reason, and `verify --model` says so in one line."""
    path = tmp_path / "crafted.onnx"
    path.write_bytes(exported_model(0.1, name))
    from siamface.embedding.onnx_file import OnnxFileEncoder

    with pytest.raises(ModelError, match="control characters or is too long"):
        OnnxFileEncoder(path, num_threads=1)
    result = run_cli("verify", "--model", path, att(3, 1), att(3, 2))
    assert result.returncode == 2 and "\x1b" not in result.stderr + result.stdout and "too long" in result.stderr
    assert OnnxFileEncoder(_write(tmp_path / "fine.onnx", exported_model(0.1, "my-model"))).info.name == "my-model"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
