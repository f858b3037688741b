"""``convert(peer_module)``: a FrEIA / normflows / nflows / CompVis model as its flowkern
equivalent, weights, buffers, init flags and train/eval mode included.

The peer model is deep-copied first (the original is left untouched), then converted
bottom-up: known peer classes become the same-named class of :mod:`flowkern.compat`
(built with the copied subnets, then ``load_state_dict(strict=True)`` from the peer, so
state-dict keys are checked to be identical), containers (``SequenceINN``,
``NormalizingFlow``, ``CompositeTransform``, CompVis flows) are rebuilt around their
converted children, and any other module keeps its class with its children converted
(FrEIA ``GraphINN`` node references included). This module is the machinery; each peer's
converters live in its adapter module (:func:`builtin_converter`, keyed by the peer class's
dotted name; CompVis, which has no package, by class name and attributes). convert imports no
peer itself: it imports the adapter modules of the peers already imported. Constructors run
under :func:`~flowkern.compat._fused.frozen_rng`, so converting draws no random numbers.

Classes outside the built-in converters are added with :func:`register_converter` (a registered
converter takes precedence over the built-in one for the same class). A peer flow class
that neither knows is left as the peer's module (its children still converted) and listed
in the report: ``convert(model, report=True)`` returns ``(converted, ConvertReport)``, and
without ``report=True`` a ``UserWarning`` carries the same one-line report.

Options (``convert(model, memory_saving=True)``) are checked: an unknown keyword raises
``TypeError`` listing the accepted ones, a value of the wrong type raises ``TypeError``, and an
option that cannot apply to the model given (``memory_saving=True`` on a model with no
memory-saving container, e.g. a FrEIA ``SequenceINN``) raises ``ValueError`` — always an error,
never a warning or a silent no-op.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import inspect
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from types import ModuleType

from torch import nn

from .._checks import check_bool, check_int
from ._fused import frozen_rng, params_dtype_device

__all__ = ["convert", "register_converter", "registered_converters", "ConvertReport"]


def _adapter(peer: str) -> ModuleType:
    """flowkern's adapter module for ``peer`` ('freia', 'normflows', 'nflows', 'compvis'),
    imported on first use (it imports the peer, which a model being converted already has)."""
    return importlib.import_module(f"{__package__}.{peer}")

# Registered converters: a class object, or a dotted name resolved against the already
# imported packages when convert() runs (so registering imports no peer).
_REGISTRY: dict[type | str, Callable[..., nn.Module]] = {}
# flowkern's own converters, by the peer class's dotted name: each peer's adapter module adds its
# own (:func:`builtin_converter`) when imported; a registered converter takes precedence.
_BUILTIN: dict[str, Callable[..., nn.Module]] = {}


def builtin_converter(*peer_classes: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator of an adapter module's converter for the peer classes named (dotted names, as
    :func:`register_converter` takes them): ``fn(module, *, convert_child, **options)``, used
    by convert() after the registered converters.

    Args:
        peer_classes: the dotted names of the peer classes ``fn`` converts.

    Example:
        >>> from flowkern.compat.convert import builtin_converter
        >>> @builtin_converter("somepeer.layers.Layer")
        ... def _convert_layer(module, *, convert_child, **kwargs):
        ...     return module
    """
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for name in peer_classes:
            _BUILTIN[name] = fn
        return fn

    return add


