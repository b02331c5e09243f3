"""Training Siamese face encoders (the ``train`` extra: ``pip install 'siamface[train]'``, torch CPU).

    siamface train DATASET --loss contrastive|bce|triplet --encoder small|resnet|facenet --out runs/NAME

Modules, from data to file:

* `data`: folder-per-person datasets through the run-time detect/align chain (cached aligned chips) or used
  as given (``aligned=True``); the split by identity; verification pairs.
* `augment`: seeded flips, small rotations, scale/crop, contrast, brightness and blur (training inputs only).
* `sampling`: identity-balanced batches (P identities x K images), in-batch pairs with optional hard
  negatives.
* `encoder`: `TorchEncoder`, the base of the networks below (preprocessing contract, blocks, freezing).
* `networks`: the small CNN trained from scratch and dlib's ResNet as a torch module (fine-tuning, freezing);
  `facenet_net`: FaceNet's Inception-ResNet-v1 as a torch module from its GraphDef (trunk cached when frozen).
* `losses`: contrastive (Euclidean distance), L1-distance + dense + sigmoid with BCE, batch-hard triplet.
* `trainer`: `TrainConfig` and `train` (Adam, cosine schedule, validation, checkpoints, resume, early stop).
* `export`: the encoder to ONNX with its preprocessing contract and calibrated threshold in the metadata;
  run without torch by `siamface.embedding.onnx_file`.

Only `data`, `augment` and `sampling` work without torch; nothing here is imported by ``import siamface``.
"""

from __future__ import annotations

from ..errors import ModelError


def require_torch():
    """Import torch, or raise `ModelError` with the install hint."""
    try:
        import torch
    except ImportError:
        raise ModelError("training needs PyTorch: pip install 'siamface[train]'") from None
    return torch
