"""FrEIA's ``SequenceINN`` (see :mod:`flowkern.compat.freia`): an initialised ``ActNorm`` folds
into the coupling after it, one op call for both."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .._fused import fold_steps
from .._peer import PeerError, ShapeError
from ..convert import builtin_converter
from .coupling import AffineCouplingOneSided, _TwoSidedCoupling
from .modules import ActNorm, _Adapter, _shapes

__all__ = ["SequenceINN"]


class SequenceINN(_Adapter):
    """A chain of invertible modules (FrEIA's ``SequenceINN``). An ``ActNorm`` directly
    followed by a GLOW / RNVP / one-sided coupling runs as one fused op (actnorm folded
    into the op's a, b).

    Args:
        dims: the input's shape (C, *S).
        force_tuple_output: return the outputs as a tuple even if there is one.

    Example:
        >>> import torch
        >>> from flowkern.compat.freia import ActNorm, GLOWCouplingBlock, SequenceINN
        >>> def mlp(c_in, c_out):
        ...     return torch.nn.Sequential(torch.nn.Linear(c_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, c_out))
        >>> inn = SequenceINN(4)
        >>> inn.append(ActNorm)
        >>> inn.append(GLOWCouplingBlock, subnet_constructor=mlp)
        >>> z, log_jac = inn(torch.randn(8, 4))
        >>> z.shape, log_jac.shape
        (torch.Size([8, 4]), torch.Size([8]))
    """

    def __init__(self, *dims: int, force_tuple_output: bool = False):
        super().__init__([dims])
        self.shapes = [tuple(dims)]
        self.conditions: list[int | None] = []
        self.module_list = nn.ModuleList()
        self.force_tuple_output = force_tuple_output

    def append(self, module_class, cond: int | None = None, cond_shape=None, **kwargs) -> None:
        """Append ``module_class(dims_in, **kwargs)`` (with ``dims_c=[cond_shape]`` if ``cond`` is
        set), or an ``InvertibleModule`` instance built for the current output shape (as FrEIA's
        development version does; ``ValueError`` if its dims differ or ``kwargs`` are given)."""
        dims_in = [self.shapes[-1]]
        if cond is not None:
            kwargs["dims_c"] = [cond_shape]
        if isinstance(module_class, nn.Module):
            module = module_class
            if isinstance(module, _Adapter):
                module._as_built(dims_in, **kwargs)
            else:  # another library's FrEIA module: FrEIA's own checks
                if [tuple(d) for d in module.dims_in] != _shapes(dims_in):
                    raise ValueError(f"You passed an instance of {type(module).__name__} which expects a "
                                     f"{module.dims_in} input, but the output of the previous layer is of "
                                     f"shape {dims_in}.")
                if set(kwargs) - {"dims_c"}:
                    raise ValueError(f"You try to append an instantiated {type(module).__name__}, but also "
                                     f"provided constructor arguments {sorted(kwargs)}.")
        else:
            module = module_class(dims_in, **kwargs)
        output_dims = module.output_dims(dims_in)
        if len(output_dims) != 1:
            raise PeerError(f"{type(module).__name__} has more than one output")  # FrEIA: assert
        self.conditions.append(cond)
        self.module_list.append(module)
        self.shapes.append(output_dims[0])

    def __getitem__(self, item):
        return self.module_list.__getitem__(item)

    def __len__(self):
        return self.module_list.__len__()

    def __iter__(self):
        return self.module_list.__iter__()

    def output_dims(self, input_dims):
        if not self.force_tuple_output:
            raise ValueError("You can only call output_dims on a SequenceINN when setting force_tuple_output=True.")
        return input_dims

    def _foldable(self, i_norm: int, i_coupling: int) -> bool:
        norm, coupling = self.module_list[i_norm], self.module_list[i_coupling]
        return (isinstance(norm, ActNorm) and not norm.init_on_next_batch and self.conditions[i_norm] is None
                and isinstance(coupling, (_TwoSidedCoupling, AffineCouplingOneSided)) and coupling.fusable)

    def _conds(self, i: int, c) -> list[Tensor]:
        return [] if self.conditions[i] is None else [c[self.conditions[i]]]

    def forward(self, x_or_z, c: Iterable[Tensor] | None = None, rev: bool = False, jac: bool = True):
        """Run the chain forward (or inverse with ``rev``): ``(z_or_x, log_det_jac)``."""
        x = (x_or_z,) if torch.is_tensor(x_or_z) else tuple(x_or_z)
        log_det_jac = 0
        for i, i_coupling in fold_steps(len(self.module_list), rev, self._foldable):
            if i_coupling is not None:
                coupling = self.module_list[i_coupling]
                if torch.is_tensor(x[0]) and (x[0].dim() < 2 or x[0].shape[1] != coupling.channels):
                    # FrEIA runs the ActNorm alone, whose broadcast fails: RuntimeError
                    raise ShapeError(f"x must have {coupling.channels} channels, shape (B, "
                                     f"{', '.join(map(str, coupling.dims_in[0]))}), got {tuple(x[0].shape)}")
                a, b = self.module_list[i].affine()
                x, j = coupling._fused(x[0], coupling._cond(self._conds(i_coupling, c)), rev, a, b)
            elif self.conditions[i] is None:
                x, j = self.module_list[i](x, jac=jac, rev=rev)
            else:
                x, j = self.module_list[i](x, c=self._conds(i, c), jac=jac, rev=rev)
            log_det_jac = j + log_det_jac
        return (x if self.force_tuple_output else x[0]), log_det_jac


# ---- convert(): FrEIA's classes as these -------------------------------------------------------
@builtin_converter("FrEIA.framework.SequenceINN")
def _convert_sequence(m, *, convert_child, **kwargs):
    new = SequenceINN(*m.shapes[0], force_tuple_output=m.force_tuple_output)
    new.shapes = list(m.shapes)
    new.conditions = list(m.conditions)
    new.module_list = nn.ModuleList([convert_child(x) for x in m.module_list])
    return new.train(m.training)
