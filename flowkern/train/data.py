r"""Image folders for training: finding and checking the images, the train / val split, the
dataset, and the step-indexed sampler that makes a resumed run see exactly the batches the
uninterrupted run would have seen.

**Randomness is a function of the step, not a stream.** The global batch of step ``s`` holds
positions ``[s B, (s+1) B)`` of an endless sequence of epochs, epoch ``e`` being a permutation of
the training images drawn from ``(seed, e)``; the sample at slot ``j`` of that batch gets its
crop and its dequantisation noise from a generator seeded with ``(seed, s, j)``. Process ``r``
of ``W`` takes slots ``[r B/W, (r+1) B/W)``. So the batches depend on neither the process count,
the worker that loads them, nor on what ran before: a run resumed at step ``s`` (even with
another process count) sees the same pixels as the run that was never stopped.

Reference for the dequantisation: Theis, van den Oord, Bethge, *A note on the evaluation of
generative models*, ICLR 2016.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from ..nn import dequantize
from .config import TrainError

__all__ = ["mix_seed", "ImageRecord", "DataSplit", "find_images", "read_image", "scan_images", "split_dataset",
           "ImageDataset", "StepSampler"]

SUFFIXES = (".png", ".jpg", ".jpeg")
LISTED = 10  # files named in an error message before "... (N in all)"

# stream ids of mix_seed: every use of randomness gets its own
STREAM_EPOCH, STREAM_SAMPLE, STREAM_VAL, STREAM_STEP, STREAM_GRID, STREAM_SPLIT = range(6)


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (BLAKE2b of their little-endian encoding): independent
    streams for (seed, stream, step, slot, ...) without a shared stateful generator."""
    data = struct.pack(f"<{len(values)}q", *values)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & (2 ** 63 - 1)


@dataclass(frozen=True)
class ImageRecord:
    """One checked image: its path, its path relative to the data folder, class label, size."""

    path: str
    rel: str
    label: int
    width: int
    height: int


@dataclass
class DataSplit:
    """The checked training and validation images, the class names and how the split was made."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    classes: list[str]
    how: str
    skipped: list[tuple[str, str]]

    def fingerprint(self) -> dict:
        """What a resumed run's data must match: counts, classes, a digest of the file lists."""
        h = hashlib.sha256()
        for r in self.train + [None] + self.val:
            h.update(b"|" if r is None else f"{r.rel}:{r.label};".encode())
        return {"n_train": len(self.train), "n_val": len(self.val), "classes": list(self.classes),
                "files_sha256": h.hexdigest()}


def _listing(items: list[str]) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more