def register_converter(peer_class: type | str, fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Make :func:`convert` turn instances of ``peer_class`` into ``fn(module, **convert_kwargs)``.

    ``peer_class`` is the peer's class object or its dotted name as the peer exposes it
    (``"normflows.MultiscaleFlow"``, ``"normflows.flows.Squeeze"``,
    ``"nflows.transforms.SqueezeTransform"``, ``"FrEIA.modules.HaarDownsampling"``) or as it is
    defined (``f"{cls.__module__}.{cls.__qualname__}"``). A name is resolved only when a model is
    converted and only through packages already in ``sys.modules``, so registering imports no
    peer. Matching is by exact type (a subclass of ``peer_class`` is not matched). Registering
    the same class again replaces the converter; a registered converter takes precedence over
    convert()'s built-in one.

    ``fn(module, **convert_kwargs) -> nn.Module`` is called with

    * ``module``: a private deep copy of the peer module (the user's model is never touched);
      ``fn`` may modify it and reuse its submodules in what it returns;
    * ``convert_child``: a callable ``convert_child(submodule) -> nn.Module`` that converts a
      submodule of ``module`` recursively (registry and built-ins, shared modules converted
      once, FrEIA ``GraphINN`` node references updated) — use it for the children ``fn``
      keeps, instead of calling :func:`convert` (which would copy them again);
    * the keyword arguments given to ``convert(model, **convert_kwargs)`` (e.g.
      ``memory_saving=True``); accept ``**kwargs`` and ignore the ones ``fn`` does not use.
      The options ``fn`` takes are the keyword parameters it names (after ``module``;
      ``convert_child`` aside): :func:`convert` accepts them besides its built-in ones
      (``memory_saving``, ``memory_saving_chunk``), and an option given to :func:`convert` that no
      converter naming it ran on raises ``ValueError`` (it cannot apply to that model).

    It returns the converted module, with the peer's ``state_dict`` keys, dtype, device and
    train/eval mode. Returns ``fn`` (so it can be used as a decorator via ``functools.partial``).
    Raises ``TypeError`` if ``peer_class`` is neither a class nor a dotted name, or ``fn`` is
    not callable.

    Args:
        peer_class: the peer's class, or its dotted name.
        fn: the converter, ``fn(module, *, convert_child, **options) -> nn.Module``.

    Example:
        >>> import torch
        >>> from flowkern.compat import convert, register_converter
        >>> class Doubler(torch.nn.Module):  # a peer's layer convert() does not know
        ...     def forward(self, x):
        ...         return 2 * x
        >>> def to_flowkern(module, *, convert_child, **kwargs):
        ...     return torch.nn.Identity()
        >>> _ = register_converter(Doubler, to_flowkern)
        >>> type(convert(torch.nn.Sequential(Doubler()))[0]).__name__
        'Identity'
    """
    if isinstance(peer_class, str):
        if "." not in peer_class or not all(part.isidentifier() for part in peer_class.split(".")):
            raise TypeError(f"peer_class must be a class or a dotted name 'package.Class', got {peer_class!r}")
    elif not isinstance(peer_class, type):
        raise TypeError(f"peer_class must be a class or a dotted name, got {type(peer_class).__name__}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    _REGISTRY[peer_class] = fn
    return fn


def registered_converters() -> dict[type | str, Callable[..., nn.Module]]:
    """A copy of the registry: ``{peer class or dotted name: fn}``.

    Example:
        >>> from flowkern.compat.convert import registered_converters
        >>> isinstance(registered_converters(), dict)
        True
    """
    return dict(_REGISTRY)


def _resolve(name: str) -> object | None:
    """The object a dotted name refers to, through already imported modules only."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: object = module
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def _converter(m: nn.Module) -> Callable[..., nn.Module] | None:
    """The converter of ``m``'s class: registered (the latest registration wins), else built in."""
    cls = type(m)
    fn = _REGISTRY.get(cls)
    if fn is not None:
        return fn
    qualified = _qualified(cls)
    for table in (_REGISTRY, _BUILTIN):
        for key, fn in reversed(list(table.items())):
            if isinstance(key, str) and (key == qualified or _resolve(key) is cls):
                return fn
    return _adapter("compvis")._converter(m)  # CompVis has no package: by class name and attributes


@dataclasses.dataclass
class ConvertReport:
    """What :func:`convert` did: peer classes converted and peer classes left as they were.

    ``converted`` and ``unconverted`` count modules by the peer class's qualified name
    (``module.QualName``); ``unconverted`` lists the peer flow classes convert() does not know
    (no built-in or registered converter), which stay the peer's modules in the result.
    Peer modules that are not flow layers (base distributions, subnets, FrEIA's ``GraphINN``,
    whose nodes are converted) are neither. ``str(report)`` is one line.

    Args:
        converted: peer class name -> modules converted.
        unconverted: peer class name -> modules left as the peer's.

    Example:
        >>> from collections import Counter
        >>> from flowkern.compat.convert import ConvertReport
        >>> report = ConvertReport(Counter({"FrEIA.modules.ActNorm": 2}))
        >>> report.complete, str(report)
        (True, 'convert: 2 converted (FrEIA.modules.ActNorm x2); none left unconverted')
    """

    converted: Counter = dataclasses.field(default_factory=Counter)
    unconverted: Counter = dataclasses.field(default_factory=Counter)

    @property
    def complete(self) -> bool:
        """True when no peer flow class was left unconverted."""
        return not self.unconverted

    def __str__(self) -> str:
        def listing(counts: Counter) -> str:
            return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))

        line = f"convert: {sum(self.converted.values())} converted"
        if self.converted:
            line += f" ({listing(self.converted)})"
        if self.unconverted:
            line += (f"; {sum(self.unconverted.values())} left as the peer's modules (no converter): "
                     f"{listing(self.unconverted)}")
        else:
            line += "; none left unconverted"
        return line


