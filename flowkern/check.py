r"""Certify the invertibility of a flow: ``certify(model, x)`` and ``flowkern check PATH``.

Checks, each against a bound derived from the dtype's machine epsilon
:math:`\varepsilon` and the input's magnitude :math:`m = 1 + \max|x|`:

* round trip per block and overall, :math:`\max|f^{-1}(f(x)) - x| \le K\varepsilon m`
  (:math:`K = 10^3` per block, times the block count overall);
* log-det antisymmetry, :math:`|\log|J_f(x)| + \log|J_{f^{-1}}(f(x))|| \le K\varepsilon(1 + |\log|J||)`
  times the block count (in the log-det accumulation dtype);
* the log-det against :math:`\log|\det J|` of the brute-force Jacobian (float64, only
  for at most 256 dims per sample), :math:`\le 10^{-8}(1 + |\log|J||)`;
* ``torch.autograd.gradcheck`` of one block in float64;
* the fused op's in-pass ``check=True`` round-trip errors of every coupling.

A :class:`~flowkern.nn.MultiScaleFlow` is certified node by node of its invertible program
(squeezes, steps, factor-outs, priors); its output is the list of latents, concatenated
(flattened) for the Jacobian.

:func:`saved_bytes` measures the other promise of a memory-saving flow: the bytes a training
step keeps for its backward.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .nn.base import collect_check_errors, zero_logdet
from .nn.flow import ConditionalFlow, Flow
from .nn.multiscale import MultiScaleFlow
from .spec import acc_dtype

__all__ = ["InvertibilityError", "CertifyReport", "certify", "saved_bytes", "add_arguments", "run"]

K_BLOCK = 1e3
JACOBIAN_MAX_DIMS = 256
JACOBIAN_RTOL = 1e-8


class InvertibilityError(RuntimeError):
    """A strict :func:`certify` found a failing check; ``.report`` holds the details.

    Args:
        report: the failing :class:`CertifyReport`.

    Example:
        >>> from flowkern.nn import Reverse
        >>> class Broken(Reverse):
        ...     def inverse(self, y, c=None):
        ...         return y, torch.zeros(y.shape[0])
        >>> try:
        ...     certify(Broken(2), torch.randn(4, 2), strict=True)
        ... except InvertibilityError as e:
        ...     print(e.report.passed)
        False
    """

    def __init__(self, report: "CertifyReport") -> None:
        super().__init__("invertibility check failed:\n" + "\n".join(report.failures))
        self.report = report


@dataclass
class CertifyReport:
    """Measured errors and their bounds (what :func:`certify` returns); ``passed`` is True when
    every check holds and ``str(report)`` is the table.

    Args:
        dtype, n_blocks: the input's dtype and the number of blocks checked.
        block_roundtrip, block_bound: per-block round-trip errors and their bound.
        roundtrip, roundtrip_bound: the whole model's round-trip error and its bound.
        logdet_antisymmetry, logdet_bound: |log|J_f| + log|J_f^-1|| and its bound.
        jacobian_logdet_error, jacobian_bound, jacobian_note: the log-det against the brute-force
            Jacobian (None when skipped, with the reason).
        gradcheck_block, gradcheck_passed, gradcheck_note: the gradchecked block and the result.
        fused_check: the fused op's in-pass round-trip errors per coupling.
        failures: one line per failing check.

    Example:
        >>> from flowkern.nn import Reverse
        >>> report = certify(Reverse(3), torch.randn(4, 3))
        >>> report.passed, report.n_blocks
        (True, 1)
    """

    dtype: torch.dtype
    n_blocks: int
    block_roundtrip: dict[str, float]
    block_bound: float
    roundtrip: float
    roundtrip_bound: float
    logdet_antisymmetry: float
    logdet_bound: float
    jacobian_logdet_error: float | None
    jacobian_bound: float | None
    jacobian_note: str
    gradcheck_block: str
    gradcheck_passed: bool
    gradcheck_note: str
    fused_check: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        def row(name: str, value: float | None, bound: float | None, note: str = "") -> str:
            if value is None:
                return f"  {name:38s} {'skipped':>11s}  {note}"
            ok = "ok" if bound is None or value <= bound else "FAIL"
            return f"  {name:38s} {value:11.3e} <= {bound:9.3e}  {ok}"

        lines = [f"flowkern certify: {self.n_blocks} block(s), {str(self.dtype).replace('torch.', '')} "
                 f"-> {'PASSED' if self.passed else 'FAILED'}",
                 row("round trip (overall)", self.roundtrip, self.roundtrip_bound),
                 row("log-det antisymmetry", self.logdet_antisymmetry, self.logdet_bound),
                 row("log-det vs slogdet(Jacobian), fp64", self.jacobian_logdet_error, self.jacobian_bound,
                     self.jacobian_note),
                 f"  {'gradcheck fp64 of ' + self.gradcheck_block:38s} "
                 f"{'ok' if self.gradcheck_passed else 'FAIL'}  {self.gradcheck_note}".rstrip(),
                 "  round trip per block:"]
        lines += [row("  " + name, err, self.block_bound) for name, err in self.block_roundtrip.items()]
        if self.fused_check:
            lines.append("  fused op in-pass check (max |x' - x|):")
            lines += [row("  " + name, err, self.block_bound) for name, err in self.fused_check.items()]
        lines += ["  failure: " + f for f in self.failures]
        return "\n".join(lines)


def _blocks(model: nn.Module) -> list:
    if isinstance(model, MultiScaleFlow):
        return model.program().nodes
    return list(model.blocks) if isinstance(model, Flow) else [model]


def _embed(model: nn.Module, c: torch.Tensor | None):
    if isinstance(model, MultiScaleFlow):
        return model._conds(c)
    return model.embed(c) if isinstance(model, Flow) else c


def _flat(y) -> torch.Tensor:
    """A model's output as (B, D): the latents of a multi-scale flow concatenated."""
    if isinstance(y, (list, tuple)):
        return torch.cat([v.flatten(1) for v in y], 1)
    return y.flatten(1)


