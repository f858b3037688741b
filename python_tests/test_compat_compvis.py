"""flowkern.compat.compvis against an independent re-statement of the CompVis (iin / net2net)
flat-flow formulas: same numbers, gradients and state-dict keys, and ``convert`` of such models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowkern.compat.compvis as K
from flowkern.compat import convert

from .compat_support import assert_same, assert_same_grads


# ---- the CompVis conventions, restated ---------------------------------------------
class BasicFullyConnectedNet(nn.Module):
    """Linear, LeakyReLU, depth x (Linear, LeakyReLU), Linear, optional Tanh, in ``main``."""

    def __init__(self, dim, depth, hidden_dim=256, use_tanh=False, use_bn=False, out_dim=None, use_an=False):
        super().__init__()
        layers = [nn.Linear(dim, hidden_dim), nn.LeakyReLU()]
        for _ in range(depth):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU()]
        layers.append(nn.Linear(hidden_dim, out_dim or dim))
        self.main = nn.Sequential(*layers, *([nn.Tanh()] if use_tanh else []))

    def forward(self, x):
        return self.main(x)


class ActNorm(nn.Module):
    """h = scale * (x + loc); init loc = -mean, scale = 1 / (std + 1e-6); logdet = HW sum log|scale|."""

    def __init__(self, num_features, logdet=False, affine=True, allow_reverse_init=True):
        super().__init__()
        self.logdet = logdet
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.allow_reverse_init = allow_reverse_init
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x, reverse=False):
        if reverse:
            return x / self.scale - self.loc
        if self.training and self.initialized.item() == 0:
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)
            with torch.no_grad():
                self.loc.copy_(-flat.mean(1).view(1, -1, 1, 1))
                self.scale.copy_(1 / (flat.std(1).view(1, -1, 1, 1) + 1e-6))
            self.initialized.fill_(1)
        h = self.scale * (x + self.loc)
        ld = x.shape[2] * x.shape[3] * torch.log(self.scale.abs()).sum() * torch.ones(x.shape[0])
        return (h, ld) if self.logdet else h


class Shuffle(nn.Module):
    def __init__(self, in_channels, **kwargs):
        super().__init__()
        idx = torch.randperm(in_channels)
        self.register_buffer("forward_shuffle_idx", idx)
        self.register_buffer("backward_shuffle_idx", torch.argsort(idx))

    def forward(self, x, reverse=False, conditioning=None):
        return x[:, self.backward_shuffle_idx] if reverse else (x[:, self.forward_shuffle_idx], 0)


class InvLeakyRelu(nn.Module):
    def __init__(self, alpha=0.9):
        super().__init__()
        self.alpha = alpha

    def forward(self, x, reverse=False):
        scaling = torch.where(x >= 0, torch.ones_like(x), self.alpha * torch.ones_like(x))
        return x / scaling if reverse else (x * scaling, 0.0)


class IgnoreLeakyRelu(nn.Module):
    def forward(self, x, reverse=False):
        return x if reverse else (x, 0.0)


def _swap(x):
    """CompVis' half swap: chunk into (ceil, floor) halves and concatenate them reversed."""
    return torch.cat(torch.chunk(x, 2, dim=1)[::-1], dim=1)


class _Coupling(nn.Module):
    """Coupling i: x1 = first ceil(D/2) features (after a swap for i = 1),
    x2 <- x2 exp(s_i(x1[, xc])) + t_i(x1[, xc]); reverse undoes i = 1, swaps, undoes i = 0."""

    def _nets_in(self, x1, xc):
        return x1 if xc is None else torch.cat([x1, xc[:, :, 0, 0]], 1)

    def _run(self, x, xc, reverse):
        x = x[:, :, 0, 0]
        if not reverse:
            logdet = 0
            for i in range(2):
                if i == 1:
                    x = _swap(x)
                x1, x2 = torch.chunk(x, 2, dim=1)
                h = self._nets_in(x1, xc)
                s = self.s[i](h)
                x = torch.cat([x1, x2 * s.exp() + self.t[i](h)], 1)
                logdet = logdet + s.sum(1)
            return x[:, :, None, None], logdet
        for i in (1, 0):
            if i == 0:
                x = _swap(x)
            x1, x2 = torch.chunk(x, 2, dim=1)
            h = self._nets_in(x1, xc)
            x = torch.cat([x1, (x2 - self.t[i](h)) * (-self.s[i](h)).exp()], 1)
        return x[:, :, None, None]


class DoubleVectorCouplingBlock(_Coupling):
    def __init__(self, in_channels, hidden_dim, hidden_depth=2):
        super().__init__()
        d1, d2 = (in_channels + 1) // 2, in_channels // 2
        self.s = nn.ModuleList([BasicFullyConnectedNet(d1, hidden_depth, hidden_dim, True, out_dim=d2) for _ in "ab"])
        self.t = nn.ModuleList([BasicFullyConnectedNet(d1, hidden_depth, hidden_dim, False, out_dim=d2) for _ in "ab"])

    def forward(self, x, reverse=False):
        return self._run(x, None, reverse)


