"""Convolutional autoencoder: the image expert whose latent ``z`` the flows model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..translate.training import EpochBatches, train_steps

__all__ = ["ConvAutoencoder", "load_or_train", "train_autoencoder"]


class ConvAutoencoder(nn.Module):
    """``encode``: (B, 3, S, S) -> (B, latent_dim); ``decode``: the inverse map to [0, 1] pixels."""

    def __init__(self, latent_dim: int = 32, size: int = 16, width: int = 32) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be divisible by 4, got {size!r}")
        self.latent_dim, self.size, self.width = latent_dim, size, width
        s4 = size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * s4 * s4, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 2 * width * s4 * s4), nn.LeakyReLU(0.2),
            nn.Unflatten(1, (2 * width, s4, s4)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def load_or_train(model: nn.Module, cache: str | Path | None, fit: Callable[[], object]) -> nn.Module:
    """Load ``model``'s weights from ``cache`` if that file exists, else run ``fit()`` and save them there
    (``cache=None``: always train, never save). Returns the model in eval mode."""
    if cache is not None and Path(cache).exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    fit()
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)
    return model.eval()


def train_autoencoder(images: torch.Tensor, *, latent_dim: int = 32, width: int = 32, epochs: int = 30,
                      batch_size: int = 128, lr: float = 2e-3, noise: float = 0.05, z_penalty: float = 1e-3, seed: int = 0,
                      cache: str | Path | None = None, progress: bool = False) -> ConvAutoencoder:
    """Fit ``min E||dec(enc(x) + noise*eps) - x||^2 + z_penalty * E||enc(x)||^2`` (Adam, one-cycle LR).

    The latent noise and the weak penalty keep the latent compact and the decoder smooth, so that
    flow samples decode to clean images. With ``cache`` the weights are loaded if present, else saved.
    """
    model = ConvAutoencoder(latent_dim, images.shape[-1], width)
    batches = EpochBatches(len(images), batch_size)

    def loss(g: torch.Generator) -> torch.Tensor:
        x = images[batches(g)]
        z = model.encode(x)
        rec = model.decode(z + noise * torch.randn(z.shape, generator=g))
        return F.mse_loss(rec, x) + z_penalty * z.pow(2).sum(1).mean()

    return load_or_train(model, cache, lambda: train_steps(
        model, loss, batches.steps(epochs), lr=lr, schedule="onecycle", clip=None, seed=seed, progress=progress,
        desc="autoencoder"))
