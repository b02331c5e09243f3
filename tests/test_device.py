"""--device auto|cpu|cuda: which ONNX Runtime providers every session runs with (decided in one place,
`siamface._onnx`), tested on provider lists as onnxruntime and onnxruntime-gpu report them; cuda without CUDA
is a clear error (exit 2); the CPU's results do not change."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import att, run_cli

from siamface import _onnx
from siamface.errors import ConfigError, ModelError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
CPU_WHEEL = [CPU]  # onnxruntime
GPU_WHEEL = ["TensorrtExecutionProvider", CUDA, CPU]  # onnxruntime-gpu on a machine with a GPU


@pytest.fixture
def restore_device():
    yield
    _onnx.use_device("cpu")


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cpu", CPU_WHEEL, (CPU,)),
        ("cpu", GPU_WHEEL, (CPU,)),  # asked for the CPU, the GPU stays unused
        ("auto", CPU_WHEEL, (CPU,)),
        ("auto", GPU_WHEEL, (CUDA, CPU)),  # never TensorRT: its engines are built per machine, minutes long
        ("cuda", GPU_WHEEL, (CUDA, CPU)),  # the CPU for the operators CUDA lacks
        ("cuda", CPU_WHEEL, ModelError),
        ("gpu", GPU_WHEEL, ConfigError),
    ],
)
def test_the_providers_of_each_device(device, available, expected):
    if isinstance(expected, type):
        with pytest.raises(expected) as raised:
            _onnx.providers_for(device, available)
        if expected is ModelError:
            assert "siamface[gpu]" in str(raised.value) and "CPUExecutionProvider" in str(raised.value)
    else:
        assert _onnx.providers_for(device, available) == expected


def test_the_device_in_force_picks_the_providers_and_the_batch_of_every_new_session(restore_device, monkeypatch):
    monkeypatch.setenv("SIAMFACE_DEVICE", "auto")
    assert _onnx.use_device(None, available=GPU_WHEEL) == (CUDA, CPU)  # the environment's device
    assert _onnx.providers() == (CUDA, CPU) and _onnx.embed_batch() == 64
    made = {}
    monkeypatch.setattr(
        "onnxruntime.InferenceSession", lambda model, sess_options, providers: made.setdefault("p", providers)
    )
    _onnx.new_session(b"model bytes", 1)
    assert made["p"] == [CUDA, CPU]
    assert _onnx.use_device("cpu", available=GPU_WHEEL) == (CPU,)
    assert _onnx.embed_batch() == _onnx.BATCH[CPU] == 4


@pytest.mark.skipif(CUDA in _onnx.available_providers(), reason="this onnxruntime offers CUDA")
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("models", "--device", "cuda"), None),
        (("embed", "--device", "cuda", att(4, 1)), None),
        (("embed", att(4, 1)), {"SIAMFACE_DEVICE": "cuda"}),
    ],
)
def test_cuda_without_a_usable_gpu_is_a_clear_error(args, env):
    result = run_cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert "CUDAExecutionProvider" in result.stderr and "siamface[gpu]" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_device_in_the_environment_is_refused():
    result = run_cli("embed", att(4, 1), env={"SIAMFACE_DEVICE": "tpu"})
    assert result.returncode == 2 and "device must be one of auto, cpu, cuda" in result.stderr


def test_models_says_which_provider_runs():
    result = run_cli("models", "--json", "--device", "auto")
    assert result.returncode == 0, result.stderr
    device = json.loads(result.stdout)["device"]
    assert device["device"] == "auto" and device["providers"][-1] == CPU
    assert device["providers"][0] in device["available"]
    text = run_cli("models", "--device", "cpu").stdout
    assert "device: cpu, networks run on CPUExecutionProvider" in text


def test_cpu_results_are_the_same_bits_whichever_way_the_cpu_is_chosen():
    """The default chain's embeddings are the same bits with no --device, --device cpu and --device auto (on
    a machine without CUDA)."""
    runs = [run_cli("embed", "--json", att(6, 2), *extra) for extra in ((), ("--device", "cpu"), ("--device", "auto"))]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    vectors = [np.array([f["embedding"] for f in json.loads(r.stdout)["faces"]]) for r in runs]
    if CUDA not in _onnx.available_providers():
        assert all(np.array_equal(vectors[0], v) for v in vectors[1:])
    else:
        assert np.array_equal(vectors[0], vectors[1])
