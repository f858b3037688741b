r"""Glow on photographs through ``flowkern train``, offline: an image folder cut from the photographs
scikit-image and scikit-learn bundle, a class-conditional Glow trained on it by the command line,
its samples, the memory of the standard and the memory-saving mode measured per run, and
normflows' notebook Glow against its flowkern conversion from the same weights.

1. **Data** (:func:`build_folders`, no download): six photographs, scikit-image's astronaut,
   coffee, chelsea and rocket (``skimage.data``) and scikit-learn's china and flower
   (``sklearn.datasets.load_sample_images``). The left three quarters of each photo are cut into
   ``tile`` x ``tile`` crops written as PNG to ``photos/train/<photo>/``, the right quarter into
   ``size`` x ``size`` crops written to ``photos/val/<photo>/`` (held out: no training crop
   overlaps it); the photo is the class. The photos at least ``large_size`` a side are written
   whole as JPEG to ``large/``.
2. **Training** (:func:`train_stage`): ``python -m flowkern train photos --conditional --size
   SIZE ...`` in a subprocess (random ``size`` crops of the tiles, uniform dequantisation, Adam
   with warm-up); its final val bits/dim (the 8-bit discretisation term included), the train
   bits/dim of its ``metrics.jsonl``, and the sample grid it writes at its last step (temperature
   0.7, the classes in turn: ``samples.png``).
3. **Memory** (:func:`memory_stage`): the same architecture on ``large_size`` x ``large_size``
   crops of ``large/``, one ``flowkern train`` process per run, each run's peak RSS read from its
   ``metrics.jsonl``. The standard mode at two batches gives its peak as a line in the batch, hence
   the batch from which its step needs more than this machine's memory
   (:func:`unaffordable_batch`). The memory-saving mode (``--memory-saving --memory-saving-chunk
   1``: only the latents are saved for backward, forward and backward run one image at a time) is
   measured at the first batch and trained at the run batch: the batch the standard mode cannot
   afford (about 140 images of 416 x 416 at K = 2 on a 23.5 GiB machine: one memory-saving step
   of about half a minute on 2 cores, at a few GiB). ``--demo`` caps it at ``large_batch_limit``
   (a machine with much more memory would make the step too long for the demo; the report then
   says the standard mode still fits); ``--quick`` trains at a fixed small batch.
4. **normflows** (:func:`compare_normflows`): normflows' Glow of its ``examples/glow.ipynb``
   (``notebook_glow.py`` beside this file; class-conditional bases, the photo as the class) is
   built on 32 x 32 patches of the two scikit-learn photos, its actnorms initialised on the first
   batch, and converted with :func:`flowkern.compat.convert`; both train from the same weights on
   the same batches. Their test bits/dim agree within noise when the difference is inside twice
   the test set's standard error, or (with ``compare_reference``, not at the ``--demo`` size)
   within three times the divergence float32 rounding alone causes (flowkern trained again from
   the weights moved by about one ulp).

Usage: ``python examples/image/glow_photos.py --out DIR [--demo | --quick]`` (``metrics.json``,
``report.md``, ``samples.png`` and the runs' folders in DIR). Sizes: :class:`Config` (``make
demo-image``), :func:`demo_config` (the last stage of ``make demo``), :func:`quick_config` (a
smoke run of every stage, for the tests).

References: Kingma & Dhariwal 2018 (Glow); Theis et al. 2016 (dequantisation, bits/dim).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
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

from flowkern.compat import convert  # noqa: E402
from flowkern.nn import bits_per_dim, dequantize  # noqa: E402
from notebook_glow import notebook_glow  # noqa: E402

__all__ = ["Config", "demo_config", "quick_config", "build_folders", "unaffordable_batch", "run", "main"]


@dataclass
class Config:
    # 1. data
    tile: int = 64
    val_step: int | None = None  # the validation crops' grid step (None: size, adjacent crops)
    # 2. training (flowkern train)
    size: int = 32
    levels: int = 3
    depth: int = 4
    hidden: int = 64
    batch: int = 32
    steps: int = 300
    lr: float = 1e-3
    warmup: int = 20
    workers: int = 1
    sample_n: int = 36
    # 3. memory: standard mode at probe_batches, memory-saving at probe_batches[0] and at the run batch
    large_size: int = 416
    probe_batches: tuple = (1, 2)
    large_batch: int | None = None  # the run's batch; None: the first the standard mode cannot afford
    large_batch_limit: int | None = None  # with large_batch None: never above this batch
    large_steps: int = 2
    large_lr: float = 1e-3
    # 4. normflows
    compare_patch: int = 32
    compare_depth: int = 4
    compare_steps: int = 150
    compare_batch: int = 32
    compare_reference: bool = True  # also train the one-ulp rounding reference
    n_test: int = 512
    test_fraction: float = 0.25
    seed: int = 0
    quick: bool = False


def demo_config() -> Config:
    """``make demo``'s size: K = 2 steps per level, 150 training steps of 16 crops, one
    memory-saving step at the batch the standard mode cannot afford (at most 192 images), the
    normflows comparison for 20 steps without the rounding reference."""
    return Config(depth=2, batch=16, steps=150, large_batch_limit=192, large_steps=1, compare_depth=2,
                  compare_steps=20, compare_reference=False)


def quick_config() -> Config:
    return Config(tile=32, val_step=48, size=16, levels=2, depth=1, hidden=16, batch=16, steps=20, warmup=2,
                  sample_n=16, large_size=128, probe_batches=(2, 6), large_batch=6, large_steps=1, compare_patch=16,
                  compare_depth=1, compare_steps=12, compare_batch=16, n_test=64, quick=True)


# ---- 1. data ----------------------------------------------------------------------------------------
def load_photographs() -> dict[str, np.ndarray]:
    """The bundled colour photographs (uint8, H x W x 3) by name: no download."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}
    photos.update(zip(("china", "flower"), load_sample_images().images))
    return photos


