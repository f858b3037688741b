"""The former home of the peers' image models, kept so that old imports and pickles resolve:
each name here is the class of its peer's module (``flowkern.compat.normflows``,
``flowkern.compat.nflows``, ``flowkern.compat.freia``), loaded (with its peer) on first use."""

import importlib

_HOMES = {
    "normflows": ("MultiscaleFlow", "GlowBlock", "Squeeze"),
    "nflows": ("MultiscaleCompositeTransform", "SqueezeTransform"),
    "freia": ("GraphINN", "IRevNetDownsampling", "HaarDownsampling", "Split", "Concat", "Flatten"),
}


def __getattr__(name: str):
    for peer, names in _HOMES.items():
        if name in names:
            return getattr(importlib.import_module(f"{__package__}.{peer}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
