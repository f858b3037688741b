r"""The memory-saving engine: invertible programs (a DAG of invertible nodes over tensor slots) and
their O(1)-memory backward.

A flow is a program: a chain of blocks (:class:`~flowkern.nn.Flow`) is its one-input, one-output
case; a multi-scale flow is not a chain, as a factor-out splits one tensor into the part that goes
on and a latent that leaves, and peers' image networks (FrEIA's ``GraphINN``, normflows'
``MultiscaleFlow``, nflows' ``MultiscaleCompositeTransform``) split and merge too. An
:class:`InvertibleProgram` is such a network written as a list of :class:`Node` s in execution
order; each reads some slots and writes others, every slot is written once and read once.

:func:`run_program` with ``memory_saving=True`` runs the forward under ``no_grad`` in one autograd
Function that saves only the program's outputs (for a flow: z, or the latents) and the
conditions. Its backward walks the nodes in reverse: each node rebuilds its inputs from its
outputs, re-runs with grad and back-propagates ``(grad_outputs, grad_logdet)`` through itself only
(:meth:`Node.invert_and_backprop`; for a flowkern layer its
:meth:`~flowkern.nn.InvertibleModule.invert_and_backprop`, the one method a layer implements to
join), then frees it. Saved memory is the outputs, independent of depth and of the number of
levels. Parameters are inputs of the autograd Function, so their grads arrive through
``AccumulateGrad`` (optimisers, hooks and DDP's all-reduce work unchanged). Under
``torch.autocast`` the backward re-runs in the forward's autocast state.

Nodes must be deterministic (no dropout) for the rebuilt inputs to match.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from .base import InitFlag, InvertibleModule, ParamGrads, as_logdet, rebuild_and_backprop, trainable_parameters, \
    zero_logdet

__all__ = ["Node", "ModuleNode", "InvertibleProgram", "run_program"]

Conditions = tuple  # the conditions a program's nodes see: a tuple of tensors (or None), possibly empty


class Node:
    """One step of an :class:`InvertibleProgram`: reads slots ``inputs``, writes slots ``outputs``.

    Subclasses implement :meth:`run` and :meth:`invert`, and name in :meth:`modules` the modules
    whose trainable parameters the node uses; :meth:`invert_and_backprop` defaults to the generic
    rebuild, re-run and back-propagate (:func:`~flowkern.nn.base.rebuild_and_backprop`).

    Args:
        inputs: the slots the node reads, in order.
        outputs: the slots it writes, in order.

    Example:
        >>> import math
        >>> class Double(Node):
        ...     def run(self, xs, conds):
        ...         return [2 * xs[0]], torch.full((xs[0].shape[0],), xs[0][0].numel() * math.log(2))
        ...     def invert(self, ys, conds):
        ...         return [ys[0] / 2], None
        >>> program = InvertibleProgram([Double((0,), (1,))], inputs=(0,), outputs=(1,))
        >>> (y,), logdet = program.run([torch.ones(2, 3)])
        >>> y[0].tolist(), round(logdet[0].item(), 4)
        ([2.0, 2.0, 2.0], 2.0794)
    """

    def __init__(self, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)

    def modules(self) -> tuple[nn.Module, ...]:
        """The modules whose trainable parameters the node uses (none by default)."""
        return ()

    def run(self, xs: list[torch.Tensor], conds: Conditions) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Outputs and the (B,) log|det| of this node (None: no term)."""
        raise NotImplementedError

    def invert(self, ys: list[torch.Tensor], conds: Conditions) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Inputs rebuilt from outputs, and the inverse's log-det (= -forward's)."""
        raise NotImplementedError

    def invert_and_backprop(self, ys: list[torch.Tensor], conds: Conditions, grad_ys: list[torch.Tensor],
                            grad_logdet: torch.Tensor, grads: ParamGrads
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
        """Rebuild the inputs, re-run with grad, back-propagate ``(grad_ys, grad_logdet)``:
        returns ``(xs, grad_xs, grad_conds)`` (grad_conds aligned with ``conds``, None where a
        condition needs no grad); parameter grads are accumulated into ``grads``."""
        return rebuild_and_backprop(self.modules(), lambda xs: self.run(xs, conds), lambda ys: self.invert(ys, conds),
                                    ys, conds, grad_ys, grad_logdet, grads)


class ModuleNode(Node):
    """A flowkern :class:`~flowkern.nn.InvertibleModule` as a node: one slot in, one out, the
    first condition (or None) as its ``c``; the memory-saving step is the module's own
    :meth:`~flowkern.nn.InvertibleModule.invert_and_backprop`.

    Args:
        module: the invertible module.
        inputs, outputs: its one input slot and one output slot.

    Example:
        >>> from flowkern.nn import Reverse
        >>> node = ModuleNode(Reverse(3), (0,), (1,))
        >>> node.run([torch.tensor([[1.0, 2.0, 3.0]])], ())[0][0].tolist()
        [[3.0, 2.0, 1.0]]
    """

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
        x, g_x, g_c = self.module.invert_and_backprop(ys[0], conds[0] if conds else None, grad_ys[0], grad_logdet,
                                                      grads)
        return [x], [g_x], [g_c, *[None] * (len(conds) - 1)]


class InvertibleProgram:
    """Nodes in execution order over integer slots (module docstring). Not an ``nn.Module``: the
    modules it runs are registered by its owner.

    Args:
        nodes: the nodes, in execution order; each slot is written once and read once.
        inputs: the program's input slots.
        outputs: the program's output slots.

    Raises ``ValueError`` if a node reads a slot before it is written or an output is never written.

    Example:
        >>> from flowkern.nn import Reverse
        >>> program = InvertibleProgram.chain([Reverse(2), Reverse(2)])
        >>> (z,), logdet = program.run([torch.tensor([[1.0, 2.0]])])
        >>> z.tolist(), logdet.tolist()
        ([[1.0, 2.0]], [0.0])
    """

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

    @classmethod
    def chain(cls, modules: Sequence[InvertibleModule]) -> InvertibleProgram:
        """The one-input, one-output program that runs ``modules`` in order (slot k feeds module k)."""
        return cls([ModuleNode(m, (k,), (k + 1,)) for k, m in enumerate(modules)], (0,), (len(modules),))

    def modules(self) -> list[nn.Module]:
        """The nodes' modules, each once, in order."""
        seen: dict[int, nn.Module] = {}
        for node in self.nodes:
            for m in node.modules():
                seen.setdefault(id(m), m)
        return list(seen.values())

    def parameters(self) -> list[torch.Tensor]:
        """Trainable parameters of every node's modules, each once."""
        return trainable_parameters(*self.modules())

    def _walk(self, values: Sequence[torch.Tensor], conds: Conditions, inverse: bool
              ) -> tuple[list[torch.Tensor], torch.Tensor]:
        src, dst = (self.outputs, self.inputs) if inverse else (self.inputs, self.outputs)
        slots = dict(zip(src, values))
        logdet = zero_logdet(values[0])
        for node in reversed(self.nodes) if inverse else self.nodes:
            reads, writes = (node.outputs, node.inputs) if inverse else (node.inputs, node.outputs)
            step = node.invert if inverse else node.run
            outs, ld = step([slots.pop(i) for i in reads], conds)
            slots.update(zip(writes, outs))
            ld = as_logdet(ld, values[0])
            if ld is not None:
                logdet = logdet + ld
        return [slots[i] for i in dst], logdet

    def run(self, xs: Sequence[torch.Tensor], conds: Conditions = ()) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Outputs and the summed (B,) log-det, with ordinary autograd."""
        return self._walk(xs, conds, inverse=False)

    def invert(self, ys: Sequence[torch.Tensor], conds: Conditions = ()) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inputs rebuilt from outputs, and the inverse's summed log-det."""
        return self._walk(ys, conds, inverse=True)


