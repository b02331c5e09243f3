"""Encoders as torch modules: a small CNN trained from scratch, dlib's pretrained ResNet (and FaceNet, in
`facenet_net`).

Every encoder maps ``(n, channels, size, size)`` float32 inputs, normalised as ``(pixel - mean) / std``
(`siamface.embedding.onnx_file.preprocess`), to raw ``(n, embedding_size)`` vectors; the losses and the
exported model L2-normalise them. Each carries its preprocessing contract (``input_size``, ``channels``,
``mean``, ``std``, ``embedding_size``) and is cut into ``blocks()`` for freezing: ``freeze(n)`` fixes the
first n blocks (their weights, and their batch-norm statistics): `encoder.TorchEncoder`, their base.
"""

from __future__ import annotations

from . import require_torch
from .encoder import TorchEncoder

torch = require_torch()
nn = torch.nn
F = torch.nn.functional


class SmallCNN(TorchEncoder):
    """Four conv blocks (conv 3x3, batch norm, ReLU, 2x2 max pool), then linear + batch norm to the embedding.

    At 64x64 grey input and width 32: about 60 M multiply-adds per face; ~1.3 M parameters.
    """

    def __init__(
        self, input_size: int = 64, channels: int = 1, embedding_size: int = 128, width: int = 32, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.input_size, self.channels, self.embedding_size = input_size, channels, embedding_size
        self.mean, self.std = [127.5] * channels, [128.0] * channels
        widths = [width, width * 2, width * 4, width * 8]
        layers, c = [], channels
        for w in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)
                )
            )
            c = w
        self.features = nn.ModuleList(layers)
        side = input_size // 16
        # The batch-norm "neck" centres the embedding: without it the normalised vectors crowd into a cone.
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c * side * side, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )

    def blocks(self) -> list[nn.Module]:
        return [*self.features, self.head]

    def forward(self, x):
        for block in self.features:
            x = block(x)
        return self.head(x)


class _Affine(nn.Module):
    """dlib's affine layer (batch norm at inference): per-channel or per-value ``x * gamma + beta``."""

    def __init__(self, gamma, beta, shape) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.as_tensor(gamma).reshape(shape).clone())
        self.beta = nn.Parameter(torch.as_tensor(beta).reshape(shape).clone())

    def forward(self, x):
        return x * self.gamma + self.beta


class _Marker(nn.Module):
    """tag / skip / add_prev: no weights, only the routing done in `DlibResNet.forward`."""

    def __init__(self, kind: str, tag: int) -> None:
        super().__init__()
        self.kind, self.tag = kind, tag


class _GlobalAvg(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class _Dense(nn.Module):
    """dlib's fc layer: ``flatten(x) @ weight (+ bias)`` with weight (inputs, outputs)."""

    def __init__(self, weight, bias) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight).clone())
        self.bias = nn.Parameter(torch.as_tensor(bias).clone()) if bias is not None else None

    def forward(self, x):
        x = x.flatten(1) @ self.weight
        return x + self.bias if self.bias is not None else x


class DlibResNet(TorchEncoder):
    """dlib's ``dlib_face_recognition_resnet_model_v1`` (ResNet-29, 128-d) with its pretrained weights.

    Built layer by layer from the network read by `siamface.embedding.dlib_dat` (the same walk as the ONNX
    converter `siamface.embedding.dlib_onnx`); the input is the 150x150 RGB chip as ``(pixel - mean) / 256``
    with dlib's per-channel means. Outputs dlib's raw descriptor (equal to the ONNX engine's, tested).
    Blocks for freezing: one per residual unit, the last one holding the final pooling and fc layer.
    """

    def __init__(self, dat_path=None) -> None:
        super().__init__()
        from ..embedding.dlib_dat import load_dlib_resnet

        if dat_path is None:
            from .._models import dlib_model_path

            dat_path = dlib_model_path("resnet")
        net = load_dlib_resnet(dat_path)
        p = net.input.params
        self.input_size, self.channels, self.embedding_size = int(p["nr"]), 3, 128
        self.mean = [float(p["avg_red"]), float(p["avg_green"]), float(p["avg_blue"])]
        self.std = [256.0] * 3
        layers, block_of, block = [], [], 0
        for layer in net.layers:
            kind, q, w = layer.kind, layer.params, layer.weights
            if kind == "con":
                nf, k, nr, nc = w["weight"].shape
                conv = nn.Conv2d(
                    k, nf, (nr, nc), stride=(q["stride_y"], q["stride_x"]), padding=(q["padding_y"], q["padding_x"])
                )
                with torch.no_grad():
                    conv.weight.copy_(torch.as_tensor(w["weight"]))
                    conv.bias.copy_(torch.as_tensor(w["bias"]))
                mod = conv
            elif kind == "affine":
                shape = (1, -1, 1, 1) if q["mode"] == "conv" else (1, -1)
                mod = _Affine(w["gamma"], w["beta"], shape)
            elif kind == "relu":
                mod = nn.ReLU()
            elif kind in ("max_pool", "avg_pool"):
                if q["nr"] == 0 and q["nc"] == 0:
                    mod = nn.AdaptiveMaxPool2d(1) if kind == "max_pool" else _GlobalAvg()
                else:
                    cls = nn.MaxPool2d if kind == "max_pool" else nn.AvgPool2d
                    mod = cls(
                        (q["nr"], q["nc"]),
                        stride=(q["stride_y"], q["stride_x"]),
                        padding=(q["padding_y"], q["padding_x"]),
                    )
            elif kind in ("tag", "skip", "add_prev"):
                mod = _Marker(kind, q["tag"])
            elif kind == "fc":
                mod = _Dense(w["weight"], w.get("bias"))
            else:
                raise ValueError(f"cannot build dlib layer {kind!r}")
            layers.append(mod)
            block_of.append(block)
            if kind == "add_prev":
                block += 1
        self.layers = nn.ModuleList(layers)
        self._block_of = block_of
        self._n_blocks = block + 1

    def blocks(self) -> list[nn.Module]:
        groups = [nn.ModuleList() for _ in range(self._n_blocks)]
        for mod, b in zip(self.layers, self._block_of):
            groups[b].append(mod)
        return list(groups)

    def forward(self, x):
        tags = {}
        for mod in self.layers:
            if isinstance(mod, _Marker):
                if mod.kind == "tag":
                    tags[mod.tag] = x
                elif mod.kind == "skip":
                    x = tags[mod.tag]
                else:
                    x = _add_padded(x, tags[mod.tag])
            else:
                x = mod(x)
        return x


def _add_padded(a, b):
    """dlib's add_prev: tensors of different sizes are zero-padded at the end of each dimension."""
    if a.shape == b.shape:
        return a + b
    target = [max(s, t) for s, t in zip(a.shape[1:], b.shape[1:])]

    def pad(x):
        c, h, w = x.shape[1:]
        return F.pad(x, (0, target[2] - w, 0, target[1] - h, 0, target[0] - c))

    return pad(a) + pad(b)


class Normalised(nn.Module):
    """The encoder followed by L2 normalisation: what gets exported."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return F.normalize(self.encoder(x), dim=1)


ENCODERS = ("small", "resnet", "facenet")


def build_encoder(name: str, **options) -> TorchEncoder:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
    if name == "resnet":
        return DlibResNet(**{k: v for k, v in options.items() if k == "dat_path"})
    if name == "facenet":
        from .facenet_net import FaceNetNet  # FaceNet's graph: read only when asked for

        return FaceNetNet(**{k: v for k, v in options.items() if k == "graph_path"})
    return SmallCNN(**options)
