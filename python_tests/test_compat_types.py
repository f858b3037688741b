"""The adapters are the peers' types: each is an instance of its peer's base class when the
peer is installed (a flowkern stand-in otherwise), ``import flowkern`` imports no peer, and
``repr``, ``state_dict`` keys and pickling behave as with the peer's own classes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import nflows.transforms as Nt
import normflows as nf
import pytest
import torch
from torch import nn

import flowkern.compat.freia as Kf
import flowkern.compat.nflows as Kl
import flowkern.compat.normflows as Kn

from .compat_support import mlp

REPO = Path(__file__).resolve().parents[1]
PEERS = ("FrEIA", "normflows", "nflows")


def _freia(lib):
    return {
        "ActNorm": lambda: lib.ActNorm([(5,)]),
        "PermuteRandom": lambda: lib.PermuteRandom([(5,)], seed=1),
        "GLOWCouplingBlock": lambda: lib.GLOWCouplingBlock([(5,)], subnet_constructor=mlp),
        "RNVPCouplingBlock": lambda: lib.RNVPCouplingBlock([(5,)], subnet_constructor=mlp),
        "AffineCouplingOneSided": lambda: lib.AffineCouplingOneSided([(5,)], subnet_constructor=mlp),
        "AllInOneBlock": lambda: lib.AllInOneBlock([(5,)], subnet_constructor=mlp),
        "SequenceINN": lambda: (Ff if lib is Fm else lib).SequenceINN(5),
    }


def _normflows(lib):
    flows = lib if lib is Kn else nf.flows
    b = (torch.arange(5) % 2).float()
    return {
        "AffineConstFlow": lambda: flows.AffineConstFlow((5,)),
        "ActNorm": lambda: flows.ActNorm((5,)),
        "Split": lambda: flows.Split(),
        "Merge": lambda: flows.Merge(),
        "AffineCoupling": lambda: flows.AffineCoupling(mlp(2, 6)),
        "AffineCouplingBlock": lambda: flows.AffineCouplingBlock(mlp(3, 4)),
        "MaskedAffineFlow": lambda: flows.MaskedAffineFlow(b, mlp(5, 5), mlp(5, 5)),
        "Permute": lambda: flows.Permute(5),
        "Invertible1x1Conv": lambda: flows.Invertible1x1Conv(5),
        "GlowBlock": lambda: flows.GlowBlock(4, 8),
        "Squeeze": lambda: flows.Squeeze(),
    }


class _Net(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.lin = nn.Linear(i, o)

    def forward(self, x, context=None):
        return self.lin(x)


def _nflows(lib):
    return {
        "ActNorm": lambda: lib.ActNorm(5),
        "AffineCouplingTransform": lambda: lib.AffineCouplingTransform([0, 1, 0, 1, 1], _Net),
        "Permutation": lambda: lib.Permutation(torch.tensor([2, 0, 1, 4, 3])),
        "RandomPermutation": lambda: lib.RandomPermutation(5),
        "ReversePermutation": lambda: lib.ReversePermutation(5),
        "CompositeTransform": lambda: lib.CompositeTransform([lib.ReversePermutation(5)]),
        "SqueezeTransform": lambda: lib.SqueezeTransform(),
        "MultiscaleCompositeTransform": lambda: lib.MultiscaleCompositeTransform(2),
    }


ADAPTERS = ([("freia", Kf, Fm.InvertibleModule, name, make) for name, make in _freia(Kf).items()]
            + [("normflows", Kn, nf.flows.Flow, name, make) for name, make in _normflows(Kn).items()]
            + [("nflows", Kl, Nt.Transform, name, make) for name, make in _nflows(Kl).items()])
PEER_FACTORIES = {"freia": _freia(Fm), "normflows": _normflows(None), "nflows": _nflows(Nt)}


def test_every_exported_adapter_is_covered_here():
    for peer, module, base in (("freia", Kf, Fm.InvertibleModule), ("normflows", Kn, nf.flows.Flow),
                               ("nflows", Kl, Nt.Transform)):
        assert module.PEER_BASE
        names = {name for p, _, _, name, _ in ADAPTERS if p == peer}
        exported = {n for n in module.__all__ if issubclass(getattr(module, n), base) and getattr(module, n) is not base}
        assert exported == names, exported ^ names


@pytest.mark.parametrize("peer,module,base,name,make", ADAPTERS, ids=[f"{a[0]}-{a[3]}" for a in ADAPTERS])
def test_adapter_is_an_instance_of_its_peers_base(peer, module, base, name, make):
    torch.manual_seed(0)
    ours = make()
    assert isinstance(ours, base) and issubclass(type(ours), base)
    assert type(ours).__module__ == f"flowkern.compat.{peer}"
    torch.manual_seed(0)
    theirs = PEER_FACTORIES[peer][name]()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is type(ours)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ours.state_dict().values()))


def test_the_exported_base_is_the_peers_class():
    assert Kf.InvertibleModule is Fm.InvertibleModule
    assert Kn.Flow is nf.flows.Flow
    assert Kl.Transform is Nt.Transform


def _python(code: str, env_extra: dict | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_import_flowkern_imports_no_peer():
    out = _python("""
        import sys
        import flowkern, flowkern.nn, flowkern.compat
        from flowkern.compat import convert, register_converter
        print(sorted(p for p in ("FrEIA", "normflows", "nflows") if p in sys.modules))
        import flowkern.compat.freia
        print(sorted(p for p in ("FrEIA", "normflows", "nflows") if p in sys.modules))
    """)
    assert out.split("\n")[:2] == ["[]", "['FrEIA']"]


def test_without_the_peers_the_adapters_use_flowkerns_stand_in_bases():
    out = _python("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("FrEIA", "normflows", "nflows"):
                    raise ImportError(f"{name} is blocked")
        sys.meta_path.insert(0, Block())
        import torch
        import flowkern.compat.freia as Kf, flowkern.compat.normflows as Kn, flowkern.compat.nflows as Kl
        assert not (Kf.PEER_BASE or Kn.PEER_BASE or Kl.PEER_BASE)
        assert Kf.InvertibleModule.__module__ == "flowkern.compat.freia"
        assert Kn.Flow.__module__ == "flowkern.compat.normflows" and Kl.Transform.__module__ == "flowkern.compat.nflows"
        torch.manual_seed(0)
        lin = lambda i, o: torch.nn.Linear(i, o)
        x = torch.randn(4, 5)
        block = Kf.AllInOneBlock([(5,)], subnet_constructor=lin)
        (z,), j = block([x])
        assert torch.allclose(block([z], rev=True)[0][0], x, atol=1e-5)
        inn = Kf.SequenceINN(5)
        inn.append(Kf.GLOWCouplingBlock([(5,)], subnet_constructor=lin))
        assert torch.allclose(inn(inn(x)[0], rev=True)[0], x, atol=1e-5)
        maf = Kn.MaskedAffineFlow(torch.tensor([0., 1., 0., 1., 1.]), lin(5, 5), lin(5, 5))
        assert torch.allclose(maf.inverse(maf(x)[0])[0], x, atol=1e-5)
        class Net(torch.nn.Module):
            def __init__(self, i, o):
                super().__init__()
                self.lin = torch.nn.Linear(i, o)
            def forward(self, v, context=None):
                return self.lin(v)
        cpl = Kl.CompositeTransform([Kl.ActNorm(5), Kl.AffineCouplingTransform([0, 1, 1, 0, 1], Net)])
        y, logdet = cpl(x)
        assert torch.allclose(cpl.inverse(y)[0], x, atol=1e-5)
        act = Kl.ActNorm(5)
        assert torch.allclose(act.inverse(act(x)[0])[0], x, atol=1e-5)
        assert not any(p in sys.modules for p in ("FrEIA", "normflows", "nflows"))
        print("ok")
    """)
    assert out.strip().endswith("ok")


@pytest.mark.parametrize("peer,module,base,name,make", ADAPTERS, ids=[f"{a[0]}-{a[3]}" for a in ADAPTERS])
def test_convert_turns_each_peer_class_into_its_adapter(peer, module, base, name, make):
    """convert() covers every class the adapters name (and reports it as converted)."""
    from flowkern.compat import convert

    torch.manual_seed(0)
    theirs = PEER_FACTORIES[peer][name]()
    ours, report = convert(theirs, report=True)
    assert type(ours) is getattr(module, name)
    assert report.complete and sum(report.converted.values()) >= 1
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_convert_turns_normflows_normalizing_flow_into_the_adapter():
    from flowkern.compat import convert

    peer = nf.NormalizingFlow(nf.distributions.DiagGaussian(5), [nf.flows.Permute(5)])
    ours, report = convert(peer, report=True)
    assert type(ours) is Kn.NormalizingFlow and isinstance(ours.flows[0], Kn.Permute) and report.complete