class ConditionalDoubleVectorCouplingBlock(_Coupling):
    def __init__(self, in_channels, cond_channels, hidden_dim, depth=2):
        super().__init__()
        h = in_channels // 2
        self.s = nn.ModuleList([BasicFullyConnectedNet(h + cond_channels, depth, hidden_dim, True, out_dim=h)
                                for _ in "ab"])
        self.t = nn.ModuleList([BasicFullyConnectedNet(h + cond_channels, depth, hidden_dim, False, out_dim=h)
                                for _ in "ab"])

    def forward(self, x, xc, reverse=False):
        return self._run(x, xc, reverse)


class UnconditionalFlatDoubleCouplingFlowBlock(nn.Module):
    def __init__(self, in_channels, hidden_dim, hidden_depth):
        super().__init__()
        self.norm_layer = ActNorm(in_channels, logdet=True)
        self.coupling = DoubleVectorCouplingBlock(in_channels, hidden_dim, hidden_depth)
        self.shuffle = Shuffle(in_channels)

    def forward(self, x, reverse=False):
        if reverse:
            return self.norm_layer(self.coupling(self.shuffle(x, reverse=True), reverse=True), reverse=True)
        h, ld = self.norm_layer(x)
        h, ld2 = self.coupling(h)
        h, ld3 = self.shuffle(h)
        return h, ld + ld2 + ld3


class ConditionalFlatDoubleCouplingFlowBlock(nn.Module):
    def __init__(self, in_channels, cond_channels, hidden_dim, hidden_depth, activation="lrelu"):
        super().__init__()
        self.norm_layer = ActNorm(in_channels, logdet=True)
        self.coupling = ConditionalDoubleVectorCouplingBlock(in_channels, cond_channels, hidden_dim, hidden_depth)
        self.activation = InvLeakyRelu() if activation == "lrelu" else IgnoreLeakyRelu()
        self.shuffle = Shuffle(in_channels)

    def forward(self, x, xcond, reverse=False):
        if reverse:
            h = self.coupling(self.shuffle(x, reverse=True), xcond, reverse=True)
            return self.norm_layer(self.activation(h, reverse=True), reverse=True)
        h, ld = self.norm_layer(x)
        h, ld1 = self.activation(h)
        h, ld2 = self.coupling(h, xcond)
        h, ld3 = self.shuffle(h)
        return h, ld + ld1 + ld2 + ld3


class UnconditionalFlatCouplingFlow(nn.Module):
    def __init__(self, in_channels, n_flows, hidden_dim, hidden_depth):
        super().__init__()
        self.in_channels, self.n_flows = in_channels, n_flows
        self.mid_channels, self.num_blocks = hidden_dim, hidden_depth
        self.sub_layers = nn.ModuleList([UnconditionalFlatDoubleCouplingFlowBlock(in_channels, hidden_dim,
                                                                                  hidden_depth) for _ in range(n_flows)])

    def forward(self, x, reverse=False):
        x = x[:, :, None, None] if x.dim() == 2 else x
        if reverse:
            for layer in reversed(self.sub_layers):
                x = layer(x, reverse=True)
            return x
        logdet = 0.0
        for layer in self.sub_layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet


class ConditionalFlatCouplingFlow(nn.Module):
    def __init__(self, in_channels, conditioning_dim, embedding_dim, hidden_dim, hidden_depth, n_flows,
                 conditioning_option="none", activation="lrelu", conditioning_hidden_dim=256, conditioning_depth=2,
                 conditioner_use_bn=False, conditioner_use_an=False):
        super().__init__()
        self.in_channels, self.n_flows, self.conditioning_option = in_channels, n_flows, conditioning_option
        self.cond_channels, self.mid_channels, self.num_blocks = embedding_dim, hidden_dim, hidden_depth
        self.embedder = BasicFullyConnectedNet(conditioning_dim, conditioning_depth, conditioning_hidden_dim,
                                               out_dim=embedding_dim)
        self.sub_layers = nn.ModuleList([ConditionalFlatDoubleCouplingFlowBlock(
            in_channels, embedding_dim, hidden_dim, hidden_depth, activation) for _ in range(n_flows)])

    def forward(self, x, cond, reverse=False):
        e = self.embedder(cond)[:, :, None, None]
        if reverse:
            for layer in reversed(self.sub_layers):
                x = layer(x, e, reverse=True)
            return x
        logdet = 0.0
        for layer in self.sub_layers:
            x, ld = layer(x, e)
            logdet = logdet + ld
        return x, logdet


