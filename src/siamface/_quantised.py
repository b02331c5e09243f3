"""Block-quantised ONNX files made runnable and fast: the de-quantisation folded into fp32 weights, once.

OpenCV Zoo's ``*_int8bq.onnx`` models (SFace, YuNet) store each weight as int8 with one scale per block of
values behind a ``DequantizeLinear`` node; activations are fp32. Run as they are, ONNX Runtime refuses them
or pays for them on every call:

- SFace's graph declares 29 inputs (``conv_*_weight``) that no node reads and no initializer backs, which
  ONNX Runtime will not load (OpenCV's dnn ignores them);
- YuNet's per-tensor scales carry a ``block_size`` attribute, which ONNX Runtime rejects at run time;
- where it does run, every call de-quantises every weight again (about half of SFace's time).

`fold_dequantisation` returns the same network with every ``DequantizeLinear`` of constant inputs replaced by
its fp32 result (``(q - zero_point) * scale``, the scale repeated over each block), the unused initializers
and every graph input but the data dropped, and the batch (and, for a detector, the image) dimensions made
symbolic. No node, weight or activation changes otherwise; the outputs agree with OpenCV's to float rounding
(tests/test_sface.py). The result is deterministic: the same source gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ModelError

#: ONNX opset of the folded graphs: their remaining ops (Conv, BatchNormalization, PRelu, Relu, Reshape,
#: Resize, Gemm, ...) mean the same from opset 13 to 21, and onnxruntime >= 1.14 runs opset 17.
FOLDED_OPSET = 17


def dequantise(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """``DequantizeLinear`` (opset 21) on constants: per tensor (scalar scale), per axis (1-D scale) or per
    block of `block` values along `axis` (scale of the same rank as `q`)."""
    # float32 arithmetic, as ONNX Runtime's kernel does: (q - zp) is exact, one rounding in the product
    x = q.astype(np.float32)
    zp = np.zeros_like(scale, np.float32) if zero_point is None else zero_point.astype(np.float32)
    s = scale.astype(np.float32)
    if s.size == 1 and (s.ndim == 0 or x.ndim != s.ndim or block == 0):
        out = (x - zp.reshape(())) * s.reshape(())
    elif s.ndim == 1 and block == 0:
        shape = [1] * x.ndim
        shape[axis] = -1
        out = (x - zp.reshape(shape)) * s.reshape(shape)
    else:
        if s.ndim != x.ndim or block < 1:
            raise ModelError(f"DequantizeLinear: scale of shape {s.shape} for data of shape {x.shape}")
        s = np.repeat(s, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        zp = np.repeat(zp, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        out = (x - zp) * s
    return out.astype(np.float32)


def fold_dequantisation(
    source: str | Path,
    dynamic: dict[str, Sequence[str | None]],
    doc: str = "",
    output_dims: Sequence[int] = (0,),
    prelu_as_relu: bool = False,
):
    """The fp32 ONNX ModelProto of the block-quantised model `source` (see module doc).

    `dynamic`: for each graph input kept, its dimensions as names (symbolic) or None (kept as in the file);
    every other graph input is dropped. Each graph output's dimensions at the indices `output_dims` become
    symbolic: the first input's first dimension name for index 0 when it has one (the batch), else a name
    of their own. `prelu_as_relu`: each ``PRelu(x, a)`` written as ``Relu(x) + a * Min(x, 0)``, the same
    function: ONNX Runtime runs convolutions in a blocked layout that PRelu leaves (a reorder before and after
    each), and Relu, Min, Mul and Add stay in it (SFace: about half the time, the same outputs)."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ModelError("converting a quantised model needs the 'onnx' package: pip install onnx") from None
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends for a damaged file
        raise ModelError(f"cannot read the ONNX file {source}: {exc}") from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    nodes = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input if i):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            q = numpy_helper.to_array(inits[node.input[0]])
            scale = numpy_helper.to_array(inits[node.input[1]])
            zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
            folded[node.output[0]] = dequantise(
                q, scale, zp, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            )
        else:
            nodes.append(node)
    if not folded:
        raise ModelError(f"{source}: no constant DequantizeLinear to fold (not a block-quantised model?)")
    if prelu_as_relu:
        nodes, extra = _prelu_as_relu(nodes, inits, folded, helper, numpy_helper)
        folded.update(extra)
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in used and t.name not in folded]
    initializers += [numpy_helper.from_array(a, name) for name, a in folded.items() if name in used]
    inputs = []
    for name, dims in dynamic.items():
        found = [i for i in graph.input if i.name == name]
        if not found:
            raise ModelError(f"{source}: no graph input {name!r}")
        value = onnx.ValueInfoProto()
        value.CopyFrom(found[0])
        for d, new in zip(value.type.tensor_type.shape.dim, dims):
            if new is not None:
                d.Clear()
                d.dim_param = new
        inputs.append(value)
    batch = next(iter(dynamic.values()))[0]
    outputs = []
    for out in graph.output:
        value = onnx.ValueInfoProto()
        value.CopyFrom(out)
        for k, d in enumerate(value.type.tensor_type.shape.dim):
            if k in output_dims:
                d.Clear()
                d.dim_param = batch if k == 0 and batch else f"{out.name}_{k}"
        outputs.append(value)
    new_graph = helper.make_graph(nodes, graph.name, inputs, outputs, initializer=initializers)
    out = helper.make_model(
        new_graph,
        opset_imports=[helper.make_opsetid("", FOLDED_OPSET)],
        producer_name="siamface._quantised",
        producer_version="1",
        doc_string=doc,
    )
    out.ir_version = 8
    onnx.checker.check_model(out)
    return out


