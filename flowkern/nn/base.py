"""The invertible-module contract and the machinery every layer shares.

An :class:`InvertibleModule` maps ``x -> (y, logdet)`` with ``logdet`` of shape (B,)
(log|det dy/dx| per sample) and inverts ``y -> (x, -logdet)``. Inputs are vectors
(B, C) or images (B, C, *S). ``c`` is an optional condition, ignored by
unconditional layers.

:meth:`InvertibleModule.invert_and_backprop` is the step of the O(1)-memory backward
(:mod:`flowkern.nn.graph`): rebuild a block's input from its output, re-run it with
grad and back-propagate one block at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..spec import acc_dtype

__all__ = [
    "InitFlag",
    "InvertibleModule",
    "ParamGrads",
    "check_floating",
    "check_input",
    "check_like_model",
    "check_condition",
    "check_nonzero_scale",
    "first_floating",
    "zero_logdet",
    "collect_check_errors",
    "record_check_error",
    "check_requested",
    "as_logdet",
    "backprop_block",
    "rebuild_and_backprop",
    "trainable_parameters",
    "detect_overflow",
    "check_overflow",
]


class ParamGrads(dict):
    """The parameter grads of a memory-saving backward, ``id(parameter) -> grad``.

    :meth:`add` sums a parameter's grads from several blocks or batch chunks in place, into a
    buffer it allocated itself (never into a tensor autograd handed over, which may alias
    another grad): one more grad costs one parameter-sized tensor, not two (a class-conditional
    Gaussian prior over a large image has parameters the size of ten images)."""

    def __init__(self) -> None:
        super().__init__()
        self._owned: set[int] = set()

    def add(self, p: torch.Tensor, g: torch.Tensor | None) -> None:
        """Accumulate g into the grad of parameter p (no-op for None)."""
        if g is None:
            return
        key = id(p)
        cur = self.get(key)
        if cur is None:
            self[key] = g
        elif key in self._owned and torch.promote_types(cur.dtype, g.dtype) == cur.dtype:
            cur.add_(g)
        else:
            self[key] = cur + g
            self._owned.add(key)


_CHECK_COLLECTORS: list[list[tuple[nn.Module, torch.Tensor]]] = []
_OVERFLOW_WATCH: list[dict[int, str]] = []


@contextlib.contextmanager
def detect_overflow(model: nn.Module | None = None) -> Iterator[None]:
    """Opt-in overflow check: inside the block, a coupling whose output or log-det is
    non-finite for finite input raises ``FloatingPointError`` naming the layer (its name
    in ``model`` when given). The ``exp`` scale is unbounded — y_a = z_a exp(s_raw) + t
    overflows float32 for s_raw > 88 and float16 for s_raw > 11 — the clamped scales are not.
    Costs one ``isfinite`` reduction per coupling call.

    Args:
        model: names the layers in the message (optional).

    Example:
        >>> from flowkern.nn import AffineCoupling, MLP
        >>> layer = AffineCoupling(2, MLP(1, 2, hidden=4), scale="exp")
        >>> with torch.no_grad():
        ...     layer.subnet.net[-1].bias.fill_(100.0)  # s_raw = 100: exp overflows float32
        ...     with detect_overflow():
        ...         layer(torch.ones(1, 2))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FloatingPointError: forward of layer AffineCoupling produced inf/NaN from finite input...
    """
    names = {} if model is None else {id(m): name or "<root>" for name, m in model.named_modules()}
    _OVERFLOW_WATCH.append(names)
    try:
        yield
    finally:
        _OVERFLOW_WATCH.pop()


def check_overflow(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor, logdet: torch.Tensor,
                   direction: str) -> None:
    """Raise FloatingPointError inside :func:`detect_overflow` if finite ``inp`` gave a
    non-finite ``out`` or ``logdet``."""
    if not _OVERFLOW_WATCH:
        return
    if bool(torch.isfinite(inp).all()) and not (bool(torch.isfinite(out).all()) and bool(torch.isfinite(logdet).all())):
        name = _OVERFLOW_WATCH[-1].get(id(layer), "")
        label = f"{name} ({type(layer).__name__})" if name else type(layer).__name__
        raise FloatingPointError(
            f"{direction} of layer {label} produced inf/NaN from finite input in {inp.dtype} "
            f"({layer.extra_repr()}); use a clamped scale (tanh, atan, sigmoid) or a wider dtype"
        )


@contextlib.contextmanager
def collect_check_errors() -> Iterator[list[tuple[nn.Module, torch.Tensor]]]:
    """Run fused couplings with ``check=True`` inside the block; yields a list that
    receives ``(layer, err)`` per coupling call, err (B,) = max |x_rebuilt - x| per sample
    computed in the same pass (see :func:`flowkern.ops.coupling_forward`).

    Example:
        >>> from flowkern.nn import AffineCoupling, MLP
        >>> layer = AffineCoupling(4, MLP(2, 4, hidden=8))
        >>> with collect_check_errors() as found:
        ...     _ = layer(torch.randn(3, 4))
        >>> len(found), bool(found[0][1].max() < 1e-5)
        (1, True)
    """
    found: list[tuple[nn.Module, torch.Tensor]] = []
    _CHECK_COLLECTORS.append(found)
    try:
        yield found
    finally:
        _CHECK_COLLECTORS.pop()


def check_requested() -> bool:
    """True inside :func:`collect_check_errors`."""
    return bool(_CHECK_COLLECTORS)


def record_check_error(layer: nn.Module, err: torch.Tensor) -> None:
    if _CHECK_COLLECTORS:
        _CHECK_COLLECTORS[-1].append((layer, err.detach()))


def check_floating(x: object, name: str = "x") -> torch.Tensor:
    """Raise ``TypeError`` naming ``name`` unless x is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def check_input(x: object, channels: int, name: str = "x", model: nn.Module | None = None) -> torch.Tensor:
    """Raise TypeError/ValueError naming ``name`` unless x is a float (B, channels, *S) tensor
    (and, with ``model``, one :func:`check_like_model` accepts)."""
    check_floating(x, name)
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(
            f"{name} must have shape (B, {channels}, *S) ({channels} channels), got {tuple(x.shape)}"
        )
    if model is not None:
        check_like_model(x, model, name)
    return x