def _block_name(names: dict, block) -> str:
    m = block
    if not isinstance(block, nn.Module):  # a program node: name the module it runs
        m = next(iter(block.modules()), block)
    return f"{names.get(id(m)) or 'model'} ({type(m).__name__})"


def _c64(c: torch.Tensor | None) -> torch.Tensor | None:
    """A floating condition in float64 (class labels stay integers)."""
    return c.double() if c is not None and c.is_floating_point() else c


def _block_run(block, h: list, ce) -> tuple[list, torch.Tensor]:
    """One block forward on the list of its inputs: (outputs list, logdet)."""
    if isinstance(block, nn.Module):
        y, ld = block(h[0], ce)
        return [y], ld
    outs, ld = block.run(h, ce)
    return outs, (zero_logdet(h[0]) if ld is None else ld)


def _block_invert(block, ys: list, ce) -> list:
    if isinstance(block, nn.Module):
        return [block.inverse(ys[0], ce)[0]]
    return block.invert(ys, ce)[0]


def _maxabs(v: torch.Tensor) -> float:
    return v.detach().abs().max().item() if v.numel() else 0.0


def _jacobian_error(model64: nn.Module, x: torch.Tensor, c: torch.Tensor | None, n: int) -> float:
    """max over n samples of |logdet - log|det J||, J from one batched backward per sample."""
    D = x[0].numel()
    eye = torch.eye(D, dtype=torch.float64)
    worst = 0.0
    for i in range(n):
        xi = x[i : i + 1].double().expand(D, *x.shape[1:]).clone().requires_grad_(True)
        ci = None if c is None else _c64(c[i : i + 1]).expand(D, *c.shape[1:])
        y, _ = model64(xi, ci)
        (_flat(y) * eye).sum().backward()
        logabs = torch.linalg.slogdet(xi.grad.reshape(D, D))[1]
        with torch.no_grad():
            ld = model64(x[i : i + 1].double(), None if c is None else _c64(c[i : i + 1]))[1][0]
        worst = max(worst, abs(ld.item() - logabs.item()) / (1.0 + abs(logabs.item())))
    return worst


def _gradcheck(model64: nn.Module, x: torch.Tensor, c: torch.Tensor | None) -> tuple[str, bool, str]:
    names = {id(m): n for n, m in model64.named_modules()}
    blocks = _blocks(model64)

    def n_params(b) -> int:
        mods = b.modules() if not isinstance(b, nn.Module) else [b]
        return sum(p.numel() for m in mods for p in m.parameters() if p.requires_grad)

    counts = [n_params(b) for b in blocks]
    idx = max(range(len(blocks)), key=lambda i: (counts[i], -i))  # the largest block, first on ties
    with torch.no_grad():
        ce = _embed(model64, None if c is None else _c64(c[:2]))
        slots = {}
        h = [x[:2].double()]
        if isinstance(model64, MultiScaleFlow):  # run the program up to the chosen node
            program = model64.program()
            slots = dict(zip(program.inputs, h))
            for b in blocks[:idx]:
                outs, _ = b.run([slots.pop(i) for i in b.inputs], ce)
                slots.update(zip(b.outputs, outs))
            h = [slots[i] for i in blocks[idx].inputs]
        else:
            for b in blocks[:idx]:
                h = _block_run(b, h, ce)[0]
    block = blocks[idx]
    name = _block_name(names, block)

    def fn(*vs):
        outs, ld = _block_run(block, list(vs), ce)
        return (*outs, ld)

    try:
        ok = torch.autograd.gradcheck(fn, tuple(v.clone().requires_grad_(True) for v in h),
                                      fast_mode=True, raise_exception=True)
        return name, bool(ok), ""
    except (torch.autograd.gradcheck.GradcheckError, RuntimeError) as e:
        return name, False, str(e).splitlines()[0][:120]


