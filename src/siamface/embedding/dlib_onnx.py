"""dlib's face ResNet as an ONNX graph, converted from the ``.dat`` file without dlib, torch or a network.

The graph takes ``chips``: uint8 (N, 150, 150, 3) RGB aligned face chips, NHWC, dynamic N, and returns
``embedding``: float32 (N, 128), dlib's raw descriptor (not L2-normalised: the caller normalises).

Inside the graph: uint8 -> float, NHWC -> NCHW, then dlib's input normalisation ``(pixel - mean) / 256``
with dlib's per-channel means (122.782, 117.001, 104.298, read from the file), folded into the first
convolution (it has no padding, so the fold is exact). Every ``affine`` layer (batch norm at inference)
that follows a convolution is folded into it. dlib's ``add_prev`` adds tensors of different sizes by
zero-padding the smaller one at the end of each dimension; the graph does the same with ``Pad``.

`cached_resnet_onnx` converts once into the user cache dir and returns the path of the ``.onnx`` file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._files import cached_model, default_cache_dir, file_sha256  # noqa: F401 - also imported from here
from ..errors import ModelError
from .dlib_dat import DlibNet, load_dlib_resnet

__all__ = [
    "CONVERTER_VERSION",
    "OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "net_to_onnx",
    "build_resnet_onnx",
    "cached_resnet_onnx",
    "default_cache_dir",
    "file_sha256",
]

#: Bump when the graph this module builds changes: cached models are keyed by it.
CONVERTER_VERSION = 1
OPSET = 17
INPUT_NAME = "chips"
OUTPUT_NAME = "embedding"
TENSOR_INPUT_NAME = "image_tensor"
SCORES_OUTPUT_NAME = "scores"


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ModelError("converting dlib's ResNet to ONNX needs the 'onnx' package: pip install onnx") from None
    return onnx, TensorProto, helper, numpy_helper


class _Graph:
    """A tiny ONNX graph builder that tracks the (C, H, W) shape of every value."""

    def __init__(self) -> None:
        self.onnx, self.TensorProto, self.helper, self.numpy_helper = _onnx()
        self.nodes: list = []
        self.inits: list = []
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], shape, prefix: str | None = None, **attrs) -> str:
        out = self.name(prefix or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        if shape is not None:
            self.shapes[out] = tuple(shape)
        return out


def _pool_out(size, window: int, stride: int, pad: int):
    return None if size is None else 1 + (size + 2 * pad - window) // stride


def _emit_conv(g: _Graph, x: str, weight: np.ndarray, bias: np.ndarray, p: dict) -> str:
    c, h, w = g.shapes[x]
    nf, k, nr, nc = weight.shape
    if k != c:
        raise ModelError(f"con layer expects {k} input channels, gets {c}")
    py, px, sy, sx = p["padding_y"], p["padding_x"], p["stride_y"], p["stride_x"]
    shape = (nf, _pool_out(h, nr, sy, py), _pool_out(w, nc, sx, px))
    wn = g.const("W", weight.astype(np.float32))
    bn = g.const("B", bias.astype(np.float32))
    return g.op(
        "Conv",
        [x, wn, bn],
        shape,
        "conv",
        kernel_shape=[nr, nc],
        strides=[sy, sx],
        pads=[py, px, py, px],
        dilations=[1, 1],
        group=1,
    )


def _pad_to(g: _Graph, x: str, target: tuple[int, int, int]) -> str:
    shape = g.shapes[x]
    if shape == target:
        return x
    ends = [t - s for s, t in zip(shape, target)]
    pads = np.array([0, 0, 0, 0, 0, *ends], dtype=np.int64)  # N,C,H,W begins then N,C,H,W ends
    return g.op(
        "Pad", [x, g.const("pads", pads), g.const("zero", np.zeros((), np.float32))], target, "pad", mode="constant"
    )


def net_to_onnx(net: DlibNet, *, doc: str = "", name: str = ""):
    """Build the ONNX ModelProto of a dlib network.

    input_rgb_image_sized: input `chips` uint8 (N, nr, nc, 3), normalisation inside the graph.
    input_rgb_image_pyramid: input `image_tensor` float32 (N, 3, H, W), dlib's own (tiled, normalised) tensor.
    """
    g = _Graph()
    helper, TensorProto = g.helper, g.TensorProto
    inp = net.input
    means = np.array([inp.params["avg_red"], inp.params["avg_green"], inp.params["avg_blue"]], np.float64)
    layers = list(net.layers)
    norm_folded = False
    if inp.kind == "input_rgb_image_pyramid":
        # The input is dlib's input tensor itself: float32 (N, 3, H, W), already normalised and tiled.
        in_name, out_name = TENSOR_INPUT_NAME, SCORES_OUTPUT_NAME
        in_info = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", 3, "H", "W"])
        x = g.op("Identity", [in_name], (3, None, None), "input")
        nr = nc = None
    elif inp.kind == "input_rgb_image_sized":
        in_name, out_name = INPUT_NAME, OUTPUT_NAME
        nr, nc = inp.params["nr"], inp.params["nc"]
        in_info = helper.make_tensor_value_info(in_name, TensorProto.UINT8, ["N", nr, nc, 3])
        x = g.op("Cast", [in_name], None, "cast", to=TensorProto.FLOAT)
        x = g.op("Transpose", [x], (3, nr, nc), "nchw", perm=[0, 3, 1, 2])
    else:
        raise ModelError(f"cannot convert a network whose input is {inp.kind}")

    first = layers[0] if layers else None
    if inp.kind == "input_rgb_image_pyramid":
        pass
    elif not (
        first is not None and first.kind == "con" and first.params["padding_y"] == 0 and first.params["padding_x"] == 0
    ):
        # Explicit (x - mean) / 256.
        x = g.op("Sub", [x, g.const("mean", means.astype(np.float32).reshape(1, 3, 1, 1))], (3, nr, nc), "center")
        x = g.op("Mul", [x, g.const("scale", np.array(1 / 256, np.float32))], (3, nr, nc), "scale")
    else:
        norm_folded = True

    tags: dict[int, str] = {}
    i = 0
    while i < len(layers):
        layer = layers[i]
        kind, p = layer.kind, layer.params
        if kind == "con":
            w = layer.weights["weight"].astype(np.float64)
            b = layer.weights["bias"].astype(np.float64)
            if norm_folded and i == 0:
                # conv((x - m) / 256) = conv_{W/256}(x) - sum_{c,r,s} W[o,c,r,s] * m[c] / 256  (no padding)
                b = b - np.einsum("ocrs,c->o", w, means) / 256.0
                w = w / 256.0
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if nxt is not None and nxt.kind == "affine" and nxt.params["mode"] == "conv":
                gamma = nxt.weights["gamma"].astype(np.float64)
                beta = nxt.weights["beta"].astype(np.float64)
                w = w * gamma[:, None, None, None]
                b = b * gamma + beta
                i += 1
            x = _emit_conv(g, x, w, b, p)
        elif kind == "affine":
            shape = g.shapes[x]
            if p["mode"] == "conv":
                gshape = (1, shape[0], 1, 1)
            else:
                gshape = (1, *shape)
            gm = g.const("gamma", layer.weights["gamma"].astype(np.float32).reshape(gshape))
            bt = g.const("beta", layer.weights["beta"].astype(np.float32).reshape(gshape))
            x = g.op("Mul", [x, gm], shape, "affine_mul")
            x = g.op("Add", [x, bt], shape, "affine_add")
        elif kind == "relu":
            x = g.op("Relu", [x], g.shapes[x], "relu")
        elif kind in ("max_pool", "avg_pool"):
            c, h, w = g.shapes[x]
            if p["nr"] == 0 and p["nc"] == 0:
                x = g.op("GlobalMaxPool" if kind == "max_pool" else "GlobalAveragePool", [x], (c, 1, 1), "gpool")
            else:
                if p["nr"] == 0 or p["nc"] == 0:
                    raise ModelError("pooling over a whole axis only is not supported")
                if kind == "avg_pool" and (p["padding_y"] or p["padding_x"]):
                    raise ModelError("padded average pooling is not supported")
                shape = (
                    c,
                    _pool_out(h, p["nr"], p["stride_y"], p["padding_y"]),
                    _pool_out(w, p["nc"], p["stride_x"], p["padding_x"]),
                )
                x = g.op(
                    "MaxPool" if kind == "max_pool" else "AveragePool",
                    [x],
                    shape,
                    "pool",
                    kernel_shape=[p["nr"], p["nc"]],
                    strides=[p["stride_y"], p["stride_x"]],
                    pads=[p["padding_y"], p["padding_x"], p["padding_y"], p["padding_x"]],
                )
        elif kind == "tag":
            tags[p["tag"]] = x
        elif kind == "skip":
            x = tags[p["tag"]]
        elif kind == "add_prev":
            other = tags[p["tag"]]
            target = tuple(max(a, b) for a, b in zip(g.shapes[x], g.shapes[other]))
            x = g.op("Add", [_pad_to(g, x, target), _pad_to(g, other, target)], target, "add")
        elif kind == "fc":
            c, h, w = g.shapes[x]
            if c * h * w != p["num_inputs"]:
                raise ModelError(f"fc layer expects {p['num_inputs']} inputs, gets {c * h * w}")
            x = g.op("Flatten", [x], None, "flatten", axis=1)
            x = g.op("MatMul", [x, g.const("fcW", layer.weights["weight"].astype(np.float32))], None, "fc")
            if "bias" in layer.weights:
                x = g.op("Add", [x, g.const("fcB", layer.weights["bias"].astype(np.float32))], None, "fc_bias")
        else:
            raise ModelError(f"cannot convert dlib layer {kind!r}")
        i += 1

    g.nodes.append(helper.make_node("Identity", [x], [out_name], name="output"))
    if net.layers[-1].kind == "fc":
        out_info = helper.make_tensor_value_info(
            out_name, TensorProto.FLOAT, ["N", net.layers[-1].params["num_outputs"]]
        )
    else:
        c, h, w = g.shapes[x]
        out_info = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", c, h or "OH", w or "OW"])
    graph = helper.make_graph(g.nodes, name or "dlib_net", [in_info], [out_info], initializer=g.inits)
    return finish_model(g.onnx, graph, "siamface.embedding.dlib_onnx", CONVERTER_VERSION, doc)


def finish_model(onnx, graph, producer: str, version: int, doc: str):
    """The checked ONNX model of a converter's `graph` (module `onnx` given, imported lazily by the caller):
    opset `OPSET`, IR version 8 (readable by onnxruntime >= 1.10), named by its converter and version."""
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name=producer,
        producer_version=str(version),
        doc_string=doc,
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_resnet_onnx(dat_path: str | Path) -> bytes:
    """Convert ``dlib_face_recognition_resnet_model_v1.dat`` to a serialized ONNX model."""
    net = load_dlib_resnet(dat_path)
    doc = (
        f"dlib face ResNet converted from {Path(dat_path).name} (sha256 {file_sha256(dat_path)}); "
        f"input uint8 NHWC RGB 150x150 chips, output raw 128-d descriptor"
    )
    return net_to_onnx(net, doc=doc, name="dlib_face_recognition_resnet_model_v1").SerializeToString()


def cached_resnet_onnx(dat_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Path of the ONNX conversion of `dat_path`, converting it once into the cache dir.

    The file name holds the first 16 hex digits of the .dat's sha256 and `CONVERTER_VERSION`; it is
    written to a temporary file in the same directory and renamed into place, so a reader never sees a
    half-written model.
    """
    dat_path = Path(dat_path)
    return cached_model(
        dat_path,
        dat_path.stem,
        CONVERTER_VERSION,
        lambda: build_resnet_onnx(dat_path),
        cache_dir=cache_dir,
        what="dlib model",
    )