def check_condition(c: object, owner: str) -> torch.Tensor:
    """Raise unless the condition ``c`` a conditional ``owner`` requires is a tensor:
    ``ValueError`` for None, ``TypeError`` for another type."""
    if c is None:
        raise ValueError(f"c (the condition) is required by {owner}")
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
    return c


def first_floating(module: nn.Module) -> torch.Tensor | None:
    """The first floating-point parameter (else buffer) of ``module`` in pre-order, or None: the
    tensor whose dtype and device are the model's. A direct walk of ``_parameters`` /
    ``_buffers`` / ``_modules`` (a fraction of a microsecond; ``next(parameters())`` costs ten
    times more), so every layer can afford it per call."""
    stack = [module]
    fallback = None
    while stack:
        m = stack.pop()
        for p in m._parameters.values():
            if p is not None and p.is_floating_point():
                return p
        if fallback is None:
            for v in m._buffers.values():
                if v is not None and v.is_floating_point():
                    fallback = v
                    break
        stack.extend(child for child in reversed(m._modules.values()) if child is not None)
    return fallback


def _autocast_input(x: torch.Tensor) -> bool:
    """Whether x is in the dtype of an enabled ``torch.autocast`` on its device (a float16 /
    bfloat16 input a float32 model runs under autocast, as the subnets do)."""
    dev = x.device.type
    return torch.is_autocast_enabled(dev) and x.dtype == torch.get_autocast_dtype(dev)


def check_like_model(x: torch.Tensor, model: nn.Module, name: str = "x") -> torch.Tensor:
    """Raise unless tensor ``x`` has the dtype and device of ``model``'s parameters (a model
    without floating parameters or buffers accepts any): ``ValueError`` for another device,
    ``TypeError`` for another dtype, naming ``name``, both dtypes and the fix (the conventions
    of :mod:`flowkern.spec`). Under ``torch.autocast`` an input in the autocast dtype is accepted
    too (the subnets run in that dtype, the flow's main path in the input's)."""
    ref = first_floating(model)
    if ref is None:
        return x
    if x.device != ref.device:
        raise ValueError(f"{name} must be on the device of the model's parameters ({ref.device}), got {x.device}: "
                         f"move one of them (x.to({str(ref.device)!r}) or model.to({str(x.device)!r}))")
    if x.dtype != ref.dtype and not _autocast_input(x):
        raise TypeError(f"{name} must have the dtype of the model's parameters ({ref.dtype}), got {x.dtype}: "
                        f"convert one of them ({name}.to({ref.dtype}) or model.to({x.dtype})), or run a float16 / "
                        f"bfloat16 {name} under torch.autocast with that dtype")
    return x


