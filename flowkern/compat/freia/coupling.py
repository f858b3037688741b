"""FrEIA's coupling blocks on the fused op (see :mod:`flowkern.compat.freia`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import coupling_forward, coupling_forward_packed, coupling_inverse, coupling_inverse_packed
from ...spec import channel_view
from .._fused import cat_cond
from .._peer import RankError, ShapeError
from ..convert import _build, _handout, builtin_converter
from .modules import _Adapter, _check_condition_dims, _check_x

__all__ = ["GLOWCouplingBlock", "RNVPCouplingBlock", "AffineCouplingOneSided", "AllInOneBlock"]


ATAN_K = 0.636  # FrEIA's literal constant in its ATAN clamp (not 2/pi)


def _atan_clamp(u: Tensor) -> Tensor:
    return ATAN_K * torch.atan(u)


def _sigmoid_clamp(u: Tensor) -> Tensor:
    return 2.0 * (torch.sigmoid(u) - 0.5)


# FrEIA's named clamp activations (module-level functions, so a block pickles)
_CLAMP_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "ATAN": _atan_clamp,
    "TANH": torch.tanh,
    "SIGMOID": _sigmoid_clamp,
}


class _BaseCouplingBlock(_Adapter):
    """Split rule, conditions and soft clamp of FrEIA's coupling blocks."""

    def __init__(self, dims_in, dims_c=[], clamp: float = 2.0,
                 clamp_activation: str | Callable = "ATAN", split_len: float | int = 0.5):
        super().__init__(dims_in, dims_c)
        self.channels = dims_in[0][0]
        self.ndims = len(dims_in[0])
        if isinstance(split_len, float):
            if not 0 <= split_len <= 1:
                raise ValueError(f"Float split_len must be in range [0, 1], but is: {split_len}")
            split_len = round(self.channels * split_len)
        elif not 0 <= split_len <= self.channels:
            raise ValueError(f"Integer split_len must be in range 0 <= split_len <= {self.channels}, "
                             f"but is: {split_len}")
        self.split_len1 = split_len
        self.split_len2 = self.channels - split_len
        self.clamp = clamp
        _check_condition_dims(self.dims_in, self.dims_c)
        self.conditional = len(self.dims_c) > 0
        self.condition_length = sum(dc[0] for dc in self.dims_c)
        if isinstance(clamp_activation, str):
            if clamp_activation not in _CLAMP_FNS:
                raise ValueError(f'Unknown clamp activation "{clamp_activation}"')
            self.clamp_kind: str | None = clamp_activation
            self.f_clamp = _CLAMP_FNS[clamp_activation]
        else:
            self.clamp_kind = None
            self.f_clamp = clamp_activation

    def _scale(self, u: Tensor) -> tuple[Tensor, dict]:
        """(s_raw, op kwargs) with op scale f(s_raw) = clamp * f_clamp(u)."""
        kind, alpha = self.clamp_kind, float(self.clamp)
        if kind == "ATAN":
            return u, dict(scale="atan", clamp=1.0, atan_k=ATAN_K * alpha)
        if kind in ("TANH", "SIGMOID") and alpha > 0:
            k = alpha if kind == "TANH" else alpha / 2
            return (u if k == 1 else u * k), dict(scale="tanh", clamp=alpha)
        return self.clamp * self.f_clamp(u), dict(scale="exp")

    def _subnet_maker(self, subnet_constructor: Callable | None) -> Callable[[int, int], nn.Module]:
        """``make(n_in, n_out)``: FrEIA's ``subnet_constructor`` for a subnet seeing n_in channels
        and the conditions."""
        if subnet_constructor is None:
            raise TypeError("subnet_constructor must be a callable (channels_in, channels_out) -> nn.Module")
        return lambda n_in, n_out: subnet_constructor(n_in + self.condition_length, n_out)

    def forward(self, x, c=[], rev=False, jac=True):
        """The op runs the block (:attr:`fusable`), else FrEIA's formula (``_exact``)."""
        _check_x(x[0], self.channels, self.dims_in[0])
        if not self.fusable:
            return self._exact(x[0], self._cond(c), rev)
        return self._fused(x[0], self._cond(c), rev)

    def _cond(self, c) -> list[Tensor]:
        return list(c) if self.conditional and c is not None else []

    @property
    def fusable(self) -> bool:
        """Whether the split leaves a channel on each side (what the op can express);
        otherwise FrEIA's formula runs in PyTorch."""
        return 1 <= self.split_len1 <= self.channels - 1

    def _affine_exact(self, v: Tensor, s_raw: Tensor, t: Tensor, rev: bool) -> tuple[Tensor, Tensor]:
        """FrEIA's affine step in PyTorch: ``v e^s + t`` (``(v - t) e^{-s}`` reversed) with
        ``s = clamp * f_clamp(s_raw)``, log-det summed over all non-batch dims."""
        s = self.clamp * self.f_clamp(s_raw)
        j = torch.sum(s, dim=tuple(range(1, self.ndims + 1)))
        return ((v - t) * torch.exp(-s), -j) if rev else (torch.exp(s) * v + t, j)

    def output_dims(self, input_dims):
        if len(input_dims) != 1:
            raise ValueError("Can only use 1 input")
        return input_dims


