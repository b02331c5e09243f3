"""Export a trained encoder to ONNX with its contract in the metadata (see `siamface.embedding.onnx_file`).

The graph takes ``input`` float32 (n, channels, size, size), normalised, and returns ``embedding`` (n, d),
L2-normalised. The legacy TorchScript exporter is used (``dynamo=False``): it needs nothing beyond torch
and onnx.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

from .._files import atomic_write_bytes
from ..alignment import DLIB_CHIP, ChipSpec
from ..embedding.onnx_file import INPUT_NAME, META_PREFIX, OUTPUT_NAME, chip_metadata
from . import require_torch

OPSET = 17


def export_onnx(
    encoder,
    path: str | os.PathLike,
    *,
    name: str,
    threshold: float,
    threshold_source: str,
    training: str = "",
    chip: ChipSpec = DLIB_CHIP,
    extra: dict | None = None,
) -> Path:
    """Write ``encoder`` (an `encoder.TorchEncoder`) to ``path`` as ONNX with ``siamface.*`` metadata."""
    torch = require_torch()
    import onnx

    from .networks import Normalised

    c = encoder.contract()
    model = Normalised(encoder).eval()
    dummy = torch.zeros(2, c["channels"], c["input_size"], c["input_size"])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        **c,
        "name": name,
        "metric": "cosine",
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "training": training,
        "chip": chip_metadata(chip),
        **(extra or {}),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, json.dumps(value)
    proto.doc_string = f"siamface encoder {name}: {training}"
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())  # a random temporary name, never through a link
    return path
