"""FrEIA's ``GraphINN`` and its graph and reshaping modules (``Split``, ``Concat``, ``Flatten``,
``IRevNetDownsampling``, ``HaarDownsampling``); see :mod:`flowkern.compat.freia`. A ``GraphINN``
runs as an :class:`~flowkern.nn.graph.InvertibleProgram` (``memory_saving=True``: only its
outputs are saved for backward)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...nn.base import zero_logdet
from ...nn.graph import InvertibleProgram, Node, run_program
from ...nn.squeeze import squeeze2x2, unsqueeze2x2
from .._peer import NodeError
from ..convert import _finish, builtin_converter

__all__ = ["GraphINN", "IRevNetDownsampling", "HaarDownsampling", "Split", "Concat", "Flatten"]


class _FreiaModule(nn.Module):
    """Base of the FrEIA-protocol modules here: ``forward(x_tuple, c=None, rev=False, jac=True)
    -> (tuple, log|det J|)``, ``dims_in`` / ``dims_c``, ``output_dims``."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__()
        self.dims_in = [tuple(d) for d in dims_in]
        self.dims_c = [tuple(d) for d in (dims_c or [])]


class _Downsampling(_FreiaModule):
    """A 2x2 downsampling: one (C, H, W) input, even H and W, output (4C, H/2, W/2)."""

    def output_dims(self, input_dims):
        name = type(self).__name__
        if len(input_dims) != 1 or len(input_dims[0]) != 3:
            raise ValueError(f"{name} needs one (C, H, W) input, got {input_dims}")
        c, w, h = input_dims[0]
        if w % 2 or h % 2:
            raise ValueError(f"{name} needs an even height and width, got input dims {tuple(input_dims[0])}")
        return ((c * 4, w // 2, h // 2),)


class IRevNetDownsampling(_Downsampling):
    """FrEIA's ``IRevNetDownsampling`` (``legacy_backend=False``): 2x2 space-to-depth, output
    channel 4c + 2i + j (Glow's order, :func:`flowkern.nn.squeeze.squeeze2x2`); the fixed
    ``downsample_kernel`` is kept as FrEIA's (non-trainable) parameter.

    Args:
        dims_in: ``[(C, H, W)]``, H and W even.
        dims_c: condition shapes (unused).
        legacy_backend: only False (FrEIA's other channel order is not converted).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import IRevNetDownsampling
        >>> (y,), _ = IRevNetDownsampling([(3, 4, 4)])((torch.randn(2, 3, 4, 4),))
        >>> y.shape
        torch.Size([2, 12, 2, 2])
    """

    def __init__(self, dims_in, dims_c=None, legacy_backend: bool = False):
        super().__init__(dims_in, dims_c)
        if legacy_backend:
            raise ValueError("IRevNetDownsampling: only legacy_backend=False is converted (its channel order is "
                             "Glow's squeeze); keep the peer's module for the legacy backend")
        self.channels = self.dims_in[0][0]
        self.block_size, self.block_size_sq, self.legacy_backend = 2, 4, False
        kernel = torch.zeros(4, 1, 2, 2)
        kernel[0, 0, 0, 0] = kernel[1, 0, 0, 1] = kernel[2, 0, 1, 0] = kernel[3, 0, 1, 1] = 1
        self.downsample_kernel = nn.Parameter(torch.cat([kernel] * self.channels, 0), requires_grad=False)

    def forward(self, x, c=None, jac=True, rev=False):
        out = unsqueeze2x2(x[0], "glow") if rev else squeeze2x2(x[0], "glow")
        return (out,), 0.0



class HaarDownsampling(_Downsampling):
    r"""FrEIA's ``HaarDownsampling``: per channel, the 2x2 Haar wavelets (average, vertical,
    horizontal, diagonal) times ``0.5 * rebalance``, optionally grouped by wavelet; log-det
    :math:`D(\log 16 + 4\log f)/4` per sample.

    Args:
        dims_in: ``[(C, H, W)]``, H and W even.
        dims_c: condition shapes (unused).
        order_by_wavelet: group the output channels by wavelet (all averages first).
        rebalance: the factor f of the forward's scale 0.5 f (nonzero).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import HaarDownsampling
        >>> haar = HaarDownsampling([(3, 4, 4)])
        >>> x = torch.randn(2, 3, 4, 4)
        >>> (y,), log_jac = haar((x,))
        >>> torch.allclose(haar((y,), rev=True)[0][0], x, atol=1e-6), y.shape
        (True, torch.Size([2, 12, 2, 2]))
    """

    def __init__(self, dims_in, dims_c=None, order_by_wavelet: bool = False, rebalance: float = 1.0):
        super().__init__(dims_in, dims_c)
        if rebalance == 0:
            raise ValueError("'rebalance' argument must be != 0.")
        self.in_channels = self.dims_in[0][0]
        self.fac_fwd = 0.5 * rebalance
        self.jac_fwd = (np.log(16.0) + 4 * np.log(self.fac_fwd)) / 4.0
        self.fac_rev = 0.5 / rebalance
        self.jac_rev = (np.log(16.0) + 4 * np.log(self.fac_rev)) / 4.0
        w = torch.ones(4, 1, 2, 2)
        w[1, 0, 0, 1] = w[1, 0, 1, 1] = -1
        w[2, 0, 1, 0] = w[2, 0, 1, 1] = -1
        w[3, 0, 1, 0] = w[3, 0, 0, 1] = -1
        self.haar_weights = nn.Parameter(torch.cat([w] * self.in_channels, 0), requires_grad=False)
        self.permute = order_by_wavelet
        if self.permute:
            perm = torch.tensor([i + 4 * j for i in range(4) for j in range(self.in_channels)])
            self.perm, self.perm_inv = perm, torch.argsort(perm)

    def forward(self, x, c=None, jac=True, rev=False):
        inp = x[0]
        ndims = math.prod(inp.shape[1:])  # (not inp[0]: an empty batch has no sample 0)
        if not rev:
            out = F.conv2d(inp, self.haar_weights, bias=None, stride=2, groups=self.in_channels)
            if self.permute:
                out = out[:, self.perm]
            return (out * self.fac_fwd,), ndims * self.jac_fwd
        x_perm = inp[:, self.perm_inv] if self.permute else inp
        out = F.conv_transpose2d(x_perm * self.fac_rev, self.haar_weights, stride=2, groups=self.in_channels)
        return (out,), ndims * self.jac_rev



class Split(_FreiaModule):
    """FrEIA's graph ``Split``: one tensor into sections along ``dim`` (0: channels).

    Args:
        dims_in: ``[(C, *S)]``.
        section_sizes: the sections' sizes (None: ``n_sections`` near-equal ones).
        n_sections: how many sections without ``section_sizes``.
        dim: the split dimension of a sample (0: channels).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import Split
        >>> [t.shape[1] for t in Split([(5,)])((torch.randn(2, 5),))[0]]
        [3, 2]
    """

    def __init__(self, dims_in, section_sizes=None, n_sections: int = 2, dim: int = 0):
        super().__init__(dims_in)
        self.dim = dim
        length = self.dims_in[0][dim]
        if section_sizes is None:
            self.split_size_or_sections = ([length // n_sections + 1] * (length % n_sections)
                                           + [length // n_sections] * (n_sections - length % n_sections))
        else:
            self.split_size_or_sections = section_sizes

    def forward(self, x, rev=False, jac=True):
        if rev:
            return [torch.cat(x, dim=self.dim + 1)], 0
        return torch.split(x[0], self.split_size_or_sections, dim=self.dim + 1), 0

    def output_dims(self, input_dims):
        return [tuple(input_dims[0][j] if j != self.dim else size for j in range(len(input_dims[0])))
                for size in self.split_size_or_sections]


class Concat(_FreiaModule):
    """FrEIA's graph ``Concat``: several tensors into one along ``dim`` (0: channels).

    Args:
        dims_in: the inputs' shapes.
        dim: the joined dimension of a sample (0: channels).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import Concat
        >>> Concat([(3,), (2,)])((torch.randn(2, 3), torch.randn(2, 2)))[0][0].shape
        torch.Size([2, 5])
    """

    def __init__(self, dims_in, dim: int = 0):
        super().__init__(dims_in)
        self.dim = dim
        self.split_size_or_sections = [d[dim] for d in self.dims_in]

    def forward(self, x, rev=False, jac=True):
        if rev:
            return torch.split(x[0], self.split_size_or_sections, dim=self.dim + 1), 0
        return [torch.cat(x, dim=self.dim + 1)], 0

    def output_dims(self, input_dims):
        total = sum(d[self.dim] for d in input_dims)
        return [tuple(input_dims[0][j] if j != self.dim else total for j in range(len(input_dims[0])))]


class Flatten(_FreiaModule):
    """FrEIA's ``Flatten``: (B, *shape) -> (B, prod(shape)).

    Args:
        dims_in: ``[shape]``, the one input's shape.
        dims_c: condition shapes (unused).

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import Flatten
        >>> Flatten([(3, 2, 2)])((torch.randn(4, 3, 2, 2),))[0][0].shape
        torch.Size([4, 12])
    """

    def __init__(self, dims_in, dims_c=None):
        super().__init__(dims_in, dims_c)
        self.input_shape = self.dims_in[0]
        self.output_shape = (int(np.prod(self.dims_in[0])),)

    def forward(self, x, c=None, jac=True, rev=False):
        if not rev:
            return (x[0].flatten(1),), 0.0  # (not reshape(B, -1): ambiguous for B = 0)
        return (x[0].reshape(x[0].shape[0], *self.input_shape),), 0.0

    def output_dims(self, input_dims):
        return (self.output_shape,)


class _FreiaNode(Node):
    """A FrEIA-protocol module of a graph as a node; ``cond_idx`` picks its conditions."""

    def __init__(self, module: nn.Module, inputs, outputs, cond_idx: Sequence[int]) -> None:
        super().__init__(inputs, outputs)
        self.module, self.cond_idx = module, tuple(cond_idx)

    def modules(self):
        return (self.module,)

    def _call(self, vs, conds, rev):
        try:
            if self.cond_idx:
                out, jac = self.module(tuple(vs), c=[conds[i] for i in self.cond_idx], rev=rev, jac=True)
            else:
                out, jac = self.module(tuple(vs), rev=rev, jac=True)
        except RuntimeError:
            raise
        except (ValueError, IndexError, AssertionError) as e:  # FrEIA: RuntimeError for any node's error
            raise NodeError(f"{type(self.module).__name__} node ({'inverse' if rev else 'forward'}): {e}") from e
        return list(out), jac

    def run(self, xs, conds):
        return self._call(xs, conds, False)

    def invert(self, ys, conds):
        return self._call(ys, conds, True)

    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        if isinstance(self.module, (IRevNetDownsampling, Split, Concat, Flatten)):
            xs, _ = self._call(ys, conds, True)  # permutations: the inverse maps the grads too
            gxs, _ = self._call(grad_ys, conds, True)
            return xs, gxs, [None] * len(conds)
        return super().invert_and_backprop(ys, conds, grad_ys, grad_logdet, grads)


def _topological(node_list) -> list:
    """Nodes ordered so that every node comes after the nodes it reads from: the given order if it
    is one (FrEIA's own sorted list), else a stable reordering."""
    seen: set[int] = set()
    for n in node_list:
        if not all(id(p) in seen for p, _ in n.inputs):
            break
        seen.add(id(n))
    else:
        return list(node_list)
    placed: set[int] = set()
    order, pending = [], list(node_list)
    while pending:
        ready = [n for n in pending if all(id(p) in placed for p, _ in n.inputs)]
        if not ready:
            raise ValueError("the graph's nodes have a cycle or read from a node outside node_list")
        for n in ready:
            placed.add(id(n))
            order.append(n)
        pending = [n for n in pending if id(n) not in placed]
    return order


class GraphINN(nn.Module):
    """FrEIA's ``GraphINN`` (same node list, call signature and ``state_dict`` keys), run as an
    invertible program; ``memory_saving=True`` saves only the outputs (and conditions) for
    backward in the forward direction.

    Args:
        node_list: FrEIA's nodes (``FrEIA.framework``: input, output, condition and module nodes).
        force_tuple_output: return the outputs as a tuple even if there is one.
        verbose: print the network.
        memory_saving: save only the outputs (and conditions) for backward.

    Example:
        >>> import torch
        >>> import FrEIA.framework as Ff
        >>> from flowkern.compat.freia import GLOWCouplingBlock, GraphINN, IRevNetDownsampling
        >>> def conv(c_in, c_out):
        ...     return torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        >>> nodes = [Ff.InputNode(3, 4, 4)]
        >>> nodes.append(Ff.Node(nodes[-1], IRevNetDownsampling, {}))
        >>> nodes.append(Ff.Node(nodes[-1], GLOWCouplingBlock, {"subnet_constructor": conv}))
        >>> nodes.append(Ff.OutputNode(nodes[-1]))
        >>> z, log_jac = GraphINN(nodes, memory_saving=True)(torch.randn(2, 3, 4, 4))
        >>> z.shape, log_jac.shape
        (torch.Size([2, 12, 2, 2]), torch.Size([2]))
    """

    def __init__(self, node_list, force_tuple_output: bool = False, verbose: bool = False,
                 memory_saving: bool = False):
        super().__init__()
        kinds = {id(n): type(n).__name__ for n in node_list}
        self.in_nodes = [n for n in node_list if kinds[id(n)] == "InputNode"]
        self.out_nodes = [n for n in node_list if kinds[id(n)] == "OutputNode"]
        self.condition_nodes = [n for n in node_list if kinds[id(n)] == "ConditionNode"]
        self.node_list = _topological(node_list)
        self.dims_in = [n.output_dims[0] for n in self.in_nodes]
        self.dims_c = [n.output_dims[0] for n in self.condition_nodes]
        self.global_out_shapes = [n.input_dims[0] for n in self.out_nodes]
        self.force_tuple_output = force_tuple_output
        self.module_list = nn.ModuleList([n.module for n in self.node_list if n.module is not None])
        self.memory_saving = bool(memory_saving)
        if verbose:
            print(self)

    def _special(self, node) -> bool:
        return node in self.in_nodes or node in self.out_nodes or node in self.condition_nodes

    def program(self) -> InvertibleProgram:
        """The forward direction: inputs -> outputs (FrEIA's node order)."""
        slots: dict[tuple[int, int], int] = {}

        def slot(node, idx) -> int:
            return slots.setdefault((id(node), idx), len(slots))

        ins = [slot(n, 0) for n in self.in_nodes]
        nodes: list[Node] = []
        for node in self.node_list:
            if self._special(node):
                continue
            nodes.append(_FreiaNode(node.module, [slot(p, i) for p, i in node.inputs],
                                    [slot(node, j) for j in range(len(node.outputs))],
                                    [self.condition_nodes.index(cn) for cn in node.conditions]))
        outs = [slot(*n.inputs[0]) for n in self.out_nodes]
        return InvertibleProgram(nodes, ins, outs)

    def forward(self, x_or_z, c=None, rev: bool = False, jac: bool = True, intermediate_outputs: bool = False,
                x=None):
        if x is not None:
            x_or_z = x
        if torch.is_tensor(x_or_z):
            x_or_z = (x_or_z,)
        if torch.is_tensor(c):
            c = (c,)
        c = tuple(c or ())
        starts = self.out_nodes if rev else self.in_nodes
        if len(x_or_z) != len(starts):
            raise ValueError(f"Got {len(x_or_z)} inputs, but expected {len(starts)}.")
        if len(c) != len(self.condition_nodes):
            raise ValueError(f"Got {len(c)} conditions, but expected {len(self.condition_nodes)}.")
        if intermediate_outputs:
            return self._interpret(list(x_or_z), c, rev, jac)
        program = self.program()
        if rev:
            out, log_jac = program.invert(list(x_or_z), c)
        else:
            out, log_jac = run_program(program, list(x_or_z), c, self.memory_saving)
        ref = x_or_z[0]
        log_jac = log_jac.to(ref.dtype) if jac else zero_logdet(ref).to(ref.dtype)
        if len(out) == 1 and not self.force_tuple_output:
            return out[0], log_jac
        return tuple(out), log_jac

    def _interpret(self, xs, c, rev, jac):
        """Node by node with every intermediate kept (``intermediate_outputs=True``)."""
        outs, jacs = {}, {}
        for tensor, node in zip(xs, self.out_nodes if rev else self.in_nodes):
            outs[node, 0] = tensor
        for tensor, node in zip(c, self.condition_nodes):
            outs[node, 0] = tensor
        for node in (reversed(self.node_list) if rev else self.node_list):
            if self._special(node):
                continue
            mod_in = tuple(outs[p, i] for p, i in (node.outputs if rev else node.inputs))
            if node.conditions:
                res, j = node.module(mod_in, c=[outs[cn, 0] for cn in node.conditions], rev=rev, jac=jac)
            else:
                res, j = node.module(mod_in, rev=rev, jac=jac)
            for k, v in enumerate(res):
                outs[node, k] = v
            if jac:
                jacs[node] = j
        for node in (self.in_nodes if rev else self.out_nodes):
            outs[node, 0] = outs[(node.outputs if rev else node.inputs)[0]]
        return outs, jacs

    def get_node_by_name(self, name):
        return next((n for n in self.node_list if n.name == name), None)

    def get_module_by_name(self, name):
        node = self.get_node_by_name(name)
        return None if node is None else node.module


# ---- convert(): FrEIA's classes as these -------------------------------------------------------


# ---- convert(): FrEIA's classes as these -------------------------------------------------------
@builtin_converter("FrEIA.framework.GraphINN")
def _convert_graph(m, *, convert_child, memory_saving: bool = False, **kwargs):
    for node in m.node_list:
        if node.module is not None:
            node.module = convert_child(node.module)
    new = GraphINN(m.node_list, m.force_tuple_output, memory_saving=memory_saving)
    # FrEIA keeps its input, output and condition nodes apart from the sorted node list
    new.in_nodes, new.out_nodes = list(m.in_nodes), list(m.out_nodes)
    new.condition_nodes = list(m.condition_nodes)
    new.dims_in = [n.output_dims[0] for n in new.in_nodes]
    new.dims_c = [n.output_dims[0] for n in new.condition_nodes]
    new.global_out_shapes = [n.input_dims[0] for n in new.out_nodes]
    return new.train(m.training)


@builtin_converter("FrEIA.modules.IRevNetDownsampling")
def _convert_irevnet(m, *, convert_child, **kwargs):
    if m.legacy_backend:
        return m  # its channel order differs; the peer's module runs as it is
    return _finish(IRevNetDownsampling(m.dims_in, getattr(m, "dims_c", None)), m)


@builtin_converter("FrEIA.modules.HaarDownsampling")
def _convert_haar(m, *, convert_child, **kwargs):
    new = HaarDownsampling(m.dims_in, getattr(m, "dims_c", None), order_by_wavelet=m.permute,
                           rebalance=m.fac_fwd / 0.5)
    return _finish(new, m)


@builtin_converter("FrEIA.modules.Split")
def _convert_split(m, *, convert_child, **kwargs):
    new = Split(m.dims_in, section_sizes=list(m.split_size_or_sections), dim=m.dim)
    return new.train(m.training)


@builtin_converter("FrEIA.modules.Concat")
def _convert_concat(m, *, convert_child, **kwargs):
    return Concat(m.dims_in, dim=m.dim).train(m.training)


@builtin_converter("FrEIA.modules.Flatten")
def _convert_flatten(m, *, convert_child, **kwargs):
    return Flatten(m.dims_in, getattr(m, "dims_c", None)).train(m.training)
