"""Converting peers' multi-scale image flows: normflows' Glow (the architecture of its
``examples/glow.ipynb``), nflows' MultiscaleCompositeTransform and a FrEIA image GraphINN give
the same log-likelihood (float32 rounding) and gradients, keep their state-dict keys, and train
with memory_saving=True saving only the latents."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import flowkern.compat.freia as Kf
import flowkern.compat.nflows as Kl
import flowkern.compat.normflows as Kn
from flowkern.compat.normflows.core import _convert_multiscale
from flowkern.check import saved_bytes
from flowkern.compat import convert
from flowkern.nn import Squeeze


nf = pytest.importorskip("normflows")
D64 = torch.float64


def _perturb(model: nn.Module, scale: float = 0.05, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


# ---- normflows -----------------------------------------------------------------------------
def notebook_glow(L=2, K=2, hidden=8, shape=(3, 8, 8), num_classes=None, seed=0, **block_kw):
    """normflows' examples/glow.ipynb model (L levels of K GlowBlocks and a Squeeze, Merge,
    class-conditional diagonal Gaussian bases), at a small size."""
    torch.manual_seed(seed)
    C = shape[0]
    q0, merges, flows = [], [], []
    for i in range(L):
        level = [nf.flows.GlowBlock(C * 2 ** (L + 1 - i), hidden, split_mode="channel", scale=True, **block_kw)
                 for _ in range(K)]
        flows.append(level + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (C * 2 ** (L - i), shape[1] // 2 ** (L - i), shape[2] // 2 ** (L - i))
        else:
            latent = (C * 2 ** (L + 1), shape[1] // 2 ** L, shape[2] // 2 ** L)
        q0.append(nf.distributions.ClassCondDiagGaussian(latent, num_classes) if num_classes
                  else nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=bool(num_classes))


def _nf_pair(dtype=D64, num_classes=3, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normflows' LU init calls the deprecated torch.lu
        peer = notebook_glow(num_classes=num_classes, **kw).to(dtype)
    x = torch.rand(6, 3, 8, 8, dtype=dtype)
    y = torch.arange(6) % 3 if num_classes else None
    peer.log_prob(x, y)  # the actnorms' data-dependent init
    _perturb(peer)
    fk, report = convert(peer, report=True)
    return peer, fk, x, y, report


def test_normflows_glow_converts_completely_with_the_same_keys():
    peer, fk, x, y, report = _nf_pair()
    assert report.complete, str(report)
    assert type(fk) is Kn.MultiscaleFlow
    assert all(type(b) is Kn.GlowBlock for b in fk.flows[0][:-1]) and type(fk.flows[0][-1]) is Kn.Squeeze
    assert list(fk.state_dict()) == list(peer.state_dict())
    for k, v in peer.state_dict().items():
        assert torch.equal(fk.state_dict()[k], v), k


@pytest.mark.parametrize("dtype,tol", [(D64, 1e-10), (torch.float32, 2e-3)])
@pytest.mark.parametrize("classes", [None, 3])
def test_normflows_glow_same_log_likelihood(dtype, tol, classes):
    peer, fk, x, y, _ = _nf_pair(dtype, classes)
    a, b = peer.log_prob(x, y), fk.log_prob(x, y)
    assert a.dtype == b.dtype == dtype
    torch.testing.assert_close(b, a, rtol=0, atol=tol * x[0].numel() ** 0.5)
    za, lda = peer.inverse_and_log_det(x)
    zb, ldb = fk.inverse_and_log_det(x)
    for u, v in zip(za, zb):
        torch.testing.assert_close(v, u, rtol=tol, atol=tol)
    with torch.no_grad():
        back, ld_f = fk.forward_and_log_det(zb)
    torch.testing.assert_close(back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(ld_f, -ldb, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("block_kw", [dict(), dict(scale_map="exp"), dict(scale_map="sigmoid_inv"),
                                      dict(use_lu=False), dict(net_actnorm=True)])
def test_normflows_glow_block_variants(block_kw):
    peer, fk, x, y, report = _nf_pair(num_classes=None, **block_kw)
    assert report.complete
    torch.testing.assert_close(fk.log_prob(x), peer.log_prob(x, None), rtol=0, atol=1e-9)
    assert fk.flows[0][0].fusable


@pytest.mark.parametrize("memory_saving", [False, True])
def test_normflows_glow_same_gradients(memory_saving):
    peer, fk, x, y, _ = _nf_pair()
    fk.memory_saving = memory_saving
    for m in (peer, fk):
        m.zero_grad()
        m.forward_kld(x, y).backward()
    for (n, p), q in zip(peer.named_parameters(), fk.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-10, msg=n)


def test_normflows_training_steps_match():
    peer, fk, x, y, _ = _nf_pair()
    fk.memory_saving = True
    for m in (peer, fk):
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        for _ in range(3):
            opt.zero_grad()
            m.forward_kld(x, y).backward()
            opt.step()
    for (n, p), q in zip(peer.named_parameters(), fk.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-8, atol=1e-9, msg=n)


def test_normflows_uninitialised_actnorm_initialises_like_the_peer():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = notebook_glow(num_classes=None).double()
    fk = convert(peer)
    x = torch.rand(16, 3, 8, 8, dtype=D64) * 2
    torch.testing.assert_close(fk.log_prob(x), peer.log_prob(x, None), rtol=0, atol=1e-9)
    torch.testing.assert_close(fk.flows[1][0].flows[2].s, peer.flows[1][0].flows[2].s)


def test_normflows_memory_saving_saves_only_the_latents_constant_in_depth():
    x = torch.rand(2, 3, 8, 8)
    got = {}
    for K in (1, 2, 4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer = notebook_glow(K=K, num_classes=None)
        peer.log_prob(x, None)
        fk = convert(peer)
        fk.memory_saving = True
        got[K] = saved_bytes(lambda: fk.forward_kld(x))
        got["peer", K] = saved_bytes(lambda: peer.forward_kld(x))
    # the standardised latents only (the Gaussian bases run inside the program)
    assert got[1] == got[2] == got[4] == x.numel() * 4
    assert got["peer", 1] < got["peer", 2] < got["peer", 4]
    assert got["peer", 4] > 20 * got[4]


def test_convert_memory_saving_argument():
    """convert(model, memory_saving=True) where convert passes keyword arguments to the
    registered converters (flowkern.compat.convert); the converters take it in any case."""
    peer, _, x, y, _ = _nf_pair()
    direct = _convert_multiscale(_copy(peer), convert_child=lambda m: convert(m), memory_saving=True)
    assert direct.memory_saving
    if "memory_saving" not in inspect.signature(convert).parameters and not any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(convert).parameters.values()):
        pytest.skip("flowkern.compat.convert does not pass keyword arguments to converters yet")
    fk = convert(peer, memory_saving=True)
    assert fk.memory_saving
    saved = saved_bytes(lambda: fk.forward_kld(x, y))
    assert saved == x.numel() * x.element_size() + y.numel() * y.element_size()


def _copy(m):
    import copy

    return copy.deepcopy(m)


def test_normflows_sampling_with_temperature():
    peer, fk, x, y, _ = _nf_pair()
    torch.manual_seed(0)
    s, log_q = fk.sample(4, torch.tensor([0, 1, 2, 0]), temperature=0.5)
    assert s.shape == (4, 3, 8, 8) and torch.isfinite(s).all()
    assert all(q.temperature is None for q in fk.q0)  # reset after sampling
    # the sample's log q is the model's density of it (temperature 1)
    torch.manual_seed(1)
    s1, lq1 = fk.sample(3, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(lq1, fk.log_prob(s1, torch.tensor([0, 1, 2])), rtol=1e-8, atol=1e-8)


def test_compat_glow_block_constructor_matches_normflows():
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = nf.flows.GlowBlock(6, 8, split_mode="channel", net_actnorm=True).double()
    ours = Kn.GlowBlock(6, 8, split_mode="channel", net_actnorm=True).double()
    assert list(ours.state_dict()) == list(peer.state_dict())
    x = torch.randn(4, 6, 4, 4, dtype=D64)
    peer.inverse(x)  # init
    ours.load_state_dict(peer.state_dict())
    _perturb(peer)
    ours.load_state_dict(peer.state_dict())
    for a, b in zip(peer.inverse(x), ours.inverse(x)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    for a, b in zip(peer(x), ours(x)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


# ---- squeeze orders agree --------------------------------------------------------------------
def test_peer_squeezes_are_glow_order():
    x = torch.randn(2, 3, 6, 4)
    want = Squeeze("glow")(x)[0]
    assert torch.equal(nf.flows.Squeeze().inverse(x)[0], want)
    nflows_t = pytest.importorskip("nflows.transforms")
    assert torch.equal(nflows_t.SqueezeTransform()(x)[0], want)
    Fm = pytest.importorskip("FrEIA.modules")
    assert torch.equal(Fm.IRevNetDownsampling([(3, 6, 4)])((x,))[0][0], want)
    assert torch.equal(Kf.IRevNetDownsampling([(3, 6, 4)])((x,))[0][0], want)


# ---- nflows ------------------------------------------------------------------------------------
def _nflows_glow(levels=2, steps=2, hidden=8, shape=(3, 8, 8)):
    transforms = pytest.importorskip("nflows.transforms")
    from nflows import distributions, flows
    from nflows.nn.nets import ConvResidualNet
    from nflows.utils import create_mid_split_binary_mask

    torch.manual_seed(0)
    mct = transforms.MultiscaleCompositeTransform(num_transforms=levels)
    cur = shape
    for _ in range(levels):
        c = cur[0] * 4
        layers = [transforms.SqueezeTransform()]
        for _ in range(steps):
            layers += [transforms.ActNorm(c), transforms.OneByOneConvolution(c),
                       transforms.AffineCouplingTransform(
                           mask=create_mid_split_binary_mask(c),
                           transform_net_create_fn=lambda i, o: ConvResidualNet(i, o, hidden_channels=hidden,
                                                                                num_blocks=1))]
        cur = mct.add_transform(transforms.CompositeTransform(layers), (c, cur[1] // 2, cur[2] // 2))
    return flows.Flow(mct, distributions.StandardNormal([int(np.prod(shape))]))


@pytest.mark.parametrize("memory_saving", [False, True])
def test_nflows_multiscale_same_log_likelihood_and_gradients(memory_saving):
    peer = _nflows_glow().double()
    x = torch.rand(5, 3, 8, 8, dtype=D64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.log_prob(x)  # init
        fk = convert(peer)
    assert type(fk._transform) is Kl.MultiscaleCompositeTransform
    assert list(fk.state_dict()) == list(peer.state_dict())
    fk._transform.memory_saving = memory_saving
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(fk.log_prob(x), peer.log_prob(x), rtol=0, atol=1e-9)
        for m in (peer, fk):
            m.zero_grad()
            (-m.log_prob(x).mean()).backward()
    for (n, p), q in zip(peer.named_parameters(), fk.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-10, msg=n)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, ld = fk._transform(x)
        back, ld_inv = fk._transform.inverse(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ld_inv, -ld)


def test_nflows_memory_saving_saved_bytes_constant_in_depth():
    x = torch.rand(2, 3, 8, 8)
    got = []
    for steps in (1, 3):
        peer = _nflows_glow(steps=steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer.log_prob(x)
            fk = convert(peer)
            fk._transform.memory_saving = True
            got.append(saved_bytes(lambda: -fk.log_prob(x).mean()))
    assert got[0] == got[1] <= 2 * x.numel() * 4


# ---- FrEIA ---------------------------------------------------------------------------------------
def _freia_inn(conditional=False, depth=1):
    Ff = pytest.importorskip("FrEIA.framework")
    Fm = pytest.importorskip("FrEIA.modules")

    def conv(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, cout, 3, padding=1))

    torch.manual_seed(0)
    conds = [Ff.ConditionNode(2, 4, 4, name="c")] if conditional else []
    nodes = [Ff.InputNode(3, 8, 8, name="in"), ]
    nodes.append(Ff.Node(nodes[-1], Fm.IRevNetDownsampling, {}))
    for k in range(depth):
        nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock, {"subnet_constructor": conv, "clamp": 1.2},
                             conditions=conds))
        nodes.append(Ff.Node(nodes[-1], Fm.PermuteRandom, {"seed": k}))
    split = Ff.Node(nodes[-1], Fm.Split, {"section_sizes": [6, 6], "dim": 0})
    side = Ff.Node(split.out1, Fm.Flatten, {})
    nodes += [split, side, Ff.Node(split.out0, Fm.HaarDownsampling, {})]
    for _ in range(depth):
        nodes.append(Ff.Node(nodes[-1], Fm.AllInOneBlock, {"subnet_constructor": conv, "affine_clamping": 1.0}))
    nodes.append(Ff.Node(nodes[-1], Fm.Flatten, {}))
    cat = Ff.Node([nodes[-1].out0, side.out0], Fm.Concat, {"dim": 0})
    nodes += [cat, Ff.OutputNode(cat)]
    return Ff.GraphINN(nodes + conds)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("memory_saving", [False, True])
def test_freia_graph_same_outputs_and_gradients(conditional, memory_saving):
    peer = _perturb(_freia_inn(conditional).double())
    x = torch.rand(4, 3, 8, 8, dtype=D64)
    c = [torch.randn(4, 2, 4, 4, dtype=D64)] if conditional else None
    peer(x, c)
    fk, report = convert(peer, report=True)
    assert report.complete, str(report) and type(fk) is Kf.GraphINN
    assert list(fk.state_dict()) == list(peer.state_dict())
    fk.memory_saving = memory_saving
    (za, ja), (zb, jb) = peer(x, c), fk(x, c)
    torch.testing.assert_close(zb, za, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jb, ja, rtol=1e-12, atol=1e-10)
    cl = [c[0].clone().requires_grad_(True)] if conditional else None
    grads = []
    for m in (peer, fk):
        m.zero_grad()
        z, j = m(x, cl)
        (0.5 * z.pow(2).sum(1) - j).mean().backward()
        grads.append([p.grad.clone() for p in m.parameters() if p.requires_grad]
                     + ([cl[0].grad.clone()] if conditional else []))
        if conditional:
            cl[0].grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)
    with torch.no_grad():
        back, j_rev = fk(zb, c, rev=True)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(j_rev, -jb)


def test_freia_graph_memory_saving_bytes_constant_and_intermediates():
    x = torch.rand(2, 3, 8, 8)
    got = []
    for depth in (1, 3):
        peer = _freia_inn(depth=depth)
        peer(x)
        fk = convert(peer)
        fk.memory_saving = True

        def loss():
            z, j = fk(x)
            return (0.5 * z.pow(2).sum(1) - j).mean()

        got.append(saved_bytes(loss))
    assert got[0] == got[1] == x.numel() * 4
    outs, jacs = fk(x, intermediate_outputs=True)
    ref_outs, _ = peer(x, intermediate_outputs=True)
    torch.testing.assert_close(outs[fk.out_nodes[0], 0], ref_outs[peer.out_nodes[0], 0])
    assert len(jacs) == len([n for n in fk.node_list if n.module is not None])


def test_freia_haar_order_by_wavelet_and_rebalance():
    Fm = pytest.importorskip("FrEIA.modules")
    peer = Fm.HaarDownsampling([(3, 4, 6)], order_by_wavelet=True, rebalance=0.5)
    ours = convert(peer)
    assert type(ours) is Kf.HaarDownsampling
    x = torch.randn(2, 3, 4, 6)
    (a,), ja = peer((x,))
    (b,), jb = ours((x,))
    torch.testing.assert_close(b, a)
    assert ja == pytest.approx(jb)
    (back,), _ = ours((b,), rev=True)
    torch.testing.assert_close(back, x, rtol=1e-6, atol=1e-6)
