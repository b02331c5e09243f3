"""`TorchEncoder`: the base of every trainable encoder (`networks`, `facenet_net`): its preprocessing
contract (``input_size``, ``channels``, ``mean``, ``std``, ``embedding_size``), its ``blocks()`` and
``freeze(n)``, which fixes the first n blocks (their weights, and their batch-norm statistics)."""

from __future__ import annotations

from . import require_torch

torch = require_torch()
nn = torch.nn


class TorchEncoder(nn.Module):
    input_size: int
    channels: int
    mean: list[float]
    std: list[float]
    embedding_size: int

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def freeze(self, n: int) -> int:
        """Freeze the first ``n`` blocks (negative: all but the last -n); returns how many are frozen."""
        blocks = self.blocks()
        n = len(blocks) + n if n < 0 else min(n, len(blocks))
        self._frozen = max(0, n)
        for i, block in enumerate(blocks):
            for p in block.parameters():
                p.requires_grad_(i >= self._frozen)
        self.train(self.training)
        return self._frozen

    def train(self, mode: bool = True):
        super().train(mode)
        for block in self.blocks()[: getattr(self, "_frozen", 0)]:
            block.eval()  # frozen batch-norm keeps its statistics
        return self

    def contract(self) -> dict:
        return {
            "input_size": self.input_size,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "embedding_size": self.embedding_size,
        }
