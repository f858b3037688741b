"""FrEIA's base protocol, ``ActNorm`` and ``PermuteRandom`` (see :mod:`flowkern.compat.freia`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..._checks import check_bool
from ...nn.actnorm import actnorm_init_std
from .._peer import PeerError, RankError, ShapeError, peer_base
from ..convert import _build, builtin_converter

__all__ = ["InvertibleModule", "ActNorm", "PermuteRandom"]


class InvertibleModule(nn.Module):
    """Stand-in for FrEIA's ``InvertibleModule`` (FrEIA not installed):
    ``forward(x_or_z, c=[], rev=False, jac=True)`` returns ``(outputs_tuple, log|det J|)``,
    with ``-log|det J|`` when ``rev=True``."""

    def __init__(self, dims_in: Iterable[tuple[int, ...]], dims_c: Iterable[tuple[int, ...]] | None = None):
        super().__init__()
        self.dims_in = list(dims_in)
        self.dims_c = list(dims_c) if dims_c is not None else []

    def forward(self, x_or_z: Iterable[Tensor], c: Iterable[Tensor] | None = None,
                rev: bool = False, jac: bool = True) -> tuple[tuple[Tensor, ...], Tensor]:
        raise NotImplementedError(f"{self.__class__.__name__} does not provide forward(...) method")

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        raise NotImplementedError(f"{self.__class__.__name__} does not provide output_dims(...)")


#: FrEIA's ``InvertibleModule`` when it is installed (the modules here are then its subclasses), else
#: the stand-in.
InvertibleModule, PEER_BASE = peer_base("FrEIA.modules", InvertibleModule)


def _is_dims(value) -> bool:
    """Whether ``value`` is a list of shapes (FrEIA's ``dims_in``), not a tuple of tensors."""
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(d, (list, tuple)) and all(isinstance(n, int) for n in d) for d in value))


def _shapes(dims) -> list[tuple[int, ...]]:
    return [tuple(d) for d in dims]


class _Adapter(InvertibleModule):
    """Base of flowkern's FrEIA modules: records the dims it was built for, so that an
    instance can stand where FrEIA's containers expect a class (see the module docstring)."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__(dims_in, dims_c)
        self._built_dims = (_shapes(dims_in), _shapes(dims_c or []))

    @property
    def __name__(self) -> str:  # FrEIA's Node.__str__ prints module_type.__name__
        return type(self).__name__

    def __call__(self, *args, **kwargs):
        if args and _is_dims(args[0]):
            return self._as_built(args[0], *args[1:], **kwargs)
        return super().__call__(*args, **kwargs)

    def _as_built(self, dims_in, *args, dims_c=None, **kwargs):
        """``instance(dims_in, dims_c=...)``, as FrEIA 0.2's containers build a module: the
        instance itself, if it was built for these dims (``ValueError`` otherwise)."""
        name = type(self).__name__
        if args or kwargs:
            raise ValueError(f"You try to append an instantiated {name}, but also provided constructor "
                             f"arguments {list(kwargs) or list(args)}; pass them to its constructor instead.")
        built_in, built_c = self._built_dims
        if _shapes(dims_in) != built_in:
            raise ValueError(f"You passed an instance of {name} which expects a {built_in} input, but the "
                             f"output of the previous layer is of shape {_shapes(dims_in)}.")
        if _shapes(dims_c or []) != built_c:
            raise ValueError(f"You passed an instance of {name} built with dims_c={built_c}, but the "
                             f"container gives it conditions of shape {_shapes(dims_c or [])}.")
        return self


def _check_x(x: Tensor, channels: int, dims: Sequence[int], rev: bool = False, rank_error: type = RankError) -> Tensor:
    """The input of a coupling block before the fused op checks it, with FrEIA's exception types:
    ``RankError`` (FrEIA: ``IndexError``, indexing dim 1) for fewer than 2 dims, ``ShapeError``
    (FrEIA: ``RuntimeError`` from its split) for another channel count. The rest of the shape
    is the subnet's to check, as in FrEIA (an unconditional conv block takes any image size)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tuple of torch.Tensors, got a {type(x).__name__} in it")
    if x.dim() < 2:
        raise rank_error(f"x must have shape (B, {', '.join(map(str, dims))}), got {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ShapeError(f"x must have {channels} channels, shape (B, {', '.join(map(str, dims))}), "
                         f"got {tuple(x.shape)}")
    return x


def _check_condition_dims(dims_in: list, dims_c: list) -> None:
    """FrEIA asserts that conditions have the input's non-channel shape (``PeerError`` is
    both its ``AssertionError`` and a ``ValueError``)."""
    for i, dc in enumerate(dims_c):
        if tuple(dc[1:]) != tuple(dims_in[0][1:]):
            raise PeerError(f"dims_c[{i}] = {tuple(dc)} must have the non-channel shape of "
                             f"dims_in[0] = {tuple(dims_in[0])}")


