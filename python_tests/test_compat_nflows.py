"""flowkern.compat.nflows against nflows 0.14 itself: same numbers, gradients and state-dict keys."""

from __future__ import annotations

import copy

import pytest
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.transforms import base as nfl_base
from nflows.transforms import coupling as nfl_coupling
from nflows.transforms import normalization as nfl_norm
from nflows.transforms import permutations as nfl_perm
from torch import nn

import flowkern.compat.nflows as K
from flowkern.compat import convert

from .compat_support import assert_same, assert_same_grads

MASKS = {"prefix": [0, 0, 0, 1, 1], "suffix": [1, 1, 0, 0, 0], "alternating": [1, 0, 1, 0, 1],
         "scattered-values": [2.5, -1, 0, 3, 0], "all-identity": [0, -1, 0, 0, -3], "all-transform": [1, 2, 1, 1, 5]}


class ContextNet(nn.Module):
    """transform_net(identity, context) for vectors or images; a context is broadcast over space."""

    def __init__(self, c_in: int, c_out: int, ctx: int = 0, image: bool = False):
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if image else nn.Linear
        self.inp, self.out, self.image = layer(c_in + ctx, 12), layer(12, c_out), image
        nn.init.normal_(self.out.weight, std=0.4)
        nn.init.normal_(self.out.bias, std=0.3)

    def forward(self, x, context=None):
        if context is not None:
            if self.image:
                context = context[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, context], 1)
        return self.out(torch.tanh(self.inp(x)))


def _pair(mask, ctx: int, image: bool):
    torch.manual_seed(0)
    net = ContextNet(sum(m <= 0 for m in mask), 2 * sum(m > 0 for m in mask), ctx, image)
    peer = nfl_coupling.AffineCouplingTransform(mask, lambda i, o: net)
    ours = K.AffineCouplingTransform(mask, lambda i, o: copy.deepcopy(net))
    return peer, ours


@pytest.mark.parametrize("ctx", [0, 3], ids=["nocontext", "context"])
@pytest.mark.parametrize("image", [False, True], ids=["vector", "image"])
@pytest.mark.parametrize("mask", list(MASKS))
def test_affine_coupling_transform_matches(mask, image, ctx):
    peer, ours = _pair(MASKS[mask], ctx, image)
    assert list(peer.state_dict()) == list(ours.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, *((3, 2) if image else ()), generator=g)
    context = torch.randn(4, ctx, generator=g) if ctx else None
    if image and (mask == "all-identity" or (mask == "all-transform" and not ctx)):
        for t in (peer, ours):  # a Conv2d on 0 channels: the peer's error, and ours
            with pytest.raises(RuntimeError, match="Given groups"):
                t(x, context)
        return
    yp, lp = peer(x, context)
    yo, lo = ours(x, context)
    assert ours.layout == {"prefix": "first", "suffix": "second", "all-identity": "exact",
                           "all-transform": "exact"}.get(mask, "gather")
    if mask == "all-identity":
        assert torch.equal(yo, x) and lo.abs().max() == 0
    else:
        assert (yp - x).abs().max() > 1e-2
    assert_same((yp, lp), (yo, lo))
    assert_same(peer.inverse(yp, context), ours.inverse(yo, context))
    torch.testing.assert_close(ours.inverse(yo, context)[0], x, atol=1e-5, rtol=1e-5)
    extra = [context] if ctx else []
    assert_same_grads(peer, ours, lambda x, *c: peer(x, *c), lambda x, *c: ours(x, *c), [x] + extra)
    assert_same_grads(peer, ours, lambda y, *c: peer.inverse(y, *c), lambda y, *c: ours.inverse(y, *c),
                      [yp.detach()] + extra)


def test_actnorm_and_permutations_match():
    x = 1 + 3 * torch.randn(6, 4, 3, 2)
    peer, ours = nfl_norm.ActNorm(4), K.ActNorm(4)
    assert_same(peer(x), ours(x))
    assert_same(peer.inverse(x), ours.inverse(x))
    assert bool(ours.initialized) and list(peer.state_dict()) == list(ours.state_dict())
    for cls in ("RandomPermutation", "ReversePermutation"):
        torch.manual_seed(5)
        p = getattr(nfl_perm, cls)(4)
        torch.manual_seed(5)
        o = getattr(K, cls)(4)
        assert_same(p(x), o(x))
        assert_same(p.inverse(x), o.inverse(x))
    with pytest.raises(ValueError, match="2D or a 4D"):
        ours(torch.randn(2, 4, 3))