def convert(peer_module: nn.Module, report: bool = False, **convert_kwargs):
    """Return the flowkern equivalent of ``peer_module`` (same numbers and state-dict keys).

    ``convert_kwargs`` are options passed to the registered converters
    (:func:`register_converter`); the built-in ones take none. The options are

    * ``memory_saving`` (bool, default False): give the model's image containers (normflows'
      ``MultiscaleFlow``, nflows' ``MultiscaleCompositeTransform``, FrEIA's ``GraphINN``) the
      O(1)-memory backward;
    * ``memory_saving_chunk`` (int >= 1 or None): with ``memory_saving=True``, run the forward
      and backward on batch chunks of that many samples (normflows' ``MultiscaleFlow``);
    * any option a registered converter names as a keyword parameter.

    With ``report=True`` return ``(converted, ConvertReport)``. Peer flow classes with no
    converter are kept as the peer's modules (children converted) and listed in the report;
    without ``report=True`` they are named in a ``UserWarning``.

    Raises ``TypeError`` if ``peer_module`` is not an ``nn.Module``, for an unknown option
    (listing the accepted ones) and for an option of the wrong type (``memory_saving`` must be
    a bool: ``"yes"`` or ``1`` raise); ``ValueError`` for an option that cannot apply to the model
    given — one that asks for something (``memory_saving=True``, a ``memory_saving_chunk``, any
    value of a registered converter's option) while no module of the model is converted by a
    converter that takes it (e.g. ``memory_saving=True`` on a FrEIA ``SequenceINN``), or a
    ``memory_saving_chunk`` without ``memory_saving=True``. An option that cannot apply is
    always this error, never a warning or a silent no-op.

    Args:
        peer_module: the peer model (left untouched: it is deep-copied first).
        report: also return the :class:`ConvertReport`.
        convert_kwargs: the options above.

    Example:
        >>> import torch
        >>> import FrEIA.framework as Ff, FrEIA.modules as Fm
        >>> from flowkern.compat import convert
        >>> inn = Ff.SequenceINN(4)
        >>> inn.append(Fm.GLOWCouplingBlock, subnet_constructor=lambda i, o: torch.nn.Linear(i, o))
        >>> model, report = convert(inn, report=True)
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(model(x)[0], inn(x)[0], atol=1e-5), report.complete
        (True, True)
    """
    if not isinstance(peer_module, nn.Module):
        raise TypeError(f"peer_module must be a torch.nn.Module, got {type(peer_module).__name__}")
    report = check_bool("report", report)
    _load_converter_modules()
    _check_options(convert_kwargs)
    replaced: dict[int, nn.Module] = {}
    record = ConvertReport()
    used: set[str] = set()
    root = _convert_owned(copy.deepcopy(peer_module), replaced, record, convert_kwargs, used)
    _check_options_applied(convert_kwargs, used, type(peer_module))
    for module in root.modules():  # FrEIA GraphINN keeps module references in its nodes
        for node in getattr(module, "node_list", None) or ():
            if id(getattr(node, "module", None)) in replaced:
                node.module = replaced[id(node.module)]
    if report:
        return root, record
    if record.unconverted:
        warnings.warn(f"{record} (convert(model, report=True) returns this report)", UserWarning, stacklevel=2)
    return root


# convert()'s built-in options, each with the value that asks for nothing (its default)
_OPTIONS: dict[str, object] = {"memory_saving": False, "memory_saving_chunk": None}


