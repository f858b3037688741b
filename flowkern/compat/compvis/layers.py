"""CompVis's layers: ``BasicFullyConnectedNet``, ``ActNorm``, ``Shuffle`` and the leaky-ReLU
activations (see :mod:`flowkern.compat.compvis`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...nn.actnorm import SettableInitFlag, actnorm_init_std

__all__ = ["BasicFullyConnectedNet", "ActNorm", "Shuffle", "InvLeakyRelu", "IgnoreLeakyRelu"]


class BasicFullyConnectedNet(nn.Module):
    """MLP ``main``: Linear, [BN | ActNorm], LeakyReLU, depth x (Linear, [BN], LeakyReLU), Linear, [Tanh].

    Args:
        dim: input features.
        depth: hidden Linear layers after the first.
        hidden_dim: their width.
        use_tanh: a Tanh at the end.
        use_bn: BatchNorm after the hidden Linears.
        out_dim: output features (None: ``dim``).
        use_an: an :class:`ActNorm` after the first Linear.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> compvis.BasicFullyConnectedNet(4, depth=1, hidden_dim=8, out_dim=2)(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, dim: int, depth: int, hidden_dim: int = 256, use_tanh: bool = False,
                 use_bn: bool = False, out_dim: int | None = None, use_an: bool = False):
        super().__init__()
        if use_bn and use_an:
            raise ValueError("use_bn and use_an are exclusive")
        layers: list[nn.Module] = [nn.Linear(dim, hidden_dim)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        if use_an:
            layers.append(ActNorm(hidden_dim))
        layers.append(nn.LeakyReLU())
        for _ in range(depth):
            layers.append(nn.Linear(hidden_dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.LeakyReLU())
        layers.append(nn.Linear(hidden_dim, dim if out_dim is None else out_dim))
        if use_tanh:
            layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class ActNorm(SettableInitFlag, nn.Module):
    """CompVis ActNorm with ``loc``/``scale`` (1, C, 1, 1); data-dependent init on the first
    training call (reverse init only with ``allow_reverse_init``).

    The init follows :func:`flowkern.nn.actnorm.actnorm_init_std`: ``ValueError`` for an init
    batch with fewer than 2 values per channel or with non-finite values (CompVis computes NaN
    parameters), scale 1 (not CompVis' 1e6) and a ``UserWarning`` for a channel with (near-)zero
    spread. ``layer.initialized = True`` skips the init (parameters loaded or set by hand; the
    ``initialized`` buffer is saved with the weights, as in CompVis).

    Args:
        num_features: the channel count C.
        logdet: ``forward`` returns ``(h, logdet)`` (else ``h``).
        affine: only True.
        allow_reverse_init: the init may run in ``reverse``.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> norm = compvis.ActNorm(3, logdet=True)
        >>> h, logdet = norm(torch.randn(64, 3) * 4 + 1)  # training mode: the first call initialises
        >>> bool(h.mean(0).abs().max() < 1e-5), logdet.shape
        (True, torch.Size([64]))
    """

    def __init__(self, num_features: int, logdet: bool = False, affine: bool = True,
                 allow_reverse_init: bool = True):
        if not affine:
            raise ValueError("ActNorm supports affine=True only")
        super().__init__()
        self.logdet = logdet
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.allow_reverse_init = allow_reverse_init
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._track_init_flag()

    @torch.no_grad()
    def initialize(self, input: Tensor) -> None:
        flat = input.transpose(0, 1).reshape(input.shape[1], -1)
        mean = flat.mean(1)
        std = actnorm_init_std(type(self).__name__, mean, lambda: flat.std(1), flat.shape[1], "input", eps=1e-6)
        self.loc.data.copy_(-mean.view(1, -1, 1, 1))
        self.scale.data.copy_(1 / std.view(1, -1, 1, 1))

    def maybe_initialize(self, input: Tensor, reverse: bool) -> None:
        """Initialise from ``input`` on the first training call (the CompVis rule)."""
        if self.needs_init() and input.shape[0]:  # an empty batch has no statistics: the next one initialises
            if reverse and not self.allow_reverse_init:
                raise RuntimeError("Initializing ActNorm in reverse direction is disabled by default. "
                                   "Use allow_reverse_init=True to enable.")
            self.initialize(input if input.dim() == 4 else input[:, :, None, None])
            self._mark_initialized()

    def needs_init(self) -> bool:
        """CompVis' init rule: in training mode until the first initialisation."""
        return self.training and not self._is_initialized()

    def affine(self) -> tuple[Tensor, Tensor]:
        """(a, b) of shape (C,) with ``h = x * a + b``."""
        a = self.scale.reshape(-1)
        return a, a * self.loc.reshape(-1)

    def forward(self, input: Tensor, reverse: bool = False):
        if reverse:
            return self.reverse(input)
        squeeze = input.dim() == 2
        x = input[:, :, None, None] if squeeze else input
        self.maybe_initialize(x, reverse=False)
        h = self.scale * (x + self.loc)
        if squeeze:
            h = h.squeeze(-1).squeeze(-1)
        if not self.logdet:
            return h
        logdet = x.shape[2] * x.shape[3] * torch.sum(torch.log(torch.abs(self.scale)))
        return h, logdet * torch.ones(x.shape[0]).to(x)

    def reverse(self, output: Tensor) -> Tensor:
        self.maybe_initialize(output, reverse=True)
        squeeze = output.dim() == 2
        y = output[:, :, None, None] if squeeze else output
        h = y / self.scale - self.loc
        return h.squeeze(-1).squeeze(-1) if squeeze else h


class Shuffle(nn.Module):
    """Fixed random channel permutation (torch RNG); forward returns ``(x, 0)``, reverse ``x``.

    Args:
        in_channels: the channel count.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> shuffle = compvis.Shuffle(4)
        >>> x = torch.randn(2, 4, 1, 1)
        >>> torch.equal(shuffle(shuffle(x)[0], reverse=True), x)
        True
    """

    def __init__(self, in_channels: int, **kwargs):
        super().__init__()
        self.in_channels = in_channels
        idx = torch.randperm(in_channels)
        self.register_buffer("forward_shuffle_idx", idx)
        self.register_buffer("backward_shuffle_idx", torch.argsort(idx))

    def forward(self, x: Tensor, reverse: bool = False, conditioning=None):
        if not reverse:
            return x[:, self.forward_shuffle_idx, ...], 0
        return x[:, self.backward_shuffle_idx, ...]


class InvLeakyRelu(nn.Module):
    """Leaky ReLU with slope ``alpha``; like CompVis it reports log-det 0 unless
    ``exact_logdet`` (then :math:`\\log\\alpha` per negative input).

    Args:
        alpha: the slope for negative inputs.
        exact_logdet: report the true log-det.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> compvis.InvLeakyRelu(0.5)(torch.tensor([[-2.0, 2.0]]))[0].tolist()
        [[-1.0, 2.0]]
    """

    def __init__(self, alpha: float = 0.9, exact_logdet: bool = False):
        super().__init__()
        self.alpha = alpha
        self.exact_logdet = exact_logdet

    def _scaling(self, x: Tensor) -> Tensor:
        return (x >= 0).to(x) + (x < 0).to(x) * self.alpha

    def forward(self, input: Tensor, reverse: bool = False):
        if reverse:
            return self.reverse(input)
        if not self.exact_logdet:
            return input * self._scaling(input), 0.0
        negative = (input < 0).to(input).flatten(1).sum(1)
        return input * self._scaling(input), negative * torch.log(torch.as_tensor(self.alpha).to(input))

    def reverse(self, input: Tensor) -> Tensor:
        return input / self._scaling(input)


class IgnoreLeakyRelu(nn.Module):
    """Identity with the InvLeakyRelu interface.

    Args:
        alpha: ignored.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> compvis.IgnoreLeakyRelu()(torch.tensor([[-2.0]]))[0].tolist()
        [[-2.0]]
    """

    def __init__(self, alpha: float = 0.9):
        super().__init__()

    def forward(self, input: Tensor, reverse: bool = False):
        return input if reverse else (input, 0.0)

    def reverse(self, input: Tensor) -> Tensor:
        return input
