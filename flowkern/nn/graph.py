r"""Invertible programs: a DAG of invertible nodes over tensor slots, with an O(1)-memory backward.

A multi-scale flow is not a chain: a factor-out splits one tensor into the part that goes on and
a latent that leaves, and peers' image networks (FrEIA's ``GraphINN``, normflows'
``MultiscaleFlow``, nflows' ``MultiscaleCompositeTransform``) split and merge too. An
:class:`InvertibleProgram` is such a network written as a list of :class:`Node` s in execution
order; each reads some slots and writes others, every slot is written once and read once.

The memory-saving mode (:func:`run_program` with ``memory_saving=True``) generalises
:mod:`flowkern.nn.memory` from chains to these graphs: the forward runs under ``no_grad`` and
saves only the program's outputs (for a flow: the latents) and the conditions. The backward walks
the nodes in reverse: each node rebuilds its inputs from its outputs, re-runs with grad and
back-propagates ``(grad_outputs, grad_logdet)`` through itself only
(:meth:`Node.invert_and_backprop`; for a flowkern layer that is
:meth:`~flowkern.nn.InvertibleModule.invert_and_backprop`, which shares the subnet evaluation
between the inverse and the re-run). Saved memory is the outputs, independent of depth and of
the number of levels. Parameters are inputs of the autograd Function, so their grads arrive
through ``AccumulateGrad`` (optimisers, hooks and DDP's all-reduce work unchanged). Under
``torch.autocast`` the backward re-runs in the forward's autocast state.

Nodes must be deterministic (no dropout) for the rebuilt inputs to match.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from .._memory import release_free_memory
from ..spec import acc_dtype
from .base import InvertibleModule, ParamGrads, trainable_parameters

__all__ = ["Node", "ModuleNode", "InvertibleProgram", "run_program", "DeferredGrads"]

Conds = tuple  # tuple[torch.Tensor | None, ...]



def _as_logdet(ld: object, like: torch.Tensor) -> torch.Tensor | None:
    """A node's log-det as a (B,) tensor in the accumulation dtype (None for "no term")."""
    if ld is None:
        return None
    acc = acc_dtype(like.dtype)
    if isinstance(ld, torch.Tensor):
        ld = ld.to(acc)
        if ld.dim() == 1 and ld.shape[0] == like.shape[0]:
            return ld
        if ld.numel() == 1:  # one value for the whole batch (peers return scalars)
            return ld.reshape(()).expand(like.shape[0])
        return ld.reshape(like.shape[0])
    if ld == 0:
        return None
    return torch.full((like.shape[0],), float(ld), dtype=acc, device=like.device)


class Node:
    """One step of an :class:`InvertibleProgram`: reads slots ``inputs``, writes slots ``outputs``.

    Subclasses implement :meth:`run` and :meth:`invert`; :meth:`invert_and_backprop` defaults to
    the generic rebuild, re-run and back-propagate; :meth:`modules` names the modules whose
    trainable parameters the node uses."""

    def __init__(self, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)

    def modules(self) -> tuple[nn.Module, ...]:
        return ()

    def run(self, xs: list[torch.Tensor], conds: Conds) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Outputs and the (B,) log|det| of this node (None: no term)."""
        raise NotImplementedError

    def invert(self, ys: list[torch.Tensor], conds: Conds) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Inputs rebuilt from outputs, and the inverse's log-det (= -forward's)."""
        raise NotImplementedError

    def invert_and_backprop(self, ys: list[torch.Tensor], conds: Conds, grad_ys: list[torch.Tensor],
                            grad_logdet: torch.Tensor, grads: ParamGrads
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
        """Rebuild the inputs, re-run with grad, back-propagate ``(grad_ys, grad_logdet)``:
        returns ``(xs, grad_xs, grad_conds)`` (grad_conds aligned with ``conds``, None where a
        condition needs no grad); parameter grads are accumulated into ``grads``."""
        with torch.no_grad():
            xs, _ = self.invert(ys, conds)
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in xs]
            outs, ld = self.run(leaves, conds)
            ld = _as_logdet(ld, leaves[0])
            pairs = [(o, g) for o, g in zip(outs, grad_ys) if o.requires_grad]
            if ld is not None and ld.requires_grad:
                pairs.append((ld, grad_logdet))
            cond_idx = [i for i, c in enumerate(conds) if c is not None and c.requires_grad]
            params = trainable_parameters(*self.modules())
            inputs = [*leaves, *(conds[i] for i in cond_idx), *params]
            if pairs:
                got = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
            else:
                got = (None,) * len(inputs)
        grad_xs = [torch.zeros_like(v) if g is None else g for v, g in zip(leaves, got)]
        grad_conds: list[torch.Tensor | None] = [None] * len(conds)
        for k, i in enumerate(cond_idx):
            grad_conds[i] = got[len(leaves) + k]
        for p, g in zip(params, got[len(leaves) + len(cond_idx):]):
            grads.add(p, g)
        return [x.detach() for x in xs], grad_xs, grad_conds


