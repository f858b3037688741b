r"""Glow on real photographs, offline: flowkern against normflows, then a resolution normflows
cannot afford.

The two photographs scikit-learn ships (``sklearn.datasets.load_sample_images()``: china.jpg and
flower.jpg, 427 x 640) are the data: random 32 x 32 patches from the left three quarters of each
photo for training, patches of the right quarter (never seen in training) for test, and the
photo a patch comes from as its class. Pixels are dequantised uniformly to [0, 1)
(:func:`flowkern.nn.dequantize`).

1. normflows' Glow of its ``examples/glow.ipynb`` (L = 3 levels of K GlowBlocks, class-conditional
   diagonal Gaussian bases; ``notebook_glow.py`` beside this file) is built, its actnorms
   initialised on the first batch, and converted
   with :func:`flowkern.compat.convert`: both models start from the same weights and train on the
   same batches (same dequantisation noise, same order) with Adam for the same number of steps.
   The report gives both test bits/dim (with the 8-bit discretisation term) and whether they
   agree within noise: the standard error of the test set, and the divergence float32 rounding
   alone causes (flowkern trained again from the weights moved by one ulp).
2. A grid of the trained flowkern model's samples at temperatures 1.0 and 0.7 per class, beside
   real test patches (``samples.png``).
3. The same trained model on whole photographs (416 x 640) at a batch whose normflows training
   step would need more memory than this machine has: normflows' step memory is measured as the
   peak RSS growth of fresh processes running one step at two small sizes, grows linearly in the
   number of pixels, and is evaluated at the large batch; flowkern runs with
   ``memory_saving=True`` (saving only the latents; the batch processed one sample at a time,
   ``memory_saving_chunk=1``) for a few steps with the loss falling, and the process's peak RSS
   is reported. A 416 x 640 sample goes to ``sample_large.png``.

Usage: ``python examples/image/glow_photos.py --out DIR [--demo | --quick]`` (writes
``metrics.json``, ``report.md`` and the PNGs into DIR). Sizes: the default (:class:`Config`) is
the full run; ``--demo`` (:func:`demo_config`, the last stage of ``make demo``) trains a
shallower Glow for fewer steps and runs stage 3 at a fixed small batch, reporting the batch from
which normflows' step would exceed this machine's memory instead of training at it; ``--quick``
(:func:`quick_config`) is a small smoke run of every stage. The processing time of stage 3 at
the full size grows with the machine's memory (the batch is chosen to exceed it).

References: Kingma & Dhariwal 2018 (Glow); Theis et al. 2016 (dequantisation, bits/dim).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT, HERE):  # this checkout's flowkern; notebook_glow.py beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from flowkern.check import saved_bytes  # noqa: E402
from flowkern.compat import convert  # noqa: E402
from flowkern.nn import bits_per_dim, dequantize  # noqa: E402
from notebook_glow import notebook_glow  # noqa: E402


@dataclass
class Config:
    patch: int = 32
    levels: int = 3
    depth: int = 4
    hidden: int = 64
    batch: int = 32
    steps: int = 150
    lr: float = 1e-3
    n_test: int = 512
    test_fraction: float = 0.25
    n_samples: int = 8
    large_shape: tuple = (416, 640)
    large_steps: int = 3
    large_lr: float = 1e-4
    large_batch_max: int = 64
    large_batch: int | None = None  # a fixed batch for stage 3 (None: the batch normflows cannot afford)
    memory_margin: float = 1.05
    probe_sizes: tuple = (128, 256)
    probe_batch: int = 4
    seed: int = 0
    quick: bool = False


def demo_config() -> Config:
    """``make demo``'s size: the notebook Glow with K = 2 steps per level, 60 training steps, and
    stage 3 at a fixed batch of 4 whole photographs."""
    return Config(depth=2, steps=60, large_batch=4)


def quick_config() -> Config:
    return Config(patch=16, levels=2, depth=1, hidden=16, batch=16, steps=12, n_test=64, n_samples=4,
                  large_shape=(64, 96), large_steps=2, large_lr=1e-3, probe_sizes=(16, 32), probe_batch=2,
                  large_batch=2, quick=True)


# ---- data -----------------------------------------------------------------------------------------
def load_photos() -> torch.Tensor:
    """The two photos scikit-learn ships, uint8 (2, 3, 427, 640) (no download)."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


