"""Loading a peer's base class lazily, so the adapters are the peer's types when it is installed.

``import flowkern`` imports no peer; ``import flowkern.compat.<peer>`` imports that peer (if it
is installed) to subclass its base class, so ``isinstance(adapter, peer.Base)`` holds and the
peer's own containers treat the adapters as their own modules. Without the peer, the adapters
subclass a stand-in with the same protocol, defined in the adapter module.
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["peer_class", "peer_base", "publish", "PeerError", "ShapeError", "RankError", "NodeError"]


def peer_class(module: str, name: str) -> type | None:
    """The class ``module.name`` of an installed peer, or ``None`` when the peer is absent.

    A peer that is installed but fails to import for another reason (a broken install) is
    treated as absent, with a warning naming the error, so flowkern's adapters still work.

    Args:
        module: the peer's module, e.g. ``"FrEIA.modules"``.
        name: the class name.

    Example:
        >>> from flowkern.compat._peer import peer_class
        >>> peer_class("a_package_that_is_not_installed", "Flow") is None
        True
    """
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - a broken peer install must not break flowkern
        warnings.warn(f"flowkern.compat: {module} is installed but failed to import ({exc!r}); "
                      "the adapters use flowkern's stand-in base class", RuntimeWarning, stacklevel=3)
        return None
    cls = getattr(mod, name, None)
    return cls if isinstance(cls, type) else None


def peer_base(module: str, stand_in: type) -> tuple[type, bool]:
    """``(the peer's class module.<stand_in's name>, True)`` when the peer is installed, else
    ``(stand_in, False)``: the base class of a peer's adapters and whether it is the peer's.

    Args:
        module: the peer's module that defines the class.
        stand_in: flowkern's class of the same name and protocol.

    Example:
        >>> from flowkern.compat._peer import peer_base
        >>> class Flow:
        ...     pass
        >>> peer_base("a_package_that_is_not_installed", Flow) == (Flow, False)
        True
    """
    cls = peer_class(module, stand_in.__name__)
    return (stand_in, False) if cls is None else (cls, True)


def publish(namespace: dict) -> None:
    """Give the classes and functions a package's ``__init__`` re-exports from its submodules the
    package's name as ``__module__`` (``flowkern.compat.freia.ActNorm``, not ``...freia.modules``):
    the public path that reprs, pickles, errors and the docs name, stable when a class moves
    between the package's files. Applies to the names in ``__all__`` and the private ones.

    Args:
        namespace: the package's ``globals()``.

    Example:
        >>> import flowkern.compat.freia as freia
        >>> freia.ActNorm.__module__
        'flowkern.compat.freia'
    """
    package = namespace["__name__"]
    names = [*namespace["__all__"], *(n for n in namespace if n.startswith("_") and not n.startswith("__"))]
    for name in names:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(package + "."):
            obj.__module__ = package


class PeerError(ValueError, AssertionError):
    """A ``ValueError`` that is also the ``AssertionError`` a peer raises for the same input.

    FrEIA checks some arguments with ``assert`` (condition shapes, ``output_dims`` input
    count); the adapters raise this, so code catching the peer's ``AssertionError`` and code
    catching flowkern's usual ``ValueError`` both work.

    Example:
        >>> from flowkern.compat._peer import PeerError
        >>> issubclass(PeerError, ValueError) and issubclass(PeerError, AssertionError)
        True
    """


class ShapeError(ValueError, RuntimeError):
    """A ``ValueError`` (flowkern's message, naming the input and the shape it needs) that is also
    the ``RuntimeError`` a peer raises for the same input, from a failing split, reshape,
    broadcast, matrix product or convolution (e.g. FrEIA's and normflows' couplings given the
    wrong feature count): code catching the peer's error and code catching flowkern's both work.

    Example:
        >>> from flowkern.compat._peer import ShapeError
        >>> issubclass(ShapeError, ValueError) and issubclass(ShapeError, RuntimeError)
        True
    """


class RankError(ValueError, IndexError):
    """A ``ValueError`` naming the input and its rank that is also the ``IndexError`` a peer raises
    for an input with too few dimensions (it indexes a dimension the input lacks).

    Example:
        >>> from flowkern.compat._peer import RankError
        >>> issubclass(RankError, ValueError) and issubclass(RankError, IndexError)
        True
    """


class NodeError(ValueError, RuntimeError):
    """An error inside a node of a converted FrEIA ``GraphINN``. FrEIA re-raises any node's error as
    ``RuntimeError("<node> encountered an error.")``; flowkern keeps the node's own message (and
    chains the original) in an error that is that ``RuntimeError`` and a ``ValueError``.

    Example:
        >>> from flowkern.compat._peer import NodeError
        >>> issubclass(NodeError, ValueError) and issubclass(NodeError, RuntimeError)
        True
    """
