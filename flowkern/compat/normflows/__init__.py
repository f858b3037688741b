r"""normflows 1.7.3 drop-in flows on flowkern's fused coupling op.

Same names, constructors, ``state_dict`` keys and conventions as ``normflows``:
``forward`` is the generative direction z -> x and returns ``(z, log_det)``,
``inverse`` the normalising one; the coupling parameter map's output is interleaved,
``shift = h[:, 0::2]``, ``scale = h[:, 1::2]`` (passed to the op as strided views).

Scale maps: 'exp' :math:`y = z e^{u} + t`; 'sigmoid' (Glow)
:math:`y = z / \sigma(u + 2) + t`, i.e. :math:`s = -\log\sigma(u + 2)`;
'sigmoid_inv' :math:`y = z\,\sigma(u + 2) + t`, the op's ``sigmoid`` scale.
In a :class:`NormalizingFlow`, a per-channel :class:`ActNorm` directly followed by a
channel-split :class:`AffineCouplingBlock` runs as one fused op (actnorm as the op's a, b).
Glow (:class:`GlowBlock`, :class:`Squeeze`, :class:`MultiscaleFlow`) runs on
:class:`flowkern.nn.GlowStep` and an :class:`~flowkern.nn.graph.InvertibleProgram`, with the
O(1)-memory backward under ``memory_saving=True``.

When normflows is installed, importing this module imports it and the flows here subclass
``normflows.flows.Flow`` (the ``Flow`` exported here *is* normflows'), so they are
normflows' types; without normflows a stand-in base with the same protocol is used.
``import flowkern`` imports no peer. Families: :mod:`.flows` (affine flows, actnorm, split,
couplings), :mod:`.mixing` (permutation, 1x1 convolution), :mod:`.core` (``NormalizingFlow``,
``MultiscaleFlow``) and :mod:`.glow` (``GlowBlock``, ``Squeeze``).
"""

from . import core, flows, glow, mixing
from .._peer import publish
from .core import MultiscaleFlow, NormalizingFlow
from .flows import (  # noqa: F401 - _reindex_mask: the name pickled MaskedAffineFlows reference
    PEER_BASE,
    SCALE_MAPS,
    SPLIT_MODES,
    ActNorm,
    AffineConstFlow,
    AffineCoupling,
    AffineCouplingBlock,
    Flow,
    MaskedAffineFlow,
    Merge,
    Split,
    _reindex_mask,
)
from .glow import GlowBlock, Squeeze
from .mixing import Invertible1x1Conv, Permute

__all__ = [*flows.__all__, *mixing.__all__, *core.__all__, *glow.__all__]

publish(globals())
