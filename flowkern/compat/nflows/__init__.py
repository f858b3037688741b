r"""nflows 0.14 drop-in transforms on flowkern's fused coupling op.

Same names, constructors, ``state_dict`` keys and conventions as ``nflows.transforms``:
``forward(inputs, context=None)`` maps data to noise and returns ``(outputs, logabsdet)``;
2D (B, D) and 4D (B, C, H, W) inputs. :class:`AffineCouplingTransform` computes
:math:`y = x\,(\sigma(u + 2) + 10^{-3}) + t` with ``[t | u] = transform_net(x_identity, context)``:
the op's ``sigmoid`` scale with ``eps=1e-3``. A mask whose identity (mask <= 0) features are
not a contiguous block is handled by gathering them to the front. In a
:class:`CompositeTransform`, an :class:`ActNorm` directly followed by an affine coupling runs
as one fused op (actnorm as the op's a, b).

Image models: :class:`MultiscaleCompositeTransform` (factor-out after every transform but the
last) runs as an :class:`~flowkern.nn.graph.InvertibleProgram`, with the O(1)-memory backward
under ``memory_saving=True``; :class:`SqueezeTransform` is nflows' space-to-depth.

When nflows is installed, importing this module imports it and the classes here subclass
``nflows.transforms.Transform`` (the ``Transform`` exported here *is* nflows'), so they are
nflows' types; without nflows a stand-in base with the same protocol is used.
``import flowkern`` imports no peer. Families: :mod:`.transforms` (vector transforms) and
:mod:`.multiscale` (image models).
"""

from . import multiscale, transforms
from .._peer import publish
from .multiscale import MultiscaleCompositeTransform, SqueezeTransform
from .transforms import (  # noqa: F401 - _relayout: the name pickled couplings reference
    PEER_BASE,
    SIGMOID_EPS,
    ActNorm,
    AffineCouplingTransform,
    CompositeTransform,
    Permutation,
    RandomPermutation,
    ReversePermutation,
    Transform,
    _relayout,
)

__all__ = [*transforms.__all__, *multiscale.__all__]

publish(globals())
