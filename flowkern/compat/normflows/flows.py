"""normflows' affine flows, ``ActNorm``, ``Split`` / ``Merge`` and the couplings (see
:mod:`flowkern.compat.normflows`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.actnorm import SettableInitFlag, actnorm_init_std
from ...nn.base import zero_logdet
from ...ops import coupling_forward, coupling_inverse
from ...spec import channel_view
from .._fused import split_permutation
from .._peer import ShapeError, peer_base
from ..convert import _build, builtin_converter

__all__ = ["Flow", "AffineConstFlow", "ActNorm", "Split", "Merge", "AffineCoupling", "AffineCouplingBlock",
           "MaskedAffineFlow"]

SCALE_MAPS = ("exp", "sigmoid", "sigmoid_inv")


SPLIT_MODES = ("channel", "channel_inv", "checkerboard", "checkerboard_inv")


class Flow(nn.Module):
    """Stand-in for normflows' ``Flow`` (normflows not installed): ``forward(z) -> (z', log_det)``
    and ``inverse(z') -> (z, log_det)``."""

    def forward(self, z):
        raise NotImplementedError("Forward pass has not been implemented.")

    def inverse(self, z):
        raise NotImplementedError("This flow has no algebraic inverse.")


#: normflows' ``Flow`` when it is installed (the flows here are then its subclasses), else the stand-in.
Flow, PEER_BASE = peer_base("normflows.flows.base", Flow)


class AffineConstFlow(Flow):
    r"""Learned per-dimension affine map :math:`z' = z e^{s} + t`; log-det is the scalar
    :math:`\prod(\text{broadcast dims}) \sum s`.

    Args:
        shape: the shape of s and t without the batch dim (size-1 dims are shared).
        scale: learn s (else a zero buffer).
        shift: learn t (else a zero buffer).

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import AffineConstFlow
        >>> flow = AffineConstFlow((3,))
        >>> z, log_det = flow(torch.ones(2, 3))
        >>> z.tolist(), float(log_det.detach())
        ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], 0.0)
    """

    def __init__(self, shape, scale: bool = True, shift: bool = True):
        super().__init__()
        if scale:
            self.s = nn.Parameter(torch.zeros(shape)[None])
        else:
            self.register_buffer("s", torch.zeros(shape)[None])
        if shift:
            self.t = nn.Parameter(torch.zeros(shape)[None])
        else:
            self.register_buffer("t", torch.zeros(shape)[None])
        self.n_dim = self.s.dim()
        self.batch_dims = [i for i, n in enumerate(self.s.shape) if n == 1]

    def _n_shared(self, z: Tensor) -> int:
        return math.prod(z.size(i) for i in self.batch_dims[1:])

    def forward(self, z):
        return z * torch.exp(self.s) + self.t, self._n_shared(z) * torch.sum(self.s)

    def inverse(self, z):
        return (z - self.t) * torch.exp(-self.s), -self._n_shared(z) * torch.sum(self.s)


class ActNorm(SettableInitFlag, AffineConstFlow):
    """:class:`AffineConstFlow` with data-dependent init on the first call (either direction).

    The init follows :func:`flowkern.nn.actnorm.actnorm_init_std`: ``ValueError`` for an init
    batch with fewer than 2 values per parameter or with non-finite values (normflows computes
    NaN parameters), scale 1 (not normflows' 1e6) and a ``UserWarning`` for an entry with
    (near-)zero spread. The state is normflows' ``data_dep_init_done`` buffer;
    ``initialized()`` reads it and ``layer.initialized = True`` sets it (parameters loaded or set
    by hand: no init runs).

    Args:
        shape, scale, shift: as :class:`AffineConstFlow`.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import ActNorm
        >>> norm = ActNorm((3,))
        >>> z, _ = norm(torch.randn(64, 3) * 4 + 1)  # the first call initialises: zero mean, unit std
        >>> norm.initialized(), bool(z.mean(0).abs().max() < 1e-5)
        (True, True)
    """

    _init_buffer = "data_dep_init_done"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_dep_init_done_cpu = torch.tensor(0.0)
        self.register_buffer("data_dep_init_done", self.data_dep_init_done_cpu.clone())
        self._track_init_flag()

    def initialized(self) -> bool:
        """Whether the data-dependent init has run (the buffer is read until it has)."""
        return self._is_initialized()

    @torch.no_grad()
    def _init(self, z: Tensor, inverse: bool) -> None:
        mean = z.mean(dim=self.batch_dims, keepdim=True)
        count = math.prod(z.shape[d] for d in self.batch_dims)
        if count == 0:
            return  # an empty batch has no statistics: the next batch initialises
        std = actnorm_init_std(type(self).__name__, mean, lambda: z.std(dim=self.batch_dims, keepdim=True), count, "z",
                               eps=1e-6)
        if inverse:
            self.s.data = torch.log(std)
            self.t.data = mean
        else:
            self.s.data = -torch.log(std)
            self.t.data = -mean * torch.exp(self.s)
        self._mark_initialized()

    def forward(self, z):
        if not self.initialized():
            self._init(z, inverse=False)
        return super().forward(z)

    def inverse(self, z):
        if not self.initialized():
            self._init(z, inverse=True)
        return super().inverse(z)

    def maybe_initialize(self, z: Tensor, inverse: bool = False) -> None:
        """The data-dependent init from ``z`` if it has not run, as in normflows' normalising
        direction (``inverse``) in either direction: :class:`GlowBlock` calls it with the batch on
        the actnorm's side of its folded convolution."""
        if not self.initialized():
            self._init(z, inverse=True)

    def per_channel(self) -> bool:
        """True when s, t hold one value per channel (dim 1), so they fold into the op."""
        return self.s.dim() >= 2 and self.s.numel() == self.s.shape[1]


def _checkerboard_mask(shape: tuple[int, ...], inv: bool, device) -> Tensor:
    """normflows' checkerboard colour (1 = first part) over a sample's dims:
    parity of the index sum, flipped for the '_inv' modes."""
    grids = torch.meshgrid(*[torch.arange(n, device=device) for n in shape], indexing="ij")
    parity = sum(grids) % 2
    return (1 - parity) if inv else parity


class Split(Flow):
    """Split features into [z1, z2]: channel halves (first half ceil(C/2)) or checkerboard.

    Args:
        mode: ``"channel"``, ``"channel_inv"`` (halves swapped), ``"checkerboard"`` or
            ``"checkerboard_inv"`` (over a sample's dims; the last one even).

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import Split
        >>> (z1, z2), _ = Split("channel")(torch.arange(5.0)[None])
        >>> z1.tolist(), z2.tolist()
        ([[0.0, 1.0, 2.0]], [[3.0, 4.0]])
    """

    def __init__(self, mode: str = "channel"):
        super().__init__()
        self.mode = mode

    def _checkerboard_index(self, sample_shape: tuple[int, ...], device) -> tuple[Tensor, Tensor]:
        if not sample_shape:  # normflows' param map fails on it (RuntimeError)
            raise ShapeError("z must have shape (B, *features) with at least 2 dims for a checkerboard split, "
                             "got a 1-dim tensor")
        if sample_shape[-1] % 2:
            raise ShapeError(f"checkerboard split needs an even last dimension, got shape {sample_shape}")
        mask = _checkerboard_mask(sample_shape, "inv" in self.mode, device).reshape(-1)
        return split_permutation(torch.nonzero(mask).flatten(), torch.nonzero(1 - mask).flatten())

    def forward(self, z):
        if self.mode == "channel":
            z1, z2 = z.chunk(2, dim=1)
        elif self.mode == "channel_inv":
            z2, z1 = z.chunk(2, dim=1)
        elif "checkerboard" in self.mode:
            perm, _ = self._checkerboard_index(tuple(z.shape[1:]), z.device)
            half = (*z.shape[:-1], z.shape[-1] // 2)
            z1, z2 = z.flatten(1)[:, perm].chunk(2, dim=1)
            z1, z2 = z1.reshape(half), z2.reshape(half)
        else:
            raise NotImplementedError("Mode " + self.mode + " is not implemented.")
        return [z1, z2], 0

    def inverse(self, z):
        z1, z2 = z
        if self.mode == "channel":
            out = torch.cat([z1, z2], 1)
        elif self.mode == "channel_inv":
            out = torch.cat([z2, z1], 1)
        elif "checkerboard" in self.mode:
            full = (*z1.shape[1:-1], 2 * z1.shape[-1])
            _, perm_inv = self._checkerboard_index(full, z1.device)
            flat = torch.cat([z1.flatten(1), z2.flatten(1)], 1)
            out = flat[:, perm_inv].reshape(z1.shape[0], *full)
        else:
            raise NotImplementedError("Mode " + self.mode + " is not implemented.")
        return out, 0


class Merge(Split):
    """Inverse of :class:`Split`: [z1, z2] -> one tensor.

    Args:
        mode: as :class:`Split`.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import Merge
        >>> Merge("channel")([torch.zeros(1, 2), torch.ones(1, 1)])[0].tolist()
        [[0.0, 0.0, 1.0]]
    """

    def forward(self, z):
        return super().inverse(z)

    def inverse(self, z):
        return super().forward(z)


def _scale_args(scale_: Tensor, scale_map: str) -> tuple[Tensor, dict]:
    """(s_raw, op kwargs) for normflows' scale maps."""
    if scale_map == "exp":
        return scale_, dict(scale="exp")
    if scale_map == "sigmoid":
        return -F.logsigmoid(scale_ + 2), dict(scale="exp")
    if scale_map == "sigmoid_inv":
        return scale_, dict(scale="sigmoid")
    raise NotImplementedError("This scale map is not implemented.")


class AffineCoupling(Flow):
    """RealNVP affine coupling on a pair [z1, z2]: z2 is transformed from param_map(z1), one fused
    op call (the scale maps: module docstring).

    Args:
        param_map: net mapping z1 to the interleaved [shift, scale] of z2 (2 x z2's channels), or
            to the shift alone when ``scale`` is False.
        scale: affine (True) or additive coupling.
        scale_map: ``"exp"``, ``"sigmoid"`` or ``"sigmoid_inv"``.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import AffineCoupling
        >>> coupling = AffineCoupling(torch.nn.Linear(2, 4))
        >>> (z1, z2), log_det = coupling([torch.randn(3, 2), torch.randn(3, 2)])
        >>> z2.shape, log_det.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, param_map: nn.Module, scale: bool = True, scale_map: str = "exp"):
        super().__init__()
        self.add_module("param_map", param_map)  # an unknown scale_map raises when called, as in normflows
        self.scale = scale
        self.scale_map = scale_map

    def coefficients(self, u: Tensor, c_act: int, call=None) -> tuple[Tensor, Tensor, dict]:
        """(s_raw, t, op kwargs) for ``c_act`` active channels from ``param_map(u)`` (called as
        ``call(param_map, u)`` when given): the interleaved shift and scale, the scale mapped."""
        param = self.param_map(u) if call is None else call(self.param_map, u)
        want = (u.shape[0], 2 * c_act, *u.shape[2:])
        if not isinstance(param, Tensor) or tuple(param.shape) != want:  # normflows: a failing broadcast
            got = tuple(param.shape) if isinstance(param, Tensor) else type(param).__name__
            raise ShapeError(f"param_map must map the passive part {tuple(u.shape)} of z to {want} (interleaved "
                             f"shift and scale of the {c_act} active channels), got {got}: z's features do not "
                             "fit the coupling")
        if param.dtype != u.dtype:  # autocast ran the net in lower precision: the op runs in z's dtype
            param = param.to(u.dtype)
        s, kw = _scale_args(param[:, 1::2], self.scale_map)
        return s, param[:, 0::2], kw

    def coupling(self, x: Tensor, split: int, passive: str, inverse: bool,
                 a: Tensor | None = None, b: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The fused op on a full tensor x whose passive channels are split by ``split``."""
        u = x[:, :split] if passive == "first" else x[:, split:]
        if a is not None and not inverse:
            ap, bp = (a[:split], b[:split]) if passive == "first" else (a[split:], b[split:])
            u = u * channel_view(ap, u) + channel_view(bp, u)
        s, t, kw = self.coefficients(u, x.shape[1] - u.shape[1])
        op = coupling_inverse if inverse else coupling_forward
        return op(x, s, t, a, b, split=split, passive=passive, **kw)

    def _pair(self, z, inverse: bool):
        z1, z2 = z
        if not self.scale:
            param = self.param_map(z1)
            z2 = z2 - param if inverse else z2 + param
            return [z1, z2], zero_logdet(z2)
        y, log_det = self.coupling(torch.cat([z1, z2], 1), z1.shape[1], "first", inverse)
        return [z1, y[:, z1.shape[1]:]], log_det

    def forward(self, z):
        return self._pair(z, inverse=False)

    def inverse(self, z):
        return self._pair(z, inverse=True)


class AffineCouplingBlock(Flow):
    """Split, :class:`AffineCoupling`, Merge, run as one fused op (state keys ``flows.1.*``).

    Args:
        param_map, scale, scale_map: the coupling's (:class:`AffineCoupling`).
        split_mode: the :class:`Split` mode.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import AffineCouplingBlock
        >>> block = AffineCouplingBlock(torch.nn.Linear(2, 4))
        >>> x = torch.randn(3, 4)
        >>> z, log_det = block(x)
        >>> torch.allclose(block.inverse(z)[0], x, atol=1e-6)
        True
    """

    def __init__(self, param_map: nn.Module, scale: bool = True, scale_map: str = "exp",
                 split_mode: str = "channel"):
        super().__init__()
        # an unknown split_mode raises NotImplementedError when called, as in normflows
        self.flows = nn.ModuleList([Split(split_mode), AffineCoupling(param_map, scale, scale_map),
                                    Merge(split_mode)])

    @property
    def fusable(self) -> bool:
        """Whether one op call runs the block as a channel split (a coupling with scale)."""
        return self.flows[0].mode in ("channel", "channel_inv") and self.flows[1].scale

    def fused(self, z: Tensor, inverse: bool, a: Tensor | None = None, b: Tensor | None = None):
        """Channel-split block (optionally after an actnorm z*a + b) as one op call."""
        passive = "first" if self.flows[0].mode == "channel" else "second"
        return self.flows[1].coupling(z, (z.shape[1] + 1) // 2, passive, inverse, a, b)

    def _run(self, z: Tensor, inverse: bool):
        coupling = self.flows[1]
        if self.fusable:
            return self.fused(z, inverse)
        if coupling.scale and self.flows[0].mode in SPLIT_MODES:  # checkerboard: gather to (z1 | z2), one op
            split = self.flows[0]
            perm, perm_inv = split._checkerboard_index(tuple(z.shape[1:]), z.device)
            half = z.shape[-1] // 2
            x = z.flatten(1)[:, perm].reshape(z.shape[0], 2 * z.shape[1], *z.shape[2:-1], half) \
                if z.dim() > 2 else z[:, perm]
            y, log_det = coupling.coupling(x, x.shape[1] // 2, "first", inverse)
            return y.flatten(1)[:, perm_inv].reshape(z.shape), log_det
        log_det_tot = zero_logdet(z)
        flows = reversed(self.flows) if inverse else self.flows
        for flow in flows:
            z, log_det = flow.inverse(z) if inverse else flow(z)
            log_det_tot += log_det
        return z, log_det_tot

    def forward(self, z):
        return self._run(z, inverse=False)

    def inverse(self, z):
        return self._run(z, inverse=True)


class MaskedAffineFlow(Flow):
    r"""RealNVP masked affine flow :math:`f(z) = b z + (1 - b)(z e^{s(bz)} + t(bz))`.

    Any mask normflows accepts works, with normflows' numbers. A binary mask with at least
    one 1 (passive) and one 0 (active) feature is a split the fused op expresses: the passive
    features are gathered to the front of a (B, features) view and copied exactly. Any other
    mask (all zeros, all ones, values other than 0 and 1, as in normflows' own tests) runs
    normflows' formula in PyTorch, including its replacement of non-finite s, t by NaN.

    Args:
        b: the mask (1: passive features), the shape of a sample.
        t, s: the shift and scale nets of ``b * z`` (None: zero).

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import MaskedAffineFlow
        >>> flow = MaskedAffineFlow(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
        >>> z, log_det = flow(torch.randn(2, 4))
        >>> flow.fusable, log_det.shape
        (True, torch.Size([2]))
    """

    def __init__(self, b: Tensor, t: nn.Module | None = None, s: nn.Module | None = None):
        super().__init__()
        self.b_cpu = b.view(1, *b.size())
        self.register_buffer("b", self.b_cpu)
        self._set_index(b)
        self.register_load_state_dict_post_hook(_reindex_mask)
        if s is None:
            self.s = torch.zeros_like
        else:
            self.add_module("s", s)
        if t is None:
            self.t = torch.zeros_like
        else:
            self.add_module("t", t)

    def _set_index(self, b: Tensor) -> None:
        """The fused layout of a binary mask (``self.fusable``), or the general formula."""
        flat = b.reshape(-1)
        passive = flat == 1
        n_passive = int(passive.sum())
        self.fusable = bool((passive | (flat == 0)).all()) and 0 < n_passive < flat.numel()
        self.n_passive = n_passive
        if self.fusable:
            active = torch.nonzero(~passive).flatten()
            perm, perm_inv = split_permutation(torch.nonzero(passive).flatten(), active)
        else:
            active = perm = perm_inv = torch.zeros(0, dtype=torch.long, device=b.device)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("perm_inv", perm_inv, persistent=False)
        self.register_buffer("active", active, persistent=False)

    def _coefficients(self, z_masked: Tensor) -> tuple[Tensor, Tensor]:
        return self.s(z_masked), self.t(z_masked)

    def _run(self, z: Tensor, inverse: bool):
        z_masked = self.b * z
        s, t = self._coefficients(z_masked)
        if not self.fusable:
            return self._exact(z, z_masked, s, t, inverse)
        s = s.flatten(1)[:, self.active]
        t = t.flatten(1)[:, self.active]
        op = coupling_inverse if inverse else coupling_forward
        y, log_det = op(z.flatten(1)[:, self.perm], s, t, split=self.n_passive, scale="exp")
        return y[:, self.perm_inv].reshape(z.shape), log_det

    def _exact(self, z: Tensor, z_masked: Tensor, s: Tensor, t: Tensor, inverse: bool):
        """normflows' formula for any mask b (non-finite s, t become NaN, as there)."""
        s = torch.where(torch.isfinite(s), s, torch.nan)
        t = torch.where(torch.isfinite(t), t, torch.nan)
        keep = 1 - self.b
        dims = list(range(1, self.b.dim()))
        if inverse:
            return z_masked + keep * (z - t) * torch.exp(-s), -torch.sum(keep * s, dim=dims)
        return z_masked + keep * (z * torch.exp(s) + t), torch.sum(keep * s, dim=dims)

    def forward(self, z):
        return self._run(z, inverse=False)

    def inverse(self, z):
        return self._run(z, inverse=True)


def _reindex_mask(module: MaskedAffineFlow, incompatible_keys) -> None:
    """After ``load_state_dict``: the layout of the loaded mask (module-level, so it pickles)."""
    module._set_index(module.b[0])


# ---- convert(): normflows' classes as these ----------------------------------------------------
@builtin_converter("normflows.flows.ActNorm", "normflows.flows.AffineConstFlow")
def _convert_affine_const(m, *, convert_child, **kwargs):
    cls = ActNorm if type(m).__name__ == "ActNorm" else AffineConstFlow
    return _build(cls, m, tuple(m.s.shape[1:]), scale=isinstance(m.s, nn.Parameter),
                  shift=isinstance(m.t, nn.Parameter))


@builtin_converter("normflows.flows.Split", "normflows.flows.Merge")
def _convert_split(m, *, convert_child, **kwargs):
    return _build(Merge if type(m).__name__ == "Merge" else Split, m, m.mode)


@builtin_converter("normflows.flows.AffineCoupling")
def _convert_coupling(m, *, convert_child, **kwargs):
    return _build(AffineCoupling, m, m.param_map, m.scale, m.scale_map)


@builtin_converter("normflows.flows.AffineCouplingBlock")
def _convert_coupling_block(m, *, convert_child, **kwargs):
    coupling = m.flows[1]
    return _build(AffineCouplingBlock, m, coupling.param_map, coupling.scale, coupling.scale_map, m.flows[0].mode)


@builtin_converter("normflows.flows.MaskedAffineFlow")
def _convert_masked(m, *, convert_child, **kwargs):
    s = m.s if isinstance(m.s, nn.Module) else None
    t = m.t if isinstance(m.t, nn.Module) else None
    return _build(MaskedAffineFlow, m, m.b[0].detach().cpu(), t, s)
