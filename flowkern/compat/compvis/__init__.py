r"""CompVis (iin / net2net / invariances) flat-flow modules on flowkern's fused coupling op.

Same class names, constructors, ``state_dict`` keys and conventions as the CompVis code:
``forward(x, reverse=False)`` returns ``(h, logdet)`` forward and only ``h`` in reverse;
latents are (B, D, 1, 1) (2D input is accepted where CompVis accepts it).

:class:`ActNorm` is :math:`h = \mathrm{scale}\,(x + \mathrm{loc})`, i.e. the op's actnorm with
``a = scale``, ``b = scale * loc``; log-det :math:`HW \sum \log|\mathrm{scale}|`.
:class:`DoubleVectorCouplingBlock` is two couplings with a half swap: with
:math:`d_1 = \lceil D/2 \rceil`, the first :math:`d_1` features condition
:math:`x_2 \mapsto x_2 e^{s_0(x_1)} + t_0(x_1)` (``s`` nets end in tanh, op scale 'exp'),
the result is rotated by :math:`d_1` features and coupled again with :math:`(s_1, t_1)`.
In the flow blocks (ActNorm, coupling, Shuffle) the ActNorm is folded into the first op.
Families: :mod:`.layers` (nets, actnorm, shuffle, activations) and :mod:`.flows` (couplings,
blocks, flows).
"""

from . import flows, layers
from .._peer import publish
from .flows import (
    ConditionalDoubleVectorCouplingBlock,
    ConditionalFlatCouplingFlow,
    ConditionalFlatDoubleCouplingFlowBlock,
    DoubleVectorCouplingBlock,
    UnconditionalFlatCouplingFlow,
    UnconditionalFlatDoubleCouplingFlowBlock,
    _converter,
)
from .layers import ActNorm, BasicFullyConnectedNet, IgnoreLeakyRelu, InvLeakyRelu, Shuffle

__all__ = [*layers.__all__, *flows.__all__]

publish(globals())
