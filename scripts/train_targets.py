"""Measure issue 32's targets of ``flowkern train`` (the numbers in docs/training.md):

1. kill -9 / resume: a run killed with SIGKILL after a random number of steps (``--kills``
   points) and resumed must end with weights and optimizer state bitwise equal to one run never
   interrupted (CPU); prints the number of differing runs.
2. 2-process DDP (torchrun, gloo) vs 1 process at the same global batch: max |delta loss| over
   ``--ddp-steps`` steps and the median images/s of each.
3. Data loading: the training step fed by the DataLoader (worker processes decoding the photos,
   random 64 x 64 crops, dequantisation) vs the same step on batches already in memory, Glow
   64 x 64, batch 32; the two alternate in one process (``--pairs`` pairs after a warm-up
   pair), so load on the machine hits both alike; ratio of the medians.

Data: the photographs bundled with scikit-image and scikit-learn, written as PNG / JPEG.
Usage: ``python scripts/train_targets.py --out runs/train_targets [--kills 10 --ddp-steps 20 --pairs 6]``
(writes ``targets.json`` there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--size", "16", "--levels", "2", "--depth", "1", "--hidden", "16", "--batch", "8", "--workers", "1",
        "--log-every", "1", "--no-progress", "--val-fraction", "0.2"]


def write_photos(folder: Path, crops: int | None = None, size: int = 24) -> None:
    """The bundled photographs, whole (``crops`` None) or as ``crops`` random crops each."""
    import numpy as np
    import skimage.data as d
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = {n: getattr(d, n)() for n in ("chelsea", "coffee", "astronaut", "camera", "rocket",
                                           "immunohistochemistry")}
    photos.update(zip(("china", "flower"), load_sample_images().images))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, im) in enumerate(photos.items()):
        if crops is None:
            Image.fromarray(im).save(folder / f"{name}.{'png' if i % 2 else 'jpg'}")
            continue
        for k in range(crops):
            y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
            Image.fromarray(im[y:y + size, x:x + size]).save(folder / f"{name}_{k}.{'png' if k % 2 else 'jpg'}")


def train_cmd(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flowkern", "train", str(data), "--out", str(out), *TINY, "--steps", str(steps),
            *extra]


def train_lines(out: Path) -> int:
    try:
        return (out / "metrics.jsonl").read_text().count('"split": "train"')
    except OSError:
        return 0


def final_state(out: Path, steps: int) -> dict:
    from flowkern.train import read_checkpoint

    return read_checkpoint(out / f"step-{steps:08d}.pt")


def differs(a: dict, b: dict) -> bool:
    if any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"]):
        return True
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    return any(not torch.equal(v, sb[i][k]) for i, s in sa.items() for k, v in s.items())


def kill_resume(work: Path, kills: int, steps: int = 20, seed: int = 0) -> dict:
    data = work / "kill_data"
    write_photos(data, crops=4)
    extra = ("--checkpoint-every", "3", "--sample-every", "7", "--sample-n", "4", "--warmup", "2")
    subprocess.run(train_cmd(data, work / "kill_ref", steps, *extra), env=ENV, check=True, capture_output=True)
    ref = final_state(work / "kill_ref", steps)
    rng = random.Random(seed)
    points, bad = [], 0
    for i in range(kills):
        after = rng.randrange(1, steps)
        out = work / f"kill_{i}"
        p = subprocess.Popen(train_cmd(data, out, steps, *extra), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        while train_lines(out) < after and p.poll() is None:
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        at = train_lines(out)
        r = subprocess.run(train_cmd(data, out, steps, *extra, "--resume"), env=ENV, capture_output=True, text=True)
        resumed_from = [ln for ln in r.stdout.splitlines() if "resuming from" in ln or "from step 0" in ln]
        d = r.returncode != 0 or differs(ref, final_state(out, steps))
        bad += d
        points.append({"killed_after_train_lines": at, "resume": resumed_from[0] if resumed_from else r.stderr[-300:],
                       "differs": d})
        print(f"kill {i}: after {at} steps; {points[-1]['resume'][-60:]}; differs={d}", flush=True)
    return {"kills": kills, "steps": steps, "runs_differing": bad, "points": points}


def ddp(work: Path, steps: int) -> dict:
    data = work / "ddp_data"
    write_photos(data, crops=4)
    extra = ("--checkpoint-every", str(steps), "--sample-every", "0")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "flowkern", "train", str(data), "--out", str(work / "ddp_two"), *TINY,
                          "--steps", str(steps), *extra], env=ENV, capture_output=True, text=True)
    one = subprocess.run(train_cmd(data, work / "ddp_one", steps, *extra), env=ENV, capture_output=True, text=True)
    assert two.returncode == 0 and one.returncode == 0, (two.stderr[-2000:], one.stderr[-2000:])

    def rows(out):
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]

    a, b = rows(work / "ddp_one"), rows(work / "ddp_two")
    delta = max(abs(x["bits_per_dim"] - y["bits_per_dim"]) for x, y in zip(a, b))
    ips = lambda r: statistics.median(x["images_per_s"] for x in r[1:])  # noqa: E731 (first step: start-up)
    return {"steps": steps, "global_batch": 8, "max_abs_delta_bits_per_dim": delta,
            "images_per_s_1_process": ips(a), "images_per_s_2_processes": ips(b)}


def loader_vs_preloaded(work: Path, pairs: int, workers: int) -> dict:
    from flowkern.train import ImageDataset, StepSampler, TrainConfig, build_model, split_dataset, train_step
    from flowkern.train.loop import make_loader, make_optimizer

    data = work / "photos"
    write_photos(data)
    cfg = TrainConfig(folder=str(data), out=str(work / "unused"), size=64, batch=32, workers=workers,
                      val_fraction=0.0, steps=2 * (pairs + 1)).checked()
    split = split_dataset(cfg.folder, size=64, fit="crop", conditional=False, val_fraction=0, seed=0, skip_bad=False)
    ds = ImageDataset(split.train, 64, 3, "crop", seed=0, cache_mib=cfg.image_cache)  # as flowkern train
    device = torch.device("cpu")
    model = build_model(cfg)
    opt, sched = make_optimizer(model, cfg)
    n = pairs + 1
    sampler = StepSampler(ds, 32, num_replicas=1, rank=0, seed=0, start_step=0, end_step=n)
    preloaded = [(x.clone(), None) for x, _ in make_loader(ds, StepSampler(ds, 32, num_replicas=1, rank=0, seed=1,
                                                                             start_step=0, end_step=n), cfg, device)]
    batches = iter(make_loader(ds, sampler, cfg, device))
    t_loader, t_pre = [], []
    for i in range(n):
        t0 = time.perf_counter()
        x, _ = next(batches)
        train_step(model, opt, sched, x, None, cfg, device)
        t1 = time.perf_counter()
        train_step(model, opt, sched, preloaded[i][0], None, cfg, device)
        t2 = time.perf_counter()
        if i:  # the first pair starts the workers and warms the allocator
            t_loader.append(t1 - t0)
            t_pre.append(t2 - t1)
        print(f"pair {i}: loader {t1 - t0:.3f} s, preloaded {t2 - t1:.3f} s", flush=True)
    ml, mp = statistics.median(t_loader), statistics.median(t_pre)
    # the data's own CPU cost: building a batch in this process (no workers), per step, with the
    # decoded-image cache warm (as in the workers after their first batches) and without it
    cfg.workers = 0
    build = {}
    for name, cache in (("cached", cfg.image_cache), ("uncached", 0)):
        ds_in = ImageDataset(split.train, 64, 3, "crop", seed=0, cache_mib=cache)
        inline = iter(make_loader(ds_in, StepSampler(ds_in, 32, num_replicas=1, rank=0, seed=2, start_step=0,
                                                     end_step=6), cfg, device))
        next(inline)
        t_batch = []
        for _ in range(5):
            t0 = time.process_time()
            next(inline)
            t_batch.append(time.process_time() - t0)
        build[name] = statistics.median(t_batch)
    return {"batch_build_cpu_s_median": build, "image_cache_mib": cfg.image_cache,
            "pair_ratios": [a / b for a, b in zip(t_loader, t_pre)],"model": "glow levels 3 depth 8 hidden 128", "size": 64, "batch": 32, "workers": workers,
            "torch_threads": torch.get_num_threads(), "pairs": pairs, "loader_step_s": t_loader,
            "preloaded_step_s": t_pre, "median_loader_s": ml, "median_preloaded_s": mp, "ratio": ml / mp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/train_targets")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--ddp-steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=("kill", "ddp", "loader"), default=None)
    args = ap.parse_args()
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
              f"{platform.platform()}", "torch": torch.__version__}
    if args.only in (None, "loader"):
        report["loader"] = loader_vs_preloaded(work, args.pairs, args.workers)
        print(json.dumps(report["loader"], indent=1), flush=True)
    if args.only in (None, "ddp"):
        report["ddp"] = ddp(work, args.ddp_steps)
        print(json.dumps(report["ddp"], indent=1), flush=True)
    if args.only in (None, "kill"):
        report["kill_resume"] = kill_resume(work, args.kills)
        print(json.dumps({k: v for k, v in report["kill_resume"].items() if k != "points"}), flush=True)
    (work / f"targets{'_' + args.only if args.only else ''}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
