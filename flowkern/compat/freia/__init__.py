r"""FrEIA 0.2 drop-in modules on flowkern's fused coupling op.

Same class names, constructor and call signatures, return conventions and
``state_dict`` keys as ``FrEIA.modules`` / ``FrEIA.framework``; replace
``import FrEIA.modules as Fm`` by ``import flowkern.compat.freia as Fm``. When FrEIA is
installed, importing this module imports it and every module here subclasses
``FrEIA.modules.InvertibleModule`` (``InvertibleModule`` below *is* FrEIA's class), so
``isinstance`` checks, FrEIA's ``SequenceINN`` / ``GraphINN`` and user code see FrEIA modules.
Without FrEIA, a stand-in base with the same protocol
(``forward(x_tuple, c=[], rev=False, jac=True) -> (tuple, log_jac_det)``, ``output_dims``)
is used. ``import flowkern`` itself imports no peer.

Instances can be given where FrEIA's containers expect a class: FrEIA 0.2's
``SequenceINN.append(instance)`` and ``Node(inputs, instance, {})`` call the "class" with the
input dims, and an instance called with dims returns itself (after checking that the dims
and ``dims_c`` are the ones it was built for), as FrEIA's development version does with an
``isinstance(module, InvertibleModule)`` check. :class:`SequenceINN` here accepts instances
directly.

FrEIA's soft clamp :math:`s = \alpha\, f(u)` maps onto the op's scale functions:
ATAN :math:`0.636\,\alpha \arctan u` is the op's ``atan`` with ``clamp=1, atan_k=0.636 α``
(no copy of u); TANH :math:`\alpha\tanh u` and SIGMOID :math:`2\alpha(\sigma(u) - 1/2) =
\alpha\tanh(u/2)` are the op's ``tanh`` on :math:`\alpha u` resp. :math:`\alpha u / 2`; a
custom clamp function is evaluated in PyTorch and passed as the op's ``exp`` scale.
Degenerate splits the op cannot express (``split_len`` 0 or all channels, an
``AllInOneBlock`` on one channel) run FrEIA's formula in PyTorch.

Image and graph models: :class:`GraphINN` (any graph: split, concat, several outputs,
conditions) runs as an :class:`~flowkern.nn.graph.InvertibleProgram`, with the O(1)-memory
backward under ``memory_saving=True``; :class:`IRevNetDownsampling`, :class:`HaarDownsampling`,
:class:`Split`, :class:`Concat` and :class:`Flatten` are FrEIA's reshaping modules.

Families: :mod:`.modules` (base protocol, ``ActNorm``, ``PermuteRandom``), :mod:`.coupling`
(the coupling blocks), :mod:`.sequence` (``SequenceINN``), :mod:`.graph` (``GraphINN``, graph and
reshaping modules).
"""

from . import coupling, graph, modules, sequence
from .._peer import publish
from .coupling import (  # noqa: F401 - _atan_clamp, _sigmoid_clamp: the names pickled blocks reference
    ATAN_K,
    _CLAMP_FNS,
    AffineCouplingOneSided,
    AllInOneBlock,
    GLOWCouplingBlock,
    RNVPCouplingBlock,
    _atan_clamp,
    _sigmoid_clamp,
)
from .graph import Concat, Flatten, GraphINN, HaarDownsampling, IRevNetDownsampling, Split
from .modules import PEER_BASE, ActNorm, InvertibleModule, PermuteRandom, _Adapter  # noqa: F401
from .sequence import SequenceINN

__all__ = [*modules.__all__, *coupling.__all__, *sequence.__all__, *graph.__all__]

publish(globals())