@torch.no_grad()
def _roundtrips(model: nn.Module, x: torch.Tensor, c: torch.Tensor | None):
    names = {id(m): n for n, m in model.named_modules()}
    ce = _embed(model, c)
    per_block: dict[str, float] = {}
    blocks = _blocks(model)
    if isinstance(model, MultiScaleFlow):
        program = model.program()
        slots = dict(zip(program.inputs, [x]))
        for k, block in enumerate(blocks):
            h = [slots.pop(i) for i in block.inputs]
            ys, _ = block.run(h, ce)
            back = _block_invert(block, ys, ce)
            per_block[f"{k}: {_block_name(names, block)}"] = max(_maxabs(b - v) for b, v in zip(back, h))
            slots.update(zip(block.outputs, ys))
    else:
        h = x
        for block in blocks:
            y, _ = block(h, ce)
            back, _ = block.inverse(y, ce)
            per_block[_block_name(names, block)] = _maxabs(back - h)
            h = y
    z, ld = model(x, c)
    back, ld_inv = model.inverse(z, c)
    with collect_check_errors() as found:
        model(x, c)
    fused: dict[str, float] = {}
    for layer, err in found:
        key = f"{names.get(id(layer)) or 'model'} ({type(layer).__name__})"
        fused[key] = max(fused.get(key, 0.0), _maxabs(err))
    return per_block, _maxabs(back - x), _maxabs(ld + ld_inv), _maxabs(ld), fused


def certify(model: nn.Module, x: torch.Tensor, c: torch.Tensor | None = None,
            strict: bool = False) -> CertifyReport:
    """Run every check of the module docstring on ``model`` (an InvertibleModule, Flow or
    MultiScaleFlow, in eval mode for the duration) at input ``x`` (B, C, *S) and condition ``c``.

    Args:
        model: the flow or layer.
        x: a float input batch.
        c: the condition of a conditional model.
        strict: raise :class:`InvertibilityError` if a check fails (else only report it).

    Example:
        >>> from flowkern.nn import build_flow
        >>> print(certify(build_flow(4, n_blocks=1, hidden=8), torch.randn(8, 4)))  # doctest: +ELLIPSIS
        flowkern certify: 3 block(s), float32 -> PASSED
        ...
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if not hasattr(model, "inverse"):
        raise TypeError(f"model must be an invertible module with .inverse, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        per_block, roundtrip, antisym, ld_max, fused = _roundtrips(model, x, c)
        model64 = copy.deepcopy(model).double()
        D = x[0].numel()
        if D <= JACOBIAN_MAX_DIMS:
            jac_err, jac_bound, jac_note = _jacobian_error(model64, x, c, min(2, x.shape[0])), JACOBIAN_RTOL, ""
        else:
            jac_err, jac_bound, jac_note = None, None, f"{D} dims per sample > {JACOBIAN_MAX_DIMS}"
        gc_name, gc_ok, gc_note = _gradcheck(model64, x, c)
    finally:
        model.train(was_training)
    eps = torch.finfo(x.dtype).eps
    n_blocks = len(_blocks(model))
    block_bound = K_BLOCK * eps * (1.0 + _maxabs(x))
    logdet_bound = K_BLOCK * torch.finfo(acc_dtype(x.dtype)).eps * (1.0 + ld_max) * max(1, n_blocks)
    report = CertifyReport(
        dtype=x.dtype, n_blocks=n_blocks, block_roundtrip=per_block, block_bound=block_bound,
        roundtrip=roundtrip, roundtrip_bound=block_bound * max(1, n_blocks),
        logdet_antisymmetry=antisym, logdet_bound=logdet_bound,
        jacobian_logdet_error=jac_err, jacobian_bound=jac_bound, jacobian_note=jac_note,
        gradcheck_block=gc_name, gradcheck_passed=gc_ok, gradcheck_note=gc_note, fused_check=fused)
    fail = report.failures
    for name, err in per_block.items():
        if not err <= block_bound:
            fail.append(f"block {name}: round-trip error {err:.3e} > {block_bound:.3e}")
    if not roundtrip <= report.roundtrip_bound:
        fail.append(f"overall round-trip error {roundtrip:.3e} > {report.roundtrip_bound:.3e}")
    if not antisym <= logdet_bound:
        fail.append(f"log-det antisymmetry {antisym:.3e} > {logdet_bound:.3e}")
    if jac_err is not None and not jac_err <= jac_bound:
        fail.append(f"log-det differs from slogdet of the Jacobian by {jac_err:.3e} (relative) > {jac_bound:.0e}")
    if not gc_ok:
        fail.append(f"gradcheck of {gc_name} failed {gc_note}".rstrip())
    for name, err in fused.items():
        if not err <= block_bound:
            fail.append(f"fused in-pass check of {name}: {err:.3e} > {block_bound:.3e}")
    if strict and fail:
        raise InvertibilityError(report)
    return report


def saved_bytes(loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd keeps for backward while ``loss_fn()`` runs; then runs ``backward()`` of the
    loss it returns.

    Every tensor that autograd saves during the forward
    (:func:`torch.autograd.graph.saved_tensors_hooks`) counts its whole storage, once: a saved
    view keeps all of its base alive. The backward runs outside the hooks: what a memory-saving
    backward saves while it recomputes a block is its working set, not memory held between
    forward and backward.

    Args:
        loss_fn: a training step's forward, returning the scalar loss.

    ``saved_bytes(lambda: flow.nll_loss(x))`` is the activation memory of the step; with
    ``memory_saving=True`` it is the latents' bytes, constant in depth.

    Example:
        >>> from flowkern.nn import build_flow
        >>> x = torch.randn(64, 8)
        >>> saved_bytes(lambda: build_flow(8, 2, 16, memory_saving=True).nll_loss(x)) == x.numel() * 4
        True
    """
    per_storage: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            per_storage[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"loss_fn must return a scalar torch.Tensor, got {got}")
    loss.backward()
    return sum(per_storage.values())


