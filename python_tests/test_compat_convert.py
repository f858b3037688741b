"""convert()'s converter registry: registered classes (by object or dotted name) are converted
with the registered function, which can convert the children it keeps."""

from __future__ import annotations

import importlib

import normflows as nf
import pytest
import torch
from torch import nn

from flowkern.compat import convert, register_converter
from flowkern.compat import normflows as Kn

conv_mod = importlib.import_module("flowkern.compat.convert")  # the module (the package's
# `convert` attribute is the function)

from .compat_support import assert_same, mlp


@pytest.fixture
def registry():
    conv_mod._load_converter_modules()  # the peer modules' registrations are part of what is restored
    saved = dict(conv_mod._REGISTRY)
    yield conv_mod._REGISTRY
    conv_mod._REGISTRY.clear()
    conv_mod._REGISTRY.update(saved)


class Wrapper(nn.Module):
    """A user container the built-in tables do not know."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, z):
        return self.inner(z)


class FlowkernWrapper(Wrapper):
    pass


def _masked_peer(d: int = 7) -> nn.Module:
    b = torch.tensor([1.0 if i % 2 else 0.0 for i in range(d)])
    return nf.flows.MaskedAffineFlow(b, mlp(d, d), mlp(d, d))


@pytest.mark.parametrize("key", ["class", "qualname"])
def test_registered_converter_runs_and_converts_children(registry, key):
    torch.manual_seed(0)
    peer = Wrapper(_masked_peer())
    calls = []

    def fn(module, *, convert_child, **kwargs):
        calls.append(module)
        assert module is not peer  # a private copy
        return FlowkernWrapper(convert_child(module.inner))

    register_converter(Wrapper if key == "class" else f"{Wrapper.__module__}.{Wrapper.__qualname__}", fn)
    ours = convert(peer)
    assert len(calls) == 1
    assert type(ours) is FlowkernWrapper
    assert isinstance(ours.inner, Kn.MaskedAffineFlow)
    assert isinstance(peer.inner, nf.flows.MaskedAffineFlow)  # untouched
    z = torch.randn(5, 7)
    assert_same(peer(z), ours(z))


def test_registered_name_resolves_through_the_peers_public_path(registry):
    # nf.flows.Radial is defined in normflows.flows.radial: the public path resolves to it
    peer = nf.flows.Radial((5,))
    register_converter("normflows.flows.Radial", lambda m, **kw: nn.Identity())
    assert isinstance(convert(nn.Sequential(peer)), nn.Sequential)
    assert isinstance(convert(nn.Sequential(peer))[0], nn.Identity)


def test_registered_converter_overrides_the_built_in_one(registry):
    register_converter(nf.flows.MaskedAffineFlow, lambda m, **kw: nn.Identity())
    assert isinstance(convert(_masked_peer()), nn.Identity)


def test_register_converter_rejects_bad_arguments(registry):
    with pytest.raises(TypeError):
        register_converter("Radial", lambda m, **kw: m)
    with pytest.raises(TypeError):
        register_converter(3, lambda m, **kw: m)
    with pytest.raises(TypeError):
        register_converter(Wrapper, "not callable")
    register_converter(Wrapper, lambda m, **kw: "not a module")
    with pytest.raises(TypeError, match="not an nn.Module"):
        convert(Wrapper(nn.Identity()))


def test_convert_kwargs_reach_registered_converters(registry):
    seen = {}

    def fn(module, *, convert_child, memory_saving=False, other=None, **kwargs):
        seen.update(memory_saving=memory_saving, other=other, **kwargs)
        return FlowkernWrapper(convert_child(module.inner))

    register_converter(Wrapper, fn)
    convert(Wrapper(_masked_peer()), memory_saving=True, other=3)
    assert seen == {"memory_saving": True, "other": 3}
    # an option the converters do not name is unknown; one no converter of the model takes cannot apply
    with pytest.raises(TypeError, match=r"'another'.*accepts report, memory_saving, memory_saving_chunk, other"):
        convert(Wrapper(_masked_peer()), another=3)
    with pytest.raises(ValueError, match="other=3 cannot apply.*Wrapper"):
        convert(_masked_peer(), other=3)


def test_report_lists_unknown_peer_classes_and_keeps_them():
    torch.manual_seed(0)
    maf = nf.flows.MaskedAffineAutoregressive(4, 8, num_blocks=1)
    peer = nf.NormalizingFlow(nf.distributions.DiagGaussian(4), [_masked_peer(4), maf, _masked_peer(4)])
    ours, report = convert(peer, report=True)
    assert type(ours.flows[1]) is nf.flows.MaskedAffineAutoregressive  # kept, not dropped
    assert isinstance(ours.flows[0], Kn.MaskedAffineFlow) and isinstance(ours.flows[2], Kn.MaskedAffineFlow)
    assert report.unconverted == {"normflows.flows.affine.autoregressive.MaskedAffineAutoregressive": 1}
    assert report.converted["normflows.flows.affine.coupling.MaskedAffineFlow"] == 2
    assert report.converted["normflows.core.NormalizingFlow"] == 1
    assert not report.complete
    line = str(report)
    assert "\n" not in line and "MaskedAffineAutoregressive x1" in line and "left as the peer's" in line
    z = torch.randn(6, 4)
    assert_same(peer.log_prob(z), ours.log_prob(z))
    with pytest.warns(UserWarning, match="MaskedAffineAutoregressive"):
        convert(peer)


def test_report_of_a_fully_converted_model_and_non_layers_unlisted():
    peer = nf.NormalizingFlow(nf.distributions.DiagGaussian(7), [_masked_peer()])
    _, report = convert(peer, report=True)
    assert report.complete and "none left unconverted" in str(report)
    assert not any("distributions" in name for name in report.converted)  # the base: not a flow layer


# ---- convert() leaves its argument as it was -----------------------------------------------
def _snapshot(model: nn.Module) -> tuple:
    """What convert() could change: the state (keys and values), the module tree (names and
    types) and, for a FrEIA graph, the modules its nodes hold."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tree = [(name, type(m)) for name, m in model.named_modules()]
    nodes = [id(n.module) for n in getattr(model, "node_list", ())]
    return state, tree, nodes, model.training


