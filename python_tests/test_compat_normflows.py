"""flowkern.compat.normflows against normflows 1.7.3 itself: same numbers, gradients and state-dict keys."""

from __future__ import annotations

import copy

import normflows as nf
import pytest
import torch
from torch import nn

import flowkern.compat.normflows as K
from flowkern.compat import convert

from .compat_support import assert_same, assert_same_grads, conv_net, mlp

SHAPES = {"vector": (7,), "image": (3, 4, 6)}


def _param_map(c_in: int, c_out: int, image: bool) -> nn.Module:
    torch.manual_seed(0)
    return conv_net(c_in, c_out) if image else mlp(c_in, c_out)


def _coupling_block(shape, mode: str, scale_map: str):
    C = shape[0]
    image = len(shape) > 1
    if "checkerboard" in mode:
        c_in, c_out = (C, 2 * C) if image else (C // 2, C)
    elif mode == "channel":  # z1 = first chunk, ceil(C/2) channels
        c_in, c_out = (C + 1) // 2, 2 * (C // 2)
    else:
        c_in, c_out = C // 2, 2 * ((C + 1) // 2)
    pm = _param_map(c_in, c_out, image)
    return nf.flows.AffineCouplingBlock(pm, True, scale_map, mode), \
        K.AffineCouplingBlock(copy.deepcopy(pm), True, scale_map, mode)


def _check_flow(peer, ours, x, atol=2e-5):
    assert list(peer.state_dict()) == list(ours.state_dict())
    zp, ldp = peer(x)
    zo, ldo = ours(x)
    assert (zp - x).abs().max() > 1e-2
    assert_same((zp, ldp), (zo, ldo), atol=atol, rtol=atol)
    assert_same(peer.inverse(zp), ours.inverse(zo), atol=atol, rtol=atol)
    torch.testing.assert_close(ours.inverse(zo)[0], x, atol=1e-5, rtol=1e-5)
    assert_same_grads(peer, ours, peer, ours, [x])
    assert_same_grads(peer, ours, peer.inverse, ours.inverse, [zp.detach()])


@pytest.mark.parametrize("scale_map", ["exp", "sigmoid", "sigmoid_inv"])
@pytest.mark.parametrize("mode", ["channel", "channel_inv", "checkerboard", "checkerboard_inv"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_affine_coupling_block_matches(shape, mode, scale_map):
    shape = SHAPES[shape]
    if "checkerboard" in mode and len(shape) == 1:
        shape = (8,)  # checkerboard needs an even last dimension
    peer, ours = _coupling_block(shape, mode, scale_map)
    _check_flow(peer, ours, torch.randn(5, *shape, generator=torch.Generator().manual_seed(1)))


def test_affine_coupling_pair_and_additive():
    pm = _param_map(3, 8, False)
    peer, ours = nf.flows.AffineCoupling(pm, True, "exp"), K.AffineCoupling(copy.deepcopy(pm), True, "exp")
    z = [torch.randn(4, 3), torch.randn(4, 4)]
    assert_same(peer(z), ours(z))
    assert_same(peer.inverse(z), ours.inverse(z))
    add = _param_map(3, 4, False)
    assert_same(nf.flows.AffineCoupling(add, False)(z), K.AffineCoupling(copy.deepcopy(add), False)(z))


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_masked_affine_flow_matches(shape):
    n = torch.Size(shape).numel()
    b = (torch.arange(n) % 3 == 0).float().reshape(shape)
    torch.manual_seed(0)
    s = nn.Sequential(nn.Flatten(), mlp(n, n), nn.Tanh(), nn.Unflatten(1, shape))
    t = nn.Sequential(nn.Flatten(), mlp(n, n), nn.Unflatten(1, shape))
    peer = nf.flows.MaskedAffineFlow(b, t, s)
    ours = K.MaskedAffineFlow(b, copy.deepcopy(t), copy.deepcopy(s))
    _check_flow(peer, ours, torch.randn(5, *shape))
    with pytest.raises(ValueError, match="binary"):
        K.MaskedAffineFlow(0.5 * b, t, s)


def test_actnorm_permute_and_1x1conv_match():
    x = 1 + 2 * torch.randn(6, 4, 3, 3)
    for make in (lambda m: m.ActNorm((4, 1, 1)), lambda m: m.Permute(4), lambda m: m.Permute(5, mode="swap"),
                 lambda m: m.Invertible1x1Conv(4), lambda m: m.Invertible1x1Conv(4, use_lu=True)):
        torch.manual_seed(3)
        peer = make(nf.flows)
        torch.manual_seed(3)
        ours = make(K)
        assert list(peer.state_dict()) == list(ours.state_dict())
        inp = torch.randn(6, 5, 3, 3) if getattr(ours, "num_channels", 4) == 5 else x
        assert_same(peer(inp), ours(inp))
        assert_same(peer.inverse(inp), ours.inverse(inp))


def _glow_model(dim: int = 6, n_blocks: int = 3):
    torch.manual_seed(0)
    flows = []
    for i in range(n_blocks):
        flows.append(nf.flows.ActNorm(dim))
        flows.append(nf.flows.AffineCouplingBlock(mlp(dim // 2, dim), True, ["exp", "sigmoid"][i % 2]))
        flows.append(nf.flows.Permute(dim))
    flows.append(nf.flows.MaskedAffineFlow((torch.arange(dim) % 2).float(), mlp(dim, dim), mlp(dim, dim)))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), flows)


def test_normalizing_flow_converted_end_to_end():
    peer = _glow_model()
    x = 0.5 + 2 * torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    peer.log_prob(x)  # data-dependent ActNorm init (inverse direction)
    ours = convert(peer)
    assert isinstance(ours, K.NormalizingFlow) and isinstance(ours.flows[1], K.AffineCouplingBlock)
    assert ours._foldable(0, 1)  # the ActNorm runs inside the coupling op
    assert list(peer.state_dict()) == list(ours.state_dict())
    assert_same(peer.log_prob(x), ours.log_prob(x), atol=5e-5, rtol=5e-5)
    assert_same(peer.forward_and_log_det(x), ours.forward_and_log_det(x), atol=5e-5, rtol=5e-5)
    assert_same_grads(peer, ours, peer.log_prob, ours.log_prob, [x])
    # round trip: this model is ill-conditioned (1/sigmoid scales), so bound it by the peer's own error
    peer_err = (peer.forward(peer.inverse(x)) - x).abs().max()
    assert (ours.forward(ours.inverse(x)) - x).abs().max() <= max(2 * peer_err, 1e-4)


def test_compile_converted_normalizing_flow():
    peer = _glow_model(n_blocks=2)
    x = torch.randn(8, 6)
    peer.log_prob(x)
    ours = convert(peer)
    compiled = torch.compile(ours.log_prob, fullgraph=True, backend="aot_eager")
    assert_same(peer.log_prob(x), compiled(x), atol=5e-5, rtol=5e-5)