# ---- command line -------------------------------------------------------------
def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated ints like 3,32,32, got {text!r}") from e
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be positive ints, got {text!r}")
    return shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``flowkern check PATH`` (:func:`run`), added to ``parser``.

    Args:
        parser: the subcommand's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["model.pt", "--input-shape", "3,32,32"]).input_shape
        (3, 32, 32)
    """
    parser.add_argument("path", help="model saved with torch.save(model)")
    parser.add_argument("--input-shape", type=_shape, default=None,
                        help="per-sample shape C[,H,W] (default: the flow's recorded event_shape)")
    parser.add_argument("--cond-shape", type=_shape, default=None,
                        help="per-sample condition shape (default: the flow's recorded condition_shape)")
    parser.add_argument("--batch", type=int, default=8, help="random input batch size (default 8)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="input dtype (default: the model's parameter dtype)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """``flowkern check PATH``: load the model, certify it on N(0, I) input, print the report;
    returns 0 if it passed, 1 if not, 2 on usage errors.

    Args:
        args: parsed by a parser set up with :func:`add_arguments`.

    Example:
        >>> import os, tempfile
        >>> from flowkern.nn import build_flow
        >>> path = os.path.join(tempfile.mkdtemp(), "flow.pt")
        >>> torch.save(build_flow(4, 1, 8), path)
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> run(parser.parse_args([path, "--input-shape", "4"]))  # doctest: +ELLIPSIS
        flowkern certify: 3 block(s), float32 -> PASSED
        ...
        0
    """
    model = torch.load(args.path, map_location="cpu", weights_only=False)
    shape = args.input_shape or getattr(model, "event_shape", None)
    if shape is None:
        print("flowkern check: --input-shape is required (the model has no recorded event_shape)")
        return 2
    cond_shape = args.cond_shape or getattr(model, "condition_shape", None)
    conditional = isinstance(model, ConditionalFlow) or getattr(model, "conditional", False)
    num_classes = getattr(getattr(model, "embedder", None), "num_classes", None)
    if conditional and num_classes is None and cond_shape is None:
        print("flowkern check: --cond-shape is required for this conditional flow")
        return 2
    ref = next(model.parameters(), None)
    dtype = getattr(torch, args.dtype) if args.dtype else (ref.dtype if ref is not None else torch.float32)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, *shape, generator=g, dtype=dtype)
    c = None
    if conditional and num_classes is not None:  # a class-conditional flow takes labels
        c = torch.randint(num_classes, (args.batch,), generator=g)
    elif conditional:
        c = torch.randn(args.batch, *cond_shape, generator=g, dtype=dtype)
    if ref is not None:
        model = model.to(dtype)
    report = certify(model, x, c)
    print(report)
    return 0 if report.passed else 1