def _assert_untouched(model: nn.Module, before: tuple) -> None:
    state, tree, nodes, training = _snapshot(model)
    assert list(state) == list(before[0])
    for k, v in state.items():
        assert torch.equal(v, before[0][k]), k
    assert tree == before[1] and nodes == before[2] and training == before[3]


def _peer_models():
    from .test_compat_image import _freia_inn, _nflows_glow, notebook_glow

    Ff = pytest.importorskip("FrEIA.framework")
    Fm = pytest.importorskip("FrEIA.modules")
    nt = pytest.importorskip("nflows.transforms")
    torch.manual_seed(0)
    inn = Ff.SequenceINN(4)
    inn.append(Fm.ActNorm)
    inn.append(Fm.GLOWCouplingBlock, subnet_constructor=mlp)
    from nflows.nn.nets import ResidualNet

    nfl = nt.CompositeTransform([nt.ActNorm(4), nt.AffineCouplingTransform(
        torch.tensor([0, 0, 1, 1]), lambda i, o: ResidualNet(i, o, hidden_features=8, num_blocks=1))])
    nff = nf.NormalizingFlow(nf.distributions.DiagGaussian(4), [nf.flows.ActNorm(4), nf.flows.AffineCouplingBlock(
        mlp(2, 4))])
    x_img = torch.rand(4, 3, 8, 8)
    return {
        "freia-sequence": (inn, lambda m: m(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))[0]),
        "freia-graph": (_freia_inn(), lambda m: m(x_img)[0]),
        "normflows-flow": (nff, lambda m: m.log_prob(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))),
        "normflows-glow": (notebook_glow(), lambda m: m.log_prob(x_img, None)),
        "nflows-composite": (nfl, lambda m: m(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))[0]),
        "nflows-multiscale": (_nflows_glow(), lambda m: m.log_prob(x_img)),
    }


@pytest.mark.parametrize("name", ["freia-sequence", "freia-graph", "normflows-flow", "normflows-glow",
                                  "nflows-composite", "nflows-multiscale"])
@pytest.mark.parametrize("memory_saving", [False, True])
def test_convert_leaves_the_peer_model_as_it_was(name, memory_saving):
    """The peer model's state_dict, module tree and outputs are the same after convert() as
    before (each peer, vector and image models, with and without memory saving)."""
    model, run = _peer_models()[name]
    if memory_saving and name.endswith(("sequence", "composite", "-flow")):
        pytest.skip("memory_saving applies to the image containers only")
    model.eval()
    with torch.no_grad():
        run(model)  # data-dependent inits, so that the outputs below are comparable
        out = run(model)
    before = _snapshot(model)
    converted = convert(model, memory_saving=memory_saving)
    _assert_untouched(model, before)
    with torch.no_grad():
        torch.testing.assert_close(run(model), out, rtol=0, atol=0)
        torch.testing.assert_close(run(converted), out, rtol=1e-4, atol=1e-3)