# ---- tests ---------------------------------------------------------------------------
def _twins(make_peer, make_ours, seed=0):
    torch.manual_seed(seed)
    peer = make_peer()
    torch.manual_seed(seed)
    ours = make_ours()
    assert list(peer.state_dict()) == list(ours.state_dict())
    for (n, p), (_, o) in zip(peer.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(p, o), n  # same constructor, same random draws
    return peer, ours


@pytest.mark.parametrize("dim", [6, 7])
def test_double_vector_coupling_block(dim):
    peer, ours = _twins(lambda: DoubleVectorCouplingBlock(dim, 16, 1), lambda: K.DoubleVectorCouplingBlock(dim, 16, 1))
    x = torch.randn(5, dim, 1, 1)
    hp, ldp = peer(x)
    ho, ldo = ours(x)
    assert (hp - x).abs().max() > 1e-2
    assert_same((hp, ldp), (ho, ldo))
    torch.testing.assert_close(ours(ho, reverse=True), x, atol=1e-5, rtol=1e-5)
    if dim % 2 == 0:
        assert_same(peer(hp, reverse=True), ours(ho, reverse=True))
    else:  # CompVis' reverse swaps by ceil(D/2) twice and misses x for odd D (flowkern inverts exactly)
        assert (peer(hp, reverse=True) - x).abs().max() > 1e-2
    assert_same_grads(peer, ours, peer, ours, [x])


@pytest.mark.parametrize("activation", ["lrelu", "none"])
def test_conditional_flow_block(activation):
    peer, ours = _twins(lambda: ConditionalFlatDoubleCouplingFlowBlock(6, 3, 16, 1, activation),
                        lambda: K.ConditionalFlatDoubleCouplingFlowBlock(6, 3, 16, 1, activation))
    x, xc = 1 + 2 * torch.randn(8, 6, 1, 1), torch.randn(8, 3, 1, 1)
    assert_same(peer(x, xc), ours(x, xc))  # first training call: data-dependent ActNorm init
    assert int(ours.norm_layer.initialized) == 1
    h, ld = ours(x, xc)
    assert_same(peer(x, xc), (h, ld))
    assert_same(peer(h, xc, reverse=True), ours(h, xc, reverse=True))
    torch.testing.assert_close(ours(h, xc, reverse=True), x, atol=1e-5, rtol=1e-5)
    assert_same_grads(peer, ours, peer, ours, [x, xc])


def test_flat_flows_converted_end_to_end():
    torch.manual_seed(0)
    peer = UnconditionalFlatCouplingFlow(8, 4, 16, 1)
    x = 0.5 + 2 * torch.randn(16, 8)
    peer(x)
    ours = convert(peer)
    assert isinstance(ours, K.UnconditionalFlatCouplingFlow) and isinstance(ours.sub_layers[0].coupling,
                                                                            K.DoubleVectorCouplingBlock)
    assert list(peer.state_dict()) == list(ours.state_dict())
    zp, ldp = peer(x)
    zo, ldo = ours(x)
    assert_same((zp, ldp), (zo, ldo), atol=5e-5, rtol=5e-5)
    nll = lambda z, ld: 0.5 * (z ** 2).sum((1, 2, 3)) - ld  # noqa: E731
    assert_same_grads(peer, ours, lambda x: nll(*peer(x)), lambda x: nll(*ours(x)), [x])
    assert_same(peer(zp, reverse=True), ours(zo, reverse=True), atol=5e-5, rtol=5e-5)

    torch.manual_seed(1)
    cpeer = ConditionalFlatCouplingFlow(6, 4, 5, 16, 1, 3, activation="none")
    c = torch.randn(16, 4)
    cpeer(x[:, :6, None, None], c)
    cours = convert(cpeer)
    assert isinstance(cours.sub_layers[2], K.ConditionalFlatDoubleCouplingFlowBlock)
    assert_same(cpeer(x[:, :6, None, None], c), cours(x[:, :6, None, None], c), atol=5e-5, rtol=5e-5)
    torch.testing.assert_close(cours(cours(x[:, :6, None, None], c)[0], c, reverse=True), x[:, :6, None, None],
                               atol=1e-4, rtol=1e-4)


def test_actnorm_layer_and_errors():
    an = K.ActNorm(4)
    y = an(3 + 2 * torch.randn(64, 4))  # 2D in, 2D out, logdet=False -> tensor only
    assert y.shape == (64, 4) and y.mean(0).abs().max() < 1e-5
    const = K.ActNorm(2, logdet=True)
    with pytest.warns(UserWarning, match=r"channels \[0, 1\] have \(near-\)zero spread"):
        h, ld = const(torch.ones(8, 2, 1, 1))
    assert torch.isfinite(h).all() and torch.isfinite(ld).all()
    with pytest.raises(ValueError, match="latent"):
        K.DoubleVectorCouplingBlock(4, 8)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        K.ConditionalFlatDoubleCouplingFlowBlock(4, 2, 8, 1, activation="relu")
    frozen = K.ActNorm(2, allow_reverse_init=False)
    with pytest.raises(RuntimeError, match="reverse"):
        frozen(torch.randn(4, 2, 1, 1), reverse=True)


def test_compile_converted_flat_flow():
    torch.manual_seed(0)
    peer = UnconditionalFlatCouplingFlow(6, 2, 16, 1)
    x = torch.randn(8, 6, 1, 1)
    peer(x)
    ours = convert(peer)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    assert_same(peer(x), compiled(x), atol=5e-5, rtol=5e-5)
