"""The training run's settings: :class:`TrainConfig`, its checks, the ``flowkern train`` flags
(:func:`add_arguments`), and which settings a resumed run may change.

Every setting is one field; the command line, the checkpoint (``config``) and the library call
:func:`flowkern.train.run` use the same names.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields

from .._checks import check_bool, check_choice, check_int, check_number

__all__ = ["TrainConfig", "TrainError", "add_arguments", "config_from_args", "RESUMABLE_FIELDS", "config_differences"]

MODELS = ("glow", "realnvp")
FITS = ("crop", "resize")
AUTOCAST = ("none", "bf16")
DEVICES = ("auto", "cpu", "cuda")

# settings a resumed run may change: they do not alter the model, the optimisation or the data
# order (``steps`` extends a run). Every other field must match the checkpoint's.
RESUMABLE_FIELDS = frozenset({
    "folder", "out", "steps", "resume", "workers", "checkpoint_every", "keep", "sample_every", "sample_n",
    "log_every", "val_every", "progress", "skip_bad", "device", "image_cache",
})


class TrainError(ValueError):
    """Bad input to a training run (data, flags, output folder, checkpoint): the message names
    the argument or the file and what was expected."""


@dataclass
class TrainConfig:
    """Settings of one training run (``flowkern train --help`` documents each; the CLI flag is
    the field name with ``-`` for ``_``).

    Data: ``folder`` (images, searched recursively), ``size`` (square side the images are
    brought to; divisible by 2**levels), ``channels`` (3: RGB, 1: grey; every image is converted),
    ``fit`` (``"crop"``: random size x size crops, images smaller than ``size`` are an error;
    ``"resize"``: the shorter side scaled to ``size``, then a random crop), ``conditional``
    (first-level subfolders are classes), ``val_fraction`` (held-out share when there is no
    ``val/`` folder), ``n_bits``, ``skip_bad``, ``workers`` (DataLoader worker processes),
    ``image_cache`` (MiB of decoded images each data-loading process keeps; 0: none).
    Model: ``model`` (``glow`` | ``realnvp``), ``levels``, ``depth`` (Glow steps per level;
    RealNVP couplings per level), ``hidden``, ``memory_saving``, ``memory_saving_chunk`` (with
    ``memory_saving``: forward and backward in batch chunks of this many images, 0: whole
    batch; :class:`~flowkern.nn.MultiScaleFlow`). Optimisation: ``batch``
    (global, over all processes), ``steps``, ``lr``, ``warmup`` (linear warm-up steps), ``clip``
    (gradient-norm clip, 0: off), ``autocast``, ``seed``. Output: ``out``, ``checkpoint_every``,
    ``keep``, ``sample_every``, ``sample_n``, ``log_every``, ``val_every``, ``progress``, ``resume``.
    """

    folder: str = ""
    out: str = "runs/train"
    size: int = 32
    channels: int = 3
    fit: str = "crop"
    conditional: bool = False
    val_fraction: float = 0.05
    n_bits: int = 8
    skip_bad: bool = False
    workers: int = 2
    image_cache: int = 256
    model: str = "glow"
    levels: int = 3
    depth: int = 8
    hidden: int = 128
    memory_saving: bool = False
    memory_saving_chunk: int = 0
    batch: int = 32
    steps: int = 1000
    lr: float = 1e-3
    warmup: int = 100
    clip: float = 50.0
    autocast: str = "none"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 250
    keep: int = 3
    sample_every: int = 250
    sample_n: int = 36
    log_every: int = 10
    val_every: int = 0
    progress: bool = True
    resume: bool = False

    def checked(self) -> TrainConfig:
        """This config after the argument checks (``TrainError`` naming the flag otherwise)."""
        try:
            if not isinstance(self.folder, str) or not self.folder:
                raise ValueError(f"folder must be a non-empty path, got {self.folder!r}")
            if not isinstance(self.out, str) or not self.out:
                raise ValueError(f"out must be a non-empty path, got {self.out!r}")
            for name, lo in (("size", 2), ("levels", 1), ("depth", 1), ("hidden", 1), ("batch", 1), ("steps", 1),
                             ("warmup", 0), ("workers", 0), ("image_cache", 0), ("checkpoint_every", 1), ("keep", 1),
                             ("sample_every", 0), ("sample_n", 1), ("log_every", 1), ("val_every", 0), ("seed", 0),
                             ("memory_saving_chunk", 0)):
                check_int(name, getattr(self, name), minimum=lo)
            check_int("channels", self.channels, minimum=1, maximum=3)
            if self.channels == 2:
                raise ValueError("channels must be 1 (grey) or 3 (RGB), got 2")
            check_int("n_bits", self.n_bits, minimum=1, maximum=8)
            check_choice("fit", self.fit, FITS)
            check_choice("model", self.model, MODELS)
            check_choice("autocast", self.autocast, AUTOCAST)
            check_choice("device", self.device, DEVICES)
            for name in ("conditional", "skip_bad", "memory_saving", "progress", "resume"):
                check_bool(name, getattr(self, name))
            check_number("lr", self.lr, positive=True)
            check_number("clip", self.clip, minimum=0.0)
            v = check_number("val_fraction", self.val_fraction, minimum=0.0)
            if v >= 1:
                raise ValueError(f"val_fraction must be in [0, 1), got {v}")
        except (TypeError, ValueError) as e:
            name, _, rest = str(e).partition(" ")
            raise TrainError(f"{_flag(name)} {rest}") from None
        if self.memory_saving_chunk and not self.memory_saving:
            raise TrainError(f"--memory-saving-chunk {self.memory_saving_chunk} needs --memory-saving")
        f = 2 ** self.levels
        if self.size % f:
            raise TrainError(f"--size {self.size} must be divisible by 2**levels = {f} (--levels {self.levels}: "
                             f"each level halves the side); try --size {max(f, self.size // f * f)}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def config_differences(saved: dict, current: dict) -> list[str]:
    """``"field: checkpoint X, now Y"`` for every field a resumed run may not change."""
    out = []
    for k in sorted(set(saved) | set(current)):
        if k in RESUMABLE_FIELDS:
            continue
        a, b = saved.get(k, "<absent>"), current.get(k, "<absent>")
        if isinstance(a, float) and isinstance(b, float) and (a == b or (math.isnan(a) and math.isnan(b))):
            continue
        if a != b:
            out.append(f"{k}: checkpoint {a!r}, now {b!r}")
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``flowkern train`` flags (defaults from :class:`TrainConfig`)."""
    d = TrainConfig()
    a = parser.add_argument
    a("folder", help="image folder (PNG / JPEG, searched recursively); a val/ subfolder (and train/) "
                     "gives the held-out split, otherwise --val-fraction does")
    a("--out", default=d.out, help=f"output folder: step-*.pt checkpoints, metrics.jsonl, samples-*.png "
                                   f"(default {d.out})")
    a("--size", type=int, default=d.size, help=f"image side after crop / resize; divisible by 2**levels "
                                                f"(default {d.size})")
    a("--channels", type=int, choices=(1, 3), default=d.channels,
      help="3: RGB (grey images replicated, alpha dropped), 1: grey (default 3)")
    a("--fit", choices=FITS, default=d.fit,
      help="crop: random --size crops (an image smaller than --size is an error); resize: shorter side "
           "scaled to --size, then a random crop (default crop)")
    a("--conditional", action="store_true", help="class-conditional model: first-level subfolders are classes")
    a("--val-fraction", type=float, default=d.val_fraction,
      help=f"held-out share of the images when FOLDER has no val/ (default {d.val_fraction}; 0: no validation)")
    a("--n-bits", type=int, default=d.n_bits, help="bits per pixel of the data (default 8)")
    a("--skip-bad", action="store_true", help="skip unreadable / truncated images (counted) instead of stopping")
    a("--workers", type=int, default=d.workers, help=f"DataLoader worker processes per process (default {d.workers})")
    a("--image-cache", type=int, default=d.image_cache,
      help=f"MiB of decoded images each data-loading process keeps, so a new crop of an image read before "
           f"is not decoded again; 0: decode every time (default {d.image_cache})")
    a("--model", choices=MODELS, default=d.model, help="flow: glow (build_glow) or realnvp (build_realnvp)")
    a("--levels", type=int, default=d.levels, help=f"levels of the multi-scale flow (default {d.levels})")
    a("--depth", type=int, default=d.depth,
      help=f"Glow steps per level; RealNVP: couplings per level (default {d.depth})")
    a("--hidden", type=int, default=d.hidden, help=f"width of the coupling subnets (default {d.hidden})")
    a("--memory-saving", action="store_true", help="O(1)-activation-memory backward (only the latents are saved)")
    a("--memory-saving-chunk", type=int, default=d.memory_saving_chunk,
      help="with --memory-saving: forward and backward in chunks of N images of the batch, so only one "
           "chunk's working set is alive (0: the whole batch; default 0)")
    a("--batch", type=int, default=d.batch,
      help=f"global batch over all processes; divisible by the process count (default {d.batch})")
    a("--steps", type=int, default=d.steps, help=f"optimisation steps in all, resumed ones included (default {d.steps})")
    a("--lr", type=float, default=d.lr, help=f"Adam learning rate after warm-up (default {d.lr})")
    a("--warmup", type=int, default=d.warmup, help=f"linear learning-rate warm-up steps (default {d.warmup})")
    a("--clip", type=float, default=d.clip, help=f"gradient-norm clip, 0: off (default {d.clip})")
    a("--autocast", choices=AUTOCAST, default=d.autocast, help="run the forward under torch.autocast(bfloat16)")
    a("--seed", type=int, default=d.seed, help="seeds the model, the data order, crops and dequantisation (default 0)")
    a("--device", choices=DEVICES, default=d.device, help="auto: CUDA (the LOCAL_RANK GPU) when available")
    a("--checkpoint-every", type=int, default=d.checkpoint_every,
      help=f"write a checkpoint every N steps (and at the end, and on SIGTERM / SIGINT) (default {d.checkpoint_every})")
    a("--keep", type=int, default=d.keep, help=f"checkpoints kept, the newest (default {d.keep})")
    a("--sample-every", type=int, default=d.sample_every,
      help=f"write a sample grid every N steps, 0: never (default {d.sample_every})")
    a("--sample-n", type=int, default=d.sample_n, help=f"images in a sample grid (default {d.sample_n})")
    a("--log-every", type=int, default=d.log_every, help=f"metrics.jsonl train line every N steps (default {d.log_every})")
    a("--val-every", type=int, default=d.val_every,
      help="validation bits/dim every N steps, 0: with each checkpoint (and always at the end)")
    a("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    a("--resume", action="store_true",
      help="continue from the newest readable checkpoint in --out (starts afresh when there is none)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