def check_nonzero_scale(owner: nn.Module, scale: torch.Tensor, what: str) -> None:
    """Raise ``ValueError`` if the actnorm scale ``scale`` (the fused op's ``a``) holds an exact 0:
    the layer would not be invertible and its log-det would be -inf, with no error.

    Reading the values is a host sync on a GPU, so it is not done per call: ``owner`` keeps the
    ``(tensor, version)`` it last checked and the values are read again only after they changed
    (an optimizer step, ``load_state_dict``, an in-place edit: each bumps the tensor's version
    counter) — in inference once, in training once per optimizer step. Skipped while
    ``torch.compile`` traces (the values are not known there)."""
    if torch.compiler.is_compiling():
        return
    key = (id(scale), scale._version)
    if owner.__dict__.get("_checked_scale") == key:
        return
    zero = scale.detach() == 0
    if bool(zero.any()):
        channels = torch.nonzero(zero.reshape(-1)).flatten().tolist()
        shown = ", ".join(map(str, channels[:10])) + (", ..." if len(channels) > 10 else "")
        raise ValueError(f"{what} holds 0 at channels [{shown}]: the layer is not invertible there and its log-det "
                         "is -inf; set those channels to a nonzero scale (or re-run the data-dependent init)")
    owner.__dict__["_checked_scale"] = key


def zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """A (B,) zero log-det in the accumulation dtype of x."""
    return torch.zeros(x.shape[0], dtype=acc_dtype(x.dtype), device=x.device)


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` of ``modules``, each once, in ``parameters()``
    order (pre-order over submodules): a direct walk of ``_modules`` / ``_parameters``, without
    the prefixed names and memo sets of ``named_modules``."""
    found: list[nn.Parameter] = []
    seen: set[int] = set()
    stack = list(reversed(modules))
    while stack:
        m = stack.pop()
        for p in m._parameters.values():
            if p is not None and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                found.append(p)
        stack.extend(child for child in reversed(m._modules.values()) if child is not None)
    return found


def as_logdet(ld: object, like: torch.Tensor) -> torch.Tensor | None:
    """A log-det as a (B,) tensor in the accumulation dtype of ``like`` (B, ...): None or 0 for "no
    term" gives None; a one-element tensor (a peer's scalar) is expanded over the batch."""
    if ld is None:
        return None
    if not isinstance(ld, torch.Tensor):
        return None if ld == 0 else torch.full((like.shape[0],), float(ld), dtype=acc_dtype(like.dtype),
                                               device=like.device)
    acc = acc_dtype(like.dtype)
    if ld.dtype != acc:
        ld = ld.to(acc)
    if ld.dim() == 1 and ld.shape[0] == like.shape[0]:
        return ld
    return ld.reshape(()).expand(like.shape[0]) if ld.numel() == 1 else ld.reshape(like.shape[0])


def backprop_block(
    modules: nn.Module | Sequence[nn.Module],
    outputs: Sequence[torch.Tensor | None],
    grad_outputs: Sequence[torch.Tensor | None],
    leaves: Sequence[torch.Tensor],
    conds: Sequence[torch.Tensor | None],
    grads: ParamGrads,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Back-propagate ``outputs`` of one re-run block (built with grad from ``leaves``): the grads
    of ``leaves`` (zeros where unused) and of ``conds`` (None where a condition needs no grad);
    the grads of the trainable parameters of ``modules`` are added to ``grads``."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad and g is not None]
    cond_idx = [i for i, c in enumerate(conds) if c is not None and c.requires_grad]
    params = trainable_parameters(*((modules,) if isinstance(modules, nn.Module) else modules))
    inputs = [*leaves, *(conds[i] for i in cond_idx), *params]
    if pairs:
        got = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
    else:
        got = (None,) * len(inputs)
    leaf_grads = [torch.zeros_like(v) if g is None else g for v, g in zip(leaves, got)]
    grad_conds: list[torch.Tensor | None] = [None] * len(conds)
    for k, i in enumerate(cond_idx):
        grad_conds[i] = got[len(leaves) + k]
    for p, g in zip(params, got[len(leaves) + len(cond_idx):]):
        grads.add(p, g)
    return leaf_grads, grad_conds


def rebuild_and_backprop(modules: nn.Module | Sequence[nn.Module], forward, inverse, ys: Sequence[torch.Tensor],
                         conds: Sequence[torch.Tensor | None], grad_ys: Sequence[torch.Tensor],
                         grad_logdet: torch.Tensor, grads: ParamGrads
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
    """The memory-saving step of any invertible block, written once: rebuild its inputs from its
    outputs ``ys`` (``inverse(ys) -> (xs, logdet)``, no grad), re-run ``forward(xs) -> (outputs,
    logdet)`` with grad and back-propagate ``(grad_ys, grad_logdet)`` (:func:`backprop_block`);
    inputs and outputs are lists of tensors, or one tensor. Returns ``(xs, grad_xs, grad_conds)``."""
    with torch.no_grad():
        xs = inverse(ys)[0]
    xs = [xs] if isinstance(xs, torch.Tensor) else xs
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in xs]
        outs, ld = forward(leaves)
        outs = [outs] if isinstance(outs, torch.Tensor) else outs
        grad_xs, grad_conds = backprop_block(modules, (*outs, as_logdet(ld, leaves[0])), (*grad_ys, grad_logdet),
                                             leaves, conds, grads)
    return [x.detach() for x in xs], grad_xs, grad_conds


def _sync_init_flag_after_load(module: InitFlag, incompatible_keys: object) -> None:
    module._sync_init_flag()  # a module-level function: a whole-model torch.save pickles the hook


class InitFlag:
    """Mixin for an ``nn.Module`` whose data-dependent init state is a buffer saved with the weights
    (named by ``_init_buffer``). A Python bool mirrors it, so once initialised no call reads the
    tensor — a host sync per call, and a graph break under ``torch.compile``; ``load_state_dict``
    re-syncs the mirror (:meth:`_track_init_flag` registers the hook)."""

    _init_buffer = "initialized"

    def _track_init_flag(self) -> None:
        self._init_done = False
        self.register_load_state_dict_post_hook(_sync_init_flag_after_load)

    def _sync_init_flag(self) -> None:
        self._init_done = bool(getattr(self, self._init_buffer) != 0)

    def _is_initialized(self) -> bool:
        """Whether the init has run (the buffer is read until it has)."""
        if not self._init_done:
            self._sync_init_flag()
        return self._init_done

    def _mark_initialized(self) -> None:
        getattr(self, self._init_buffer).fill_(1)
        self._init_done = True


class InvertibleModule(nn.Module):
    """Base class: ``forward(x, c=None) -> (y, logdet)``, ``inverse(y, c=None) -> (x, logdet)``
    (module docstring); :meth:`invert_and_backprop` is how a layer joins the memory-saving backward.

    Example:
        >>> class Scale2(InvertibleModule):
        ...     def forward(self, x, c=None):
        ...         return 2 * x, torch.full((x.shape[0],), x[0].numel() * 0.6931471805599453)
        ...     def inverse(self, y, c=None):
        ...         return y / 2, torch.full((y.shape[0],), -y[0].numel() * 0.6931471805599453)
        >>> from flowkern.nn import Flow
        >>> flow = Flow([Scale2()], memory_saving=True)
        >>> x = torch.randn(4, 3, requires_grad=True)
        >>> flow.nll_loss(x).backward()  # the generic invert_and_backprop
        >>> torch.allclose(x.grad, x.detach())  # d/dx mean(2 x^2) with B = 4
        True
    """

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The memory-saving step (:mod:`flowkern.nn.graph`): rebuild the input x from the output y,
        re-run forward with grad and back-propagate ``(grad_y, grad_logdet)``; returns
        ``(x, grad_x, grad_c)`` and adds the parameter grads to ``grads``. The one method a layer
        implements to join the memory-saving backward: this default is the generic
        :func:`rebuild_and_backprop`; layers override it when they can share work between the
        inverse and the re-run (couplings evaluate their subnet once) or have a closed form."""
        (x,), (grad_x,), (grad_c,) = rebuild_and_backprop(self, lambda xs: self(xs[0], c),
                                                          lambda ys: self.inverse(ys[0], c), [y], (c,), [grad_y],
                                                          grad_logdet, grads)
        return x, grad_x, grad_c