def _converter_options(fn: Callable[..., nn.Module]) -> frozenset[str]:
    """The options a converter takes: the keyword parameters it names after the module
    (``convert_child`` aside)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return frozenset()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the module
    return frozenset(p.name for p in params if p.kind in named) - {"convert_child"}


def _option_targets(option: str) -> list[str]:
    """The classes whose converter (registered or built in) takes ``option``."""
    names = [key if isinstance(key, str) else _qualified(key)
             for key, fn in (*_REGISTRY.items(), *_BUILTIN.items()) if option in _converter_options(fn)]
    return sorted(set(names))


def _check_options(options: dict) -> None:
    """Unknown options raise TypeError (listing the accepted ones), wrong types TypeError, a
    chunk without memory_saving ValueError."""
    accepted = set(_OPTIONS).union(*(_converter_options(fn) for fn in (*_REGISTRY.values(), *_BUILTIN.values())))
    unknown = sorted(set(options) - accepted)
    if unknown:
        def name(u: str) -> str:
            close = difflib.get_close_matches(u, accepted, n=1)
            return f"{u!r} (did you mean {close[0]!r}?)" if close else repr(u)

        raise TypeError(f"convert() got unknown keyword argument(s) {', '.join(map(name, unknown))}; it accepts "
                        f"report, {', '.join(sorted(accepted))} (the options registered converters name "
                        "as keyword parameters included)")
    if "memory_saving" in options:
        check_bool("memory_saving", options["memory_saving"])
    chunk = options.get("memory_saving_chunk")
    if chunk is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, int):
            raise TypeError(f"memory_saving_chunk must be an int or None, got {type(chunk).__name__} {chunk!r}")
        check_int("memory_saving_chunk", chunk, minimum=1)
        if options.get("memory_saving") is not True:
            raise ValueError(f"memory_saving_chunk={chunk} cannot apply without memory_saving=True (it chunks the "
                             "memory-saving forward and backward): pass memory_saving=True too, or drop it")


def _check_options_applied(options: dict, used: set[str], model: type) -> None:
    """An option that asks for something and that no converter taking it ran on: ValueError."""
    for option, value in options.items():
        if option in used or (option in _OPTIONS and value == _OPTIONS[option]):
            continue
        targets = _option_targets(option)
        where = f" (it applies to {', '.join(targets)}: build the model with one of those)" if targets else ""
        raise ValueError(f"convert(): {option}={value!r} cannot apply to this model ({_qualified(model)}): no module "
                         f"in it is converted by a converter that takes {option}{where}; drop {option}")


# the adapter module of each peer package: importing it adds its converters
_ADAPTER_OF = {"FrEIA": "freia", "normflows": "normflows", "nflows": "nflows"}


def _load_converter_modules() -> None:
    """Import the adapter modules of the peers already imported (a model of a peer that is not
    imported cannot exist), so their converters are known; convert() imports no peer."""
    for root, adapter in _ADAPTER_OF.items():
        if root in sys.modules:
            _adapter(adapter)


# Peer modules that are not flow layers (left as they are, not reported): base and target
# distributions, subnets, utilities, nflows' Flow distributions (their transform is converted)
# and FrEIA's GraphINN, whose nodes' modules are converted.
_NOT_FLOW_LAYERS = ("normflows.distributions", "normflows.nets", "normflows.utils", "nflows.distributions",
                    "nflows.nn", "nflows.utils", "nflows.flows", "FrEIA.framework.graph_inn")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _convert_owned(m: nn.Module, replaced: dict[int, nn.Module], record: ConvertReport,
                   kwargs: dict, used: set[str]) -> nn.Module:
    """Convert ``m``, a private copy that may be modified and whose children may be reused;
    ``used`` collects the options a converter that takes them ran with."""
    if id(m) in replaced:
        return replaced[id(m)]

    def conv(child: nn.Module) -> nn.Module:
        return _convert_owned(child, replaced, record, kwargs, used)

    fn = _converter(m)
    if fn is not None:
        new = fn(m, convert_child=conv, **kwargs)
        used.update(_converter_options(fn) & kwargs.keys())
        if not isinstance(new, nn.Module):
            raise TypeError(f"the converter registered for {type(m).__qualname__} returned "
                            f"{type(new).__name__}, not an nn.Module")
    else:
        new = m
        for name, child in list(m._modules.items()):
            if child is not None:
                m._modules[name] = conv(child)
    name = _qualified(type(m))
    if fn is not None:
        record.converted[name] += 1
    elif name.split(".")[0] in _ADAPTER_OF and not name.startswith(_NOT_FLOW_LAYERS):
        record.unconverted[name] += 1
    replaced[id(m)] = new
    return new


def _handout(modules: list[nn.Module]) -> Callable[..., nn.Module]:
    """A subnet constructor handing out the peer's (copied) subnets in creation order."""
    it: Iterator[nn.Module] = iter(modules)
    return lambda *args, **kwargs: next(it)


def _finish(new: nn.Module, peer: nn.Module) -> nn.Module:
    """Match dtype/device and mode, then copy the peer's state (keys must be identical)."""
    dtype, device = params_dtype_device(peer)
    if dtype is not None:
        new.to(device=device, dtype=dtype)
    missing, unexpected = new.load_state_dict(peer.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"cannot convert {type(peer).__module__}.{type(peer).__name__}: state-dict keys differ "
                         f"(missing {missing}, unexpected {unexpected})")
    new.train(peer.training)
    return new


def _build(cls, peer: nn.Module, *args, **kwargs) -> nn.Module:
    with frozen_rng():
        new = cls(*args, **kwargs)
    return _finish(new, peer)