class Patches:
    """Random square patches of the photos: training from the left columns, test from the right."""

    def __init__(self, photos: torch.Tensor, patch: int, test_fraction: float) -> None:
        self.photos, self.patch = photos, patch
        self.width = photos.shape[3]
        self.split = int(round(self.width * (1 - test_fraction)))

    def draw(self, n: int, g: torch.Generator, test: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """n uint8 patches and their photo index (the class)."""
        p = self.patch
        lo, hi = (self.split, self.width - p) if test else (0, self.split - p)
        cls = torch.randint(0, self.photos.shape[0], (n,), generator=g)
        ys = torch.randint(0, self.photos.shape[2] - p + 1, (n,), generator=g)
        xs = torch.randint(lo, hi + 1, (n,), generator=g)
        out = torch.stack([self.photos[c, :, y:y + p, x:x + p] for c, y, x in zip(cls.tolist(), ys.tolist(),
                                                                                 xs.tolist())])
        return out, cls


# ---- models ---------------------------------------------------------------------------------------
def resize_bases(model, shape: tuple[int, int], cfg: Config) -> None:
    """Give each class-conditional base its latent's spatial size at image size ``shape`` (the
    per-class mean and log-std of a base are per position; at a larger image they are tiled from
    the trained ones, which were learned on stationary patches)."""
    L = cfg.levels
    for i, q in enumerate(model.q0):
        f = 2 ** (L - i) if i > 0 else 2 ** L
        h, w = shape[0] // f, shape[1] // f
        with torch.no_grad():
            for name in ("loc", "log_scale"):
                p = getattr(q, name)
                reps = (1, math.ceil(h / p.shape[1]), math.ceil(w / p.shape[2]), 1)
                setattr(q, name, torch.nn.Parameter(p.repeat(*reps)[:, :h, :w].contiguous()))
        q.shape = (q.shape[0], h, w)
        q.d = int(np.prod(q.shape))


# ---- measurement helpers ---------------------------------------------------------------------------
def peak_rss_bytes() -> int:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` survives ``exec`` and would
    report a larger parent's peak)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def mem_total_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def save_grid(rows: list[torch.Tensor], path: Path, scale: int = 3) -> None:
    """Rows of images (n, 3, h, w) in [0, 1] as one PNG (1-pixel white gaps, nearest upscaling)."""
    from PIL import Image

    n, _, h, w = rows[0].shape
    gap = 1
    grid = torch.ones(3, len(rows) * (h + gap) + gap, n * (w + gap) + gap)
    for r, imgs in enumerate(rows):
        for k in range(imgs.shape[0]):
            y, x = gap + r * (h + gap), gap + k * (w + gap)
            grid[:, y:y + h, x:x + w] = torch.nan_to_num(imgs[k], nan=0.5, posinf=1.0, neginf=0.0).clamp(0, 1)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST).save(path)


# ---- stages ----------------------------------------------------------------------------------------
def train(model, batches, lr: float) -> tuple[list[float], float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    t0 = time.perf_counter()
    for x, y in batches:
        loss = model.forward_kld(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - t0


@torch.no_grad()
def test_bpd(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    model.eval()
    lp = torch.cat([model.log_prob(x[i:i + chunk], y[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    model.train()
    return bits_per_dim(lp, x[0].numel())


def run(cfg: Config, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    photos = load_photos()
    data = Patches(photos, cfg.patch, cfg.test_fraction)
    g = torch.Generator().manual_seed(cfg.seed)
    batches = []
    for _ in range(cfg.steps):
        k, c = data.draw(cfg.batch, g, test=False)
        batches.append((dequantize(k, generator=g), c))
    k_test, c_test = data.draw(cfg.n_test, g, test=True)
    x_test = dequantize(k_test, generator=g)

    # 1. normflows' notebook Glow and its flowkern conversion: same init, same batches
    peer = notebook_glow(cfg.patch, cfg.levels, cfg.depth, cfg.hidden, num_classes=photos.shape[0], seed=cfg.seed)
    with torch.no_grad():
        peer.log_prob(*batches[0])  # the actnorms' data-dependent init (normflows: on the first call)
    fk = convert(peer)
    # the rounding-noise reference: flowkern again, from the weights moved by ~1 float32 ulp
    ref = convert(peer)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g).sign())
    init_bpd = test_bpd(fk, x_test, c_test).mean().item()
    peer_losses, peer_time = train(peer, batches, cfg.lr)
    fk_losses, fk_time = train(fk, batches, cfg.lr)
    train(ref, batches, cfg.lr)
    bpd_peer, bpd_fk, bpd_ref = (test_bpd(m, x_test, c_test) for m in (peer, fk, ref))
    diff = bpd_fk - bpd_peer  # paired: the same test patches
    ref_diff = (bpd_ref - bpd_fk).mean().item()
    se_test = bpd_fk.std().item() / math.sqrt(cfg.n_test)
    se_diff = diff.std().item() / math.sqrt(cfg.n_test)
    # within noise: inside the test set's standard error, or within 3x the divergence that one ulp
    # of the initial weights causes over the same training (float32 training is chaotic)
    agree = abs(diff.mean().item()) <= max(2 * se_test, 3 * abs(ref_diff))

    # 2. samples at two temperatures per class, beside real test patches
    torch.manual_seed(cfg.seed + 1)
    rows, row_names, nonfinite = [], [], {}
    fk.eval()
    with torch.no_grad():
        for cls in range(photos.shape[0]):
            real = x_test[c_test == cls][:cfg.n_samples]
            rows.append(real)
            row_names.append(f"test patches, photo {cls}")
            for T in (1.0, 0.7):
                s, _ = fk.sample(cfg.n_samples, torch.full((cfg.n_samples,), cls), temperature=T)
                rows.append(s)
                row_names.append(f"samples T={T}, photo {cls}")
                nonfinite[f"T={T}, photo {cls}"] = int((~torch.isfinite(s)).flatten(1).any(1).sum())
    fk.train()
    save_grid(rows, out / "samples.png")

    # 3. the same model on whole photos at a batch normflows cannot afford, memory-saving
    large = run_large(cfg, fk, peer, photos, out)

    metrics = dict(
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        data=dict(source="sklearn.datasets.load_sample_images (china.jpg, flower.jpg)", photo_shape=list(photos.shape),
                  train_columns=[0, data.split], test_columns=[data.split, data.width], n_test=cfg.n_test),
        test_bpd=dict(initial=init_bpd, flowkern=bpd_fk.mean().item(), normflows=bpd_peer.mean().item(),
                      difference=diff.mean().item(), se_test=se_test, se_paired_difference=se_diff,
                      rounding_reference_difference=ref_diff,
                      agree_within_noise=agree),
        train=dict(steps=cfg.steps, flowkern_seconds=fk_time, normflows_seconds=peer_time,
                   flowkern_final_loss=sum(fk_losses[-10:]) / len(fk_losses[-10:]),
                   normflows_final_loss=sum(peer_losses[-10:]) / len(peer_losses[-10:]),
                   flowkern_first_loss=fk_losses[0], normflows_first_loss=peer_losses[0]),
        samples=dict(file="samples.png", rows=row_names, n_per_row=cfg.n_samples, non_finite=nonfinite),
        large=large,
        seconds=time.perf_counter() - t_start,
        threads=torch.get_num_threads(),
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "report.md").write_text(report(metrics))
    return metrics


def run_large(cfg: Config, fk, peer, photos: torch.Tensor, out: Path) -> dict:
    H, W = cfg.large_shape
    L = cfg.levels
    if H % 2 ** L or W % 2 ** L or H > photos.shape[2] or W > photos.shape[3]:
        raise ValueError(f"large_shape {cfg.large_shape} must fit the photos {tuple(photos.shape[2:])} and be "
                         f"divisible by 2**levels = {2 ** L}")
    # normflows' training-step memory per sample: the peak RSS growth of a fresh process running one
    # step of the same model at two small sizes, linear in the pixels (its saved bytes likewise)
    probes = {s: probe_normflows(cfg, s) for s in cfg.probe_sizes}
    (s0, p0), (s1, p1) = sorted(probes.items())
    saved_per_px = (p1["saved_bytes"] - p0["saved_bytes"]) / (cfg.probe_batch * (s1 * s1 - s0 * s0))
    rss_per_px = (p1["step_bytes"] - p0["step_bytes"]) / (cfg.probe_batch * (s1 * s1 - s0 * s0))
    per_px = max(rss_per_px, saved_per_px)  # the saved tensors are alive at the peak: a lower bound
    nf_per_sample = per_px * H * W
    mem_total = mem_total_bytes()
    # the smallest batch whose normflows step needs more than the machine's memory (with a margin)
    unaffordable_batch = math.ceil(cfg.memory_margin * mem_total / nf_per_sample)
    batch = cfg.large_batch if cfg.large_batch is not None else min(cfg.large_batch_max, unaffordable_batch)
    nf_needed = batch * nf_per_sample

    g = torch.Generator().manual_seed(cfg.seed + 2)
    cls = torch.arange(batch) % photos.shape[0]
    ys = torch.randint(0, photos.shape[2] - H + 1, (batch,), generator=g)
    xs = torch.randint(0, photos.shape[3] - W + 1, (batch,), generator=g)
    k = torch.stack([photos[c, :, y:y + H, x:x + W] for c, y, x in zip(cls.tolist(), ys.tolist(), xs.tolist())])
    x = dequantize(k, generator=g)
    model = fk
    resize_bases(model, (H, W), cfg)
    model.memory_saving = True
    model.memory_saving_chunk = 1  # one sample's working set at a time (flowkern.nn.MultiScaleFlow)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.large_lr)
    losses, times, saved = [], [], None
    for step in range(cfg.large_steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        if step == 0:
            holder = {}

            def loss_fn():
                holder["loss"] = model.forward_kld(x, cls)
                return holder["loss"]

            saved = saved_bytes(loss_fn)
            loss = holder["loss"]
        else:
            loss = model.forward_kld(x, cls)
            loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item() / x[0].numel() / math.log(2) + 8)  # in bits/dim
    torch.manual_seed(cfg.seed + 3)
    model.eval()
    with torch.no_grad():
        s, _ = model.sample(1, torch.tensor([0]), temperature=0.7)
    model.train()
    save_grid([s], out / "sample_large.png", scale=1)
    return dict(shape=[3, H, W], batch=batch, steps=cfg.large_steps, bits_per_dim_per_step=losses,
                loss_fell=losses[-1] < losses[0], step_seconds=times, flowkern_saved_bytes=saved,
                flowkern_latent_bytes=x.numel() * x.element_size(), process_peak_rss_bytes=peak_rss_bytes(),
                normflows_probes={str(k): v for k, v in probes.items()}, normflows_step_bytes_per_pixel=per_px,
                normflows_rss_bytes_per_pixel=rss_per_px, normflows_saved_bytes_per_pixel=saved_per_px,
                normflows_step_bytes_needed=nf_needed, normflows_saved_bytes_needed=batch * saved_per_px * H * W,
                machine_mem_total_bytes=mem_total, normflows_unaffordable_from_batch=unaffordable_batch,
                normflows_affordable=bool(nf_needed < mem_total), sample_file="sample_large.png")


def probe_normflows(cfg: Config, size: int) -> dict:
    """One normflows training step of the model at ``size`` x ``size`` (batch ``cfg.probe_batch``) in
    a fresh process: its peak RSS growth over the built model, and its bytes saved for backward."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(dict(asdict(cfg), patch=size)),
           "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe_main(cfg_json: str) -> dict:
    cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(cfg_json).items()})
    peer = notebook_glow(cfg.patch, cfg.levels, cfg.depth, cfg.hidden, num_classes=2, seed=cfg.seed)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(cfg.probe_batch, 3, cfg.patch, cfg.patch, generator=g)
    y = torch.arange(cfg.probe_batch) % 2
    with torch.no_grad():
        peer.log_prob(x, y)
    opt = torch.optim.Adam(peer.parameters(), lr=1e-5)
    with open("/proc/self/status") as f:
        base = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    saved = saved_bytes(lambda: peer.forward_kld(x, y))
    opt.step()
    return dict(size=cfg.patch, batch=cfg.probe_batch, step_bytes=peak_rss_bytes() - base, saved_bytes=saved)


def report(m: dict) -> str:
    gib = 2 ** 30
    t, lg, c = m["test_bpd"], m["large"], m["config"]
    probes = ", ".join(f"{k}x{k} ({v['step_bytes'] / 2 ** 20:.0f} MiB at batch {v['batch']})"
                       for k, v in lg["normflows_probes"].items())
    if not lg["normflows_affordable"]:
        verdict = "normflows cannot train it here"
    else:  # a fixed small batch (--demo, --quick)
        verdict = (f"normflows could train this batch here (its step would exceed this machine's memory from "
                   f"batch {lg['normflows_unaffordable_from_batch']}); the full run, without --demo / --quick, "
                   f"trains at the batch its model's normflows step cannot afford (up to {c['large_batch_max']})")
    lines = [
        "# Glow on real photographs: flowkern and normflows",
        "",
        f"Data: {m['data']['source']}, {c['patch']}x{c['patch']} patches; training from columns "
        f"{m['data']['train_columns']}, test from the held-out columns {m['data']['test_columns']} "
        f"({m['data']['n_test']} patches); class = which photo. Model: normflows' notebook Glow, L={c['levels']}, "
        f"K={c['depth']}, hidden {c['hidden']}; the flowkern model is `convert(normflows_model)` (same initial "
        f"weights), both trained with Adam (lr {c['lr']}) on the same {c['steps']} batches of {c['batch']}.",
        "",
        "| | test bits/dim | training time |",
        "|---|---|---|",
        f"| initial | {t['initial']:.4f} | |",
        f"| normflows | {t['normflows']:.4f} | {m['train']['normflows_seconds']:.1f} s |",
        f"| flowkern | {t['flowkern']:.4f} | {m['train']['flowkern_seconds']:.1f} s |",
        "",
        f"Difference flowkern - normflows: {t['difference']:+.2e} bits/dim; standard error of the test bits/dim "
        f"{t['se_test']:.2e} (of the paired difference {t['se_paired_difference']:.2e}); flowkern trained again from "
        f"the same weights moved by one float32 ulp differs from the first flowkern run by "
        f"{t['rounding_reference_difference']:+.2e} (float32 training amplifies rounding): "
        f"{'agree within noise' if t['agree_within_noise'] else 'DO NOT agree within noise'}.",
        "",
        "![samples](samples.png)",
        "",
        "Rows: " + "; ".join(m["samples"]["rows"]) + ". Samples with non-finite pixels (the inverse of a "
        "sigmoid coupling divides by its scale; drawn grey): "
        + ", ".join(f"{k}: {v}/{m['samples']['n_per_row']}" for k, v in m["samples"]["non_finite"].items()) + ".",
        "",
        f"## {lg['shape'][1]}x{lg['shape'][2]}, batch {lg['batch']}, memory-saving",
        "",
        f"A normflows training step of this model needs {lg['normflows_step_bytes_per_pixel']:.0f} bytes per pixel "
        f"and sample (the larger of its peak RSS growth, {lg['normflows_rss_bytes_per_pixel']:.0f}, and its bytes saved "
        f"for backward, {lg['normflows_saved_bytes_per_pixel']:.0f}, per pixel, in fresh processes running one step, "
        f"linear between {probes}), "
        f"i.e. {lg['normflows_step_bytes_needed'] / gib:.1f} GiB at this batch ({lg['normflows_saved_bytes_needed'] / gib:.1f} GiB "
        f"of it saved for backward); this machine has {lg['machine_mem_total_bytes'] / gib:.1f} GiB in all: "
        f"{verdict}.",
        f"flowkern (memory_saving=True) saved {lg['flowkern_saved_bytes'] / 2**20:.1f} MiB for backward (the latents: "
        f"{lg['flowkern_latent_bytes'] / 2**20:.1f} MiB); process peak RSS {lg['process_peak_rss_bytes'] / gib:.2f} GiB.",
        "",
        "| step | bits/dim | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | {b:.4f} | {s:.1f} |" for i, (b, s) in enumerate(zip(lg["bits_per_dim_per_step"],
                                                                          lg["step_seconds"]))]
    lines += ["", f"Loss {'fell' if lg['loss_fell'] else 'did NOT fall'}. A sample at temperature 0.7:", "",
              "![large sample](sample_large.png)", "",
              f"Total {m['seconds']:.0f} s on {m['threads']} threads."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for metrics.json, report.md, PNGs (required)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--demo", action="store_true", help="make demo's size (a shallower Glow, stage 3 at batch 4)")
    size.add_argument("--quick", action="store_true", help="small smoke run of every stage")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FLOWKERN_THREADS", "2")))
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe is not None:
        print(json.dumps(_probe_main(args.probe)))
        return 0
    if args.out is None:
        parser.error("--out DIR is required")
    cfg = quick_config() if args.quick else demo_config() if args.demo else Config()
    m = run(cfg, args.out)
    t = m["test_bpd"]
    print(f"test bits/dim: flowkern {t['flowkern']:.4f}, normflows {t['normflows']:.4f} "
          f"(difference {t['difference']:+.1e}, se {t['se_test']:.1e}); "
          f"large {m['large']['shape']} x{m['large']['batch']}: bits/dim {m['large']['bits_per_dim_per_step']}, "
          f"normflows would need {m['large']['normflows_step_bytes_needed'] / 2**30:.1f} GiB; {m['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
