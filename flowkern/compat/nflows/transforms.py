"""nflows' transforms: ``ActNorm``, ``AffineCouplingTransform``, the permutations and
``CompositeTransform`` (see :mod:`flowkern.compat.nflows`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ...nn.actnorm import SettableInitFlag, actnorm_init_std
from ...nn.base import zero_logdet
from ...ops import coupling_forward, coupling_inverse
from ...spec import channel_view
from .._fused import fold_steps, split_permutation
from .._peer import ShapeError, peer_base
from ..convert import _build, _handout, builtin_converter

__all__ = [
    "Transform",
    "CompositeTransform",
    "ActNorm",
    "AffineCouplingTransform",
    "Permutation",
    "RandomPermutation",
    "ReversePermutation",
]

SIGMOID_EPS = 1e-3


class Transform(nn.Module):
    """Stand-in for nflows' ``Transform`` (nflows not installed):
    ``forward(inputs, context=None)`` / ``inverse`` -> ``(outputs, logabsdet)``."""

    def forward(self, inputs, context=None):
        raise NotImplementedError()

    def inverse(self, inputs, context=None):
        raise NotImplementedError("inverse not available")


#: nflows' ``Transform`` when it is installed (the transforms here are then its subclasses), else the
#: stand-in.
Transform, PEER_BASE = peer_base("nflows.transforms.base", Transform)


def _check_positive_int(name: str, value, exc=ValueError) -> None:
    """nflows' ``is_positive_int`` rule and exception type: ``isinstance(value, int) and value > 0``
    (so ``True`` counts as 1, as in nflows), else ``exc`` (nflows raises TypeError for
    ``ActNorm``'s features, ValueError elsewhere). Not ``flowkern._checks.check_int``: that one
    rejects bools and splits TypeError / ValueError, which nflows does not."""
    if not (isinstance(value, int) and value > 0):
        raise exc(f"{name} must be a positive integer, got {value!r}")


def _check_rank(inputs: Tensor) -> None:
    if inputs.dim() not in (2, 4):
        raise ValueError(f"inputs must be a 2D or a 4D tensor, got shape {tuple(inputs.shape)}")


class ActNorm(SettableInitFlag, Transform):
    r"""Per-feature :math:`y = e^{\ell} x + m`; data-dependent init on the first training call.

    The init follows :func:`flowkern.nn.actnorm.actnorm_init_std`: ``ValueError`` for an init batch
    with fewer than 2 values per feature or with non-finite values (nflows computes NaN
    parameters), scale 1 and a ``UserWarning`` for a feature with (near-)zero spread.
    ``layer.initialized = True`` skips the init (parameters loaded or set by hand; the
    ``initialized`` buffer is saved with the weights, as in nflows).

    Args:
        features: the feature (channel) count.

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import ActNorm
        >>> norm = ActNorm(3)
        >>> y, logabsdet = norm(torch.randn(64, 3) * 4 + 1)  # training mode: the first call initialises
        >>> bool(y.mean(0).abs().max() < 1e-5), logabsdet.shape
        (True, torch.Size([64]))
    """

    def __init__(self, features: int):
        _check_positive_int("features", features, TypeError)
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False, dtype=torch.bool))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))
        self._track_init_flag()

    def needs_init(self) -> bool:
        """nflows' init rule: in training mode until the first initialisation."""
        return self.training and not self._is_initialized()

    @property
    def scale(self) -> Tensor:
        return torch.exp(self.log_scale)

    def _logabsdet(self, inputs: Tensor) -> Tensor:
        n = inputs.shape[2] * inputs.shape[3] if inputs.dim() == 4 else 1
        return n * torch.sum(self.log_scale) * inputs.new_ones(inputs.shape[0])

    def forward(self, inputs, context=None):
        _check_rank(inputs)
        if self.needs_init():
            self._initialize(inputs)
        outputs = channel_view(self.scale, inputs) * inputs + channel_view(self.shift, inputs)
        return outputs, self._logabsdet(inputs)

    def inverse(self, inputs, context=None):
        _check_rank(inputs)
        outputs = (inputs - channel_view(self.shift, inputs)) / channel_view(self.scale, inputs)
        return outputs, -self._logabsdet(inputs)

    @torch.no_grad()
    def _initialize(self, inputs: Tensor) -> None:
        if inputs.dim() == 4:
            inputs = inputs.permute(0, 2, 3, 1).reshape(-1, inputs.shape[1])
        if inputs.shape[0] == 0:
            return  # an empty batch has no statistics: the next batch initialises
        std = actnorm_init_std(type(self).__name__, inputs.mean(dim=0), lambda: inputs.std(dim=0), inputs.shape[0],
                               "inputs")
        self.log_scale.data = -torch.log(std)
        self.shift.data = -(inputs / std).mean(dim=0)
        self._mark_initialized()


class AffineCouplingTransform(Transform):
    """Affine coupling: features with ``mask > 0`` are transformed from the others.

    Any 1-D mask nflows accepts: identity features that are a leading or trailing block run
    the fused op directly, any other pattern gathers them to the front first; a mask with no
    identity or no transformed feature (a degenerate layer nflows builds all the same) runs
    nflows' formula in PyTorch.

    Args:
        mask: 1-D, one entry per feature (> 0: transformed, <= 0: identity).
        transform_net_create_fn: ``(in_features, out_features) -> net``; the net maps the identity
            features and ``context`` to [shift | unconstrained scale] of the transformed ones.
        unconditional_transform: ``(features=...) -> transform`` applied to the identity features.

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import AffineCouplingTransform
        >>> class Net(torch.nn.Linear):
        ...     def forward(self, x, context=None):
        ...         return super().forward(x)
        >>> t = AffineCouplingTransform(torch.tensor([0, 0, 1, 1]), lambda i, o: Net(i, o))
        >>> x = torch.randn(3, 4)
        >>> y, logabsdet = t(x)
        >>> torch.allclose(t.inverse(y)[0], x, atol=1e-6), t.layout
        (True, 'first')
    """

    def __init__(self, mask, transform_net_create_fn: Callable[[int, int], nn.Module],
                 unconditional_transform: Callable[..., nn.Module] | None = None):
        mask = torch.as_tensor(mask)
        if mask.dim() != 1:
            raise ValueError("mask must be a 1-dim tensor")
        if mask.numel() <= 0:
            raise ValueError("mask can't be empty")
        super().__init__()
        self.features = len(mask)
        features_vector = torch.arange(self.features)
        self.register_buffer("identity_features", features_vector.masked_select(mask <= 0))
        self.register_buffer("transform_features", features_vector.masked_select(mask > 0))
        self._set_layout()
        self.register_load_state_dict_post_hook(_relayout)
        self.transform_net = transform_net_create_fn(self.num_identity_features,
                                                     self.num_transform_features * 2)
        self.unconditional_transform = (None if unconditional_transform is None
                                        else unconditional_transform(features=self.num_identity_features))

    @property
    def num_identity_features(self) -> int:
        return len(self.identity_features)

    @property
    def num_transform_features(self) -> int:
        return len(self.transform_features)

    @property
    def fusable(self) -> bool:
        """Whether the fused op runs this coupling (an identity and a transformed feature at
        least); otherwise nflows' formula runs in PyTorch."""
        return self.layout != "exact"

    def _set_layout(self) -> None:
        """Op layout: 'first'/'second' when the identity features are a leading/trailing
        block, else a gather permutation (identity first)."""
        n_id = self.num_identity_features
        ident = self.identity_features.tolist()
        if not 0 < n_id < self.features:
            self.layout = "exact"
        elif ident == list(range(n_id)):
            self.layout = "first"
        elif ident == list(range(self.features - n_id, self.features)):
            self.layout = "second"
        else:
            self.layout = "gather"
            perm, perm_inv = split_permutation(self.identity_features, self.transform_features)
            self.register_buffer("perm", perm, persistent=False)
            self.register_buffer("perm_inv", perm_inv, persistent=False)

    def _run(self, inputs: Tensor, context, inverse: bool, a: Tensor | None = None,
             b: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_rank(inputs)
        if inputs.shape[1] != self.features:
            raise ValueError(f"Expected features = {self.features}, got {inputs.shape[1]}.")
        if not self.fusable:  # never folded (CompositeTransform._foldable)
            return self._exact(inputs, context, inverse)
        n_id, n_tr = self.num_identity_features, self.num_transform_features
        if self.layout == "gather":
            x = inputs[:, self.perm]
            if a is not None:
                a, b = a[self.perm], b[self.perm]
        else:
            x = inputs
        split = n_id if self.layout != "second" else n_tr
        passive = "second" if self.layout == "second" else "first"
        identity = x[:, :n_id] if passive == "first" else x[:, n_tr:]
        if a is not None and not inverse:
            ai, bi = (a[:n_id], b[:n_id]) if passive == "first" else (a[n_tr:], b[n_tr:])
            identity = identity * channel_view(ai, identity) + channel_view(bi, identity)
        logabsdet_identity = None
        if self.unconditional_transform is not None:
            step = self.unconditional_transform.inverse if inverse else self.unconditional_transform
            identity_out, logabsdet_identity = step(identity, context)
            if inverse:  # nflows conditions on the restored identity features when inverting
                identity = identity_out
        params = self.transform_net(identity, context)
        op = coupling_inverse if inverse else coupling_forward
        y, logabsdet = op(x, params[:, n_tr:], params[:, :n_tr], a, b, split=split, passive=passive,
                          scale="sigmoid", eps=SIGMOID_EPS)
        if self.unconditional_transform is not None:
            keep = torch.arange(n_id, device=y.device) + (0 if passive == "first" else n_tr)
            y = y.index_copy(1, keep, identity_out if not inverse else identity)
            logabsdet = logabsdet + logabsdet_identity
        if self.layout == "gather":
            y = y[:, self.perm_inv]
        return y, logabsdet

    def _exact(self, inputs: Tensor, context, inverse: bool) -> tuple[Tensor, Tensor]:
        """nflows' coupling formula in PyTorch (for masks the op cannot split)."""
        n_tr = self.num_transform_features
        identity = inputs[:, self.identity_features, ...]
        transform = inputs[:, self.transform_features, ...]
        logabsdet = 0.0
        if inverse and self.unconditional_transform is not None:
            identity, logabsdet = self.unconditional_transform.inverse(identity, context)
        params = self.transform_net(identity, context)
        scale = torch.sigmoid(params[:, n_tr:, ...] + 2) + SIGMOID_EPS
        shift = params[:, :n_tr, ...]
        log_scale = torch.log(scale).flatten(1).sum(dim=1)
        if inverse:
            transform, logabsdet = (transform - shift) / scale, logabsdet - log_scale
        else:
            transform, logabsdet = transform * scale + shift, log_scale
            if self.unconditional_transform is not None:
                identity, logabsdet_identity = self.unconditional_transform(identity, context)
                logabsdet = logabsdet + logabsdet_identity
        outputs = torch.empty_like(inputs)
        outputs[:, self.identity_features, ...] = identity
        outputs[:, self.transform_features, ...] = transform
        return outputs, logabsdet

    def forward(self, inputs, context=None):
        return self._run(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        return self._run(inputs, context, inverse=True)


def _relayout(module: AffineCouplingTransform, incompatible_keys) -> None:
    """After ``load_state_dict``: the layout of the loaded features (module-level, so it pickles)."""
    module._set_layout()


class Permutation(Transform):
    """Fixed permutation of dimension ``dim``.

    Args:
        permutation: 1-D index tensor.
        dim: the permuted dimension (>= 1).

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import Permutation
        >>> Permutation(torch.tensor([2, 0, 1]))(torch.tensor([[0.0, 1.0, 2.0]]))[0].tolist()
        [[2.0, 0.0, 1.0]]
    """

    def __init__(self, permutation: Tensor, dim: int = 1):
        if permutation.ndimension() != 1:
            raise ValueError("permutation must be a 1D tensor")
        _check_positive_int("dim", dim)
        super().__init__()
        self._dim = dim
        self.register_buffer("_permutation", permutation)

    @property
    def _inverse_permutation(self) -> Tensor:
        return torch.argsort(self._permutation)

    def _permute(self, inputs: Tensor, permutation: Tensor):
        if self._dim >= inputs.ndimension():
            raise ValueError(f"No dimension {self._dim} in inputs.")
        if inputs.shape[self._dim] != len(permutation):
            raise ValueError(f"Dimension {self._dim} in inputs must be of size {len(permutation)}.")
        return torch.index_select(inputs, self._dim, permutation), zero_logdet(inputs)

    def forward(self, inputs, context=None):
        return self._permute(inputs, self._permutation)

    def inverse(self, inputs, context=None):
        return self._permute(inputs, self._inverse_permutation)


class RandomPermutation(Permutation):
    """Random (torch RNG), fixed permutation of ``features``.

    Args:
        features: the size of dimension ``dim``.
        dim: the permuted dimension (>= 1).

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import RandomPermutation
        >>> sorted(RandomPermutation(4)(torch.arange(4.0)[None])[0][0].tolist())
        [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, features: int, dim: int = 1):
        _check_positive_int("features", features)
        super().__init__(torch.randperm(features), dim)


class ReversePermutation(Permutation):
    """Reverses the order of ``features``.

    Args:
        features, dim: as :class:`RandomPermutation`.

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import ReversePermutation
        >>> ReversePermutation(3)(torch.tensor([[0.0, 1.0, 2.0]]))[0].tolist()
        [[2.0, 1.0, 0.0]]
    """

    def __init__(self, features: int, dim: int = 1):
        _check_positive_int("features", features)
        super().__init__(torch.arange(features - 1, -1, -1), dim)


class CompositeTransform(Transform):
    """Transforms applied in order (inverse: reversed order); an initialised :class:`ActNorm` and
    the affine coupling after it run as one fused op call.

    Args:
        transforms: the transforms, data -> noise order.

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import ActNorm, CompositeTransform, ReversePermutation
        >>> t = CompositeTransform([ActNorm(3), ReversePermutation(3)])
        >>> y, logabsdet = t(torch.randn(8, 3))
        >>> y.shape, logabsdet.shape
        (torch.Size([8, 3]), torch.Size([8]))
    """

    def __init__(self, transforms: Iterable[nn.Module]):
        super().__init__()
        self._transforms = nn.ModuleList(transforms)

    def _foldable(self, i_norm: int, i_coupling: int) -> bool:
        norm, coupling = self._transforms[i_norm], self._transforms[i_coupling]
        return (isinstance(norm, ActNorm) and isinstance(coupling, AffineCouplingTransform)
                and coupling.unconditional_transform is None and coupling.fusable and not norm.needs_init())

    def _cascade(self, inputs: Tensor, context, inverse: bool) -> tuple[Tensor, Tensor]:
        outputs = inputs
        total = zero_logdet(inputs)
        for i, i_coupling in fold_steps(len(self._transforms), inverse, self._foldable):
            if i_coupling is not None:
                norm = self._transforms[i]
                _check_rank(outputs)
                if outputs.shape[1] != norm.shift.shape[0]:  # nflows: ActNorm's failing broadcast
                    raise ShapeError(f"inputs must have {norm.shift.shape[0]} features (dim 1), "
                                     f"got shape {tuple(outputs.shape)}")
                coupling = self._transforms[i_coupling]
                outputs, logabsdet = coupling._run(outputs, context, inverse, norm.scale, norm.shift)
            else:
                step = self._transforms[i].inverse if inverse else self._transforms[i]
                outputs, logabsdet = step(outputs, context)
            total += logabsdet
        return outputs, total

    def forward(self, inputs, context=None):
        return self._cascade(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        return self._cascade(inputs, context, inverse=True)


# ---- convert(): nflows' classes as these -------------------------------------------------------
@builtin_converter("nflows.transforms.ActNorm")
def _convert_actnorm(m, *, convert_child, **kwargs):
    return _build(ActNorm, m, m.log_scale.numel())


@builtin_converter("nflows.transforms.AffineCouplingTransform")
def _convert_coupling(m, *, convert_child, **kwargs):
    mask = torch.zeros(m.features)
    mask[m.transform_features.cpu()] = 1
    uncond = m.unconditional_transform
    factory = None if uncond is None else (lambda features: convert_child(uncond))
    return _build(AffineCouplingTransform, m, mask, _handout([m.transform_net]), factory)


@builtin_converter("nflows.transforms.Permutation")
def _convert_permutation(m, *, convert_child, **kwargs):
    return _build(Permutation, m, m._permutation.clone(), m._dim)


@builtin_converter("nflows.transforms.RandomPermutation", "nflows.transforms.ReversePermutation")
def _convert_sized_permutation(m, *, convert_child, **kwargs):
    cls = RandomPermutation if type(m).__name__ == "RandomPermutation" else ReversePermutation
    return _build(cls, m, len(m._permutation), m._dim)


@builtin_converter("nflows.transforms.CompositeTransform")
def _convert_composite(m, *, convert_child, **kwargs):
    return CompositeTransform([convert_child(t) for t in m._transforms]).train(m.training)
