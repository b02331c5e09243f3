"""A reader for dlib's DNN serialization format, enough for dlib's face models.

dlib writes a network by recursion: every ``add_layer`` writes its version number, then its sub-network,
then its own layer details and a few bookkeeping fields; tag and skip layers write only their version and
sub-network. So a file holds the loss layer, then the version numbers of all layers from the output down
to the input, then the input layer, then the layer details from the input up to the output.

Tag and skip layers leave no trace apart from their version number (their ids are template arguments), so
the layer stack cannot be recovered from the bytes alone: the caller gives the expected stack, outermost
layer first, as a `spec` (see `resnet_spec`), and the reader checks every layer's type name and shape
against it while reading.

Scalars (see dlib/serialize.h):

* integers: one control byte (low nibble = number of bytes that follow, 0x80 = negative), then that many
  bytes, little-endian, of the absolute value;
* ``bool``: the ASCII byte ``'1'`` or ``'0'``;
* ``std::string``: its length as an integer, then the raw bytes;
* ``float``/``double`` (dlib/float_details.h): an int64 mantissa and an int16 exponent, both as integers,
  value = mantissa * 2**exponent (exponents 32000/32001/32002 mean +inf/-inf/NaN);
* tensors (dlib/cuda/tensor.h): version 2, then num_samples, k, nr, nc as integers, then the values as raw
  little-endian IEEE float32, in (n, k, nr, nc) row-major order;
* alias tensors: version 1, then the four dimensions.

The result is plain data: `DlibNet` with the input layer, the loss layer and the layers between them in
forward order (input to output), each a `Layer` with its hyper-parameters and NumPy weights. Batch
normalisation layers (``bn_con2``/``bn_fc2``) are turned into the equivalent affine layer, as dlib does
when it loads them into an ``affine_`` inference net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = [
    "DlibFormatError",
    "Layer",
    "DlibNet",
    "read_dlib_net",
    "load_dlib_resnet",
    "resnet_spec",
    "S",
]


class DlibFormatError(ModelError):
    """The bytes are not a dlib network of the expected shape."""


@dataclass
class Layer:
    """One layer of a dlib network.

    kind: 'con', 'affine', 'relu', 'max_pool', 'avg_pool', 'add_prev', 'fc', 'tag', 'skip',
    'input_rgb_image_sized', 'input_rgb_image_pyramid', 'loss_metric', 'loss_mmod'.
    params: hyper-parameters (ints, floats, strings). weights: NumPy float32 arrays.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def __repr__(self) -> str:  # compact: shapes instead of values
        w = {k: tuple(v.shape) for k, v in self.weights.items()}
        return f"Layer({self.kind!r}, {self.params}, {w})"


@dataclass
class DlibNet:
    input: Layer
    layers: list[Layer]  # forward order: the first one reads the input, the last one feeds the loss
    loss: Layer


# --------------------------------------------------------------------------------------------------
# the spec: what stack of layers the file must hold


@dataclass(frozen=True)
class S:
    """One entry of a spec: a layer kind and the hyper-parameters it must have (checked while reading)."""

    kind: str
    expect: tuple = ()  # pairs (name, value)
    tag: int | None = None  # for 'tag', 'skip' and 'add_prev'


def _block(n: int, stride: int) -> list[S]:
    # block<N,affine,stride,SUBNET> = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,stride,stride,SUBNET>>>>>
    return [
        S("affine"),
        S("con", (("num_filters", n), ("nr", 3), ("nc", 3), ("stride_y", 1), ("stride_x", 1))),
        S("relu"),
        S("affine"),
        S("con", (("num_filters", n), ("nr", 3), ("nc", 3), ("stride_y", stride), ("stride_x", stride))),
    ]


def _ares(n: int) -> list[S]:
    # ares<N> = relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [S("relu"), S("add_prev", tag=1), *_block(n, 1), S("tag", tag=1)]


