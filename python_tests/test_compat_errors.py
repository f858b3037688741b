"""A compat adapter given input its peer rejects raises the exception type the peer raises (issue 30,
item 6), also where flowkern's own check fires first: each test builds the installed peer's class
and the adapter with the same config, feeds both the same bad input (wrong feature count or width,
wrong condition size, wrong rank) and asserts the adapter's error is an instance of the peer's
error type. Where flowkern's check fires, the error is also a ValueError with flowkern's message
(``flowkern.compat._peer``: ShapeError, RankError, PeerError, NodeError)."""

from __future__ import annotations

import warnings

import pytest
import torch

from flowkern.compat._peer import NodeError, PeerError, RankError, ShapeError

from .compat_support import conv_net, mlp

D64 = torch.float64


def _error(fn) -> BaseException | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as e:  # noqa: BLE001 - comparing the types is the point
        return e
    return None


def assert_same_error(peer_fn, ours_fn) -> BaseException:
    want, got = _error(peer_fn), _error(ours_fn)
    assert want is not None, "the peer accepts this input: not a case for this test"
    assert got is not None, f"the peer raises {type(want).__name__} ({want}), the adapter returns"
    assert isinstance(got, type(want)), (f"the peer raises {type(want).__name__} ({want}), the adapter "
                                         f"{type(got).__name__} ({got})")
    return got


def _flowkern_error(err: BaseException) -> None:
    assert isinstance(err, (ShapeError, RankError, PeerError, NodeError)) and isinstance(err, ValueError)


# ---- FrEIA ----------------------------------------------------------------------------------------
FREIA_BLOCKS = ["GLOWCouplingBlock", "RNVPCouplingBlock", "AffineCouplingOneSided", "AllInOneBlock"]


def _freia_pair(block, dims, cond):
    Fm = pytest.importorskip("FrEIA.modules")
    import flowkern.compat.freia as Fk

    dc = [(3, *dims[1:])] if cond else []
    net = mlp if len(dims) == 1 else conv_net
    torch.manual_seed(0)
    peer = getattr(Fm, block)([dims], dims_c=dc, subnet_constructor=net)
    torch.manual_seed(0)
    ours = getattr(Fk, block)([dims], dims_c=dc, subnet_constructor=net)
    return peer, ours, [torch.randn(2, *dc[0])] if cond else None


def _freia_bad_inputs(dims, cond):
    good_c = [torch.randn(2, 3, *dims[1:])] if cond else None
    cases = [("more_channels", torch.randn(2, dims[0] + 2, *dims[1:]), good_c, True),
             ("fewer_channels", torch.randn(2, dims[0] - 1, *dims[1:]), good_c, True),
             ("rank_1", torch.randn(2), good_c, True),
             ("rank_plus_1", torch.randn(2, *dims, 2), good_c, False)]
    if cond:
        cases += [("condition_channels", torch.randn(2, *dims), [torch.randn(2, 5, *dims[1:])], False),
                  ("condition_batch", torch.randn(2, *dims), [torch.randn(3, 3, *dims[1:])], False)]
        if len(dims) > 1:
            cases.append(("width", torch.randn(2, dims[0], 4, 6), good_c, False))
    return cases


@pytest.mark.parametrize("rev", [False, True])
@pytest.mark.parametrize("cond", [False, True])
@pytest.mark.parametrize("dims", [(6,), (4, 4, 4)], ids=["vector", "image"])
@pytest.mark.parametrize("block", FREIA_BLOCKS)
def test_freia_blocks_raise_freias_error_types(block, dims, cond, rev):
    peer, ours, _ = _freia_pair(block, dims, cond)
    for name, x, c, ours_first in _freia_bad_inputs(dims, cond):
        kw = {"c": c} if cond else {}
        err = assert_same_error(lambda: peer((x,), rev=rev, **kw), lambda: ours((x,), rev=rev, **kw))
        if ours_first:  # flowkern's check fired: its own message, in a ValueError
            _flowkern_error(err)


def test_freia_sequence_with_folded_actnorm_raises_freias_error_type():
    Ff = pytest.importorskip("FrEIA.framework")
    Fm = pytest.importorskip("FrEIA.modules")
    import flowkern.compat.freia as Fk

    seqs = []
    for mod, seq in ((Fm, Ff.SequenceINN(6)), (Fk, Fk.SequenceINN(6))):
        torch.manual_seed(0)
        seq.append(mod.ActNorm)
        seq.append(mod.GLOWCouplingBlock, subnet_constructor=mlp)
        seq(torch.randn(8, 6))  # the actnorm's init: ours then folds it into the coupling's op
        seqs.append(seq)
    for x in (torch.randn(2, 8), torch.randn(2, 5)):
        for rev in (False, True):
            _flowkern_error(assert_same_error(lambda: seqs[0](x, rev=rev), lambda: seqs[1](x, rev=rev)))


