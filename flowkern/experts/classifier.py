"""Digit classifier: the "black-box" model whose representation and invariances are interpreted."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..translate.training import EpochBatches, train_steps
from .autoencoder import load_or_train

__all__ = ["DigitClassifier", "train_classifier"]


class DigitClassifier(nn.Module):
    """Small CNN: ``features`` (B, 3, S, S) -> (B, feature_dim); ``head``: features -> 10 logits."""

    def __init__(self, size: int = 16, width: int = 32, feature_dim: int = 64, n_classes: int = 10,
                 dropout: float = 0.3) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be divisible by 4, got {size!r}")
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * (size // 4) ** 2, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(b).argmax(1) for b in x.split(batch_size)])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 20, batch_size: int = 128,
                     lr: float = 2e-3, weight_decay: float = 1e-2, seed: int = 0,
                     cache: str | Path | None = None, progress: bool = False) -> DigitClassifier:
    """Cross-entropy training (AdamW, one-cycle LR) with a random +-1 pixel shift of every batch
    (writer-split generalisation); cached like :func:`train_autoencoder`."""
    model = DigitClassifier(images.shape[-1])
    batches = EpochBatches(len(images), batch_size)

    def loss(g: torch.Generator) -> torch.Tensor:
        idx = batches(g)
        x = torch.roll(images[idx], torch.randint(-1, 2, (2,), generator=g).tolist(), dims=(2, 3))
        return F.cross_entropy(model(x), labels[idx])

    return load_or_train(model, cache, lambda: train_steps(
        model, loss, batches.steps(epochs), lr=lr, weight_decay=weight_decay, schedule="onecycle", clip=None,
        seed=seed, progress=progress, desc="classifier"))