def _ares_down(n: int) -> list[S]:
    # ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [
        S("relu"),
        S("add_prev", tag=2),
        S("avg_pool", (("nr", 2), ("nc", 2), ("stride_y", 2), ("stride_x", 2))),
        S("skip", tag=1),
        S("tag", tag=2),
        *_block(n, 2),
        S("tag", tag=1),
    ]


def resnet_spec() -> list[S]:
    """The layer stack of dlib's face ResNet (``anet_type`` of dnn_face_recognition_ex.cpp), outermost first.

    loss_metric<fc_no_bias<128,avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<
    max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>>
    """
    spec = [S("loss_metric"), S("fc", (("num_outputs", 128), ("bias_mode", 1))), S("avg_pool", (("nr", 0), ("nc", 0)))]
    spec += _ares_down(256)  # alevel0
    spec += _ares(256) + _ares(256) + _ares_down(256)  # alevel1
    spec += _ares(128) + _ares(128) + _ares_down(128)  # alevel2
    spec += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)  # alevel3
    spec += _ares(32) + _ares(32) + _ares(32)  # alevel4
    spec += [
        S("max_pool", (("nr", 3), ("nc", 3), ("stride_y", 2), ("stride_x", 2))),
        S("relu"),
        S("affine"),
        S("con", (("num_filters", 32), ("nr", 7), ("nc", 7), ("stride_y", 2), ("stride_x", 2))),
        S("input_rgb_image_sized", (("nr", 150), ("nc", 150))),
    ]
    return spec


# --------------------------------------------------------------------------------------------------
# the byte reader