def test_freia_graph_raises_freias_error_type():
    pytest.importorskip("FrEIA")
    from flowkern.compat import convert

    from .test_compat_image import _freia_inn

    peer = _freia_inn(conditional=True).double()
    c = [torch.randn(4, 2, 4, 4, dtype=D64)]
    peer(torch.rand(4, 3, 8, 8, dtype=D64), c)
    ours = convert(peer)
    c2 = [torch.randn(2, 2, 4, 4, dtype=D64)]
    for memory_saving in (False, True):
        ours.memory_saving = memory_saving
        for x in (torch.rand(2, 4, 8, 8, dtype=D64), torch.rand(2, 3, 8, dtype=D64),
                  torch.rand(2, 3, 8, 8, 1, dtype=D64), torch.rand(2, 3, 8, 16, dtype=D64)):
            assert_same_error(lambda: peer(x, c2), lambda: ours(x, c2))
        x = torch.rand(2, 3, 8, 8, dtype=D64)
        for bad_c in ([torch.randn(2, 3, 4, 4, dtype=D64)], [torch.randn(3, 2, 4, 4, dtype=D64)], None):
            assert_same_error(lambda: peer(x, bad_c), lambda: ours(x, bad_c))
        err = assert_same_error(lambda: peer(torch.rand(2, 3, 8, dtype=D64), c2),
                                lambda: ours(torch.rand(2, 3, 8, dtype=D64), c2))
        assert isinstance(err, NodeError) and "IRevNetDownsampling" in str(err)


# ---- normflows ------------------------------------------------------------------------------------
def _normflows_pairs(image: bool):
    nf = pytest.importorskip("normflows")
    import flowkern.compat.normflows as Nk

    def build(mod):
        torch.manual_seed(0)
        if image:
            return {"channel": mod.AffineCouplingBlock(nf.nets.ConvNet2d([2, 8, 4], kernel_size=[3, 3])),
                    "checkerboard": mod.AffineCouplingBlock(nf.nets.ConvNet2d([4, 8, 8], kernel_size=[3, 3]),
                                                            split_mode="checkerboard"),
                    "invconv": mod.Invertible1x1Conv(4, use_lu=True)}
        return {"channel": mod.AffineCouplingBlock(nf.nets.MLP([3, 16, 6])),
                "channel_inv": mod.AffineCouplingBlock(nf.nets.MLP([3, 16, 6]), split_mode="channel_inv"),
                "checkerboard": mod.AffineCouplingBlock(nf.nets.MLP([3, 16, 6]), split_mode="checkerboard"),
                "masked": mod.MaskedAffineFlow(torch.tensor([1.0, 0, 1, 0, 1, 0]), nf.nets.MLP([6, 16, 6]),
                                               nf.nets.MLP([6, 16, 6]))}

    return build(nf.flows), build(Nk)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("image", [False, True], ids=["vector", "image"])
def test_normflows_flows_raise_normflows_error_types(image, inverse):
    peers, ours = _normflows_pairs(image)
    dims = (4, 4, 4) if image else (6,)
    bad = [torch.randn(2, dims[0] + 2, *dims[1:]), torch.randn(2), torch.randn(2, *dims, 2)]
    bad += [torch.randn(2, 4, 4), torch.randn(2, 4, 4, 6)] if image else [torch.randn(2, 5)]
    checked = 0
    for key in peers:
        p, q = peers[key], ours[key]
        for x in bad:
            want = _error(lambda: (p.inverse if inverse else p)(x))
            if want is None:  # normflows broadcasts some of these into a result: not rejected there
                continue
            assert_same_error(lambda: (p.inverse if inverse else p)(x), lambda: (q.inverse if inverse else q)(x))
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize("memory_saving", [False, True])
def test_normflows_glow_raises_normflows_error_types(memory_saving):
    pytest.importorskip("normflows")
    from flowkern.compat import convert

    from .test_compat_image import notebook_glow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = notebook_glow(num_classes=3).double()
    peer.log_prob(torch.rand(6, 3, 8, 8, dtype=D64), torch.arange(6) % 3)
    ours = convert(peer)
    ours.memory_saving = memory_saving
    y = torch.tensor([0, 1])
    for x in (torch.rand(2, 4, 8, 8, dtype=D64), torch.rand(2, 3, 8, 16, dtype=D64),
              torch.rand(2, 3, 8, 6, dtype=D64), torch.rand(2, 3, 8, dtype=D64), torch.rand(2, 192, dtype=D64)):
        assert_same_error(lambda: peer.log_prob(x, y), lambda: ours.log_prob(x, y))
    x = torch.rand(2, 3, 8, 8, dtype=D64)
    for bad_y in (torch.tensor([0, 1, 2]), torch.tensor([0, 5]), torch.rand(2, 4, dtype=D64)):
        assert_same_error(lambda: peer.log_prob(x, bad_y), lambda: ours.log_prob(x, bad_y))
    _flowkern_error(assert_same_error(lambda: peer.log_prob(torch.rand(2, 3, 8, dtype=D64), y),
                                      lambda: ours.log_prob(torch.rand(2, 3, 8, dtype=D64), y)))


