"""Convert the Silent-Face MiniFASNet weights (.pth) to the ONNX graphs shipped in siamface.

    python tools/convert_silent_face.py [--weights ../shared/models/silent-face] \
        [--out src/siamface/liveness/models]

Builds each network with our own torch modules (tools/minifasnet.py), loads its state dict strictly,
exports it to ONNX (input "input": N x 3 x 80 x 80, BGR, 0..255; output "logits": N x 3), rewrites each
PReLU as Relu(x) + slope * Min(x, 0) (the same numbers, bit for bit; see `unfold_prelu`), checks ONNX
Runtime against torch on random and smooth inputs, and writes:

    minifasnet_v2.onnx, minifasnet_v1se.onnx   (crop scale, source and licence in the graphs' metadata)
    LICENSE-silent-face                         the Apache-2.0 licence published with the weights
    NOTICE-silent-face                          what was converted, from where, and how

Needs torch (the "train" extra); run once by a maintainer, not at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

#: (.pth file, shipped name, crop scale around the face box)
NETWORKS = (
    ("2.7_80x80_MiniFASNetV2.pth", "minifasnet_v2", 2.7),
    ("4_0_0_80x80_MiniFASNetV1SE.pth", "minifasnet_v1se", 4.0),
)
SOURCE = (
    "github.com/minivision-ai/Silent-Face-Anti-Spoofing, commit b6d5f04ad78778917853b25c778acef6d5626d15, "
    "resources/anti_spoof_models/"
)
TOLERANCE = 1e-5


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(net, scale: float, pth: Path) -> bytes:
    import onnx
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 80, 80),
        buffer,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
        opset_version=13,
        dynamo=False,
    )
    model = unfold_prelu(onnx.load_from_string(buffer.getvalue()))
    meta = {
        "scale": f"{scale:g}",
        "input": "BGR 0..255, 80x80, NCHW, face box x scale, shifted inside the image",
        "output": "3 logits; softmax index 1 = real face",
        "source": SOURCE,
        "weights": pth.name,
        "weights_sha256": sha256(pth),
        "licence": "Apache-2.0",
        "converted_by": "siamface tools/convert_silent_face.py",
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def unfold_prelu(model):
    """Every PRelu node replaced by Relu(x) + slope * Min(x, 0), in place; returns the model.

    The same value to the bit (one of the two terms is an exact zero), but ONNX Runtime 1.32's CPU PRelu
    with a per-channel slope is slow: it was half of each network's time (3.7 ms of CPU per face and network,
    2.1 ms after this rewrite, on this project's 2-core machine). The torch modules keep nn.PReLU, so the
    equality check against torch covers the rewrite.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    zero = "prelu_zero"
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        (x, slope), (y,) = node.input, node.output
        nodes += [
            helper.make_node("Relu", [x], [f"{y}/pos"]),
            helper.make_node("Min", [x, zero], [f"{y}/neg"]),
            helper.make_node("Mul", [f"{y}/neg", slope], [f"{y}/scaled"]),
            helper.make_node("Add", [f"{y}/pos", f"{y}/scaled"], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def test_inputs() -> list[np.ndarray]:
    """Pixel noise and smooth image-like inputs (upsampled noise), 0..255. (A perfectly flat grey image is
    left out: its activations cancel out and float32 rounding alone moves a logit by ~1e-5.)"""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (4, 10, 10, 3)).astype(np.float32)
    smooth = np.stack([cv2.resize(s, (80, 80), interpolation=cv2.INTER_CUBIC) for s in small])
    return [
        rng.uniform(0, 255, (4, 3, 80, 80)).astype(np.float32),
        np.clip(smooth, 0, 255).transpose(0, 3, 1, 2).copy(),
    ]


def max_difference(net, graph: bytes) -> float:
    """Largest |ONNX Runtime - torch| logit over `test_inputs`."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in test_inputs():
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = session.run(None, {"input": x})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


NOTICE = """siamface ships two anti-spoofing networks converted from the Silent-Face-Anti-Spoofing weights.

Original work: Silent-Face-Anti-Spoofing by Minivision (minivision-ai), licensed under the Apache License 2.0
(LICENSE-silent-face, the text published with the weights).
Source: {source}
{files}
Changes: the PyTorch state dicts were loaded into network code written for siamface (tools/minifasnet.py,
from the architecture upstream describes and the tensor shapes), exported to ONNX (opset 13) by
tools/convert_silent_face.py, each PReLU written as Relu(x) + slope * Min(x, 0) (the same function, faster in
ONNX Runtime), with metadata added (crop scale, input convention, source, licence). The weights themselves
are unchanged; ONNX Runtime reproduces the PyTorch logits within {tol:g}.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shared = next(
        (p / "shared" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()), ROOT.parent / "shared"
    )
    ap.add_argument("--weights", type=Path, default=shared / "models" / "silent-face")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "siamface" / "liveness" / "models")
    args = ap.parse_args(argv)
    import minifasnet

    files = []
    for pth_name, name, scale in NETWORKS:
        pth = args.weights / pth_name
        if not pth.is_file():
            ap.error(f"{pth} is missing")
        net = minifasnet.load(pth)
        graph = export(net, scale, pth)
        diff = max_difference(net, graph)
        if diff > TOLERANCE:
            raise SystemExit(f"{name}: ONNX Runtime differs from torch by {diff:g} (> {TOLERANCE:g})")
        (args.out / f"{name}.onnx").write_bytes(graph)
        files.append(f"  {pth_name} (sha256 {sha256(pth)}) -> {name}.onnx (scale {scale:g})")
        print(f"wrote {args.out / (name + '.onnx')} ({len(graph)} bytes), max |onnx - torch| {diff:.2e}")
    licence = args.weights / "LICENSE"
    (args.out / "LICENSE-silent-face").write_bytes(licence.read_bytes())
    (args.out / "NOTICE-silent-face").write_text(NOTICE.format(source=SOURCE, files="\n".join(files), tol=TOLERANCE))
    print(f"wrote {args.out / 'LICENSE-silent-face'}, {args.out / 'NOTICE-silent-face'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