class ModuleNode(Node):
    """A flowkern :class:`~flowkern.nn.InvertibleModule` as a node: one slot in, one out, the
    first condition (or None) as its ``c``; the memory-saving step is the module's own
    :meth:`~flowkern.nn.InvertibleModule.invert_and_backprop`."""

    def __init__(self, module: InvertibleModule, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        super().__init__(inputs, outputs)
        self.module = module

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.module,)

    def run(self, xs, conds):
        y, ld = self.module(xs[0], conds[0] if conds else None)
        return [y], ld

    def invert(self, ys, conds):
        x, ld = self.module.inverse(ys[0], conds[0] if conds else None)
        return [x], ld

    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        c = conds[0] if conds else None
        x, g_x, g_c = self.module.invert_and_backprop(ys[0], c, grad_ys[0], grad_logdet, grads)
        return [x], [g_x], [g_c] + [None] * (len(conds) - 1)


class InvertibleProgram:
    """Nodes in execution order over integer slots; ``inputs`` / ``outputs`` are the program's
    input and output slots (module docstring). Not an ``nn.Module``: the modules it runs are
    registered by its owner."""

    def __init__(self, nodes: Sequence[Node], inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self.nodes, self.inputs, self.outputs = list(nodes), tuple(inputs), tuple(outputs)
        written = set(self.inputs)
        for k, node in enumerate(self.nodes):
            missing = [i for i in node.inputs if i not in written]
            if missing:
                raise ValueError(f"node {k} ({type(node).__name__}) reads slots {missing} before they are written")
            written.update(node.outputs)
        missing = [i for i in self.outputs if i not in written]
        if missing:
            raise ValueError(f"program outputs {missing} are never written")

    def modules(self) -> list[nn.Module]:
        seen: dict[int, nn.Module] = {}
        for node in self.nodes:
            for m in node.modules():
                seen.setdefault(id(m), m)
        return list(seen.values())

    def parameters(self) -> list[torch.Tensor]:
        """Trainable parameters of every node's modules, each once."""
        return trainable_parameters(*self.modules())

    def run(self, xs: Sequence[torch.Tensor], conds: Conds = ()) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Outputs and the summed (B,) log-det, with ordinary autograd."""
        slots = dict(zip(self.inputs, xs))
        ref = xs[0]
        logdet = torch.zeros(ref.shape[0], dtype=acc_dtype(ref.dtype), device=ref.device)
        for node in self.nodes:
            outs, ld = node.run([slots.pop(i) for i in node.inputs], conds)
            for i, v in zip(node.outputs, outs):
                slots[i] = v
            ld = _as_logdet(ld, ref)
            if ld is not None:
                logdet = logdet + ld
        return [slots[i] for i in self.outputs], logdet

    def invert(self, ys: Sequence[torch.Tensor], conds: Conds = ()) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inputs rebuilt from outputs, and the inverse's summed log-det."""
        slots = dict(zip(self.outputs, ys))
        ref = ys[0]
        logdet = torch.zeros(ref.shape[0], dtype=acc_dtype(ref.dtype), device=ref.device)
        for node in reversed(self.nodes):
            ins, ld = node.invert([slots.pop(i) for i in node.outputs], conds)
            for i, v in zip(node.inputs, ins):
                slots[i] = v
            ld = _as_logdet(ld, ref)
            if ld is not None:
                logdet = logdet + ld
        return [slots[i] for i in self.inputs], logdet


def _autocast_state(device_type: str) -> tuple | None:
    if not torch.is_autocast_enabled(device_type):
        return None
    return device_type, torch.get_autocast_dtype(device_type)


class DeferredGrads(ParamGrads):
    """The parameter-grad accumulator of the memory-saving backward (``id(param) -> grad``), with
    ``pending``: small per-node graphs (e.g. a folded 1x1 convolution's weight as a function of its
    LU factors and actnorm) whose parameter grads are computed in one ``autograd.grad`` call at the
    end (:meth:`flush`) instead of one call per node."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[tuple, tuple, list]] = []

    def flush(self) -> None:
        if not self.pending:
            return
        outputs = [o for outs, _, _ in self.pending for o in outs]
        grads = [g for _, gs, _ in self.pending for g in gs]
        params = list({id(p): p for _, _, ps in self.pending for p in ps}.values())
        self.pending = []
        with torch.enable_grad():
            got = torch.autograd.grad(outputs, params, grads, allow_unused=True)
        for p, g in zip(params, got):
            self.add(p, g)


def _initialized(program: InvertibleProgram) -> bool:
    """Whether every data-dependent init (actnorms) of the program's modules has run."""
    from .base import InitFlag

    return all(m._is_initialized() for root in program.modules() for m in root.modules() if isinstance(m, InitFlag))


def _batch_slices(batch: int, chunk: int | None) -> list[slice]:
    if not chunk or batch <= chunk:
        return [slice(None)]
    return [slice(i, min(i + chunk, batch)) for i in range(0, batch, chunk)]


def _take(v: torch.Tensor | None, sl: slice, batch: int) -> torch.Tensor | None:
    """The batch slice of a per-sample tensor (others, e.g. a shared condition, whole)."""
    if v is None or sl == slice(None) or v.dim() == 0 or v.shape[0] != batch:
        return v
    return v[sl]


class _ProgramFunction(torch.autograd.Function):
    """apply(program, n_x, n_c, chunk, *xs, *conds, *params) -> (*outputs, logdet)."""

    @staticmethod
    def forward(ctx, program: InvertibleProgram, n_x: int, n_c: int, chunk: int | None, *tensors: torch.Tensor):
        xs, conds = list(tensors[:n_x]), tuple(tensors[n_x:n_x + n_c])
        ctx.autocast = _autocast_state(xs[0].device.type)
        B = xs[0].shape[0]
        # the first call's data-dependent init must see the whole batch
        slices = _batch_slices(B, chunk) if chunk and _initialized(program) else [slice(None)]
        if len(slices) == 1:
            outs, logdet = program.run(xs, conds)
        else:  # each chunk's outputs are written into the batch's as they come: no list of pieces
            outs, logdet = None, None
            for sl in slices:
                o, ld = program.run([_take(x, sl, B) for x in xs], tuple(_take(c, sl, B) for c in conds))
                if outs is None:
                    outs = [v.new_empty((B, *v.shape[1:])) for v in o]
                    logdet = ld.new_empty((B, *ld.shape[1:]))
                for dst, v in zip(outs, o):
                    dst[sl] = v
                logdet[sl] = ld
                del o, ld
        inputs = {id(t) for t in tensors if isinstance(t, torch.Tensor)}
        # an output that is an input, or a view of a larger tensor, is copied: the saved outputs
        # must neither alias the inputs nor keep a level's full activation alive
        outs = [o.clone() if id(o) in inputs or o._base is not None else o for o in outs]
        ctx.program, ctx.n_x, ctx.n_c, ctx.n_out, ctx.chunk = program, n_x, n_c, len(outs), chunk
        ctx.params = tensors[n_x + n_c:]
        ctx.save_for_backward(*outs, *conds)
        return (*outs, logdet)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        program, n_out, n_x = ctx.program, ctx.n_out, ctx.n_x
        outs, conds = saved[:n_out], saved[n_out:]
        grad_outs, grad_logdet = list(grads[:n_out]), grads[n_out]
        grad_outs = [torch.zeros_like(o) if g is None else g for o, g in zip(outs, grad_outs)]
        B = outs[0].shape[0]
        if grad_logdet is None:
            grad_logdet = torch.zeros(B, dtype=acc_dtype(outs[0].dtype), device=outs[0].device)
        want_x = [ctx.needs_input_grad[4 + k] for k in range(n_x)]
        want_c = [c is not None and ctx.needs_input_grad[4 + n_x + i] for i, c in enumerate(conds)]
        param_grads = DeferredGrads()
        autocast = torch.autocast(*ctx.autocast[:1], dtype=ctx.autocast[1]) if ctx.autocast else contextlib.nullcontext()
        per_chunk = []
        with autocast:
            for sl in _batch_slices(B, ctx.chunk):  # chunks: one chunk's working set at a time
                conds_in = tuple(None if c is None else
                                 _take(c, sl, B).detach().requires_grad_(True) if w else _take(c, sl, B)
                                 for c, w in zip(conds, want_c))
                gx, gc = _backward_chunk(program, [o[sl].detach() for o in outs], [g[sl] for g in grad_outs],
                                         grad_logdet[sl], conds_in, want_c, param_grads)
                # keep only the input grads autograd asked for (an image batch usually needs none)
                per_chunk.append(([g if w else None for g, w in zip(gx, want_x)], gc))
                del gx, gc
                if ctx.chunk:  # the chunk's freed tensors: give their pages back (flowkern._memory)
                    release_free_memory()
            param_grads.flush()
        grad_xs = [None if not w else torch.cat([p[0][k] for p in per_chunk]) if len(per_chunk) > 1
                   else per_chunk[0][0][k] for k, w in enumerate(want_x)]
        grad_conds = []
        for k, (c, w) in enumerate(zip(conds, want_c)):
            gs = [p[1][k] for p in per_chunk]
            if not w:
                grad_conds.append(None)
            elif all(g is None for g in gs):
                grad_conds.append(torch.zeros_like(c))
            elif len(gs) == 1:
                grad_conds.append(gs[0])
            elif c.dim() and c.shape[0] == B:
                grad_conds.append(torch.cat([torch.zeros_like(c[sl]) if g is None else g
                                             for g, sl in zip(gs, _batch_slices(B, ctx.chunk))]))
            else:  # a condition shared by the whole batch: its grads add up
                grad_conds.append(sum(g for g in gs if g is not None))
        return (None, None, None, None, *grad_xs, *grad_conds, *(param_grads.get(id(p)) for p in ctx.params))


def _backward_chunk(program: InvertibleProgram, outs: list, grad_outs: list, grad_logdet: torch.Tensor,
                    conds_in: tuple, want_c: list, param_grads: ParamGrads) -> tuple[list, list]:
    """Walk the nodes in reverse for (a batch chunk of) the outputs: grads of the program's inputs
    and of the conditions; parameter grads accumulated into ``param_grads``."""
    grad_conds: list[torch.Tensor | None] = [None] * len(conds_in)
    slots = dict(zip(program.outputs, outs))
    gslots = dict(zip(program.outputs, grad_outs))
    for node in reversed(program.nodes):
        ys = [slots.pop(i) for i in node.outputs]
        gys = [gslots.pop(i) for i in node.outputs]
        xs, gxs, gcs = node.invert_and_backprop(ys, conds_in, gys, grad_logdet, param_grads)
        for i, x, g in zip(node.inputs, xs, gxs):
            slots[i], gslots[i] = x, g
        for k, g in enumerate(gcs):
            if g is not None and want_c[k]:
                grad_conds[k] = g if grad_conds[k] is None else grad_conds[k] + g
    return [gslots[i] for i in program.inputs], grad_conds


def run_program(program: InvertibleProgram, xs: Sequence[torch.Tensor], conds: Conds = (),
                memory_saving: bool = False, chunk: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run ``program`` on inputs ``xs`` with conditions ``conds``: ``(outputs, logdet)``. With
    ``memory_saving`` (and grad enabled) only the outputs and conditions are saved for backward
    (module docstring); ``chunk`` then runs the forward and the backward on batch chunks of that
    many samples, one chunk's activations alive at a time (the same gradients up to summation
    order; the first call, which runs the data-dependent inits, is not chunked), and after each
    chunk of the backward the heap's freed pages go back to the OS
    (:func:`flowkern._memory.release_free_memory`)."""
    if memory_saving and torch.is_grad_enabled():
        conds = tuple(conds)
        out = _ProgramFunction.apply(program, len(xs), len(conds), chunk, *xs, *conds, *program.parameters())
        return list(out[:-1]), out[-1]
    return program.run(xs, tuple(conds))