class ActNorm(_Adapter):
    r"""Glow ActNorm with log-scale: :math:`y = x\,e^{s} + b`, log-det :math:`\prod S \sum s`.

    Data-dependent init on the first call (zero mean, unit std per channel) unless
    ``init_data`` is given or a state dict was loaded. The init follows
    :func:`flowkern.nn.actnorm.actnorm_init_std`: ``ValueError`` for init data with fewer than 2
    values per channel or with non-finite values (FrEIA computes NaN parameters), scale 1 and a
    ``UserWarning`` for a channel with (near-)zero spread. ``initialized`` (a property over
    FrEIA's ``init_on_next_batch``; no state-dict key) can be set by hand:
    ``layer.initialized = True`` skips the init for parameters set by the user.

    Args:
        dims_in: ``[(C, *S)]``, the one input's shape.
        dims_c: condition shapes (unused).
        init_data: a batch to initialise from now.

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import ActNorm
        >>> norm = ActNorm([(3,)])
        >>> (y,), log_jac = norm((torch.randn(64, 3) * 4 + 1,))
        >>> norm.initialized, bool(y.mean(0).abs().max() < 1e-5)
        (True, True)
    """

    def __init__(self, dims_in, dims_c=None, init_data: Tensor | None = None):
        super().__init__(dims_in, dims_c)
        self.dims_in = dims_in[0]
        param_dims = [1, self.dims_in[0]] + [1] * (len(self.dims_in) - 1)
        self.scale = nn.Parameter(torch.zeros(*param_dims))
        self.bias = nn.Parameter(torch.zeros(*param_dims))
        self.init_on_next_batch = True
        if init_data is not None:
            self._initialize_with_data(init_data)
        self._register_load_state_dict_pre_hook(self._on_load_state_dict)

    def _on_load_state_dict(self, *args) -> None:
        self.init_on_next_batch = False

    @property
    def initialized(self) -> bool:
        """Whether the data-dependent init has run (``not init_on_next_batch``); settable."""
        return not self.init_on_next_batch

    @initialized.setter
    def initialized(self, value: bool) -> None:
        self.init_on_next_batch = not check_bool("initialized", value)

    @torch.no_grad()
    def _initialize_with_data(self, data: Tensor) -> None:
        if tuple(data.shape[1:]) != tuple(self.dims_in):
            raise PeerError(f"init data must have shape (B, {', '.join(map(str, self.dims_in))}), "
                             f"got {tuple(data.shape)}")
        flat = data.transpose(0, 1).reshape(self.dims_in[0], -1)
        if flat.shape[1] == 0:
            return  # an empty batch has no statistics: the next batch initialises
        std = actnorm_init_std(type(self).__name__, flat.mean(dim=-1), lambda: flat.std(dim=-1),
                               flat.shape[1])
        self.scale.data.view(-1)[:] = torch.log(1 / std)
        self.bias.data.view(-1)[:] = -(flat * self.scale.data.view(-1, 1).exp()).mean(dim=-1)
        self.init_on_next_batch = False

    def forward(self, x, rev=False, jac=True):
        if self.init_on_next_batch:
            self._initialize_with_data(x[0])
        logdet = (self.scale.sum() * math.prod(self.dims_in[1:])).repeat(x[0].shape[0])
        if rev:
            return [(x[0] - self.bias) / self.scale.exp()], -logdet
        return [x[0] * self.scale.exp() + self.bias], logdet

    def output_dims(self, input_dims):
        if len(input_dims) != 1:
            raise PeerError("Can only use 1 input")  # FrEIA: assert
        return input_dims

    def affine(self) -> tuple[Tensor, Tensor]:
        """(a, b) of shape (C,) with ``forward(x) = x * a + b`` (for folding into a coupling)."""
        return self.scale.reshape(-1).exp(), self.bias.reshape(-1)


class PermuteRandom(_Adapter):
    """Fixed random channel permutation (numpy RNG, seeded like FrEIA's).

    Args:
        dims_in: ``[(C, *S)]``.
        dims_c: condition shapes (unused).
        seed: numpy seed (None: numpy's global stream).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import PermuteRandom
        >>> perm = PermuteRandom([(4,)], seed=0)
        >>> (y,), _ = perm((torch.arange(4.0)[None],))
        >>> perm((y,), rev=True)[0][0].tolist()
        [[0.0, 1.0, 2.0, 3.0]]
    """

    def __init__(self, dims_in, dims_c=None, seed: int | None = None):
        super().__init__(dims_in, dims_c)
        self.in_channels = dims_in[0][0]
        if seed is not None:
            np.random.seed(seed)
        perm = np.random.permutation(self.in_channels)
        self.perm = nn.Parameter(torch.LongTensor(perm), requires_grad=False)
        self.perm_inv = nn.Parameter(torch.LongTensor(np.argsort(perm)), requires_grad=False)

    def forward(self, x, rev=False, jac=True):
        return [x[0][:, self.perm_inv if rev else self.perm]], 0.0

    def output_dims(self, input_dims):
        if len(input_dims) != 1:
            raise ValueError(f"{self.__class__.__name__} can only use 1 input")
        return input_dims


# ---- convert(): FrEIA's classes as these -------------------------------------------------------
@builtin_converter("FrEIA.modules.ActNorm")
def _convert_actnorm(m, *, convert_child, **kwargs):
    new = _build(ActNorm, m, [m.dims_in], m.dims_c)
    new.init_on_next_batch = m.init_on_next_batch
    return new


@builtin_converter("FrEIA.modules.PermuteRandom")
def _convert_permute(m, *, convert_child, **kwargs):
    return _build(PermuteRandom, m, m.dims_in, m.dims_c)