def build_folders(root: Path, cfg: Config, photos: dict[str, np.ndarray] | None = None) -> dict:
    """Write ``root/photos/{train,val}/<photo>/`` (PNG crops: training tiles from the left columns,
    validation crops from the held-out right columns) and ``root/large/`` (whole photos, JPEG);
    returns what was written."""
    from PIL import Image

    photos = load_photographs() if photos is None else photos
    folder, large = root / "photos", root / "large"
    for d in (folder, large):
        shutil.rmtree(d, ignore_errors=True)
    counts: dict[str, dict] = {}
    for name, im in photos.items():
        h, w = im.shape[:2]
        split = int(round(w * (1 - cfg.test_fraction)))
        for part, side, step, (x0, x1) in (("train", cfg.tile, cfg.tile, (0, split)),
                                           ("val", cfg.size, cfg.val_step or cfg.size, (split, w))):
            d = folder / part / name
            d.mkdir(parents=True)
            n = 0
            for y in range(0, h - side + 1, step):
                for x in range(x0, x1 - side + 1, step):
                    Image.fromarray(im[y:y + side, x:x + side]).save(d / f"{y:04d}_{x:04d}.png")
                    n += 1
            counts.setdefault(name, {"shape": [h, w]})[part] = n
        if min(h, w) >= cfg.large_size:
            large.mkdir(exist_ok=True)
            Image.fromarray(im).save(large / f"{name}.jpg", quality=95)
            counts[name]["large"] = True
    return {"photos": counts, "train_files": sum(c["train"] for c in counts.values()),
            "val_files": sum(c["val"] for c in counts.values()),
            "large_files": sorted(p.name for p in large.iterdir()) if large.exists() else [],
            "source": "skimage.data (astronaut, coffee, chelsea, rocket), sklearn.datasets.load_sample_images "
                      "(china, flower)"}