def _prelu_as_relu(nodes, inits, folded, helper, numpy_helper):
    """The nodes with every PRelu of a constant slope replaced (see `fold_dequantisation`), and the new
    constants (each slope shaped (C, 1, 1) for NCHW, and a scalar zero)."""
    out, extra = [], {"prelu_zero": np.zeros((), np.float32)}
    for node in nodes:
        slope_name = node.input[1] if node.op_type == "PRelu" else None
        if slope_name is None or (slope_name not in inits and slope_name not in folded):
            out.append(node)
            continue
        slope = folded[slope_name] if slope_name in folded else numpy_helper.to_array(inits[slope_name])
        slope = np.asarray(slope, np.float32)
        extra[slope_name + "_nchw"] = slope.reshape(-1, 1, 1) if slope.ndim == 1 else slope
        x, y = node.input[0], node.output[0]
        out += [
            helper.make_node("Relu", [x], [y + "_pos"], name=node.name + "_pos"),
            helper.make_node("Min", [x, "prelu_zero"], [y + "_min"], name=node.name + "_min"),
            helper.make_node("Mul", [y + "_min", slope_name + "_nchw"], [y + "_neg"], name=node.name + "_neg"),
            helper.make_node("Add", [y + "_pos", y + "_neg"], [y], name=node.name),
        ]
    return out, extra


def build_folded(source: str | Path, what: str, note: str, dynamic: dict, **options) -> bytes:
    """`fold_dequantisation` of `source` (its `options`), serialised, its doc string naming `what`, the
    file's hash and `note`."""
    from ._files import file_sha256

    doc = f"{what} converted by siamface from {Path(source).name} (sha256 {file_sha256(source)}): {note}"
    return fold_dequantisation(source, dynamic, doc, **options).SerializeToString()


def cached_folded(source: str | Path, stem: str, version: int, build, cache_dir: str | Path | None = None) -> Path:
    """The cached conversion (`siamface._files.cached_model`) of a model file shipped in the package."""
    from ._files import cached_model

    source = Path(source)
    if not source.is_file():
        raise ModelError(f"model file missing: {source} (reinstall siamface)")
    return cached_model(source, stem, version, build, cache_dir=cache_dir, what=f"{stem} model")