_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.buf = memoryview(data)
        self.pos = 0

    def _fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"dlib file: {what} (at byte {self.pos})")

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise self._fail(f"unexpected end of data reading {n} bytes")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self._fail(f"bad integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if ctrl & 0x80 else value

    def bool(self) -> bool:
        b = self.take(1)[0]
        if b not in (0x30, 0x31):
            raise self._fail(f"bad bool byte 0x{b:02x}")
        return b == 0x31

    def str(self) -> str:
        n = self.int()
        if not 0 <= n <= 4096:
            raise self._fail(f"implausible string length {n}")
        return bytes(self.take(n)).decode("latin-1")

    def float(self) -> float:
        if self.pos >= len(self.buf):
            raise self._fail("unexpected end of data reading a float")
        if self.buf[self.pos] & 0x70:
            raise self._fail("floating point value in dlib's old text format is not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self._fail(f"unsupported tensor version {version}")
        dims = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise self._fail(f"negative tensor dimension {dims}")
        count = dims[0] * dims[1] * dims[2] * dims[3]
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self._fail(f"unsupported alias_tensor version {version}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# layer details, by the type name dlib writes first


def _read_con(r: _Reader, version: str) -> Layer:
    if version != "con_4":
        raise r._fail(f"unsupported con_ version {version!r}")
    params = r.tensor().reshape(-1)
    p = {
        "num_filters": r.int(),
        "nr": r.int(),
        "nc": r.int(),
        "stride_y": r.int(),
        "stride_x": r.int(),
        "padding_y": r.int(),
        "padding_x": r.int(),
    }
    filt = r.alias()
    bias = r.alias()
    for _ in range(4):  # learning rate / weight decay multipliers
        r.float()
    nf, k, nr, nc = filt
    if nf != p["num_filters"] or nr != p["nr"] or nc != p["nc"]:
        raise r._fail(f"con_ filter shape {filt} disagrees with {p}")
    nw = nf * k * nr * nc
    if bias[0] * bias[1] * bias[2] * bias[3] != nf or params.size != nw + nf:
        raise r._fail(f"con_ holds {params.size} values for filters {filt} and biases {bias}")
    w = params[:nw].reshape(nf, k, nr, nc).copy()
    b = params[nw:].copy()
    return Layer("con", p, {"weight": w, "bias": b})


def _read_affine(r: _Reader, version: str) -> Layer:
    if version in ("bn_con2", "bn_fc2"):
        return _read_bn(r, version)
    if version != "affine_":
        raise r._fail(f"unsupported affine_ version {version!r}")
    params = r.tensor().reshape(-1)
    g = r.alias()
    b = r.alias()
    mode = r.int()  # 0 = CONV_MODE (one gamma per channel), 1 = FC_MODE (one per value)
    n = g[0] * g[1] * g[2] * g[3]
    if params.size != 2 * n or b != g:
        raise r._fail(f"affine_ holds {params.size} values for gamma {g} and beta {b}")
    return Layer(
        "affine",
        {"mode": "conv" if mode == 0 else "fc", "shape": g},
        {"gamma": params[:n].copy(), "beta": params[n:].copy()},
    )


def _read_bn(r: _Reader, version: str) -> Layer:
    params = r.tensor().reshape(-1)
    g = r.alias()
    r.alias()  # beta: same shape as gamma
    r.tensor()  # means (training batch statistics)
    r.tensor()  # invstds
    running_means = r.tensor().reshape(-1)
    running_vars = r.tensor().reshape(-1)
    r.int()  # num_updates
    r.int()  # running_stats_window_size
    for _ in range(4):
        r.float()
    eps = r.float()
    n = g[0] * g[1] * g[2] * g[3]
    if params.size != 2 * n or running_means.size != n or running_vars.size != n:
        raise r._fail(f"{version} holds inconsistent sizes")
    gamma, beta = params[:n], params[n:]
    # What dlib's affine_(const bn_&) constructor computes, in float32.
    scale = (gamma / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
    shift = (beta - scale * running_means).astype(np.float32)
    return Layer(
        "affine",
        {"mode": "conv" if version == "bn_con2" else "fc", "shape": g, "from": version},
        {"gamma": scale, "beta": shift},
    )


def _read_pool(kind: str):
    def read(r: _Reader, version: str) -> Layer:
        if version != f"{kind}_2":
            raise r._fail(f"unsupported {kind}_ version {version!r}")
        p = {
            "nr": r.int(),
            "nc": r.int(),
            "stride_y": r.int(),
            "stride_x": r.int(),
            "padding_y": r.int(),
            "padding_x": r.int(),
        }
        return Layer(kind, p)

    return read


def _read_relu(r: _Reader, version: str) -> Layer:
    if version != "relu_":
        raise r._fail(f"unsupported relu_ version {version!r}")
    return Layer("relu")


def _read_add_prev(r: _Reader, version: str) -> Layer:
    if version != "add_prev_":
        raise r._fail(f"unsupported add_prev_ version {version!r}")
    return Layer("add_prev")


def _read_fc(r: _Reader, version: str) -> Layer:
    if version != "fc_2":
        raise r._fail(f"unsupported fc_ version {version!r}")
    num_outputs = r.int()
    num_inputs = r.int()
    params = r.tensor().reshape(-1)
    w = r.alias()
    r.alias()  # biases
    bias_mode = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    for _ in range(4):
        r.float()
    nw = num_inputs * num_outputs
    if w[0] * w[1] * w[2] * w[3] != nw:
        raise r._fail(f"fc_ weights alias {w} disagrees with {num_inputs}x{num_outputs}")
    weights = {"weight": params[:nw].reshape(num_inputs, num_outputs).copy()}  # y = x @ weight
    if bias_mode == 0:
        if params.size != nw + num_outputs:
            raise r._fail("fc_ bias size")
        weights["bias"] = params[nw:].copy()
    elif params.size != nw:
        raise r._fail("fc_no_bias holds extra values")
    return Layer("fc", {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": bias_mode}, weights)


_DETAIL_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_pool("max_pool"),
    "avg_pool": _read_pool("avg_pool"),
    "add_prev": _read_add_prev,
    "fc": _read_fc,
}


def _read_input(r: _Reader, expected: S) -> Layer:
    name = r.str()
    if name != expected.kind:
        raise r._fail(f"input layer is {name!r}, expected {expected.kind!r}")
    if name == "input_rgb_image_sized":
        means = (r.float(), r.float(), r.float())
        nr, nc = r.int(), r.int()
        return Layer(name, {"avg_red": means[0], "avg_green": means[1], "avg_blue": means[2], "nr": nr, "nc": nc})
    raise r._fail(f"unsupported input layer {name!r}")


def _read_loss(r: _Reader, expected: S) -> Layer:
    name = r.str()
    if expected.kind == "loss_metric" and name == "loss_metric_2":
        return Layer("loss_metric", {"margin": r.float(), "distance_threshold": r.float()})
    raise r._fail(f"loss layer is {name!r}, expected {expected.kind!r}")


def _check(r: _Reader, layer: Layer, expected: S) -> None:
    for key, value in expected.expect:
        if layer.params.get(key) != value:
            raise r._fail(f"{layer.kind} layer has {key}={layer.params.get(key)!r}, expected {value!r}")


def read_dlib_net(data: bytes, spec: list[S], *, read_input=None, read_loss=None) -> DlibNet:
    """Read a serialized dlib network whose layer stack is `spec` (outermost first: loss, ..., input).

    `read_input(reader, S)` and `read_loss(reader, S)` may be given for input and loss layers other than
    input_rgb_image_sized and loss_metric.
    """
    if len(spec) < 3 or not spec[0].kind.startswith("loss") or not spec[-1].kind.startswith("input"):
        raise ValueError("spec must run from a loss layer to an input layer")
    read_input = read_input or _read_input
    read_loss = read_loss or _read_loss
    r = _Reader(data)

    version = r.int()
    if version != 1:
        raise r._fail(f"unsupported add_loss_layer version {version}")
    loss = read_loss(r, spec[0])
    middle = spec[1:-1]
    if not middle or middle[-1].kind in ("tag", "skip"):
        raise ValueError("the layer over the input must be a computational layer")

    # Version numbers, from the output down to the input.
    versions: list[int] = []
    for i, s in enumerate(middle):
        v = r.int()
        versions.append(v)
        bottom = i == len(middle) - 1
        ok = (1,) if s.kind in ("tag", "skip") else ((2, 3) if bottom else (1, 2))
        if v not in ok:
            raise r._fail(
                f"layer {i} ({s.kind}) has version {v}, expected one of {ok}: "
                "the file does not hold the expected network"
            )

    inp = read_input(r, spec[-1])
    _check(r, inp, spec[-1])

    # Layer details, from the input up to the output.
    layers: list[Layer] = []
    for i in range(len(middle) - 1, -1, -1):
        s, v = middle[i], versions[i]
        if s.kind in ("tag", "skip"):
            layers.append(Layer(s.kind, {"tag": s.tag}))
            continue
        name = r.str()
        reader = _DETAIL_READERS.get(s.kind)
        if reader is None:
            raise ValueError(f"no reader for layer kind {s.kind!r}")
        layer = reader(r, name)
        if s.kind == "add_prev":
            layer.params["tag"] = s.tag
        _check(r, layer, s)
        r.bool()  # this_layer_setup_called
        r.bool()  # gradient_input_is_stale
        r.bool()  # get_output_and_gradient_input_disabled
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        if i == len(middle) - 1:  # the add_layer that sits on the input layer
            r.tensor()  # grad_final
            if v >= 3:
                r.int()  # _sample_expansion_factor
        elif v >= 2:
            r.tensor()  # params_grad
        layers.append(layer)

    if r.pos != len(r.buf):
        raise r._fail(f"{len(r.buf) - r.pos} bytes left over after the network")
    return DlibNet(input=inp, layers=layers, loss=loss)


def load_dlib_resnet(path: str | Path) -> DlibNet:
    """Read ``dlib_face_recognition_resnet_model_v1.dat``: the 29 conv layers of dlib's face ResNet."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read dlib model {path}: {exc}") from None
    try:
        return read_dlib_net(data, resnet_spec())
    except DlibFormatError as exc:
        raise DlibFormatError(f"{path}: {exc}") from None