def _autocast_state(device_type: str) -> tuple | None:
    if not torch.is_autocast_enabled(device_type):
        return None
    return device_type, torch.get_autocast_dtype(device_type)


def _initialized(program: InvertibleProgram) -> bool:
    """Whether every data-dependent init (actnorms) of the program's modules has run."""
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
            grad_logdet = zero_logdet(outs[0])
        want_x = [ctx.needs_input_grad[4 + k] for k in range(n_x)]
        want_c = [c is not None and ctx.needs_input_grad[4 + n_x + i] for i, c in enumerate(conds)]
        param_grads = ParamGrads()
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


def run_program(program: InvertibleProgram, xs: Sequence[torch.Tensor], conds: Conditions = (),
                memory_saving: bool = False, chunk: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run ``program`` on inputs ``xs`` with conditions ``conds``: ``(outputs, logdet)``.

    Args:
        program: the network.
        xs: its inputs, one per input slot.
        conds: the conditions its nodes see.
        memory_saving: (with grad enabled) save only the outputs and conditions for backward and
            rebuild the rest there (module docstring).
        chunk: with ``memory_saving``, run the forward and the backward on batch chunks of this
            many samples: only one chunk's working set is alive at a time, which lowers the peak
            memory of large images at some cost in time (smaller matrix products); the gradients
            are the same up to summation order. The first call, which runs the data-dependent
            inits, is not chunked. None: the whole batch at once.

    Example:
        >>> from flowkern.nn import ActNorm, Reverse
        >>> program = InvertibleProgram.chain([ActNorm(4), Reverse(4)])
        >>> x = torch.randn(8, 4, requires_grad=True)
        >>> (z,), logdet = run_program(program, [x], memory_saving=True)
        >>> (0.5 * z.pow(2).sum() - logdet.sum()).backward()
        >>> tuple(x.grad.shape)
        (8, 4)
    """
    if memory_saving and torch.is_grad_enabled():
        conds = tuple(conds)
        out = _ProgramFunction.apply(program, len(xs), len(conds), chunk, *xs, *conds, *program.parameters())
        return list(out[:-1]), out[-1]
    return program.run(xs, tuple(conds))
