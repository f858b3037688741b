"""Drop-in adapters: FrEIA, normflows, nflows and CompVis flow modules on flowkern's fused op.

Each submodule exports classes with the peer's names, constructor and call signatures,
return conventions and ``state_dict`` keys, so switching is one import line::

    import flowkern.compat.freia as Fm          # was: import FrEIA.modules as Fm
    from flowkern.compat.normflows import AffineCouplingBlock
    from flowkern.compat.nflows import AffineCouplingTransform, CompositeTransform
    from flowkern.compat.compvis import UnconditionalFlatCouplingFlow

:func:`convert` turns an existing peer model (weights and all) into its flowkern
equivalent; :func:`register_converter` adds converters for further peer classes. No peer
library is imported. Deliberate differences are listed in ``flowkern/compat/README.md``.
"""

from . import compvis, freia, nflows, normflows
from .convert import convert, register_converter

__all__ = ["compvis", "freia", "nflows", "normflows", "convert", "register_converter"]
