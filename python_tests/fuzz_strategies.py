"""Hypothesis strategies and oracles for fuzzing every backend of the fused coupling op.

A drawn :class:`Case` is a small frozen record (shapes, split, scale function, dtype,
memory layouts, value magnitude, seed); :func:`build` turns it into leaf tensors and
the strided views the op consumes, so a failing case is pinned with
``@example(case=Case(...))`` and rebuilt bit for bit.

Oracle: every backend's result in dtype D is compared with the reference run in
float64 on the same (D-rounded) inputs, by flash-attention's rule — its error is at
most 2x the error of the reference computed in D itself, plus a floor of
``helpers.TOL[D]`` relative to the magnitude of what is compared.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from flowkern import backends
from flowkern.ops import CouplingConfig

from .helpers import TOL, flash_rule_ok

__all__ = [
    "Case",
    "Built",
    "DTYPES",
    "PROFILE",
    "cases",
    "build",
    "relayout",
    "fuzz_settings",
    "example_count",
    "fuzz_backends",
    "probe_backend",
    "assert_flash",
]

DTYPES = {"float64": torch.float64, "float32": torch.float32,
          "float16": torch.float16, "bfloat16": torch.bfloat16}
X_LAYOUTS = ("contiguous", "channels_last", "sliced")
ST_LAYOUTS = ("separate", "halves", "swapped", "interleaved", "channels_last", "expanded", "sliced")

# Largest |s_raw| scale per (scale function, dtype) that keeps exp(+-s) * values inside the
# dtype's range (exp is unbounded; sigmoid's s ~ -(s_raw + 2) is unbounded below).
_MAG_CAP = {("exp", "float16"): 1.5, ("exp", "bfloat16"): 8.0, ("exp", "float32"): 8.0,
            ("exp", "float64"): 30.0, ("sigmoid", "float16"): 2.0, ("sigmoid", "bfloat16"): 15.0,
            ("sigmoid", "float32"): 15.0, ("sigmoid", "float64"): 100.0}

PROFILE = os.environ.get("FLOWKERN_FUZZ", "ci")
_EXAMPLES = {"ci": 300, "long": 5000}
_GRADCHECK_EXAMPLES = {"ci": 40, "long": 500}
if PROFILE not in _EXAMPLES:
    raise ValueError(f"FLOWKERN_FUZZ must be 'ci' or 'long', not {PROFILE!r}")


def example_count(gradcheck: bool = False) -> int:
    """Examples per property: 300 (``ci``) / 5,000 (``long``), the float64 gradcheck 40 / 500.
    ``FLOWKERN_FUZZ_EXAMPLES=N`` overrides every count; ``FLOWKERN_FUZZ_GRADCHECK_EXAMPLES=N``
    then the gradcheck's."""
    override = os.environ.get("FLOWKERN_FUZZ_EXAMPLES")
    if gradcheck:
        override = os.environ.get("FLOWKERN_FUZZ_GRADCHECK_EXAMPLES") or override
        return int(override) if override else _GRADCHECK_EXAMPLES[PROFILE]
    return int(override) if override else _EXAMPLES[PROFILE]


