"""Drop-in adapters: FrEIA, normflows, nflows and CompVis flow modules on flowkern's fused op.

Each submodule exports classes with the peer's names, constructor and call signatures,
return conventions and ``state_dict`` keys, so switching is one import line::

    import flowkern.compat.freia as Fm          # was: import FrEIA.modules as Fm
    from flowkern.compat.normflows import AffineCouplingBlock
    from flowkern.compat.nflows import AffineCouplingTransform, CompositeTransform
    from flowkern.compat.compvis import UnconditionalFlatCouplingFlow

:func:`convert` turns an existing peer model (weights and all) into its flowkern
equivalent; :func:`register_converter` adds converters for further peer classes.

The adapter submodules are loaded on first use: ``import flowkern`` and ``import
flowkern.compat`` import no peer library, and ``flowkern.compat.freia`` (say) imports FrEIA,
when it is installed, so that its modules subclass FrEIA's ``InvertibleModule``. Deliberate
differences are listed in ``flowkern/compat/README.md``.
"""

import importlib

from .convert import convert, register_converter

_ADAPTERS = ("compvis", "freia", "nflows", "normflows")

__all__ = ["compvis", "freia", "nflows", "normflows", "convert", "register_converter"]


def __getattr__(name: str):
    """``flowkern.compat.<peer>``: import the adapter module (and so its peer) on first use."""
    if name in _ADAPTERS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ADAPTERS))