class _TwoSidedCoupling(_BaseCouplingBlock):
    """Two couplings: first half transformed from the second, then the second from the first."""

    def _coefficients(self, side: int, u: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(u_s, t, h) for the half transformed by the subnet(s) of ``side`` (2: first half);
        h = [u_s | t] is the one subnet output both are views of, or None."""
        raise NotImplementedError

    def _exact(self, x: Tensor, c: Sequence[Tensor], rev: bool):
        """FrEIA's two couplings in PyTorch (for splits the op cannot express)."""
        L1 = self.split_len1
        x1, x2 = x[:, :L1], x[:, L1:]

        def couple(v, side, u):
            s_raw, t, _ = self._coefficients(side, u)
            return self._affine_exact(v, s_raw, t, rev)

        if not rev:
            y1, j1 = couple(x1, 2, cat_cond(x2, c))
            y2, j2 = couple(x2, 1, cat_cond(y1, c))
        else:
            y2, j2 = couple(x2, 1, cat_cond(x1, c))
            y1, j1 = couple(x1, 2, cat_cond(y2, c))
        return (torch.cat((y1, y2), 1),), j1 + j2

    def _coupling(self, inverse: bool, inp: Tensor, side: int, u: Tensor, a=None, b=None, **op_kw):
        """One coupling; the packed op when the scale leaves u_s as the subnet gave it."""
        u_s, t, h = self._coefficients(side, u)
        s, kw = self._scale(u_s)
        if h is not None and s is u_s:
            op = coupling_inverse_packed if inverse else coupling_forward_packed
            return op(inp, h, a, b, **op_kw, **kw)
        op = coupling_inverse if inverse else coupling_forward
        return op(inp, s, t, a, b, **op_kw, **kw)

    def _fused(self, x: Tensor, c: Sequence[Tensor], rev: bool,
               a: Tensor | None = None, b: Tensor | None = None):
        """The block, with an optional preceding actnorm x*a + b folded into the op."""
        L1 = self.split_len1
        if not rev:
            u2 = x[:, L1:]
            if a is not None:
                u2 = u2 * channel_view(a[L1:], u2) + channel_view(b[L1:], u2)
            y, j1 = self._coupling(False, x, 2, cat_cond(u2, c), a, b, split=L1, passive="second")
            out, j2 = self._coupling(False, y, 1, cat_cond(y[:, :L1], c), split=L1, passive="first")
        else:
            w, j2 = self._coupling(True, x, 1, cat_cond(x[:, :L1], c), split=L1, passive="first")
            out, j1 = self._coupling(True, w, 2, cat_cond(w[:, L1:], c), a, b, split=L1, passive="second")
        return (out,), j1 + j2


class GLOWCouplingBlock(_TwoSidedCoupling):
    """Glow-style double affine coupling: one subnet per side predicts [s, t] jointly.

    Args:
        dims_in: ``[(C, *S)]``, the one input's shape.
        dims_c: condition shapes ``[(C_c, *S)]``, concatenated to the subnets' inputs.
        subnet_constructor: ``(channels_in, channels_out) -> nn.Module``.
        clamp: the soft clamp's alpha.
        clamp_activation: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a function.
        split_len: channels of the first half (an int, or a fraction of C).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import GLOWCouplingBlock
        >>> def mlp(c_in, c_out):
        ...     return torch.nn.Sequential(torch.nn.Linear(c_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, c_out))
        >>> block = GLOWCouplingBlock([(4,)], subnet_constructor=mlp)
        >>> x = torch.randn(3, 4)
        >>> (y,), log_jac = block((x,))
        >>> torch.allclose(block((y,), rev=True)[0][0], x, atol=1e-5), log_jac.shape
        (True, torch.Size([3]))
    """

    def __init__(self, dims_in, dims_c=[], subnet_constructor: Callable | None = None,
                 clamp: float = 2.0, clamp_activation: str | Callable = "ATAN",
                 split_len: float | int = 0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len=split_len)
        make = self._subnet_maker(subnet_constructor)
        self.subnet1 = make(self.split_len1, self.split_len2 * 2)
        self.subnet2 = make(self.split_len2, self.split_len1 * 2)

    def _coefficients(self, side, u):
        h, n = (self.subnet2(u), self.split_len1) if side == 2 else (self.subnet1(u), self.split_len2)
        return h[:, :n], h[:, n:], h


class RNVPCouplingBlock(_TwoSidedCoupling):
    """RealNVP double affine coupling with separate s and t subnets per side.

    Args:
        dims_in, dims_c, subnet_constructor, clamp, clamp_activation, split_len: as
            :class:`GLOWCouplingBlock`.

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import RNVPCouplingBlock
        >>> block = RNVPCouplingBlock([(4,)], subnet_constructor=torch.nn.Linear, clamp_activation="TANH")
        >>> [name for name, _ in block.named_children()]
        ['subnet_s1', 'subnet_t1', 'subnet_s2', 'subnet_t2']
    """

    def __init__(self, dims_in, dims_c=[], subnet_constructor: Callable | None = None,
                 clamp: float = 2.0, clamp_activation: str | Callable = "ATAN",
                 split_len: float | int = 0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len=split_len)
        make = self._subnet_maker(subnet_constructor)
        self.subnet_s1, self.subnet_t1 = make(self.split_len1, self.split_len2), make(self.split_len1, self.split_len2)
        self.subnet_s2, self.subnet_t2 = make(self.split_len2, self.split_len1), make(self.split_len2, self.split_len1)

    def _coefficients(self, side, u):
        if side == 2:
            return self.subnet_s2(u), self.subnet_t2(u), None
        return self.subnet_s1(u), self.subnet_t1(u), None


class AffineCouplingOneSided(_BaseCouplingBlock):
    """One affine coupling: the second half is transformed from the first.

    Args:
        dims_in, dims_c, subnet_constructor, clamp, clamp_activation, split_len: as
            :class:`GLOWCouplingBlock`.

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import AffineCouplingOneSided
        >>> block = AffineCouplingOneSided([(4,)], subnet_constructor=torch.nn.Linear)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(block((x,))[0][0][:, :2], x[:, :2])  # the first half passes unchanged
        True
    """

    def __init__(self, dims_in, dims_c=[], subnet_constructor: Callable | None = None,
                 clamp: float = 2.0, clamp_activation: str | Callable = "ATAN",
                 split_len: float | int = 0.5):
        super().__init__(dims_in, dims_c, clamp, clamp_activation, split_len=split_len)
        self.subnet = self._subnet_maker(subnet_constructor)(self.split_len1, 2 * self.split_len2)

    def _exact(self, x: Tensor, c: Sequence[Tensor], rev: bool):
        """FrEIA's one-sided coupling in PyTorch (for splits the op cannot express)."""
        x1, x2 = x[:, : self.split_len1], x[:, self.split_len1:]
        h = self.subnet(cat_cond(x1, c))
        y2, j = self._affine_exact(x2, h[:, : self.split_len2], h[:, self.split_len2:], rev)
        return (torch.cat((x1, y2), 1),), j

    def _fused(self, x, c, rev, a=None, b=None):
        L1 = self.split_len1
        u1 = x[:, :L1]
        if a is not None and not rev:
            u1 = u1 * channel_view(a[:L1], u1) + channel_view(b[:L1], u1)
        h = self.subnet(cat_cond(u1, c))
        u_s = h[:, : self.split_len2]
        s, kw = self._scale(u_s)
        if s is u_s:
            op = coupling_inverse_packed if rev else coupling_forward_packed
            out, j = op(x, h, a, b, split=L1, passive="first", **kw)
        else:
            op = coupling_inverse if rev else coupling_forward
            out, j = op(x, s, h[:, self.split_len2:], a, b, split=L1, passive="first", **kw)
        return (out,), j


class AllInOneBlock(_Adapter):
    r"""FrEIA's all-in-one block: affine coupling, global affine ('ActNorm'), permutation.

    :math:`y = V R\,(\Psi(s_g) \odot \mathrm{Coupling}(x) + t_g)`. The global affine is
    folded into the op: with :math:`g = \Psi(s_g)`, actnorm ``a = g``,
    ``b = (t_{g,p}, 0)`` and shift :math:`t' = g_a t + t_{g,a}`, since
    :math:`g_a (x_a e^s + t) + t_{g,a} = (g_a x_a) e^s + t'`; coupling coefficients
    :math:`(s, t) = 0.1\,\mathrm{subnet}(x_1)`, :math:`s = \alpha \tanh(s)`.

    Args:
        dims_in: ``[(C, *S)]`` (1 to 3 spatial dims at most).
        dims_c: condition shapes, concatenated to the subnet's input.
        subnet_constructor: ``(channels_in, channels_out) -> nn.Module``.
        affine_clamping: the coupling's alpha.
        gin_block: volume-preserving (GIN) coupling, no global scale.
        global_affine_init: the global scale's initial value.
        global_affine_type: ``"SOFTPLUS"``, ``"SIGMOID"`` or ``"EXP"`` (Psi).
        permute_soft: a random rotation instead of a permutation.
        learned_householder_permutation: the number of learned Householder reflections.
        reverse_permutation: apply the inverse permutation before the coupling too.

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import AllInOneBlock
        >>> block = AllInOneBlock([(4, 3, 3)], subnet_constructor=lambda i, o: torch.nn.Conv2d(i, o, 1), gin_block=True)
        >>> (y,), log_jac = block((torch.randn(2, 4, 3, 3),))
        >>> y.shape, log_jac.abs().max().item() < 1e-5  # GIN: volume-preserving
        (torch.Size([2, 4, 3, 3]), True)
    """

    def __init__(self, dims_in, dims_c=[], subnet_constructor: Callable | None = None,
                 affine_clamping: float = 2.0, gin_block: bool = False,
                 global_affine_init: float = 1.0, global_affine_type: str = "SOFTPLUS",
                 permute_soft: bool = False, learned_householder_permutation: int = 0,
                 reverse_permutation: bool = False):
        super().__init__(dims_in, dims_c)
        channels = dims_in[0][0]
        self.input_rank = len(dims_in[0]) - 1
        self.sum_dims = tuple(range(1, 2 + self.input_rank))
        _check_condition_dims(self.dims_in, self.dims_c[:1])  # FrEIA asserts on the first condition only
        self.conditional = len(self.dims_c) > 0
        self.condition_channels = sum(dc[0] for dc in self.dims_c)
        self.splits = [channels - channels // 2, channels // 2]
        try:
            self.permute_function = {0: F.linear, 1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.input_rank]
        except KeyError:
            raise ValueError(f"Data is {1 + self.input_rank}D. Must be 1D-4D.") from None
        self.in_channels = channels
        self.clamp = affine_clamping
        self.GIN = gin_block
        self.reverse_pre_permute = reverse_permutation
        self.householder = learned_householder_permutation
        if permute_soft and channels > 512:
            warnings.warn("Soft permutation will take a very long time to initialize "
                          f"with {channels} feature channels. Consider using hard permutation instead.")
        if global_affine_type == "SIGMOID":
            global_scale = 2.0 - np.log(10.0 / global_affine_init - 1.0)
        elif global_affine_type == "SOFTPLUS":
            global_scale = 2.0 * np.log(np.exp(0.5 * 10.0 * global_affine_init) - 1)
            self.softplus = nn.Softplus(beta=0.5)
        elif global_affine_type == "EXP":
            global_scale = np.log(global_affine_init)
        else:
            raise ValueError('Global affine activation must be "SIGMOID", "SOFTPLUS" or "EXP"')
        self.global_affine_type = global_affine_type
        rank_ones = [1] * self.input_rank
        self.global_scale = nn.Parameter(torch.ones(1, channels, *rank_ones) * float(global_scale))
        self.global_offset = nn.Parameter(torch.zeros(1, channels, *rank_ones))
        if permute_soft:
            from scipy.stats import special_ortho_group  # FrEIA's sampler, only for soft permutations
            w = special_ortho_group.rvs(channels)
        else:
            w = np.zeros((channels, channels))
            for i, j in enumerate(np.random.permutation(channels)):
                w[i, j] = 1.0
        if self.householder:
            self.vk_householder = nn.Parameter(0.2 * torch.randn(self.householder, channels), requires_grad=True)
            self.w_perm = None
            self.w_perm_inv = None
            self.w_0 = nn.Parameter(torch.FloatTensor(w), requires_grad=False)
        else:
            self.w_perm = nn.Parameter(torch.FloatTensor(w).view(channels, channels, *rank_ones),
                                       requires_grad=False)
            self.w_perm_inv = nn.Parameter(torch.FloatTensor(w.T).view(channels, channels, *rank_ones),
                                           requires_grad=False)
        if subnet_constructor is None:
            raise ValueError("Please supply a callable subnet_constructor function or object (see docstring)")
        self.subnet = subnet_constructor(self.splits[0] + self.condition_channels, 2 * self.splits[1])
        self.last_jac = None

    def global_scale_activation(self, a: Tensor) -> Tensor:
        """Ψ: 10 σ(a - 2) (SIGMOID), 0.1 softplus_{β=1/2}(a) (SOFTPLUS) or exp(a) (EXP)."""
        if self.global_affine_type == "SIGMOID":
            return 10 * torch.sigmoid(a - 2.0)
        if self.global_affine_type == "SOFTPLUS":
            return 0.1 * self.softplus(a)
        return torch.exp(a)

    def _construct_householder_permutation(self) -> Tensor:
        w = self.w_0
        eye = torch.eye(self.in_channels, device=w.device, dtype=w.dtype)
        for vk in self.vk_householder:
            w = torch.mm(w, eye - 2 * torch.outer(vk, vk) / torch.dot(vk, vk))
        return w.reshape(*w.shape, *([1] * self.input_rank))

    def _coefficients(self, h: Tensor, g: Tensor, offset: Tensor) -> tuple[Tensor, Tensor, dict]:
        """(s_raw, t', op kwargs) from the subnet output h = [s | t] (before the 0.1 factor)."""
        L1, L2 = self.splits
        if not self.GIN and self.clamp > 0:
            w = torch.cat([h.new_full((L2,), 0.1 * self.clamp), 0.1 * g[L1:]])
            bias = torch.cat([h.new_zeros(L2), offset[L1:]])
            st = torch.addcmul(channel_view(bias, h), h, channel_view(w, h))
            return st[:, :L2], st[:, L2:], dict(scale="tanh", clamp=float(self.clamp))
        s = self.clamp * torch.tanh(0.1 * h[:, :L2])
        if self.GIN:
            s = s - s.mean(dim=self.sum_dims, keepdim=True)
        t = torch.addcmul(channel_view(offset[L1:], h), h[:, L2:], channel_view(0.1 * g[L1:], h))
        return s, t, dict(scale="exp")

    def forward(self, x, c=[], rev=False, jac=True):
        if self.householder:
            self.w_perm = self._construct_householder_permutation()
            if rev or self.reverse_pre_permute:
                self.w_perm_inv = self.w_perm.transpose(0, 1).contiguous()
        # reversed, FrEIA's permutation (a matrix product) fails first: RuntimeError, not IndexError
        x = _check_x(x[0], self.in_channels, self.dims_in[0], rev, ShapeError if rev else RankError)
        cond = list(c) if self.conditional else []
        if self.splits[1] == 0:  # one channel: nothing for the op to couple
            return self._exact(x, cond, rev)
        L1 = self.splits[0]
        offset = self.global_offset.reshape(-1)
        g = (torch.ones_like(offset) if self.GIN
             else self.global_scale_activation(self.global_scale).reshape(-1))
        b = torch.cat([offset[:L1], offset.new_zeros(self.splits[1])])
        if rev:
            x = self.permute_function(x, self.w_perm_inv)
            x1 = (x[:, :L1] - channel_view(offset[:L1], x)) / channel_view(g[:L1], x)
        else:
            if self.reverse_pre_permute:
                x = self.permute_function(x, self.w_perm_inv)
            x1 = x[:, :L1]
        s, t, kw = self._coefficients(self.subnet(cat_cond(x1, cond)), g, offset)
        if rev:
            out, logdet = coupling_inverse(x, s, t, g, b, split=L1, **kw)
            if self.reverse_pre_permute:
                out = self.permute_function(out, self.w_perm)
        else:
            out, logdet = coupling_forward(x, s, t, g, b, split=L1, **kw)
            out = self.permute_function(out, self.w_perm)
        return (out,), logdet

    def _exact(self, x: Tensor, cond: list[Tensor], rev: bool):
        """FrEIA's all-in-one block step by step in PyTorch (for a split the op cannot
        express): [pre-permute], coupling on the second part, global affine, permutation."""
        if self.GIN:
            scale, global_jac = 1.0, 0.0
        else:
            scale = self.global_scale_activation(self.global_scale)
            global_jac = torch.sum(torch.log(scale))
        if rev:
            x = (self.permute_function(x, self.w_perm_inv) - self.global_offset) / scale
        elif self.reverse_pre_permute:
            x = self.permute_function(x, self.w_perm_inv)
        L1 = self.splits[0]
        x1, x2 = x[:, :L1], x[:, L1:]
        a = 0.1 * self.subnet(cat_cond(x1, cond))
        ch = x2.shape[1]
        s = self.clamp * torch.tanh(a[:, :ch])
        if self.GIN:
            s = s - torch.mean(s, dim=self.sum_dims, keepdim=True)
        if rev:
            x2, j = (x2 - a[:, ch:]) * torch.exp(-s), -torch.sum(s, dim=self.sum_dims)
        else:
            x2, j = x2 * torch.exp(s) + a[:, ch:], torch.sum(s, dim=self.sum_dims)
        out = torch.cat((x1, x2), 1)
        if not rev:
            out = self.permute_function(out * scale + self.global_offset, self.w_perm)
        elif self.reverse_pre_permute:
            out = self.permute_function(out, self.w_perm)
        n_pixels = math.prod(out.shape[2:])
        return (out,), j + (-1) ** rev * n_pixels * global_jac

    def output_dims(self, input_dims):
        return input_dims


# ---- convert(): FrEIA's classes as these -------------------------------------------------------
def _clamp_activation(f) -> str | Callable:
    """FrEIA stores its clamp as a function; recover the name by evaluating it."""
    u = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    for kind, g in _CLAMP_FNS.items():
        try:
            if torch.equal(f(u), g(u)):
                return kind
        except (TypeError, RuntimeError):
            break
    return f


_SUBNETS = {GLOWCouplingBlock: ("subnet1", "subnet2"), AffineCouplingOneSided: ("subnet",),
            RNVPCouplingBlock: ("subnet_s1", "subnet_t1", "subnet_s2", "subnet_t2")}


@builtin_converter(*(f"FrEIA.modules.{cls.__name__}" for cls in _SUBNETS))
def _convert_coupling(m, *, convert_child, **kwargs):
    cls = next(c for c in _SUBNETS if c.__name__ == type(m).__name__)
    return _build(cls, m, m.dims_in, m.dims_c, subnet_constructor=_handout([getattr(m, n) for n in _SUBNETS[cls]]),
                  clamp=m.clamp, clamp_activation=_clamp_activation(m.f_clamp), split_len=m.split_len1)


@builtin_converter("FrEIA.modules.AllInOneBlock")
def _convert_all_in_one(m, *, convert_child, **kwargs):
    if hasattr(m, "softplus"):
        affine_type = "SOFTPLUS"
    else:
        probe = m.global_scale_activation(torch.zeros(1))
        affine_type = "EXP" if torch.equal(probe, torch.ones(1)) else "SIGMOID"
    return _build(AllInOneBlock, m, m.dims_in, m.dims_c, subnet_constructor=_handout([m.subnet]),
                  affine_clamping=m.clamp, gin_block=m.GIN, global_affine_type=affine_type,
                  learned_householder_permutation=m.householder, reverse_permutation=m.reverse_pre_permute)
