"""Datasets as uint8 tensors, and a loader that keeps them on the device.

`load(name)` returns a `Dataset` (train and eval split, uint8 NCHW images, int64 labels);
`load(name, views=2)` stacks a second image of each sample's class as extra channels (`add_views`).
`Loader` puts one split on a device once and yields augmented, normalised batches with
their sample indices (PS-KD needs them), optionally holding k same-class samples per
anchor (BAKE needs them). All randomness comes from a CPU generator seeded by
(seed, epoch), so a seed gives the same batches on CPU and GPU.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Fashion-MNIST's classes, in label order, and a coarse grouping of them by kind of item
# (tops 0, 2, 4, 6; footwear 5, 7, 9; trousers, dress and bag alone): the known similarity
# structure that `class_similarity("fashion_mnist")` exposes.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
FASHION_GROUPS = ((0, 2, 4, 6), (5, 7, 9), (1,), (3,), (8,))


@dataclass(frozen=True)
class DatasetInfo:
    """The facts every part of kd needs about a dataset, in one table (`INFO`)."""

    title: str          # for tables and figures
    num_classes: int
    channels: int
    mean: tuple         # normalisation per channel; CIFAR-100's are the KD literature's
    std: tuple          # (docs/papers.md), the others the training-set statistics
    classes: tuple = ()  # class names in label order, where the figures show them


INFO = {
    "fashion_mnist": DatasetInfo("Fashion-MNIST", 10, 1, (0.2860,), (0.3530,), FASHION_CLASSES),
    "fashion_pairs": DatasetInfo("Fashion-MNIST pairs", 100, 2, (0.2860, 0.2860), (0.3530, 0.3530)),
    "cifar10": DatasetInfo("CIFAR-10", 10, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("CIFAR-100", 100, 3, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "digits": DatasetInfo("digits", 10, 1, (0.3050,), (0.3756,)),
}
DATASETS = tuple(INFO)
# the testbed's fixed pairing (kd.data.fashion_pairs): pairs per split of Fashion-MNIST
PAIRS_SEED = 20190101
PAIRS_PER_SPLIT = {"train": 60000, "test": 10000}
# the fixed draw of `add_views` (train split: this seed, test split: this seed + 1)
VIEWS_SEED = 20230205


def info(name: str) -> DatasetInfo:
    """The facts of dataset `name`; an unknown name is an error that lists the known ones."""
    if name not in INFO:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return INFO[name]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where we looked and how to get it."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # uint8 [N, C, H, W]
    y_train: torch.Tensor  # int64 [N]
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    eval_split: str  # "test" or "val"
    num_classes: int
    mean: tuple
    std: tuple

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]


def load(name: str, root: str | os.PathLike | None = None, *, train_subset: int | None = None,
         eval_subset: int | None = None, val_fraction: float = 0.0, seed: int = 0,
         download: bool = False, views: int | None = None) -> Dataset:
    """Load a dataset.

    train_subset / eval_subset take a class-balanced, seeded subset. val_fraction > 0 holds
    out that part of the training set (class-balanced) and evaluates on it instead of the
    test set: use it for tuning, and the test set for reporting. views > 1: each sample holds
    views - 1 more images of its class as extra channels (`add_views`), drawn from the whole
    split before any subset is taken, so the samples and their order are those of views=None.
    """
    facts = info(name)
    if root is not None and not download and not Path(root).is_dir():  # never fall back to another copy
        raise FileNotFoundError(f"data root {root} does not exist (download into it with "
                                f"`python -m kd data {name} --root {root}`, or leave it unset)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for label, n in (("train_subset", train_subset), ("eval_subset", eval_subset)):
        if n is not None and n < 1:
            raise ValueError(f"{label} must be a positive number of samples or None, got {n}")
    reader = {"fashion_mnist": _read_fashion_mnist, "fashion_pairs": _read_fashion_pairs,
              "cifar10": _read_cifar, "cifar100": _read_cifar, "digits": _read_digits}[name]
    (x_tr, y_tr), (x_te, y_te) = reader(name, root, download)
    read = {id(t) for t in (x_tr, y_tr, x_te, y_te)}  # a reader's tensors may be cached: copied below if whole
    # the dataset's class count, not the largest label seen: a small file may miss classes
    num_classes = facts.num_classes
    for split, labels in (("train", y_tr), ("test", y_te)):
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
            raise ValueError(f"{name} {split} labels must be in [0, {num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
    mean, std = facts.mean, facts.std
    if views is not None:
        x_tr, x_te = (add_views(x, y, views, VIEWS_SEED + i) for i, (x, y) in enumerate(((x_tr, y_tr), (x_te, y_te))))
        mean, std = mean * views, std * views
    gen = torch.Generator().manual_seed(seed)
    eval_split = "test"
    if val_fraction > 0:
        idx_val = balanced_subset(y_tr, round(len(y_tr) * val_fraction), gen)
        keep = torch.ones(len(y_tr), dtype=torch.bool)
        keep[idx_val] = False
        x_te, y_te = x_tr[idx_val], y_tr[idx_val]
        x_tr, y_tr = x_tr[keep], y_tr[keep]
        eval_split = "val"
    if train_subset is not None and train_subset < len(y_tr):
        idx = balanced_subset(y_tr, train_subset, gen)
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if eval_subset is not None and eval_subset < len(y_te):
        idx = balanced_subset(y_te, eval_subset, gen)
        x_te, y_te = x_te[idx], y_te[idx]
    x_tr, y_tr, x_te, y_te = (t.clone() if id(t) in read else t for t in (x_tr, y_tr, x_te, y_te))
    return Dataset(name, x_tr.contiguous(), y_tr, x_te.contiguous(), y_te, eval_split,
                   num_classes, mean, std)


def balanced_subset(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of n samples, as equal per class as possible, in a seeded random order."""
    perm = torch.randperm(len(labels), generator=generator)
    # rank of each sample within its class in the permuted order; take the lowest ranks
    sorted_labels, order = torch.sort(labels[perm], stable=True)
    first = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = torch.empty_like(order)
    rank_in_class[order] = torch.arange(len(order)) - first
    chosen = torch.argsort(rank_in_class, stable=True)[:n]
    return perm[chosen].sort().values