def fuzz_settings(gradcheck: bool = False) -> settings:
    """:func:`example_count` examples, derandomized in ``ci`` (the default), random in ``long``
    (``FLOWKERN_FUZZ=long``); no example database, no deadline; shrinking stays on."""
    return settings(
        max_examples=example_count(gradcheck),
        deadline=None,
        derandomize=PROFILE != "long",
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@dataclass(frozen=True)
class Case:
    """One op call: shapes, config, dtype, layouts and value ranges (tensors come from ``seed``)."""

    B: int
    C: int
    spatial: tuple[int, ...]
    split: int
    passive: str
    scale: str
    clamp: float
    atan_k: float
    eps: float
    dtype: str
    actnorm: bool
    x_layout: str
    st_layout: str
    magnitude: float
    x_scale: float
    seed: int

    @property
    def c_act(self) -> int:
        return self.C - self.split if self.passive == "first" else self.split

    @property
    def kwargs(self) -> dict:
        return dict(split=self.split, passive=self.passive, scale=self.scale, clamp=self.clamp,
                    atan_k=self.atan_k, eps=self.eps)

    @property
    def cfg(self):
        return CouplingConfig(self.split, self.passive, self.scale, self.clamp, self.atan_k, self.eps)


_SIZES_1D = (1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33, 64, 65)
_SIZES_2D = (1, 2, 3, 5, 7)


@st.composite
def cases(draw, dtypes: tuple[str, ...] = tuple(DTYPES), max_numel: int = 6000) -> Case:
    """Random op calls: odd/prime/1 sizes, empty batch, all splits, sides, scales, layouts."""
    dtype = draw(st.sampled_from(dtypes))
    B = draw(st.sampled_from((0, 1, 2, 3, 5, 7)))
    kind = draw(st.sampled_from(("vector", "1d", "2d", "1x1")))
    if kind == "vector":
        spatial: tuple[int, ...] = ()
        C = draw(st.integers(2, 70))
    else:
        C = draw(st.integers(2, 13))
        spatial = {"1d": lambda: (draw(st.sampled_from(_SIZES_1D)),),
                   "2d": lambda: (draw(st.sampled_from(_SIZES_2D)), draw(st.sampled_from(_SIZES_2D))),
                   "1x1": lambda: (1, 1)}[kind]()
    if max(B, 1) * C * math.prod(spatial) > max_numel:
        B = 1
    scale = draw(st.sampled_from(("exp", "tanh", "atan", "sigmoid")))
    cap = _MAG_CAP.get((scale, dtype), 100.0)
    magnitude = draw(st.sampled_from(tuple(m for m in (0.5, 1.0, 4.0, 30.0, 100.0) if m <= cap) or (cap,)))
    return Case(
        B=B, C=C, spatial=spatial,
        split=draw(st.integers(1, C - 1)),
        passive=draw(st.sampled_from(("first", "second"))),
        scale=scale,
        # float16 (max 65504): clamp 5 gives exp(s) up to e^7.9 ~ 2600, which times x_scale 30
        # leaves the dtype's range for the exact result itself.
        clamp=draw(st.sampled_from((0.3, 1.0, 2.0) if dtype == "float16" else (0.3, 1.0, 2.0, 5.0))),
        atan_k=draw(st.sampled_from((2.0 / math.pi, 0.5, 1.0))),
        eps=draw(st.sampled_from((0.0, 1e-6, 1e-2))) if scale == "sigmoid" else 0.0,
        dtype=dtype,
        actnorm=draw(st.booleans()),
        x_layout=draw(st.sampled_from(X_LAYOUTS)),
        st_layout=draw(st.sampled_from(ST_LAYOUTS)),
        magnitude=magnitude,
        x_scale=draw(st.sampled_from((1.0, 1.0, 30.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@dataclass
class Built:
    """Leaf tensors of a case and the function making the op's (possibly strided) inputs."""

    leaves: dict[str, torch.Tensor]
    make: Callable[[dict[str, torch.Tensor]], tuple]

    def inputs(self) -> tuple:
        return self.make(self.leaves)

    def upcast(self, requires_grad: bool = False) -> "Built":
        """The same leaves (already rounded to the case dtype) in float64."""
        up = {k: v.detach().double().requires_grad_(requires_grad) for k, v in self.leaves.items()}
        return Built(up, self.make)

    def with_grad(self) -> "Built":
        return Built({k: v.detach().clone().requires_grad_(True) for k, v in self.leaves.items()},
                     self.make)


def _strided_base(shape: tuple[int, ...], layout: str, rnd) -> tuple[torch.Tensor, Callable]:
    """A leaf and a view function giving a tensor of ``shape`` with the requested layout."""
    if layout == "channels_last" and len(shape) > 2:
        return rnd((shape[0], *shape[2:], shape[1])), lambda v: v.movedim(-1, 1)
    if layout == "channels_last":  # vectors: a transposed (C, B) buffer
        return rnd((shape[1], shape[0])), lambda v: v.t()
    if layout == "sliced":  # every other element of the last dim, storage offset 1
        return rnd((*shape[:-1], 2 * shape[-1] + 1)), lambda v: v[..., 1::2]
    return rnd(shape), lambda v: v


def relayout(v: torch.Tensor, layout: str) -> torch.Tensor:
    """A tensor equal to ``v`` stored with one of :data:`X_LAYOUTS`."""
    base, view = _strided_base(tuple(v.shape), layout, lambda s: v.new_zeros(s))
    out = view(base)
    out.copy_(v)
    return out


def build(case: Case) -> Built:
    """Deterministic leaves for ``case`` (values rounded to its dtype) and their views."""
    g = torch.Generator().manual_seed(case.seed)
    dt = DTYPES[case.dtype]

    def rnd(shape, scale=1.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dt)

    B, C, S, ca = case.B, case.C, case.spatial, case.c_act
    act_shape = (B, ca, *S)
    leaves: dict[str, torch.Tensor] = {}
    x_base, x_view = _strided_base((B, C, *S), case.x_layout, lambda s: rnd(s, case.x_scale))
    leaves["x"] = x_base
    lay = case.st_layout
    if lay in ("halves", "swapped", "interleaved"):
        leaves["h"] = rnd((B, 2 * ca, *S))
        leaves["h"][:, 0::2] *= case.magnitude if lay == "interleaved" else 1.0
        if lay == "halves":
            leaves["h"][:, :ca] *= case.magnitude
        elif lay == "swapped":
            leaves["h"][:, ca:] *= case.magnitude
        st_view = {"halves": lambda L: (L["h"][:, :ca], L["h"][:, ca:]),
                   "swapped": lambda L: (L["h"][:, ca:], L["h"][:, :ca]),
                   "interleaved": lambda L: (L["h"][:, 0::2], L["h"][:, 1::2])}[lay]
    elif lay == "expanded":  # stride-0 views: s_raw shared over the batch, t over the last dim
        leaves["s_raw"] = rnd((1, ca, *S), case.magnitude)
        t_shape = (B, ca, *S[:-1], 1) if S else (1, ca)
        leaves["t"] = rnd(t_shape)
        st_view = lambda L: (L["s_raw"].expand(act_shape), L["t"].expand(act_shape))  # noqa: E731
    else:
        s_base, s_v = _strided_base(act_shape, lay if lay != "separate" else "contiguous",
                                    lambda s: rnd(s, case.magnitude))
        t_base, t_v = _strided_base(act_shape, lay if lay != "separate" else "contiguous", rnd)
        leaves["s_raw"], leaves["t"] = s_base, t_base
        st_view = lambda L: (s_v(L["s_raw"]), t_v(L["t"]))  # noqa: E731
    if case.actnorm:
        sign = torch.where(torch.rand(C, generator=g) < 0.25, -1.0, 1.0).double()
        leaves["a"] = (sign * (0.5 + torch.rand(C, generator=g, dtype=torch.float64))).to(dt)
        leaves["b"] = rnd((C,), 0.3)

    def make(L):
        s_raw, t = st_view(L)
        return x_view(L["x"]), s_raw, t, L.get("a"), L.get("b")

    return Built(leaves, make)


# ---- which backends to fuzz -----------------------------------------------------
def probe_backend(name: str) -> str | None:
    """None if backend ``name`` runs the op on CPU tensors, else why not."""
    return backends.available("cpu").get(name, f"backend {name!r} is not registered")


def fuzz_backends() -> list[str]:
    """Backends under test: ``FLOWKERN_FUZZ_BACKENDS`` (comma list) or every registered one
    except the GPU-only ``cuda`` and ``triton`` (fuzzed in a subprocess under its interpreter)."""
    env = os.environ.get("FLOWKERN_FUZZ_BACKENDS")
    if env:
        return [n.strip() for n in env.split(",") if n.strip()]
    return [n for n in backends.available("cpu") if n not in ("cuda", "triton")]


# ---- the oracle -------------------------------------------------------------------
def assert_flash(what: str, out: torch.Tensor | None, same: torch.Tensor | None,
                 exact: torch.Tensor | None, dtype: torch.dtype, magnitude: float | None = None) -> None:
    """``out`` (backend, dtype) vs ``exact`` (fp64 reference): error <= 2 x error of ``same``
    (reference in dtype) + TOL[dtype] relative to ``magnitude`` (default max |exact|)."""
    if exact is None:
        assert out is None or not out.any(), f"{what}: backend gives a nonzero gradient, reference none"
        return
    assert out is not None, f"{what}: backend returned no gradient, reference has one"
    assert tuple(out.shape) == tuple(exact.shape), f"{what}: shape {tuple(out.shape)} != {tuple(exact.shape)}"
    assert out.dtype == same.dtype, f"{what}: dtype {out.dtype}, reference gives {same.dtype}"
    if exact.numel() == 0:
        return
    assert torch.isfinite(exact).all() and torch.isfinite(same.double()).all(), \
        f"{what}: case outside the dtype's range (fix the strategy's magnitude caps)"
    atol, rtol = TOL[dtype]
    mag = exact.abs().max().item() if magnitude is None else magnitude
    floor = atol + rtol * mag
    if not flash_rule_ok(out, same, exact, slack=2.0, floor=floor):
        diff = (out.double() - exact).abs()
        ref_err = (same.double() - exact).abs().max().item()
        idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if diff.isfinite().all() else "nan"
        raise AssertionError(
            f"{what}: max error {diff.max().item():.3e} at {idx} > 2 x reference error "
            f"{ref_err:.3e} + floor {floor:.3e} (dtype {dtype}, |exact| max {mag:.3e})")