def find_images(root: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """PNG / JPEG files under ``root`` (recursive, by suffix, case-insensitive), sorted; files
    under a folder of ``exclude`` (e.g. the run's own output folder) and hidden files are left out."""
    skip = {e.resolve() for e in exclude}
    found = []
    for p in root.rglob("*"):
        if p.suffix.lower() in SUFFIXES and p.is_file() and not p.name.startswith("."):
            if skip and not skip.isdisjoint(p.resolve().parents):
                continue
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_image(path: str, channels: int):
    """The fully decoded Pillow image in the model's mode: ``"RGB"`` (grey replicated, alpha and
    palette transparency dropped) or ``"L"``. Raises OSError for an unreadable / truncated file."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA")
        return im.convert("RGB" if channels == 3 else "L")


def _check_one(path: Path) -> tuple[int, int] | str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file raises here
            return im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:  # Pillow's decode errors
        return f"{type(e).__name__}: {e}"


def scan_images(root: Path, paths: list[Path], labels: list[int], size: int, fit: str, skip_bad: bool,
                workers: int = 2) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """Decode every image once (threads): unreadable / truncated ones raise ``TrainError`` naming
    them (with ``skip_bad``: returned as skipped); with ``fit="crop"`` an image smaller than
    ``size`` on either side raises naming it."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(_check_one, paths))
    records, bad, small = [], [], []
    for p, lab, res in zip(paths, labels, results):
        rel = p.relative_to(root).as_posix()
        if isinstance(res, str):
            bad.append((rel, res))
            continue
        w, h = res
        if fit == "crop" and min(w, h) < size:
            small.append(f"{rel} ({w}x{h})")
        records.append(ImageRecord(str(p), rel, lab, w, h))
    if bad and not skip_bad:
        raise TrainError(f"{len(bad)} unreadable or truncated image(s) under {root}: "
                         f"{_listing([f'{r} ({why})' for r, why in bad])}; fix or remove them, or pass --skip-bad "
                         "to train without them")
    if small:
        raise TrainError(f"{len(small)} image(s) under {root} are smaller than --size {size}: {_listing(small)}; "
                         "pass --fit resize to scale the shorter side to --size, or a smaller --size")
    return records, bad


def _labelled(root: Path, files: list[Path], conditional: bool, classes: list[str] | None, what: str
              ) -> tuple[list[int], list[str]]:
    if not conditional:
        return [0] * len(files), []
    top = [f.relative_to(root).parts for f in files]
    loose = [f.relative_to(root).as_posix() for f, parts in zip(files, top) if len(parts) < 2]
    if loose:
        raise TrainError(f"--conditional needs every image of {what} in a class subfolder; directly under "
                         f"{root}: {_listing(loose)}")
    names = [parts[0] for parts in top]
    if classes is None:
        classes = sorted(set(names))
        if len(classes) < 2:
            raise TrainError(f"--conditional needs at least 2 class subfolders under {root}, found {classes}")
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise TrainError(f"{what} has class folders the training set does not: {unknown} (classes {classes})")
    index = {c: i for i, c in enumerate(classes)}
    return [index[n] for n in names], classes


def split_dataset(folder: str, *, size: int, fit: str, conditional: bool, val_fraction: float, seed: int,
                  skip_bad: bool, workers: int = 2, exclude: tuple[str, ...] = ()) -> DataSplit:
    """Find, check and split the images of ``folder`` (leaving out the folders of ``exclude``,
    e.g. the output folder with its sample grids): ``folder/val`` (and ``folder/train`` if
    present) when it exists, else a seeded ``val_fraction`` of the images (at least one when
    the fraction is > 0). Raises ``TrainError`` for a missing or empty folder and the checks of
    :func:`scan_images`."""
    excluded = tuple(Path(e) for e in exclude)
    root = Path(folder)
    if not root.exists():
        raise TrainError(f"FOLDER {folder} does not exist")
    if not root.is_dir():
        raise TrainError(f"FOLDER {folder} is not a directory")
    val_dir = root / "val"
    if val_dir.is_dir():
        train_root = root / "train" if (root / "train").is_dir() else root
        train_files = find_images(train_root, exclude=(val_dir, *excluded))
        val_files = find_images(val_dir, exclude=excluded)
        how = f"val/ folder ({val_dir})"
        train_lab, classes = _labelled(train_root, train_files, conditional, None, f"the training images ({train_root})")
        val_lab, _ = _labelled(val_dir, val_files, conditional, classes or None, f"the val folder ({val_dir})")
        if not val_files:
            raise TrainError(f"the val folder {val_dir} holds no PNG / JPEG images")
    else:
        train_root = root
        files = find_images(root, exclude=excluded)
        labels, classes = _labelled(root, files, conditional, None, f"FOLDER {folder}")
        n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * len(files)))
        if files and n_val >= len(files):
            raise TrainError(f"--val-fraction {val_fraction} leaves no training images of {len(files)} in {folder}")
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(mix_seed(seed, STREAM_SPLIT)))
        val_set = set(order[:n_val].tolist())
        train_files = [f for i, f in enumerate(files) if i not in val_set]
        val_files = [f for i, f in enumerate(files) if i in val_set]
        train_lab = [lab for i, lab in enumerate(labels) if i not in val_set]
        val_lab = [lab for i, lab in enumerate(labels) if i in val_set]
        how = f"--val-fraction {val_fraction} ({n_val} of {len(files)} images)"
    if not train_files:
        raise TrainError(f"FOLDER {folder} holds no PNG / JPEG images (searched recursively for {', '.join(SUFFIXES)})")
    train, bad = scan_images(train_root, train_files, train_lab, size, fit, skip_bad, workers)
    val, bad_val = scan_images(val_dir if val_dir.is_dir() else root, val_files, val_lab, size, fit, skip_bad, workers)
    if not train:
        raise TrainError(f"no readable training images left in {folder} after skipping {len(bad)} bad one(s)")
    return DataSplit(train, val, classes, how, bad + bad_val)


