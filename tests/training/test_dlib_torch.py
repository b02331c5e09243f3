"""dlib's ResNet as a torch module equals the ONNX engine on real aligned faces; blocks freeze."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import att  # noqa: E402

from siamface.embedding.onnx_file import preprocess  # noqa: E402
from siamface.embedding.onnx_runtime import OnnxDlibResnet  # noqa: E402
from siamface.training.networks import DlibResNet  # noqa: E402


@pytest.fixture(scope="module")
def chips(pipeline):
    from siamface import Pipeline

    dlib = Pipeline(detector=pipeline.detector, model="dlib-resnet")  # dlib's 150 px chips, whatever the default
    return np.concatenate([dlib.embed(str(att(s, i))).chips[:1] for s, i in ((11, 1), (10, 3), (5, 2), (9, 4))])


def test_torch_resnet_equals_onnx_engine(chips):
    net = DlibResNet().eval()
    with torch.no_grad():
        got = net(torch.from_numpy(preprocess(chips, 150, 3, net.mean, net.std))).numpy()
    want = OnnxDlibResnet().embed(chips)
    assert got.shape == (4, 128)
    assert np.abs(got - want).max() < 1e-4


def test_resnet_freezing():
    net = DlibResNet()
    blocks = net.blocks()
    assert len(blocks) > 10
    assert net.freeze(-1) == len(blocks) - 1
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(p.requires_grad for p in blocks[-1].parameters())
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) < 0.2 * sum(p.numel() for p in net.parameters())


def test_cli_does_not_import_torch():
    code = "import sys; from siamface.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
