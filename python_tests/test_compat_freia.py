"""flowkern.compat.freia against FrEIA 0.2 itself: same numbers, gradients and state-dict keys."""

from __future__ import annotations

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import pytest
import torch

import flowkern.compat.freia as Km
from flowkern.compat import convert

from .compat_support import assert_same, assert_same_grads, conv_net, mlp, nd_net

BLOCKS = [
    ("GLOWCouplingBlock", {}),
    ("GLOWCouplingBlock", dict(clamp_activation="TANH", clamp=1.5, split_len=2)),
    ("RNVPCouplingBlock", dict(clamp_activation="SIGMOID", clamp=0.7)),
    ("RNVPCouplingBlock", dict(clamp_activation=lambda u: u / (1 + u.abs()))),
    ("AffineCouplingOneSided", dict(split_len=0.6)),
    ("AllInOneBlock", {}),
    ("AllInOneBlock", dict(gin_block=True, affine_clamping=1.3)),
    ("AllInOneBlock", dict(global_affine_type="SIGMOID", reverse_permutation=True)),
    ("AllInOneBlock", dict(global_affine_type="EXP", learned_householder_permutation=2)),
]
SHAPES = {"vector": (5,), "image": (3, 5, 3)}


def _pair(cls_name: str, shape, cond: bool, kwargs: dict, seed: int = 0):
    """The FrEIA block and the flowkern one, built from the same RNG state (same weights)."""
    dims_c = [(2, *shape[1:])] if cond else []
    sub = mlp if len(shape) == 1 else conv_net
    blocks = []
    for lib in (Fm, Km):
        np.random.seed(seed)
        torch.manual_seed(seed)
        blocks.append(getattr(lib, cls_name)([shape], dims_c, subnet_constructor=sub, **kwargs))
    peer, ours = blocks
    if cls_name == "AllInOneBlock":  # move the global affine away from its init
        with torch.no_grad():
            peer.global_scale.add_(0.3 * torch.randn_like(peer.global_scale))
            peer.global_offset.add_(0.5 * torch.randn_like(peer.global_offset))
        ours.load_state_dict(peer.state_dict())
    return peer, ours


