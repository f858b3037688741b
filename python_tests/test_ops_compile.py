"""torch.compile(fullgraph=True) of modules calling the fused op: same values and grads as eager."""

from __future__ import annotations

import pytest
import torch

import flowkern

from .helpers import make_case


class _Coupling(torch.nn.Module):
    """Forward then inverse of one coupling whose s, t come from a linear subnet."""

    def __init__(self, C: int, spatial: tuple[int, ...], backend: str):
        super().__init__()
        self.split, self.backend = C // 2, backend
        self.net = torch.nn.Conv1d(self.split, 2 * (C - self.split), 1) if spatial else \
            torch.nn.Linear(self.split, 2 * (C - self.split))

    def forward(self, x, a, b):
        c = x.shape[1] - self.split
        h = self.net(x[:, : self.split])
        y, ld = flowkern.coupling_forward(x, h[:, :c], h[:, c:], a, b, split=self.split, scale="tanh",
                                          backend=self.backend)
        g = self.net(y[:, : self.split])
        x2, ld2 = flowkern.coupling_inverse(y, g[:, 0::2], g[:, 1::2], a, b, split=self.split,
                                            scale="atan", backend=self.backend)
        return x2, ld + ld2


@pytest.mark.parametrize("backend,spatial", [("cpu", ()), ("cpu", (9,)), ("reference", (9,))])
def test_compiled_matches_eager(backend, spatial):
    if flowkern.backends.available("cpu")[backend] is not None:
        pytest.skip(f"{backend} backend unavailable")
    torch._dynamo.reset()
    x, _, _, a, b, _ = make_case(B=4, C=7, spatial=spatial, requires_grad=True)
    torch.manual_seed(0)
    model = _Coupling(7, spatial, backend)
    compiled = torch.compile(model, fullgraph=True)
    outs = []
    for fn in (model, compiled):
        for v in (x, a, b, *model.parameters()):
            v.grad = None
        out, ld = fn(x, a, b)
        (out.square().sum() + ld.sum()).backward()
        outs.append([out.detach(), ld.detach(), x.grad, a.grad, b.grad,
                     *(p.grad.clone() for p in model.parameters())])
    for e, c in zip(*outs):
        torch.testing.assert_close(c, e, atol=1e-5, rtol=1e-5)
