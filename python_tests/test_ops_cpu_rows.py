"""The CPU kernels' row-block path (S = 1, float32, s_raw / t with unit channel stride) against
their generic path: same arithmetic in the same order, so values and grads are bitwise equal.

The generic path is reached with the same values through views of channel stride 2."""

from __future__ import annotations

import pytest
import torch

import flowkern

pytestmark = pytest.mark.skipif(
    flowkern.backends.available("cpu")["cpu"] is not None, reason="C++ CPU extension not built"
)


def _leaf(v: torch.Tensor | None, strided: bool = False):
    """(tensor passed to the op, leaf whose grad is compared): v itself, or with ``strided`` a view
    of channel stride 2 into a leaf holding v's values (so the generic path reads them)."""
    if v is None:
        return None, None
    if not strided:
        leaf = v.clone().requires_grad_(True)
        return leaf, leaf
    wide = torch.zeros(v.shape[0], 2 * v.shape[1], dtype=v.dtype)
    wide[:, ::2] = v
    wide.requires_grad_(True)
    return wide[:, ::2], wide


def _outputs(direction, x, s_raw, t, a, b, kw, check, strided):
    pairs = [_leaf(x), _leaf(s_raw, strided), _leaf(t, strided), _leaf(a), _leaf(b)]
    args = [p[0] for p in pairs]
    leaves = [p[1] for p in pairs if p[1] is not None]
    if direction == "fwd":
        out = flowkern.coupling_forward(*args, backend="cpu", check=check, **kw)
    else:
        out = flowkern.coupling_inverse(*args, backend="cpu", **kw)
    g = torch.Generator().manual_seed(3)
    loss = (out[0] * torch.randn(out[0].shape, generator=g)).sum() + (out[1] * torch.randn(out[1].shape, generator=g)).sum()
    grads = torch.autograd.grad(loss, leaves)
    if strided:
        grads = [gr[:, ::2] if k in (1, 2) else gr for k, gr in enumerate(grads)]
    return [o.detach() for o in out] + list(grads)


@pytest.mark.parametrize("scale", ["exp", "tanh", "atan", "sigmoid"])
@pytest.mark.parametrize("direction", ["fwd", "inv"])
@pytest.mark.parametrize("passive", ["first", "second"])
@pytest.mark.parametrize("actnorm", [True, False])
@pytest.mark.parametrize("B,C", [(1, 2), (131, 37), (2053, 64)])  # one row; several chunks; parallel
def test_rows_path_bitwise_equal_to_generic(scale, direction, passive, actnorm, B, C):
    g = torch.Generator().manual_seed(B + C)
    split = C // 2
    c_act = C - split if passive == "first" else split
    x = torch.randn(B, C, generator=g)
    s_raw = 2 * torch.randn(B, c_act, generator=g)
    t = torch.randn(B, c_act, generator=g)
    a = 0.5 + torch.rand(C, generator=g) if actnorm else None
    b = 0.1 * torch.randn(C, generator=g) if actnorm else None
    kw = dict(split=split, passive=passive, scale=scale, clamp=1.3, eps=1e-3 if scale == "sigmoid" else 0.0)
    for check in ([False, True] if direction == "fwd" else [False]):
        rows = _outputs(direction, x, s_raw, t, a, b, kw, check, strided=False)
        generic = _outputs(direction, x, s_raw, t, a, b, kw, check, strided=True)
        assert len(rows) == len(generic)
        for r, q in zip(rows, generic):
            assert torch.equal(r, q), (check, (r - q).abs().max())