# ----------------------------------------------------------------------------- readers

def _missing(name: str, looked: list[Path], how: str) -> DatasetNotFoundError:
    where = "\n".join(f"  - {p}" for p in looked)
    return DatasetNotFoundError(f"dataset {name!r} not found. Looked in:\n{where}\nTo get it: {how}")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if dtype_code != 0x08:
        raise ValueError(f"{path}: expected unsigned-byte IDX data, got type code {dtype_code:#x}")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_fashion_mnist(name, root, download):
    base = Path(root) if root else REPO_DATA
    # <base>/FashionMNIST/raw is where a torchvision download (`python -m kd data`) leaves the files
    candidates = [base / "fashion-mnist", base / "FashionMNIST" / "raw", REPO_DATA / "fashion-mnist",
                  DEBIAN_FASHION_MNIST]
    candidates = list(dict.fromkeys(candidates))
    for folder in candidates:
        if all((folder / f).exists() for pair in FASHION_FILES.values() for f in pair):
            break
    else:
        if not download:
            raise _missing(name, candidates,
                           "sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu), or\n"
                           f"  python -m kd data fashion_mnist --root {base}   (downloads through torchvision)")
        folder = _download_torchvision("FashionMNIST", base, name)
    return _read_fashion_folder(folder, tuple(_stamp(folder / f) for pair in FASHION_FILES.values() for f in pair))


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=2)
def _read_fashion_folder(folder: Path, stamps: tuple) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The splits of one folder, decompressed once per process while its files are unchanged (`stamps`: path,
    modification time and size of each file): a run reads them in 0.8 s. `load` hands out copies only."""
    splits = []
    for split in ("train", "test"):
        images, labels = (_read_idx(folder / f) for f in FASHION_FILES[split])
        splits.append((torch.from_numpy(images.copy()).unsqueeze(1),
                       torch.from_numpy(labels.astype(np.int64))))
    return splits


def _read_fashion_pairs(name, root, download):
    """The testbed: Fashion-MNIST pairs (see `fashion_pairs`), from the Fashion-MNIST files."""
    return [fashion_pairs(x, y, PAIRS_PER_SPLIT[split], seed=PAIRS_SEED + i)
            for i, (split, (x, y)) in enumerate(zip(("train", "test"), _read_fashion_mnist("fashion_mnist", root,
                                                                                              download)))]


def fashion_pairs(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n two-item images from one Fashion-MNIST split: channel 0 holds an item of class a,
    channel 1 an item of class b, the label is 10 a + b (100 classes). The class pairs
    (a, b) cycle through all 100 in a seeded order, so every class has n / 100 samples (up to
    one); the items are drawn at random from their class, with a fixed seed, so the pairing
    is the same on every machine. Classes sharing an item are similar (`class_similarity`).
    Both channels side by side would not work: global average pooling forgets which is left."""
    gen = torch.Generator().manual_seed(seed)
    pair_class = torch.randperm(100, generator=gen).repeat(-(-n // 100))[:n]
    pair_class = pair_class[torch.randperm(n, generator=gen)]
    items = []
    for item_class in (pair_class // 10, pair_class % 10):
        members = [torch.nonzero(labels == c).flatten() for c in range(10)]
        count = torch.tensor([len(m) for m in members])
        draw = (torch.rand(n, generator=gen) * count[item_class]).long()
        start = torch.cumsum(count, 0) - count
        items.append(torch.cat(members)[start[item_class] + draw])
    x = torch.cat([images[items[0]], images[items[1]]], 1)  # [n, 2, 28, 28]
    return x.contiguous(), pair_class.long()


def add_views(images: torch.Tensor, labels: torch.Tensor, views: int, seed: int) -> torch.Tensor:
    """images [N, C, H, W] -> [N, views * C, H, W]: each sample's own image (channels 0..C-1), then
    views - 1 other images of its class (never itself), drawn at random from the split with a fixed
    seed, so the draw is the same on every machine and for every subset. A second view carries
    information about the label that the first lacks: a teacher that sees both holds decisive
    information a student that sees only its own image cannot have (the image analogue of the
    Modality Focusing Hypothesis's modality-specific features, kd/experiments/mfh.py)."""
    if isinstance(views, bool) or not isinstance(views, int) or views < 2:
        raise ValueError(f"views must be an integer >= 2 (None: the images alone), got {views!r}")
    count = torch.bincount(labels)
    if (count[labels] < 2).any():
        raise ValueError("views need at least 2 images of every class in the split")
    gen = torch.Generator().manual_seed(seed)
    by_class = torch.argsort(labels, stable=True)  # the samples grouped by class
    start = torch.cumsum(count, 0) - count
    position = torch.empty_like(by_class)  # each sample's place within its class
    position[by_class] = torch.arange(len(labels)) - start[labels[by_class]]
    stacked = [images]
    for _ in range(views - 1):
        other = (torch.rand(len(labels), generator=gen) * (count[labels] - 1)).long()
        other = other + (other >= position).long()  # skip the sample itself
        stacked.append(images[by_class[start[labels] + other]])
    return torch.cat(stacked, 1)


def class_similarity(name: str) -> torch.Tensor | None:
    """The known C x C similarity between classes (1 on the diagonal), or None if the dataset
    has none: Fashion-MNIST pairs, the fraction of items two classes share (10 a + b and
    10 a' + b': ([a = a'] + [b = b']) / 2); Fashion-MNIST, 1 within a group of FASHION_GROUPS
    (tops, footwear) and 0 across. A teacher's non-target probability that follows it is
    structure the data has (`kd.metrics.similarity_mass`)."""
    info(name)
    if name == "fashion_pairs":
        c = torch.arange(100)
        a, b = c // 10, c % 10
        return ((a[:, None] == a[None]).double() + (b[:, None] == b[None]).double()) / 2
    if name == "fashion_mnist":
        s = torch.zeros(10, 10, dtype=torch.float64)
        for group in FASHION_GROUPS:
            idx = torch.tensor(group)
            s[idx[:, None], idx[None]] = 1.0
        return s
    return None


CIFAR_LAYOUT = {  # folder, train files, test file, label key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}


def _read_cifar(name, root, download):
    folder_name, train_files, test_file, key = CIFAR_LAYOUT[name]
    candidates = [Path(root) if root else REPO_DATA]
    folder = candidates[0] / folder_name
    if not all((folder / f).exists() for f in [*train_files, test_file]):
        if not download:
            raise _missing(name, [folder],
                           f"python -m kd data {name} --root {candidates[0]}   (downloads through torchvision)")
        _download_torchvision(name.upper(), candidates[0], name)

    def read(files):
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    return read(train_files), read([test_file])


def _read_digits(name, root, download):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_train = 1437  # a fixed 80/20 split
    return (x[perm[:n_train]], y[perm[:n_train]]), (x[perm[n_train:]], y[perm[n_train:]])


def _download_torchvision(cls_name: str, root: Path, name: str) -> Path:
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(torchvision.datasets, cls_name)
    for train in (True, False):
        cls(str(root), train=train, download=True)
    if cls_name == "FashionMNIST":  # torchvision keeps the .gz files in <root>/FashionMNIST/raw
        return root / "FashionMNIST" / "raw"
    return root / CIFAR_LAYOUT[name][0]


# ----------------------------------------------------------------------------- loader

@dataclass
class Batch:
    x: torch.Tensor      # float, normalised, on the device
    y: torch.Tensor      # int64 labels
    index: torch.Tensor  # int64 positions in the split (PS-KD's memory is indexed by them)


class Loader:
    """Batches from a uint8 split held on `device`, augmented there.

    train=True: a seeded permutation per epoch, random crop with zero padding `crop_pad`,
    horizontal flip (when `flip`), cutout of a `cutout`-pixel square (DeVries & Taylor 2017,
    when > 0), and `same_class` extra samples of the anchor's class
    after each anchor (BAKE's sampler: batch_size = anchors * (1 + same_class)). An epoch
    shows as many images as the split holds; with `every_anchor`, every image is an anchor
    once per epoch, so an epoch shows 1 + same_class times as many (BAKE's official sampler,
    whose batches hold batch-size anchors plus their same-class samples).
    train=False: the split in order, no augmentation.
    shard=(rank, world): data-parallel training; each of the `world` processes gets its
    contiguous share (batch_size // world samples) of the global batch of `batch_size`.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, *, batch_size: int,
                 train: bool, device="cpu", seed: int = 0, crop_pad: int = 0, flip: bool = False,
                 cutout: int = 0, same_class: int = 0, every_anchor: bool = False, drop_last: bool | None = None,
                 channels_last: bool = False, shard: tuple[int, int] = (0, 1)):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if same_class < 0 or batch_size % (1 + same_class):
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of 1 + same_class "
                             f"({1 + same_class}) so that every anchor brings its same-class samples")
        rank, world = shard
        if batch_size % world or (batch_size // world) % (1 + same_class):
            raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({world}), "
                             f"and each process's share by 1 + same_class ({1 + same_class})")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255.0
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.crop_pad, self.flip, self.cutout, self.same_class = crop_pad, flip, cutout, same_class
        self.every_anchor = bool(every_anchor and same_class)
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last, self.rank, self.world = channels_last, rank, world
        self.epoch = 0
        if same_class:
            sorted_y, self._by_class = torch.sort(y, stable=True)
            counts = torch.bincount(sorted_y)
            if (counts[counts > 0] < 2).any():
                raise ValueError("same_class sampling needs at least 2 samples of every class")
            self._class_start = torch.cumsum(counts, 0) - counts
            self._class_count = counts
            self._y_cpu = y.cpu()
            self._pos_in_class = torch.empty_like(self._by_class)  # position of each sample in its class
            self._pos_in_class[self._by_class] = torch.arange(len(y)) - self._class_start[sorted_y]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def anchors_per_batch(self) -> int:
        return self.batch_size // (1 + self.same_class)

    def __len__(self) -> int:
        # an epoch shows about as many images as the split holds, with or without same_class,
        # or (every_anchor) holds each image once as an anchor
        n, b = len(self.y), self.anchors_per_batch if self.every_anchor else self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.y)
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        b = self.anchors_per_batch
        for i in range(len(self)):
            idx = order[i * b:(i + 1) * b]
            if self.same_class:
                idx = self._with_same_class(idx, gen)
            yield self._make_batch(idx, gen)

    def _with_same_class(self, anchors: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Each anchor followed by `same_class` other samples of its class, drawn at random
        without replacement (with replacement only where the class has too few), as BAKE's
        official sampler draws them."""
        labels = self._y_cpu[anchors]
        count = self._class_count[labels].unsqueeze(1)
        # draw among the class's other samples: offsets in [0, count-1), skipping the anchor;
        # the first `same_class` of a random order of the offsets are distinct
        others = count - 1
        keys = torch.rand(len(anchors), int(others.max()), generator=gen)
        keys[torch.arange(keys.shape[1]).unsqueeze(0) >= others] = 2.0  # offsets past the class's end last
        draw = keys.argsort(1)[:, :self.same_class]
        if (others < self.same_class).any():  # too few others: wrap around (with replacement)
            draw = draw % others
        pos_anchor = self._pos_in_class[anchors]
        draw = draw + (draw >= pos_anchor.unsqueeze(1)).long()
        extra = self._by_class[self._class_start[labels].unsqueeze(1) + draw]
        return torch.cat([anchors.unsqueeze(1), extra], 1).flatten()

    def _make_batch(self, idx: torch.Tensor, gen: torch.Generator) -> Batch:
        k = len(idx)
        if self.train:
            # draw the augmentation on the CPU generator so CPU and GPU runs match
            shifts = torch.randint(0, 2 * self.crop_pad + 1, (2, k), generator=gen)
            flips = torch.rand(k, generator=gen) < 0.5
            centres = torch.randint(0, self.x.shape[-1], (2, k), generator=gen)
        if self.world > 1:
            # data-parallel: every process draws the whole global batch and its augmentation
            # (same generator), then keeps its contiguous share, so that the processes together
            # see exactly the samples and augmentations one process would (anchors stay with
            # their same-class samples)
            share = slice(self.rank * k // self.world, (self.rank + 1) * k // self.world)
            idx = idx[share]
            if self.train:
                shifts, flips, centres = shifts[:, share], flips[share], centres[:, share]
        idx_dev = idx.to(self.device, non_blocking=True)
        x = self.x[idx_dev]
        if self.train and self.crop_pad:
            x = random_crop(x, self.crop_pad, shifts.to(self.device, non_blocking=True))
        if self.train and self.flip:
            x = torch.where(flips.to(self.device, non_blocking=True).view(-1, 1, 1, 1), x.flip(3), x)
        x = (x.float() - self.mean) / self.std
        if self.train and self.cutout:
            x = cutout(x, self.cutout, centres.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, self.y[idx_dev], idx_dev)


def random_crop(x: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """Crop each image of x [B, C, H, W] from its zero-padded version at offsets shifts [2, B]."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (shifts[0].view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (shifts[1].view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chan, rows, cols]


def cutout(x: torch.Tensor, size: int, centres: torch.Tensor) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) centred at centres [2, B] in each image."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top = centres[0].view(-1, 1, 1) - size // 2
    left = centres[1].view(-1, 1, 1) - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(inside.unsqueeze(1), 0.0)