@pytest.mark.parametrize("shape", list(SHAPES), ids=str)
@pytest.mark.parametrize("cond", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("cls_name,kwargs", BLOCKS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BLOCKS)])
def test_block_matches_freia(cls_name, kwargs, shape, cond):
    shape = SHAPES[shape]
    peer, ours = _pair(cls_name, shape, cond, kwargs)
    assert list(peer.state_dict()) == list(ours.state_dict())
    assert ours.output_dims([shape]) == peer.output_dims([shape])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, *shape, generator=g)
    c = [torch.randn(4, 2, *shape[1:], generator=g)] if cond else []
    (yp,), jp = peer([x], c)
    (yo,), jo = ours([x], c)
    assert (yp - x).abs().max() > 1e-2  # not the identity
    assert_same((yp, jp), (yo, jo))
    (xp,), jrp = peer([yp], c, rev=True)
    (xo,), jro = ours([yo], c, rev=True)
    assert_same((xp, jrp), (xo, jro))
    torch.testing.assert_close(xo, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(jro, -jo, atol=1e-5, rtol=1e-5)
    inputs = [x] + c
    assert_same_grads(peer, ours, lambda x, *c: peer([x], list(c)), lambda x, *c: ours([x], list(c)), inputs)
    assert_same_grads(peer, ours, lambda y, *c: peer([y], list(c), rev=True),
                      lambda y, *c: ours([y], list(c), rev=True), [yp.detach()] + c)


# (class, input shape, condition channel counts, kwargs): every option, odd and single
# channels, 1D-4D data, several conditions, degenerate splits
CASES = [
    ("GLOWCouplingBlock", (7,), [2], dict(split_len=0)),  # all channels transformed from the condition
    ("GLOWCouplingBlock", (7,), [3], dict(split_len=7, clamp_activation="TANH")),
    ("RNVPCouplingBlock", (5, 3), [2, 1], dict(split_len=1.0, clamp_activation="SIGMOID")),
    ("RNVPCouplingBlock", (1,), [2], {}),  # one channel: round(0.5) = 0 passive channels
    ("GLOWCouplingBlock", (3, 3, 5), [2, 1], dict(clamp_activation=lambda u: u / (1 + u.abs()), clamp=1.7)),
    ("AffineCouplingOneSided", (7,), [1], dict(clamp_activation=torch.sin, split_len=3)),
    ("AffineCouplingOneSided", (4,), [], dict(split_len=4)),  # the identity, as in FrEIA
    ("AffineCouplingOneSided", (5, 2), [3], dict(split_len=0.0)),
    ("GLOWCouplingBlock", (5,), [2], dict(clamp_activation="TANH", clamp=-0.5)),
    ("AllInOneBlock", (1,), [], {}),
    ("AllInOneBlock", (1, 4, 3), [2], dict(global_affine_type="EXP", reverse_permutation=True)),
    ("AllInOneBlock", (7,), [3, 2], dict(permute_soft=True, global_affine_type="SIGMOID")),
    ("AllInOneBlock", (5,), [], dict(permute_soft=True, learned_householder_permutation=3,
                                     reverse_permutation=True, global_affine_init=0.7)),
    ("AllInOneBlock", (3, 7), [2], dict(gin_block=True, global_affine_type="EXP", permute_soft=True)),
    ("AllInOneBlock", (2, 3, 3, 3), [1], dict(learned_householder_permutation=2, affine_clamping=0.8)),
    ("AllInOneBlock", (5,), [], dict(affine_clamping=0.0, global_affine_type="SOFTPLUS", global_affine_init=1.3)),
    ("AllInOneBlock", (6, 3), [1], dict(gin_block=True, affine_clamping=-1.0)),
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda i: f"{i}-{CASES[i][0]}")
def test_every_input_freia_accepts(case):
    """FrEIA's numbers, gradients and state-dict keys for each option FrEIA offers."""
    cls_name, shape, conds, kwargs = CASES[case]
    dims_c = [(n, *shape[1:]) for n in conds]
    blocks = []
    for lib in (Fm, Km):
        np.random.seed(4)
        torch.manual_seed(4)
        blocks.append(getattr(lib, cls_name)([shape], dims_c, subnet_constructor=nd_net(len(shape) - 1), **kwargs))
    peer, ours = blocks
    if cls_name == "AllInOneBlock":
        with torch.no_grad():
            peer.global_offset.add_(0.5 * torch.randn_like(peer.global_offset))
            peer.global_scale.add_(0.3 * torch.randn_like(peer.global_scale))
        ours.load_state_dict(peer.state_dict())
    assert list(peer.state_dict()) == list(ours.state_dict())
    assert repr(ours).split("(")[0] == repr(peer).split("(")[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *shape, generator=g)
    c = [torch.randn(3, *d, generator=g) for d in dims_c]
    assert_same(peer([x], c), ours([x], c))
    (y,), _ = peer([x], c)
    assert_same(peer([y], c, rev=True), ours([y], c, rev=True))
    assert_same_grads(peer, ours, lambda x, *c: peer([x], list(c)), lambda x, *c: ours([x], list(c)), [x] + c)


def test_actnorm_and_permute_match_freia():
    shape = (4, 3, 2)
    x = 2.0 + 3.0 * torch.randn(6, *shape)
    peer, ours = Fm.ActNorm([shape]), Km.ActNorm([shape])
    (yp,), jp = peer([x])
    (yo,), jo = ours([x])
    assert_same((yp, jp), (yo, jo))
    assert yo.transpose(0, 1).reshape(4, -1).mean(1).abs().max() < 1e-5  # data-dependent init
    assert_same(peer([yp], rev=True), ours([yo], rev=True))
    assert_same_grads(peer, ours, lambda x: peer([x]), lambda x: ours([x]), [x])
    pp, po = Fm.PermuteRandom([shape], seed=3), Km.PermuteRandom([shape], seed=3)
    assert torch.equal(pp.perm, po.perm) and list(pp.state_dict()) == list(po.state_dict())
    assert torch.equal(pp([x])[0][0], po([x])[0][0])
    assert torch.equal(po(po([x])[0], rev=True)[0][0], x)


def test_actnorm_load_does_not_reinit_and_constant_channel_is_finite():
    x = torch.randn(8, 3)
    trained = Km.ActNorm([(3,)])
    trained([x])
    fresh = Km.ActNorm([(3,)])
    fresh.load_state_dict(trained.state_dict())
    assert not fresh.init_on_next_batch
    torch.testing.assert_close(fresh([5 * x])[0][0], trained([5 * x])[0][0])
    const = torch.cat([torch.randn(8, 2), torch.ones(8, 1)], 1)
    with pytest.warns(UserWarning, match=r"channels \[2\] have \(near-\)zero spread"):
        (y,), jac = Km.ActNorm([(3,)])([const])
    assert torch.isfinite(y).all() and torch.isfinite(jac).all()


def _freia_model(n_blocks: int = 8, dim: int = 6, cond_dim: int = 3):
    np.random.seed(0)
    torch.manual_seed(0)
    inn = Ff.SequenceINN(dim)
    kinds = [(Fm.ActNorm, {}), (Fm.GLOWCouplingBlock, dict(clamp_activation="ATAN")),
             (Fm.PermuteRandom, {}), (Fm.AllInOneBlock, {}), (Fm.ActNorm, {}),
             (Fm.RNVPCouplingBlock, dict(clamp_activation="TANH")), (Fm.ActNorm, {}),
             (Fm.AffineCouplingOneSided, {})]
    for i in range(n_blocks):
        cls, kw = kinds[i % len(kinds)]
        if cls in (Fm.ActNorm, Fm.PermuteRandom):
            inn.append(cls, **kw)
        else:
            inn.append(cls, cond=0, cond_shape=(cond_dim,), subnet_constructor=mlp, **kw)
    return inn


def _log_lik(z, log_jac):
    return -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * np.log(2 * np.pi) + log_jac


def test_sequence_inn_converted_end_to_end():
    peer = _freia_model()
    g = torch.Generator().manual_seed(2)
    x, c = 1.5 + 2 * torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)
    peer(x, c=[c])  # data-dependent ActNorm init
    ours = convert(peer)
    assert isinstance(ours, Km.SequenceINN) and type(peer) is Ff.SequenceINN  # peer left untouched
    assert list(peer.state_dict()) == list(ours.state_dict())
    zp, jp = peer(x, c=[c])
    zo, jo = ours(x, c=[c])
    assert_same((zp, _log_lik(zp, jp)), (zo, _log_lik(zo, jo)))
    xo, jro = ours(zo, c=[c], rev=True)
    torch.testing.assert_close(xo, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(jro, -jo, atol=1e-4, rtol=1e-4)
    assert_same_grads(peer, ours, lambda x, c: _log_lik(*peer(x, c=[c])), lambda x, c: _log_lik(*ours(x, c=[c])),
                      [x, c])


def test_flowkern_modules_inside_freia_containers_and_graph_convert():
    np.random.seed(0)
    torch.manual_seed(0)
    seq = Ff.SequenceINN(4)
    seq.append(Km.ActNorm)
    seq.append(Km.GLOWCouplingBlock, subnet_constructor=mlp)
    seq.append(Km.PermuteRandom, seed=1)
    x = torch.randn(5, 4)
    z, j = seq(x)
    torch.testing.assert_close(seq(z, rev=True)[0], x, atol=1e-5, rtol=1e-5)
    inp = Ff.InputNode(4, name="in")
    n1 = Ff.Node(inp, Fm.GLOWCouplingBlock, {"subnet_constructor": mlp})
    n2 = Ff.Node(n1, Fm.PermuteRandom, {"seed": 0})
    graph = Ff.GraphINN([inp, n1, n2, Ff.OutputNode(n2)])
    converted = convert(graph)
    assert isinstance(converted.node_list[1].module, Km.GLOWCouplingBlock)
    assert converted.node_list[1].module is converted.module_list[0]
    assert_same(graph(x), converted(x))


@pytest.mark.parametrize("lib", [Fm, Km], ids=["FrEIA", "flowkern"])
def test_bad_arguments_raise_the_peers_error_kinds(lib):
    """The same exception types as FrEIA (flowkern's assert-equivalents are also ValueErrors)."""
    with pytest.raises(ValueError, match="split_len"):
        lib.GLOWCouplingBlock([(4,)], subnet_constructor=mlp, split_len=5)
    with pytest.raises(ValueError, match="clamp activation"):
        lib.GLOWCouplingBlock([(4,)], subnet_constructor=mlp, clamp_activation="RELU")
    with pytest.raises(TypeError):
        lib.RNVPCouplingBlock([(4,)])
    with pytest.raises(AssertionError):
        lib.AllInOneBlock([(4, 3, 3)], [(2, 5, 5)], subnet_constructor=conv_net)
    with pytest.raises(ValueError, match="Global affine"):
        lib.AllInOneBlock([(4,)], subnet_constructor=mlp, global_affine_type="RELU")


def test_assert_equivalents_are_value_errors_too():
    with pytest.raises(AssertionError):  # FrEIA's `if init_data:` fails on tensors before its assert
        Km.ActNorm([(3,)], init_data=torch.randn(4, 5))
    with pytest.raises(ValueError, match="dims_c"):
        Km.AllInOneBlock([(4, 3, 3)], [(2, 5, 5)], subnet_constructor=conv_net)
    with pytest.raises(ValueError, match="init data"):
        Km.ActNorm([(3,)], init_data=torch.randn(4, 5))


def test_compile_converted_sequence_inn():
    peer = _freia_model(n_blocks=4)
    x, c = torch.randn(8, 6), torch.randn(8, 3)
    peer(x, c=[c])
    ours = convert(peer)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    z, j = compiled(x, c=[c])
    zp, jp = peer(x, c=[c])
    assert_same((zp, jp), (z, j))