@pytest.mark.parametrize("mask", [[0, 1, 1, 0, 1, 0, 0], [1] * 7, [0] * 7], ids=["gather", "all-t", "all-id"])
def test_unconditional_transform_on_identity_features_matches(mask):
    """nflows' unconditional_transform (here an ActNorm on the identity features) with any mask."""
    torch.manual_seed(0)
    n_id, n_tr = sum(m <= 0 for m in mask), sum(m > 0 for m in mask)
    net = ContextNet(n_id, 2 * n_tr)
    if n_id == 0:  # ActNorm(features=0): nflows' TypeError, and ours
        for lib, coupling in ((nfl_norm, nfl_coupling), (K, K)):
            with pytest.raises(TypeError, match="positive integer"):
                coupling.AffineCouplingTransform(mask, lambda i, o: net,
                                                 unconditional_transform=lambda features: lib.ActNorm(features))
        return
    peer = nfl_coupling.AffineCouplingTransform(mask, lambda i, o: net,
                                                unconditional_transform=lambda features: nfl_norm.ActNorm(features))
    ours = K.AffineCouplingTransform(mask, lambda i, o: copy.deepcopy(net),
                                     unconditional_transform=lambda features: K.ActNorm(features))
    x = 1 + 2 * torch.randn(6, 7, generator=torch.Generator().manual_seed(3))
    assert_same(peer(x), ours(x))  # initialises both actnorms on the same data
    y, _ = peer(x)
    assert_same(peer.inverse(y), ours.inverse(y))
    assert list(peer.state_dict()) == list(ours.state_dict())


def _nflows_model(dim: int = 5, n_layers: int = 3, ctx: int = 2):
    torch.manual_seed(0)
    transforms = []
    for i in range(n_layers):
        mask = [(j + i) % 2 for j in range(dim)]
        transforms += [nfl_norm.ActNorm(dim),
                       nfl_coupling.AffineCouplingTransform(mask, lambda a, b: ContextNet(a, b, ctx)),
                       nfl_perm.RandomPermutation(dim)]
    return Flow(nfl_base.CompositeTransform(transforms), StandardNormal([dim]))


def test_composite_transform_converted_end_to_end():
    peer = _nflows_model()
    x = 1 + 2 * torch.randn(32, 5, generator=torch.Generator().manual_seed(1))
    context = torch.randn(32, 2)
    peer.log_prob(x, context)  # data-dependent ActNorm init
    ours = convert(peer)
    assert isinstance(ours._transform, K.CompositeTransform) and type(peer._transform) is nfl_base.CompositeTransform
    assert ours._transform._foldable(0, 1)  # ActNorm runs inside the coupling op
    assert list(peer.state_dict()) == list(ours.state_dict())
    assert_same(peer.log_prob(x, context), ours.log_prob(x, context), atol=5e-5, rtol=5e-5)
    assert_same_grads(peer, ours, peer.log_prob, ours.log_prob, [x, context])
    z, _ = ours._transform(x, context)
    torch.testing.assert_close(ours._transform.inverse(z, context)[0], x, atol=1e-4, rtol=1e-4)


def test_compile_converted_composite_transform():
    peer = _nflows_model(n_layers=2)
    x, context = torch.randn(8, 5), torch.randn(8, 2)
    peer.log_prob(x, context)
    ours = convert(peer).eval()
    compiled = torch.compile(ours._transform, fullgraph=True, backend="aot_eager")
    assert_same(peer._transform.eval()(x, context), compiled(x, context), atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("value", [True, 0, -2, 2.0, "3", 3], ids=repr)
@pytest.mark.parametrize("cls", ["ActNorm", "RandomPermutation", "ReversePermutation"])
def test_size_arguments_accepted_and_rejected_as_nflows_does(cls, value):
    """The same outcome as nflows for every value: built, or the same exception type."""
    outcomes = []
    for lib in (nfl_norm if cls == "ActNorm" else nfl_perm, K):
        try:
            getattr(lib, cls)(value)
            outcomes.append("built")
        except Exception as exc:  # noqa: BLE001 - comparing the peer's exception type
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]
