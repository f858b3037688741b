"""nflows' image transforms: ``SqueezeTransform`` and ``MultiscaleCompositeTransform``, run as an
:class:`~flowkern.nn.graph.InvertibleProgram` (see :mod:`flowkern.compat.nflows`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...nn.base import zero_logdet
from ...nn.graph import InvertibleProgram, ModuleNode, Node, run_program
from ...nn.squeeze import Squeeze
from .._peer import PeerError
from ..convert import builtin_converter
from .transforms import Transform

__all__ = ["SqueezeTransform", "MultiscaleCompositeTransform"]


class _PermutationNode(Node):
    """A node with no parameters and no log-det whose inverse is cheap: the memory-saving step
    applies the inverse to the outputs and to their grads (no re-run)."""

    def __init__(self, forward_fn, inverse_fn, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.forward_fn, self.inverse_fn = forward_fn, inverse_fn

    def run(self, xs, conds):
        return list(self.forward_fn(xs)), None

    def invert(self, ys, conds):
        return list(self.inverse_fn(ys)), None

    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        return list(self.inverse_fn(ys)), list(self.inverse_fn(grad_ys)), [None] * len(conds)


class SqueezeTransform(Transform):
    """nflows' ``SqueezeTransform`` (forward: space-to-depth, channel c f^2 + f i + j).

    Args:
        factor: the block size f (an int > 1).

    Example:
        >>> import torch
        >>> from flowkern.compat.nflows import SqueezeTransform
        >>> SqueezeTransform()(torch.randn(2, 3, 4, 4))[0].shape
        torch.Size([2, 12, 2, 2])
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor <= 1:
            raise ValueError("Factor must be an integer > 1.")
        self.factor = factor

    def get_output_shape(self, c, h, w):
        return (c * self.factor * self.factor, h // self.factor, w // self.factor)

    def forward(self, inputs, context=None):
        if inputs.dim() != 4:
            raise ValueError("Expecting inputs with 4 dimensions")
        B, c, h, w = inputs.shape
        f = self.factor
        if h % f != 0 or w % f != 0:
            raise ValueError(f"Input image size not compatible with the factor: inputs have shape {tuple(inputs.shape)}, "
                             f"factor {f}")
        out = inputs.reshape(B, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(B, c * f * f, h // f, w // f)
        return out, zero_logdet(inputs)

    def inverse(self, inputs, context=None):
        if inputs.dim() != 4:
            raise ValueError("Expecting inputs with 4 dimensions")
        B, c, h, w = inputs.shape
        f = self.factor
        if c < f * f or c % (f * f) != 0:
            raise ValueError(f"Invalid number of channel dimensions: inputs have shape {tuple(inputs.shape)}")
        out = inputs.reshape(B, c // f ** 2, f, f, h, w).permute(0, 1, 4, 2, 5, 3).reshape(B, c // f ** 2, h * f, w * f)
        return out, zero_logdet(inputs)


class _NflowsNode(Node):
    """An nflows transform (forward: x -> z, ``context`` keyword) as a node."""

    def __init__(self, transform: nn.Module, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.transform = transform

    def modules(self):
        return (self.transform,)

    def run(self, xs, conds):
        y, ld = self.transform(xs[0], context=conds[0] if conds else None)
        return [y], ld

    def invert(self, ys, conds):
        x, ld = self.transform.inverse(ys[0], context=conds[0] if conds else None)
        return [x], ld


def _nflows_nodes(transform: nn.Module, cur: int, nxt: int) -> tuple[list[Node], int, int]:
    """Nodes of one nflows transform (composites flattened, so each layer is its own step)."""
    if type(transform).__name__ == "CompositeTransform" and hasattr(transform, "_transforms"):
        nodes: list[Node] = []
        for t in transform._transforms:
            more, cur, nxt = _nflows_nodes(t, cur, nxt)
            nodes += more
        return nodes, cur, nxt
    if isinstance(transform, SqueezeTransform) and transform.factor == 2:
        return [ModuleNode(Squeeze("glow"), (cur,), (nxt,))], nxt, nxt + 1
    return [_NflowsNode(transform, (cur,), (nxt,))], nxt, nxt + 1


class MultiscaleCompositeTransform(Transform):
    """nflows' ``MultiscaleCompositeTransform`` (same API and ``state_dict`` keys): after every
    transform but the last, the first half along ``split_dim`` leaves as output and the second
    half goes on; outputs are flattened and concatenated. ``memory_saving=True`` saves only the
    outputs for backward.

    Args:
        num_transforms: how many transforms :meth:`add_transform` takes.
        split_dim: the dimension the factor-out halves (1: channels).
        memory_saving: save only the outputs for backward.

    Example:
        >>> import torch
        >>> from flowkern.compat import nflows
        >>> t = nflows.MultiscaleCompositeTransform(2)
        >>> hidden = t.add_transform(nflows.CompositeTransform([nflows.SqueezeTransform(), nflows.ActNorm(12)]), (12, 2, 2))
        >>> _ = t.add_transform(nflows.ActNorm(6), hidden)
        >>> t(torch.randn(5, 3, 4, 4))[0].shape
        torch.Size([5, 48])
    """

    def __init__(self, num_transforms, split_dim=1, memory_saving: bool = False):
        super().__init__()
        if isinstance(split_dim, bool) or not isinstance(split_dim, int) or split_dim < 1:
            raise TypeError("Split dimension must be a positive integer.")
        self._transforms = nn.ModuleList()
        self._output_shapes = []
        self._num_transforms = num_transforms
        self._split_dim = split_dim
        self.memory_saving = bool(memory_saving)

    def add_transform(self, transform, transform_output_shape):
        if len(self._transforms) == self._num_transforms:
            raise RuntimeError(f"Adding more than {self._num_transforms} transforms is not allowed.")
        if (self._split_dim - 1) >= len(transform_output_shape):
            raise ValueError("No split_dim in output shape")
        if transform_output_shape[self._split_dim - 1] < 2:
            raise ValueError(f"Size of dimension {self._split_dim} must be at least 2.")
        self._transforms.append(transform)
        if len(self._transforms) != self._num_transforms:
            output_shape = list(transform_output_shape)
            output_shape[self._split_dim - 1] = (output_shape[self._split_dim - 1] + 1) // 2
            hidden_shape = list(transform_output_shape)
            hidden_shape[self._split_dim - 1] = hidden_shape[self._split_dim - 1] // 2
            self._output_shapes.append(tuple(output_shape))
            return tuple(hidden_shape)
        self._output_shapes.append(tuple(transform_output_shape))
        return None

    def program(self) -> InvertibleProgram:
        """x -> the per-transform outputs (unflattened), as a program (slot 0 is x)."""
        nodes: list[Node] = []
        cur, nxt, outs = 0, 1, []
        d = self._split_dim
        for k, transform in enumerate(self._transforms):
            more, cur, nxt = _nflows_nodes(transform, cur, nxt)
            nodes += more
            if k < len(self._transforms) - 1:
                nodes.append(_PermutationNode(lambda v, d=d, k=k: self._factor_out(v[0], d, k),
                                              lambda v, d=d: [torch.cat(v, dim=d)], (cur,), (nxt, nxt + 1)))
                outs.append(nxt)
                cur, nxt = nxt + 1, nxt + 2
        outs.append(cur)
        return InvertibleProgram(nodes, (0,), outs)

    def _factor_out(self, v: Tensor, d: int, k: int) -> list[Tensor]:
        """The factor-out after transform k, with nflows' check of the output's shape (an
        ``assert`` there: ``PeerError`` is that AssertionError and a ValueError)."""
        out, hidden = torch.chunk(v, 2, dim=d)
        if tuple(out.shape[1:]) != tuple(self._output_shapes[k]):
            raise PeerError(f"the output of transform {k} has per-sample shape {tuple(out.shape[1:])}, but "
                            f"{tuple(self._output_shapes[k])} was registered with add_transform: the input's "
                            "shape does not fit the network")
        return [out, hidden]

    def _check(self, inputs):
        if self._split_dim >= inputs.dim():
            raise ValueError("No split_dim in inputs.")
        if self._num_transforms != len(self._transforms):
            raise RuntimeError(f"Expecting exactly {self._num_transforms} transform(s) to be added.")

    def forward(self, inputs, context=None):
        self._check(inputs)
        conds = () if context is None else (context,)
        outs, logabsdet = run_program(self.program(), [inputs], conds, self.memory_saving)
        B = inputs.shape[0]
        return torch.cat([o.reshape(B, math.prod(o.shape[1:])) for o in outs], dim=-1), logabsdet.to(inputs.dtype)

    def inverse(self, inputs, context=None):
        if inputs.dim() != 2:
            raise ValueError("Expecting NxD inputs")
        if self._num_transforms != len(self._transforms):
            raise RuntimeError(f"Expecting exactly {self._num_transforms} transform(s) to be added.")
        B = inputs.shape[0]
        sizes = [math.prod(s) for s in self._output_shapes]
        parts = torch.split(inputs, sizes, dim=1)
        outs = [p.reshape(B, *s) for p, s in zip(parts, self._output_shapes)]
        conds = () if context is None else (context,)
        xs, logabsdet = self.program().invert(outs, conds)
        return xs[0], logabsdet.to(inputs.dtype)


@builtin_converter("nflows.transforms.MultiscaleCompositeTransform")
def _convert_multiscale(m, *, convert_child, memory_saving: bool = False, **kwargs):
    new = MultiscaleCompositeTransform(m._num_transforms, m._split_dim, memory_saving=memory_saving)
    new._transforms = nn.ModuleList([convert_child(t) for t in m._transforms])
    new._output_shapes = list(m._output_shapes)
    return new.train(m.training)


@builtin_converter("nflows.transforms.SqueezeTransform")
def _convert_squeeze(m, *, convert_child, **kwargs):
    return SqueezeTransform(m.factor).train(m.training)
