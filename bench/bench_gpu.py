"""GPU throughput of the fused coupling op: cuda and triton backends beside the reference.

Shapes as in the CPU table: vectors (65536, 256) and (256, 64), images (64, 64, 32, 32);
fp32 and bf16; split at C/2, s_raw / t as halves of one subnet output, actnorm on.
Times are ``triton.testing.do_bench`` medians (ms). Achieved bandwidth counts the bytes
the fused op must move once: forward reads x, s_raw, t and writes y; backward reads
grad_y, x, s_raw and writes grad_x, grad_s_raw, grad_t. It is shown against the device's
peak (2 x memory clock x bus width) when the driver reports it.

    python bench/bench_gpu.py [--quick]            # markdown table ("skipped: no GPU" without one)
    pytest bench/bench_gpu.py --benchmark-only     # pytest-benchmark cases (skipped without a GPU)
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch

import flowkern

__all__ = ["SHAPES", "table"]

SHAPES = [(65536, 256), (256, 64), (64, 64, 32, 32)]
QUICK_SHAPES = [(4096, 256), (256, 64), (8, 64, 32, 32)]
DTYPES = [torch.float32, torch.bfloat16]
BACKENDS = ["cuda", "triton", "reference"]


def _inputs(shape, dtype, requires_grad=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    B, C, *S = shape
    c_act = C - C // 2
    x = torch.randn(shape, device="cuda", dtype=dtype, generator=g)
    h = torch.randn((B, 2 * c_act, *S), device="cuda", dtype=dtype, generator=g)
    a = 0.5 + torch.rand(C, device="cuda", dtype=dtype, generator=g)
    b = 0.1 * torch.randn(C, device="cuda", dtype=dtype, generator=g)
    if requires_grad:
        for v in (x, h, a, b):
            v.requires_grad_(True)
    return x, h[:, :c_act], h[:, c_act:], a, b, C // 2


def _bytes(shape, dtype, backward: bool) -> int:
    n = math.prod(shape)
    n_act = n // shape[1] * (shape[1] - shape[1] // 2)
    per = torch.finfo(dtype).bits // 8
    return per * ((3 * n + 3 * n_act) if backward else (2 * n + 2 * n_act))


def peak_gbps() -> float | None:
    """Device memory bandwidth in GB/s from the driver's clock and bus width, if reported."""
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def _available(backend: str) -> bool:
    return flowkern.backends.available("cuda")[backend] is None


def _forward_fn(shape, dtype, backend):
    x, s_raw, t, a, b, split = _inputs(shape, dtype)
    return lambda: flowkern.ops.coupling_forward(x, s_raw, t, a, b, split=split, backend=backend)


def _backward_fn(shape, dtype, backend):
    x, s_raw, t, a, b, split = _inputs(shape, dtype, requires_grad=True)
    y, logdet = flowkern.ops.coupling_forward(x, s_raw, t, a, b, split=split, backend=backend)
    gy, gl = torch.randn_like(y), torch.randn_like(logdet)
    return lambda: torch.autograd.grad((y, logdet), (x, s_raw._base, a, b), (gy, gl),
                                       retain_graph=True)


def table(quick: bool = False) -> str:
    """Markdown table of ms and GB/s per shape, dtype, backend (or a one-line skip note)."""
    if not torch.cuda.is_available():
        return "skipped: no GPU (torch.cuda.is_available() is False)"
    from triton.testing import do_bench

    peak = peak_gbps()
    name = torch.cuda.get_device_name(0)
    lines = [f"Device: {name}, peak {peak:.0f} GB/s" if peak else f"Device: {name}", "",
             "| shape | dtype | backend | fwd ms | fwd GB/s | fwd % peak | bwd ms | bwd GB/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for shape in QUICK_SHAPES if quick else SHAPES:
        for dtype in DTYPES:
            for backend in BACKENDS:
                if not _available(backend):
                    lines.append(f"| {shape} | {dtype} | {backend} | unavailable | | | | |")
                    continue
                fwd = do_bench(_forward_fn(shape, dtype, backend))
                bwd = do_bench(_backward_fn(shape, dtype, backend))
                f_gbs = _bytes(shape, dtype, False) / fwd / 1e6
                b_gbs = _bytes(shape, dtype, True) / bwd / 1e6
                pct = f"{100 * f_gbs / peak:.0f}%" if peak else "n/a"
                lines.append(f"| {shape} | {str(dtype).removeprefix('torch.')} | {backend} | "
                             f"{fwd:.3f} | {f_gbs:.0f} | {pct} | {bwd:.3f} | {b_gbs:.0f} |")
    return "\n".join(lines)


# ---- pytest-benchmark cases --------------------------------------------------------------
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_coupling_gpu(benchmark, shape, dtype, backend, direction):
    if not _available(backend):
        pytest.skip(f"backend {backend}: {flowkern.backends.available('cuda')[backend]}")
    fn = (_forward_fn if direction == "forward" else _backward_fn)(shape, dtype, backend)

    def run():
        fn()
        torch.cuda.synchronize()

    benchmark(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes")
    print(table(parser.parse_args().quick))


if __name__ == "__main__":
    main()
