"""An empty batch (B = 0) gives empty outputs of the right shapes and dtypes wherever B >= 1 works:
the op on every CPU backend, layers, vector and multi-scale flows in both modes, sampling with
n = 0, and models converted from normflows, nflows and FrEIA (issue 30, item 4)."""

from __future__ import annotations

import warnings

import pytest
import torch

import flowkern
from flowkern import nn as fnn

from .fuzz_strategies import probe_backend

D64 = torch.float64


def _shapes(out):
    if isinstance(out, torch.Tensor):
        return tuple(out.shape), out.dtype
    return [_shapes(o) for o in out]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("spatial", [(), (3, 2)])
def test_op_empty_batch(backend, spatial):
    reason = probe_backend(backend)
    if reason is not None:
        pytest.skip(reason)
    x = torch.randn(0, 4, *spatial, dtype=D64, requires_grad=True)
    h = torch.randn(0, 4, *spatial, dtype=D64, requires_grad=True)
    a = (1 + torch.rand(4, dtype=D64)).requires_grad_(True)
    b = torch.randn(4, dtype=D64, requires_grad=True)
    y, ld, err = flowkern.ops.coupling_forward(x, h[:, :2], h[:, 2:], a, b, split=2, check=True, backend=backend)
    assert _shapes((y, ld, err)) == [((0, 4, *spatial), D64), ((0,), D64), ((0,), D64)]
    (y.sum() + ld.sum()).backward()
    assert x.grad.shape == x.shape and h.grad.shape == h.shape
    assert torch.equal(a.grad, torch.zeros_like(a)) and torch.equal(b.grad, torch.zeros_like(b))
    back, ld_inv = flowkern.ops.coupling_inverse_packed(y.detach(), h.detach(), a.detach(), b.detach(), split=2,
                                                        backend=backend)
    assert _shapes((back, ld_inv)) == [((0, 4, *spatial), D64), ((0,), D64)]


def _glow(memory_saving, **kw):
    torch.manual_seed(0)
    return fnn.build_glow((3, 8, 8), levels=2, depth=2, hidden=8, memory_saving=memory_saving, **kw).double()


def _realnvp(memory_saving, **kw):
    torch.manual_seed(0)
    return fnn.build_realnvp((3, 8, 8), levels=2, hidden=8, n_checker=1, n_channel=1, n_final=1,
                             memory_saving=memory_saving, **kw).double()


@pytest.mark.parametrize("memory_saving", [False, True])
@pytest.mark.parametrize("build", [_glow, _realnvp], ids=["glow", "realnvp"])
@pytest.mark.parametrize("initialised", [True, False])
def test_multiscale_empty_batch(build, memory_saving, initialised):
    flow = build(memory_saving)
    if initialised:
        flow(torch.rand(4, 3, 8, 8, dtype=D64))
    x = torch.rand(0, 3, 8, 8, dtype=D64, requires_grad=True)
    latents, logdet = flow(x)
    want = [((0, *s), D64) for s in flow.latent_shapes()]
    assert _shapes(latents) == want and _shapes(logdet) == ((0,), D64)
    lp = flow.log_prob(x)
    assert _shapes(lp) == ((0,), D64)
    lp.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is None or torch.equal(p.grad, torch.zeros_like(p)) for p in flow.parameters())
    if not initialised:  # an empty batch leaves the data-dependent init to the next batch
        full = torch.rand(4, 3, 8, 8, dtype=D64)
        flow(full)
        assert all(m._is_initialized() for m in flow.modules() if isinstance(m, fnn.ActNorm))
    with torch.no_grad():
        back, ld_inv = flow.inverse(latents)
    assert _shapes((back, ld_inv)) == [((0, 3, 8, 8), D64), ((0,), D64)]
    assert _shapes(flow.bits_per_dim(x.detach())) == ((0,), D64)
    assert flow.reconstruction_error(x.detach()) == 0.0
    assert _shapes(flow.sample(0)) == ((0, 3, 8, 8), D64)


@pytest.mark.parametrize("memory_saving", [False, True])
def test_conditional_and_chunked_multiscale_empty_batch(memory_saving):
    flow = _glow(memory_saving, num_classes=3)
    flow.memory_saving_chunk = 2
    flow(torch.rand(4, 3, 8, 8, dtype=D64), torch.tensor([0, 1, 2, 0]))
    labels = torch.zeros(0, dtype=torch.long)
    lp = flow.log_prob(torch.rand(0, 3, 8, 8, dtype=D64, requires_grad=True), labels)
    assert _shapes(lp) == ((0,), D64)
    lp.sum().backward()
    assert _shapes(flow.sample(0, labels)) == ((0, 3, 8, 8), D64)


