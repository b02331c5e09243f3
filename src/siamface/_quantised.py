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
    prelu_blocked: bool = False,
):
    """The fp32 ONNX ModelProto of the block-quantised model `source` (see module doc).

    `dynamic`: for each graph input kept, its dimensions as names (symbolic) or None (kept as in the file);
    every other graph input is dropped. Each graph output's dimensions at the indices `output_dims` become
    symbolic: the first input's first dimension name for index 0 when it has one (the batch), else a name
    of their own. `prelu_blocked`: the Reshapes of constants folded, and each ``PRelu`` written in operators that
    ONNX Runtime keeps in its blocked (NCHWc) convolution layout (`_prelu_blocked`; the same function to float
    rounding)."""
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
    if prelu_blocked:
        nodes = _fold_constant_reshapes(nodes, inits, folded, numpy_helper)
        nodes = _prelu_blocked(nodes, inits, folded, helper, numpy_helper)
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


def _constant(name, inits, folded, numpy_helper):
    """The value of the constant `name` (folded or an initializer), or None."""
    if name in folded:
        return folded[name]
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _fold_constant_reshapes(nodes, inits, folded, numpy_helper):
    """The nodes without the Reshapes of a constant by a constant shape (SFace reshapes each folded weight),
    their results added to `folded`: each convolution's weight becomes a constant `_prelu_blocked` can edit."""
    out = []
    for node in nodes:
        reshape = node.op_type == "Reshape"
        data, shape = (_constant(i, inits, folded, numpy_helper) for i in node.input[:2]) if reshape else (None, None)
        if data is None or shape is None or any(a.name == "allowzero" and a.i for a in node.attribute):
            out.append(node)
            continue
        dims = [data.shape[k] if d == 0 else int(d) for k, d in enumerate(shape.tolist())]  # 0: keep that dim
        folded[node.output[0]] = data.reshape(dims)
    return out


def _prelu_blocked(nodes, inits, folded, helper, numpy_helper):
    """The nodes with each ``y = PRelu(z, a)`` of a constant per-channel slope written for ONNX Runtime's
    blocked convolution layout, and the constants it needs added to `folded`.

    ONNX Runtime runs convolutions in a blocked layout (NCHWc) that PRelu leaves: a reorder out and back and
    four elementwise passes over the activations around every convolution (SFace: half of the time, and
    more at larger batches, where the activations no longer fit in the cache). Here a PRelu is two 1x1
    depthwise convolutions, which stay in that layout and take their activation and the addition inside:
    ``r = Relu(k * z)`` and ``y = s * z + r`` with, per channel, ``s = 1, k = a - 1`` where ``a <= 1``
    (``z > 0``: z; ``z < 0``: z + (a - 1) z) and ``s = -1, k = 1 - a`` where ``a > 1``, which gives ``-y``:
    the sign is moved into the next convolution's weights for that input channel. A PRelu whose slope
    exceeds 1 somewhere and whose only reader is not a convolution with its own constant weight is written
    as ``Relu(z) + a * Min(z, 0)`` instead (elementwise, as before)."""
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    out = []
    for node in nodes:
        slope = _constant(node.input[1], inits, folded, numpy_helper) if node.op_type == "PRelu" else None
        if slope is None:
            out.append(node)
            continue
        a = np.asarray(slope, np.float32).reshape(-1)
        flip = a > 1
        z, y, name = node.input[0], node.output[0], node.name or node.output[0]
        reader = readers.get(y, [])
        conv = reader[0] if len(reader) == 1 and reader[0].op_type == "Conv" and reader[0].input[0] == y else None
        weight = None if conv is None else _constant(conv.input[1], inits, folded, numpy_helper)
        if flip.any() and (weight is None or len(readers[conv.input[1]]) != 1):
            out += _prelu_elementwise(node, a, folded, helper)
            continue
        if flip.any():
            group = next((int(x.i) for x in conv.attribute if x.name == "group"), 1)
            per_group, outs = weight.shape[1], weight.shape[0] // group
            weight = weight.copy()
            for c in np.flatnonzero(flip):
                g = c // per_group
                weight[g * outs : (g + 1) * outs, c % per_group] *= -1
            folded[conv.input[1]] = weight
        channels = a.size
        folded[name + "_dwk"] = np.where(flip, 1 - a, a - 1).astype(np.float32).reshape(channels, 1, 1, 1)
        folded[name + "_dws"] = np.where(flip, -1, 1).astype(np.float32).reshape(channels, 1, 1, 1)
        depthwise = {"group": channels, "kernel_shape": [1, 1]}
        out += [
            helper.make_node("Conv", [z, name + "_dwk"], [y + "_k"], name=name + "_k", **depthwise),
            helper.make_node("Relu", [y + "_k"], [y + "_r"], name=name + "_r"),
            helper.make_node("Conv", [z, name + "_dws"], [y + "_s"], name=name + "_s", **depthwise),
            helper.make_node("Add", [y + "_s", y + "_r"], [y], name=name),
        ]
    return out


def _prelu_elementwise(node, a, folded, helper):
    """``PRelu(z, a)`` as ``Relu(z) + a * Min(z, 0)`` (the slope shaped (C, 1, 1) for NCHW)."""
    z, y, name = node.input[0], node.output[0], node.name or node.output[0]
    folded["prelu_zero"] = np.zeros((), np.float32)
    folded[name + "_a"] = a.reshape(-1, 1, 1)
    return [
        helper.make_node("Relu", [z], [y + "_pos"], name=name + "_pos"),
        helper.make_node("Min", [z, "prelu_zero"], [y + "_min"], name=name + "_min"),
        helper.make_node("Mul", [y + "_min", name + "_a"], [y + "_neg"], name=name + "_neg"),
        helper.make_node("Add", [y + "_pos", y + "_neg"], [y], name=name),
    ]


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