# ---- the command line -------------------------------------------------------------------------------
def flowkern(args: list, threads: int, log: Path) -> str:
    """``python -m flowkern ARGS`` in a subprocess on ``threads`` torch threads (the environment,
    glibc variables included, passed on); its output goes to ``log``; returns its stdout."""
    cmd = [sys.executable, "-m", "flowkern", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    log.write_text("$ flowkern " + " ".join(map(str, args)) + "\n" + done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"flowkern {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def read_metrics(out: Path) -> tuple[list[dict], list[dict]]:
    """(train lines, val lines) of a run's ``metrics.jsonl``."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [m for m in lines if m["split"] == "train"], [m for m in lines if m["split"] == "val"]


def model_flags(cfg: Config) -> list:
    return ["--levels", cfg.levels, "--depth", cfg.depth, "--hidden", cfg.hidden, "--seed", cfg.seed]


# ---- 2. training ------------------------------------------------------------------------------------
def train_stage(cfg: Config, root: Path, threads: int) -> dict:
    out = root / "train"
    shutil.rmtree(out, ignore_errors=True)
    args = ["train", root / "photos", "--out", out, "--conditional", "--size", cfg.size, *model_flags(cfg),
            "--batch", cfg.batch, "--steps", cfg.steps, "--lr", cfg.lr, "--warmup", cfg.warmup,
            "--workers", cfg.workers, "--checkpoint-every", cfg.steps, "--sample-every", cfg.steps,
            "--sample-n", cfg.sample_n, "--log-every", 1, "--no-progress"]
    t0 = time.perf_counter()
    stdout = flowkern(args, threads, root / "train.log")
    seconds = time.perf_counter() - t0
    train, val = read_metrics(out)
    grid = out / f"samples-{cfg.steps:08d}.png"
    shutil.copyfile(grid, root / "samples.png")
    last = train[-10:]
    return dict(command="flowkern " + " ".join(str(a).replace(str(root) + "/", "") for a in args),
                val_bits_per_dim=val[-1]["bits_per_dim"], val_images=val[-1]["images"],
                train_bits_per_dim_first=train[0]["bits_per_dim"],
                train_bits_per_dim_last10=sum(m["bits_per_dim"] for m in last) / len(last),
                steps=train[-1]["step"], seconds=seconds,
                images_per_s=sorted(m["images_per_s"] for m in train)[len(train) // 2],
                peak_rss_mib=train[-1]["peak_memory_mib"], samples_file="samples.png",
                final_line=stdout.strip().splitlines()[-1])


# ---- 3. memory --------------------------------------------------------------------------------------
def mem_total_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def unaffordable_batch(peaks: dict[int, float], budget: float) -> tuple[float, int]:
    """(bytes per image, the smallest batch whose peak exceeds ``budget``) from the peaks
    (bytes) measured at two batches, the peak being a line in the batch."""
    (b0, p0), (b1, p1) = sorted(peaks.items())
    per_image = (p1 - p0) / (b1 - b0)
    if per_image <= 0:
        raise ValueError(f"the peak does not grow with the batch ({peaks}): no batch exceeds the budget")
    return per_image, max(1, math.floor(b0 + (budget - p0) / per_image) + 1)


def memory_run(cfg: Config, root: Path, threads: int, name: str, batch: int, steps: int,
               memory_saving: bool) -> dict:
    out = root / "memory" / name
    shutil.rmtree(out, ignore_errors=True)
    args = ["train", root / "large", "--out", out, "--size", cfg.large_size, *model_flags(cfg), "--batch", batch,
            "--steps", steps, "--lr", cfg.large_lr, "--warmup", 0, "--val-fraction", 0, "--workers", 0,
            "--sample-every", 0, "--log-every", 1, "--no-progress"]
    if memory_saving:
        args += ["--memory-saving", "--memory-saving-chunk", 1]
    flowkern(args, threads, root / "memory" / f"{name}.log")
    train, _ = read_metrics(out)
    return dict(batch=batch, memory_saving=memory_saving, peak_rss_bytes=round(train[-1]["peak_memory_mib"] * 2 ** 20),
                bits_per_dim_per_step=[m["bits_per_dim"] for m in train],
                step_seconds=[m["step_time_s"] for m in train])


def memory_stage(cfg: Config, root: Path, threads: int) -> dict:
    (root / "memory").mkdir(parents=True, exist_ok=True)
    b0, b1 = cfg.probe_batches
    # the standard mode at two batches (the first for two steps: the update the memory-saving mode must match)
    standard = [memory_run(cfg, root, threads, f"standard-b{b0}", b0, 2, False),
                memory_run(cfg, root, threads, f"standard-b{b1}", b1, 1, False)]
    mem_total = mem_total_bytes()
    per_image, unaffordable = unaffordable_batch({r["batch"]: r["peak_rss_bytes"] for r in standard}, mem_total)
    batch = cfg.large_batch if cfg.large_batch is not None else min(unaffordable, cfg.large_batch_limit or unaffordable)
    saving = [memory_run(cfg, root, threads, f"memory-saving-b{b0}", b0, 2, True),
              memory_run(cfg, root, threads, f"memory-saving-b{batch}", batch, cfg.large_steps, True)]
    needed = standard[0]["peak_rss_bytes"] + (batch - b0) * per_image
    return dict(shape=[3, cfg.large_size, cfg.large_size], machine_mem_total_bytes=mem_total,
                standard=standard, memory_saving=saving,
                standard_bytes_per_image=per_image, standard_unaffordable_from_batch=unaffordable,
                run_batch=batch, standard_peak_needed_at_run_batch=needed,
                standard_affordable_at_run_batch=bool(needed <= mem_total),
                memory_saving_bytes_per_image=(saving[1]["peak_rss_bytes"] - saving[0]["peak_rss_bytes"]) / (batch - b0)
                if batch != b0 else None,
                # the same weights, the same batch: step 1 is the same forward, step 2 follows the same update
                first_step_difference=saving[0]["bits_per_dim_per_step"][0] - standard[0]["bits_per_dim_per_step"][0],
                second_step_difference=saving[0]["bits_per_dim_per_step"][1] - standard[0]["bits_per_dim_per_step"][1])


# ---- 4. normflows -----------------------------------------------------------------------------------
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


def _train(model, batches, lr: float) -> tuple[list[float], float]:
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
def _test_bpd(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    model.eval()
    lp = torch.cat([model.log_prob(x[i:i + chunk], y[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    model.train()
    return bits_per_dim(lp, x[0].numel())


def compare_normflows(cfg: Config, photos: dict[str, np.ndarray]) -> dict:
    torch.manual_seed(cfg.seed)
    two = torch.from_numpy(np.stack([photos["china"], photos["flower"]])).permute(0, 3, 1, 2).contiguous()
    data = Patches(two, cfg.compare_patch, cfg.test_fraction)
    g = torch.Generator().manual_seed(cfg.seed)
    batches = []
    for _ in range(cfg.compare_steps):
        k, c = data.draw(cfg.compare_batch, g, test=False)
        batches.append((dequantize(k, generator=g), c))
    k_test, c_test = data.draw(cfg.n_test, g, test=True)
    x_test = dequantize(k_test, generator=g)
    peer = notebook_glow(cfg.compare_patch, cfg.levels, cfg.compare_depth, cfg.hidden, num_classes=2, seed=cfg.seed)
    with torch.no_grad():
        peer.log_prob(*batches[0])  # the actnorms' data-dependent init (normflows: on the first call)
    fk = convert(peer)
    ref = convert(peer) if cfg.compare_reference else None
    if ref is not None:  # the rounding-noise reference: the initial weights moved by ~1 float32 ulp
        with torch.no_grad():
            for p in ref.parameters():
                p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g).sign())
    init_bpd = _test_bpd(fk, x_test, c_test).mean().item()
    _, peer_time = _train(peer, batches, cfg.lr)
    _, fk_time = _train(fk, batches, cfg.lr)
    bpd_peer, bpd_fk = _test_bpd(peer, x_test, c_test), _test_bpd(fk, x_test, c_test)
    diff = bpd_fk - bpd_peer  # paired: the same test patches
    se_test = bpd_fk.std().item() / math.sqrt(cfg.n_test)
    ref_diff = None
    if ref is not None:
        _train(ref, batches, cfg.lr)
        ref_diff = (_test_bpd(ref, x_test, c_test) - bpd_fk).mean().item()
    return dict(initial=init_bpd, flowkern=bpd_fk.mean().item(), normflows=bpd_peer.mean().item(),
                difference=diff.mean().item(), se_test=se_test,
                se_paired_difference=diff.std().item() / math.sqrt(cfg.n_test),
                rounding_reference_difference=ref_diff,
                agree_within_noise=abs(diff.mean().item()) <= max(2 * se_test, 3 * abs(ref_diff or 0.0)),
                steps=cfg.compare_steps, flowkern_seconds=fk_time, normflows_seconds=peer_time,
                n_test=cfg.n_test, train_columns=[0, data.split], test_columns=[data.split, data.width])


# ---- the run ----------------------------------------------------------------------------------------
def run(cfg: Config, out: Path, threads: int = 2) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    timings = {}
    t = time.perf_counter()
    photos = load_photographs()
    data = build_folders(out, cfg, photos)
    timings["data"] = time.perf_counter() - t
    t = time.perf_counter()
    train = train_stage(cfg, out, threads)
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    memory = memory_stage(cfg, out, threads)
    timings["memory"] = time.perf_counter() - t
    t = time.perf_counter()
    compare = compare_normflows(cfg, photos)
    timings["normflows"] = time.perf_counter() - t
    metrics = dict(config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                   data=data, train=train, memory=memory, normflows=compare,
                   timings_s={k: round(v, 2) for k, v in timings.items()},
                   seconds=time.perf_counter() - t_start, threads=threads)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "report.md").write_text(report(metrics))
    return metrics


def _gib(b: float) -> str:
    return f"{b / 2 ** 30:.2f} GiB"


def memory_sentences(mem: dict) -> list[str]:
    """The memory stage in words (this report and the demo's)."""
    side = mem["shape"][1]
    std, ms = mem["standard"], mem["memory_saving"]
    verdict = (f"at the run's batch its step would need {_gib(mem['standard_peak_needed_at_run_batch'])}, more than "
               f"this machine's {_gib(mem['machine_mem_total_bytes'])}: the standard mode cannot train it here"
               if not mem["standard_affordable_at_run_batch"] else
               f"it would exceed this machine's {_gib(mem['machine_mem_total_bytes'])} from batch "
               f"{mem['standard_unaffordable_from_batch']} of {side}x{side} images; this run trained the "
               f"memory-saving mode at batch {mem['run_batch']}, below it")
    per = mem["memory_saving_bytes_per_image"]
    return [
        f"Peak RSS of one `flowkern train` process per run (VmHWM), {side}x{side} crops of the photos in `large/`, "
        "the same architecture, seed and batches in both modes:", "",
        "| mode | batch | peak RSS | bits/dim per step | step s |", "|---|---|---|---|---|",
        *[f"| {'memory-saving, chunk 1' if r['memory_saving'] else 'standard'} | {r['batch']} "
          f"| {_gib(r['peak_rss_bytes'])} | {', '.join(f'{b:.4f}' for b in r['bits_per_dim_per_step'])} "
          f"| {', '.join(f'{t:.1f}' for t in r['step_seconds'])} |" for r in (*std, *ms)], "",
        f"The standard mode's peak grows by {mem['standard_bytes_per_image'] / 2 ** 20:.0f} MiB per image: {verdict}. "
        "The memory-saving mode's peak changes by "
        + (f"{per / 2 ** 20:+.1f} MiB per image" if per is not None else "(one batch measured)")
        + f". At batch {ms[0]['batch']} both modes start from the same weights on the same batches; their bits/dim "
        f"differ by {mem['first_step_difference']:+.1e} at step 1 and by {mem['second_step_difference']:+.1e} at step "
        "2, after one Adam update (whose first step divides each gradient by its own magnitude, so the float32 "
        "rounding of near-zero gradients can show).", ""]


def report(m: dict) -> str:
    c, d, tr, nf = m["config"], m["data"], m["train"], m["normflows"]
    lines = [
        "# Glow on photographs, trained by `flowkern train`", "",
        f"Data: {d['source']}, written at run time: {d['train_files']} training tiles ({c['tile']}x{c['tile']} PNG, "
        f"the left three quarters of each photo) and {d['val_files']} validation crops ({c['size']}x{c['size']} PNG, "
        f"the held-out right quarter); the photo is the class ({len(d['photos'])} classes).", "",
        f"`{tr['command']}`", "",
        f"Val bits/dim after {tr['steps']} steps: **{tr['val_bits_per_dim']:.4f}** ({tr['val_images']} held-out crops; "
        f"train bits/dim {tr['train_bits_per_dim_first']:.3f} at the first step, "
        f"{tr['train_bits_per_dim_last10']:.3f} over the last 10); {tr['seconds']:.0f} s, "
        f"{tr['images_per_s']:.0f} images/s, peak RSS {tr['peak_rss_mib']:.0f} MiB.", "",
        f"Samples at temperature 0.7, the classes in turn, row by row ({', '.join(sorted(d['photos']))}):", "",
        f"![samples]({tr['samples_file']})", "",
        "## Standard and memory-saving mode", "",
        *memory_sentences(m["memory"]),
        "## normflows' notebook Glow and its conversion", "",
        f"normflows' notebook Glow (L={c['levels']}, K={c['compare_depth']}, hidden {c['hidden']}) on "
        f"{c['compare_patch']}x{c['compare_patch']} patches of china and flower (test patches from the held-out "
        f"columns {nf['test_columns']}, {nf['n_test']}), and `flowkern.compat.convert` of it: the same initial weights "
        f"and the same {nf['steps']} batches of {c['compare_batch']}.", "",
        "| | test bits/dim | training s |", "|---|---|---|",
        f"| initial | {nf['initial']:.4f} | |",
        f"| normflows | {nf['normflows']:.4f} | {nf['normflows_seconds']:.1f} |",
        f"| flowkern | {nf['flowkern']:.4f} | {nf['flowkern_seconds']:.1f} |", "",
        f"Difference {nf['difference']:+.2e} bits/dim (test standard error {nf['se_test']:.2e}, paired "
        f"{nf['se_paired_difference']:.2e}"
        + ("" if nf["rounding_reference_difference"] is None else
           f"; float32 rounding alone: {nf['rounding_reference_difference']:+.2e}") + "): "
        f"{'agree within noise' if nf['agree_within_noise'] else 'DO NOT agree within noise'}.", "",
        f"Total {m['seconds']:.0f} s on {m['threads']} threads ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in m["timings_s"].items()) + ")."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for metrics.json, report.md, the runs")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--demo", action="store_true", help="make demo's size (K=2, one memory-saving step at the batch the standard mode cannot afford)")
    size.add_argument("--quick", action="store_true", help="small smoke run of every stage")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FLOWKERN_THREADS", "2")))
    args = parser.parse_args(argv)
    cfg = quick_config() if args.quick else demo_config() if args.demo else Config()
    m = run(cfg, args.out, args.threads)
    mem, nf = m["memory"], m["normflows"]
    print(f"val bits/dim {m['train']['val_bits_per_dim']:.4f}; {mem['shape'][1]}x{mem['shape'][2]}: standard "
          f"{_gib(mem['standard'][1]['peak_rss_bytes'])} at batch {mem['standard'][1]['batch']}, memory-saving "
          f"{_gib(mem['memory_saving'][1]['peak_rss_bytes'])} at batch {mem['run_batch']} (standard needs "
          f"{_gib(mem['standard_peak_needed_at_run_batch'])}); normflows {nf['normflows']:.4f} vs flowkern "
          f"{nf['flowkern']:.4f}; {m['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