class ImageDataset(Dataset):
    """Pixels of checked images as dequantised float tensors (C, size, size) in [0, 1), and labels.

    Item keys: ``(index, step, slot)`` for training (random crop, noise from
    ``mix_seed(seed, STREAM_SAMPLE, step, slot)``); an int ``index`` for evaluation (centre
    crop, noise from ``mix_seed(seed, STREAM_VAL, index)``: the same every time).

    ``cache_mib``: each process (every DataLoader worker has its own) keeps up to this many MiB
    of decoded, fitted images, the least recently used dropped first, so that a crop of an image
    read before does not decode the file again (random crops of large photos: decoding is most of
    an item's cost). 0: decode every time. The items are the same either way.
    """

    def __init__(self, records: list[ImageRecord], size: int, channels: int, fit: str, seed: int,
                 n_bits: int = 8, cache_mib: int = 0) -> None:
        self.records, self.size, self.channels, self.fit = records, size, channels, fit
        self.seed, self.n_bits = seed, n_bits
        self.cache_bytes = cache_mib << 20
        self._cache: OrderedDict = OrderedDict()  # index -> (fitted PIL image, its bytes), least recently used first
        self._cached_bytes = 0

    def __getstate__(self) -> dict:
        """Pickled for a worker process without the cache (each process fills its own)."""
        return {**self.__dict__, "_cache": OrderedDict(), "_cached_bytes": 0}

    def __len__(self) -> int:
        return len(self.records)

    def fitted(self, index: int):
        """The decoded image ``index`` (Pillow, the model's mode), its shorter side scaled to
        ``size`` when ``fit="resize"``; from the cache when it holds it."""
        from PIL import Image

        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index][0]
        rec = self.records[index]
        try:
            im = read_image(rec.path, self.channels)
        except OSError as e:
            raise TrainError(f"image {rec.path} can no longer be read: {e}") from None
        s = self.size
        if self.fit == "resize":
            w, h = im.size
            k = s / min(w, h)
            im = im.resize((max(s, round(w * k)), max(s, round(h * k))), Image.BILINEAR, reducing_gap=3.0)
        nbytes = im.size[0] * im.size[1] * self.channels
        if nbytes <= self.cache_bytes:
            while self._cached_bytes + nbytes > self.cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1][1]
            self._cache[index] = (im, nbytes)
            self._cached_bytes += nbytes
        return im

    def pixels(self, index: int, g: torch.Generator | None) -> torch.Tensor:
        """uint8 (C, size, size): the image fitted to ``size``, cropped at random with ``g``
        (centre crop without)."""
        im = self.fitted(index)
        s = self.size
        w, h = im.size
        if g is None:
            left, top = (w - s) // 2, (h - s) // 2
        else:
            left = int(torch.randint(0, w - s + 1, (), generator=g))
            top = int(torch.randint(0, h - s + 1, (), generator=g))
        im = im.crop((left, top, left + s, top + s))
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(s, s, self.channels)
        return x.permute(2, 0, 1).contiguous()

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            index, step, slot = key
            g = torch.Generator().manual_seed(mix_seed(self.seed, STREAM_SAMPLE, step, slot))
            x = self.pixels(index, g)
        else:
            index = key
            g = torch.Generator().manual_seed(mix_seed(self.seed, STREAM_VAL, index))
            x = self.pixels(index, None)
        if self.n_bits < 8:
            x = x >> (8 - self.n_bits)
        return dequantize(x, self.n_bits, generator=g), self.records[index].label


class StepSampler(DistributedSampler):
    """The :class:`~torch.utils.data.distributed.DistributedSampler` of a run that is indexed by
    step: yields this process's keys ``(index, step, slot)`` for steps ``[start_step,
    end_step)`` (module docstring), ``batch // num_replicas`` per step, in order. Like
    DistributedSampler, the processes' shares are disjoint and each epoch is a fresh seeded
    permutation; unlike it, a step's global batch does not depend on the process count, and
    starting at any step needs no replay (what makes ``--resume`` exact)."""

    def __init__(self, dataset: Dataset, batch: int, *, num_replicas: int, rank: int, seed: int,
                 start_step: int, end_step: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        if batch % num_replicas:
            raise TrainError(f"--batch {batch} must be divisible by the process count {num_replicas}")
        self.batch, self.local = batch, batch // num_replicas
        self.start_step, self.end_step = start_step, end_step
        self.n = len(dataset)
        self._perms: dict[int, torch.Tensor] = {}

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(
                mix_seed(self.seed, STREAM_EPOCH, epoch)))}
        return self._perms[epoch]

    def step_keys(self, step: int) -> list[tuple[int, int, int]]:
        """This process's keys of ``step``."""
        out = []
        for slot in range(self.rank * self.local, (self.rank + 1) * self.local):
            pos = step * self.batch + slot
            out.append((int(self.epoch_order(pos // self.n)[pos % self.n]), step, slot))
        return out

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield from self.step_keys(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.local