# ---- nflows ---------------------------------------------------------------------------------------
def _nflows_pairs(image: bool, context: int):
    nt = pytest.importorskip("nflows.transforms")
    from nflows.nn.nets import ConvResidualNet, ResidualNet

    import flowkern.compat.nflows as Xk

    def build(mod):
        torch.manual_seed(0)
        if image:
            def net(i, o):
                return ConvResidualNet(i, o, 8, context_channels=context or None, num_blocks=1)
            masks = (torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 1, 0]))
            features = 4
        else:
            def net(i, o):
                return ResidualNet(i, o, 16, context_features=context or None)
            masks = (torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([1, 0, 1, 0, 1, 0]))
            features = 6
        out = {"coupling": mod.AffineCouplingTransform(masks[0], net),
               "coupling_gather": mod.AffineCouplingTransform(masks[1], net)}
        if not context:
            out["composite"] = mod.CompositeTransform([mod.ActNorm(features), mod.AffineCouplingTransform(masks[0], net)])
            out["permutation"] = mod.RandomPermutation(features)
        return out

    return build(nt), build(Xk)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("image", [False, True], ids=["vector", "image"])
def test_nflows_transforms_raise_nflows_error_types(image, context, inverse):
    peers, ours = _nflows_pairs(image, context)
    dims = (4, 4, 4) if image else (6,)
    c = torch.randn(2, context, *dims[1:]) if context else None
    for key in peers:  # the composite's actnorm initialises from this batch in both
        peers[key](torch.randn(4, *dims), None if c is None else c.repeat(2, *([1] * (c.dim() - 1))))
        ours[key](torch.randn(4, *dims), None if c is None else c.repeat(2, *([1] * (c.dim() - 1))))
    bad = [(torch.randn(2, dims[0] + 2, *dims[1:]), c), (torch.randn(2, dims[0] - 1, *dims[1:]), c),
           (torch.randn(2), c), (torch.randn(2, *dims, 2), c)]
    if image:
        bad.append((torch.randn(2, 4, 4), c))
    if context:
        bad += [(torch.randn(2, *dims), torch.randn(2, context + 1, *dims[1:])),
                (torch.randn(2, *dims), torch.randn(3, context, *dims[1:]))]
    for key in peers:
        p, q = peers[key], ours[key]
        for x, cc in bad:
            if _error(lambda: (p.inverse if inverse else p)(x, cc)) is None:
                continue
            assert_same_error(lambda: (p.inverse if inverse else p)(x, cc), lambda: (q.inverse if inverse else q)(x, cc))


@pytest.mark.parametrize("memory_saving", [False, True])
def test_nflows_multiscale_raises_nflows_error_types(memory_saving):
    pytest.importorskip("nflows")
    from flowkern.compat import convert

    from .test_compat_image import _nflows_glow

    peer = _nflows_glow().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.log_prob(torch.rand(5, 3, 8, 8, dtype=D64))
        ours = convert(peer)
    ours._transform.memory_saving = memory_saving
    for x in (torch.rand(2, 4, 8, 8, dtype=D64), torch.rand(2, 3, 8, 16, dtype=D64), torch.rand(2, 3, 8, 6, dtype=D64),
              torch.rand(2, 3, 8, dtype=D64), torch.rand(2, 192, dtype=D64)):
        assert_same_error(lambda: peer.log_prob(x), lambda: ours.log_prob(x))
    err = assert_same_error(lambda: peer.log_prob(torch.rand(2, 3, 8, 16, dtype=D64)),
                            lambda: ours.log_prob(torch.rand(2, 3, 8, 16, dtype=D64)))
    assert isinstance(err, PeerError)  # nflows' assert: an AssertionError there
