"""flowkern.check: certify() on good and deliberately broken flows, and the CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from flowkern.check import CertifyReport, InvertibilityError, certify, saved_bytes
from flowkern.cli import main as cli_main
from flowkern.nn import ActNorm, Flow, InvertibleModule, build_flow


class Doubling(InvertibleModule):
    """y = 2x with a configurable defect: a biased inverse or a wrong log-det."""

    def __init__(self, channels: int, inverse_bias: float = 0.0, logdet_ok: bool = True) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))
        self.inverse_bias, self.logdet_ok = inverse_bias, logdet_ok

    def _ld(self, v):
        value = v[0].numel() * torch.log(self.w) if self.logdet_ok else torch.zeros((), dtype=v.dtype)
        return value.to(v.dtype).expand(v.shape[0])

    def forward(self, x, c=None):
        return self.w * x, self._ld(x)

    def inverse(self, y, c=None):
        return y / self.w + self.inverse_bias, -self._ld(y)


def _trained_flow(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    flow = build_flow(6, 2, 16, depth=1, **kw).to(dtype)
    flow(torch.randn(32, 6, dtype=dtype), torch.randn(32, kw.get("cond_channels", 1), dtype=dtype)
         if kw.get("cond_channels") else None)
    return flow


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_good_flow_passes_every_check(dtype):
    flow = _trained_flow(dtype)
    x = torch.randn(5, 6, dtype=dtype)
    report = certify(flow, x, strict=True)
    assert isinstance(report, CertifyReport) and report.passed and report.failures == []
    assert report.n_blocks == 6 and len(report.block_roundtrip) == 6
    assert report.jacobian_logdet_error is not None and report.jacobian_logdet_error < 1e-10
    assert report.gradcheck_passed and "DoubleAffineCoupling" in report.gradcheck_block
    assert len(report.fused_check) == 4  # two couplings per double block
    assert report.roundtrip <= report.roundtrip_bound
    assert report.roundtrip_bound == pytest.approx(6 * 1e3 * torch.finfo(dtype).eps * (1 + x.abs().max().item()))
    text = str(report)
    assert "PASSED" in text and "blocks.1.couplings.0" in text
    assert flow.training  # mode restored


def test_conditional_flow():
    flow = _trained_flow(cond_channels=3)
    report = certify(flow, torch.randn(4, 6), torch.randn(4, 3))
    assert report.passed


def test_broken_inverse_is_reported_and_strict_raises():
    flow = Flow([ActNorm(4), Doubling(4, inverse_bias=1e-2)])
    x = torch.randn(3, 4)
    report = certify(flow, x)
    assert not report.passed
    assert report.block_roundtrip["blocks.1 (Doubling)"] == pytest.approx(1e-2, rel=1e-3)
    assert any("blocks.1 (Doubling)" in f for f in report.failures)
    assert "FAILED" in str(report)
    with pytest.raises(InvertibilityError, match="round-trip") as info:
        certify(flow, x, strict=True)
    assert info.value.report.roundtrip > 1e-3


def test_wrong_logdet_caught_by_jacobian():
    flow = Flow([Doubling(4, logdet_ok=False)]).double()  # flows take input of their own dtype
    report = certify(flow, torch.randn(2, 4, dtype=torch.float64))
    assert report.logdet_antisymmetry == 0.0  # consistent with itself...
    assert report.jacobian_logdet_error == pytest.approx(4 * math.log(2) / (1 + 4 * math.log(2)))
    assert not report.passed and any("Jacobian" in f for f in report.failures)


def test_jacobian_skipped_for_large_inputs():
    flow = Flow([ActNorm(3)])
    report = certify(flow, torch.randn(2, 3, 10, 10))
    assert report.jacobian_logdet_error is None and "300 dims" in report.jacobian_note
    assert report.passed and "skipped" in str(report)


def test_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.pt"
    torch.save(_trained_flow(), good)
    assert cli_main(["check", str(good), "--batch", "3"]) == 0
    assert "PASSED" in capsys.readouterr().out
    bad = tmp_path / "bad.pt"
    torch.save(Flow([Doubling(5, inverse_bias=0.1)]), bad)
    assert cli_main(["check", str(bad), "--input-shape", "5"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert cli_main(["check", str(bad)]) == 2  # no recorded event shape
    cond = tmp_path / "cond.pt"
    torch.save(_trained_flow(cond_channels=3), cond)
    assert cli_main(["check", str(cond), "--dtype", "float64"]) == 0


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "flowkern", "backends"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "reference" in proc.stdout and "cpu" in proc.stdout


def test_bad_arguments():
    with pytest.raises(TypeError, match="^x must be"):
        certify(Flow([ActNorm(2)]), [1.0, 2.0])
    with pytest.raises(TypeError, match="^model must be"):
        certify(torch.nn.Linear(2, 2), torch.randn(2, 2))


def test_saved_bytes_counts_each_saved_storage_once_whole_then_runs_backward():
    x = torch.randn(7, 5)  # a constant: mul saves it for w's grad
    w = torch.randn(7, 5, requires_grad=True)
    v = torch.randn(7, 3, requires_grad=True)
    assert saved_bytes(lambda: (x * w).sum()) == 7 * 5 * 4
    torch.testing.assert_close(w.grad, x)
    w.grad = None
    # x whole (for w's grad) and its view x[:, :3] (for v's): one storage
    assert saved_bytes(lambda: (x * w).sum() + (x[:, :3] * v).sum()) == 7 * 5 * 4
    assert saved_bytes(lambda: (x[:, :3] * v).sum()) == 7 * 5 * 4  # a view keeps its whole base
    y = torch.randn(11, dtype=torch.float64)
    assert saved_bytes(lambda: (x * w).sum() + (y * w[0, 0]).sum().float()) == 7 * 5 * 4 + 11 * 8


def test_saved_bytes_wants_a_scalar_loss():
    w = torch.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="^loss_fn must return a scalar torch.Tensor, got shape \\(3,\\)"):
        saved_bytes(lambda: w * 2)
    with pytest.raises(TypeError, match="^loss_fn must return a scalar torch.Tensor, got float"):
        saved_bytes(lambda: 1.0)