@pytest.mark.parametrize("memory_saving", [False, True])
def test_glow_step_and_vector_flow_empty_batch(memory_saving):
    step = fnn.GlowStep(4, hidden=8).double()
    step(torch.randn(3, 4, 2, 2, dtype=D64))
    flow = fnn.Flow([step], memory_saving=memory_saving)
    x = torch.randn(0, 4, 2, 2, dtype=D64, requires_grad=True)
    y, ld = flow(x)
    assert _shapes((y, ld)) == [((0, 4, 2, 2), D64), ((0,), D64)]
    (y.sum() + ld.sum()).backward()
    assert x.grad.shape == x.shape
    vec = fnn.build_flow(6, 2, 8, memory_saving=memory_saving).double()
    vec(torch.randn(4, 6, dtype=D64))
    assert _shapes(vec.sample(0)) == ((0, 6), D64)


# ---- converted peer models ----------------------------------------------------------------------
@pytest.mark.parametrize("memory_saving", [False, True])
@pytest.mark.parametrize("classes", [None, 3])
def test_converted_normflows_glow_empty_batch(memory_saving, classes):
    pytest.importorskip("normflows")
    from flowkern.compat import convert

    from .test_compat_image import notebook_glow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = notebook_glow(num_classes=classes).double()
    x = torch.rand(6, 3, 8, 8, dtype=D64)
    y = torch.arange(6) % 3 if classes else None
    peer.log_prob(x, y)
    fk = convert(peer)
    fk.memory_saving = memory_saving
    x0 = torch.rand(0, 3, 8, 8, dtype=D64, requires_grad=True)
    y0 = torch.zeros(0, dtype=torch.long) if classes else None
    want = peer.log_prob(x0, y0)  # normflows returns an empty result
    got = fk.log_prob(x0, y0)
    assert _shapes(got) == _shapes(want) == ((0,), D64)
    got.sum().backward()
    xs, log_q = fk.sample(0, y0)
    assert _shapes((xs, log_q)) == [((0, 3, 8, 8), D64), ((0,), D64)]


@pytest.mark.parametrize("memory_saving", [False, True])
def test_converted_nflows_multiscale_empty_batch(memory_saving):
    pytest.importorskip("nflows")
    from flowkern.compat import convert

    from .test_compat_image import _nflows_glow

    peer = _nflows_glow().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.log_prob(torch.rand(5, 3, 8, 8, dtype=D64))
        fk = convert(peer)
    fk._transform.memory_saving = memory_saving
    x0 = torch.rand(0, 3, 8, 8, dtype=D64, requires_grad=True)
    z, ld = fk._transform(x0)
    assert _shapes((z, ld)) == [((0, 192), D64), ((0,), D64)]
    lp = fk.log_prob(x0)
    assert _shapes(lp) == ((0,), D64)
    lp.sum().backward()
    back, _ = fk._transform.inverse(z.detach())
    assert back.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("memory_saving", [False, True])
@pytest.mark.parametrize("conditional", [False, True])
def test_converted_freia_graph_empty_batch(memory_saving, conditional):
    pytest.importorskip("FrEIA")
    from flowkern.compat import convert

    from .test_compat_image import _freia_inn

    peer = _freia_inn(conditional).double()
    c = [torch.randn(4, 2, 4, 4, dtype=D64)] if conditional else None
    peer(torch.rand(4, 3, 8, 8, dtype=D64), c)
    fk = convert(peer)
    fk.memory_saving = memory_saving
    x0 = torch.rand(0, 3, 8, 8, dtype=D64, requires_grad=True)
    c0 = [torch.randn(0, 2, 4, 4, dtype=D64)] if conditional else None
    z, jac = fk(x0, c0)
    assert _shapes((z, jac)) == [((0, 192), D64), ((0,), D64)]
    (z.sum() + jac.sum()).backward()
    assert x0.grad.shape == x0.shape


def test_freia_all_in_one_single_channel_empty_batch():
    """One channel: the block runs FrEIA's formula in PyTorch (its pixel count came from sample 0)."""
    import flowkern.compat.freia as Fk

    from .compat_support import mlp

    block = Fk.AllInOneBlock([(1,)], subnet_constructor=mlp)
    (out,), jac = block((torch.randn(0, 1),))
    assert out.shape == (0, 1) and jac.shape == (0,)
