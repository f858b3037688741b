"""The one seeded optimisation loop under every trained model of flowkern's interpretation layer:
the IIN (:mod:`flowkern.interpret`), Net2Net (:mod:`flowkern.translate`) and any expert trained
beside them. It imports nothing else of flowkern but the argument checks, so both layers (and an
example's experts) build on it without importing each other."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ._checks import check_choice, check_int

__all__ = ["EpochBatches", "LossFn", "train_steps"]

# A loss source: generator -> scalar loss of one freshly drawn batch.
LossFn = Callable[[torch.Generator], torch.Tensor]


class EpochBatches:
    """Callable ``generator -> index batch`` walking a fresh random permutation of ``range(n)`` per epoch."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n = check_int("n", n, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self._queue: list[torch.Tensor] = []

    def steps(self, epochs: int) -> int:
        """Number of batches in ``epochs`` epochs: ``epochs * ceil(n / batch_size)``."""
        return check_int("epochs", epochs, minimum=0) * math.ceil(self.n / self.batch_size)

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        if not self._queue:
            self._queue = list(torch.randperm(self.n, generator=generator).split(self.batch_size))
        return self._queue.pop(0)


def train_steps(model: nn.Module, loss_fn: LossFn, steps: int, *, lr: float = 1e-3, weight_decay: float = 0.0,
                schedule: str = "cosine", clip: float | None = 10.0, seed: int = 0, progress: bool = False,
                desc: str = "train") -> list[float]:
    """Minimise ``loss_fn(g)`` for ``steps`` batches: Adam (AdamW with ``weight_decay``), LR schedule
    ``"cosine"`` (annealed from ``lr``) or ``"onecycle"`` (warm-up to ``lr``), gradient-norm clip ``clip``.

    ``torch`` and the batch generator ``g`` are seeded with ``seed``; the model is left in eval mode.
    Returns the loss of every step.
    """
    steps = check_int("steps", steps, minimum=1)
    schedule = check_choice("schedule", schedule, ("cosine", "onecycle"))
    from tqdm import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = (torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay) if weight_decay
           else torch.optim.Adam(model.parameters(), lr=lr))
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps) if schedule == "onecycle"
             else torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps))
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        loss = loss_fn(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
