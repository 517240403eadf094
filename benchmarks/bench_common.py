"""Shared pieces of the benchmarks: synthetic data, the two training loops, FLOP counting,
device peaks and atomic JSON output.

The two loops train the same student from the same teacher with the same KD loss
(0.1 CE + 0.9 T^2 KL, T = 4, SGD with momentum) and differ only in *how* they train:

- `OursLoop`: this repository's loop, as `kd.train.fit` runs it: the uint8 split held on
  the device by `kd.data.Loader` (crop, flip and normalisation on the device), the step of
  `kd.methods.create("kd")`, bf16 autocast and channels_last on CUDA, the per-step learning
  rate and the on-device NaN guard of `fit`, no host synchronisation inside an epoch,
  optionally `torch.compile` on the student.
- `ReferenceLoop`: a loop written the way the standard CIFAR KD codebases (RepDistiller,
  mdistiller) train: a Dataset of HWC uint8 arrays that makes a PIL image per sample and
  runs torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
  Normalize), a torch DataLoader with worker processes (re-started every epoch, no pinned
  memory), float32, cudnn.benchmark on, the teacher's forward every step, and per-step
  `loss.item()` / top-1 / top-5 bookkeeping (which makes the host wait for the GPU each step).

Only torch, torchvision, numpy and the repository's `kd` package are needed.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # kd need not be installed: the GPU machine runs from a plain checkout
    sys.path.insert(0, str(REPO))

from kd import data as kd_data  # noqa: E402
from kd.env import device_name  # noqa: E402
from kd.io import atomic_write_text  # noqa: E402
from kd import methods as kd_methods  # noqa: E402
from kd import models as kd_models  # noqa: E402
from kd import train as kd_train  # noqa: E402

RESULTS = REPO / "results" / "benchmarks"

CIFAR100_MEAN, CIFAR100_STD = kd_data.info("cifar100").mean, kd_data.info("cifar100").std

# Dense (no sparsity) bf16 tensor-core peaks with fp32 accumulation, in TFLOP/s, from the
# vendors' data sheets. Matched against torch.cuda.get_device_name() in this order (the
# first key contained in the name wins), so the more specific names come first.
BF16_PEAK_TFLOPS = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),      # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),      # H200 SXM (the NVL variant is lower: 835)
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
]


# ----------------------------------------------------------------------------- device

def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU (torch.cuda.is_available() is False)")
    return device


def device_slug(device: torch.device) -> str:
    """A short file-name-safe name: 'cpu' or e.g. 'nvidia-h100-80gb-hbm3'."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def bf16_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = device_name(device)
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def environment(device: torch.device) -> dict:
    info = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "hostname": platform.node(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- data

def synthetic_split(n: int, shape=(3, 32, 32), classes: int = 100, seed: int = 0):
    """n random uint8 images (NCHW) with random labels: enough to time training, nothing to learn."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


def make_pair(teacher: str, student: str, classes: int, in_channels: int, seed: int = 0):
    """Randomly initialised (teacher, student); throughput does not depend on the weights."""
    torch.manual_seed(seed)
    t = kd_models.create(teacher, classes, in_channels=in_channels)
    s = kd_models.create(student, classes, in_channels=in_channels)
    return t, s


# ----------------------------------------------------------------------------- FLOPs

def forward_flops_per_image(model: torch.nn.Module, shape, batch: int = 2) -> float:
    """Forward FLOPs per image counted by torch.utils.flop_counter (convolutions and matrix
    products, 2 per multiply-add; BatchNorm, ReLU and pooling are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    import copy

    m = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(batch, *shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        m(x)
    return counter.get_total_flops() / batch


# ----------------------------------------------------------------------------- loops

def _stream(make_iter):
    """Batches forever, epoch after epoch (make_iter(epoch) starts an epoch)."""
    epoch = 0
    while True:
        for batch in make_iter(epoch):
            yield batch
        epoch += 1


class OursLoop:
    """kd.train.fit's training step on a device-resident synthetic split (no evaluation)."""

    label = "ours"

    def __init__(self, teacher, student, x, y, *, batch_size: int, device: torch.device,
                 compile: bool = False, bf16: bool = True, channels_last: bool | None = None,
                 cudnn_benchmark: bool = True, mean=CIFAR100_MEAN, std=CIFAR100_STD,
                 crop_pad: int = 4, seed: int = 0, lr: float = 0.05, epochs_for_schedule: int = 240,
                 method: str = "kd", cpu_bf16: bool = False):
        """cpu_bf16: the step under bf16 autocast on a CPU too (kd.train.fit uses it on CUDA only)."""
        self.device, self.batch_size = device, batch_size
        cuda = device.type == "cuda"
        self.cuda = cuda
        self.cudnn_benchmark = cudnn_benchmark  # kd.train.fit turns cuDNN's autotuner on
        cl = cuda if channels_last is None else channels_last  # None: on CUDA only, as kd.train.fit
        # "kd": 0.1 CE + 0.9 T^2 KL, T = 4 (the CRD / mdistiller recipe); "ce" trains without a teacher
        self.method = kd_methods.create(method)
        if self.method.needs_teacher != (teacher is not None):
            raise ValueError(f"method {method!r} {'needs' if self.method.needs_teacher else 'takes no'} teacher")
        self.loader = kd_data.Loader(x, y, mean, std, batch_size=batch_size, train=True, device=device,
                                     seed=seed, crop_pad=crop_pad, flip=True, channels_last=cl,
                                     same_class=self.method.same_class)
        num_classes = student.classifier.out_features
        self.method.setup(self.loader.y, num_classes, device, seed)
        self.student = student.to(device).train()
        self.teacher = teacher.to(device).eval().requires_grad_(False) if teacher is not None else None
        if cl:
            self.student = self.student.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.train_model = torch.compile(self.student) if compile else self.student
        self.autocast = kd_train.autocast_settings(device, bf16)
        if cpu_bf16 and not cuda:
            self.autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=True)
        self.cfg = kd_train.TrainConfig(model="resnet8", epochs=epochs_for_schedule, lr=lr,
                                        schedule="multistep", milestones=[0.625, 0.75, 0.875])
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {batch_size} is larger than the synthetic split ({len(y)} images)")
        self._epoch = 0
        self.nonfinite = False
        self._batches = self._epochs()

    def _epochs(self):
        while True:
            self.loader.set_epoch(self._epoch)
            self.method.on_epoch_start(self._epoch, self.cfg.epochs)
            self._guard = kd_train.FiniteGuard(check_every_step=not self.cuda)
            self._sums: dict = {}
            for step, batch in enumerate(self.loader):
                yield step, batch
            self._end_of_epoch()
            self._epoch += 1

    def _end_of_epoch(self):
        # what fit does once per epoch besides evaluating: the NaN check and the logged means
        try:
            self._guard.check()
        except kd_train.NonFiniteLoss:  # random labels may diverge; the timing is still valid
            self.nonfinite = True
        _ = {k: (v / self.steps_per_epoch).item() for k, v in self._sums.items()}

    def step(self) -> int:
        step, batch = next(self._batches)
        lr = kd_train.learning_rate(self.cfg, self._epoch + step / self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, terms = kd_train.train_step(self.method, self.train_model, self.teacher, batch, self.optimizer,
                                          self.autocast)
        try:
            self._guard.record(loss, terms, self._epoch, step)
        except kd_train.NonFiniteLoss:  # CPU checks every step, as fit does
            self.nonfinite = True
        for k, v in terms.items():
            self._sums[k] = self._sums.get(k, 0) + v.detach().float()
        return batch.y.shape[0]

    def run(self, steps: int) -> tuple[float, int]:
        """(seconds, images) for `steps` training steps, the device drained at both ends."""
        if self.cuda:
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        synchronize(self.device)
        t0 = time.perf_counter()
        images = sum(self.step() for _ in range(steps))
        synchronize(self.device)
        return time.perf_counter() - t0, images


class HWCDataset(torch.utils.data.Dataset):
    """Images stored as an N x H x W x C uint8 array, turned into a PIL image per sample and
    transformed, as torchvision.datasets.CIFAR100 does; returns (image, label, index) like
    RepDistiller's CIFAR100Instance."""

    def __init__(self, images_hwc: np.ndarray, labels: list[int], transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = self.images[i]
        img = Image.fromarray(img if img.shape[-1] != 1 else img[..., 0])
        return self.transform(img), self.labels[i], i


def standard_train_transform(mean=CIFAR100_MEAN, std=CIFAR100_STD, size: int = 32, padding: int = 4):
    from torchvision import transforms

    return transforms.Compose([transforms.RandomCrop(size, padding=padding), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


class _Meter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n):
        self.sum = self.sum + value * n  # tensors stay tensors, as in the codebases' AverageMeter
        self.count += n


def _topk_correct(logits, target, ks=(1, 5)):
    k = min(max(ks), logits.shape[1])
    _, pred = logits.topk(k, 1, True, True)
    hits = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [hits[:min(kk, k)].reshape(-1).float().sum(0) * (100.0 / target.shape[0]) for kk in ks]


class ReferenceLoop:
    """A KD training loop in the style of the standard CIFAR KD codebases (see the module doc)."""

    label = "reference"

    def __init__(self, teacher, student, x, y, *, batch_size: int = 64, device: torch.device,
                 workers: int = 8, mean=CIFAR100_MEAN, std=CIFAR100_STD, temperature: float = 4.0,
                 ce_weight: float = 0.1, kd_weight: float = 0.9, lr: float = 0.05, seed: int = 0):
        self.device, self.batch_size = device, batch_size
        self.cuda = device.type == "cuda"
        images_hwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        transform = standard_train_transform(mean, std, size=x.shape[-1])
        dataset = HWCDataset(images_hwc, y.tolist(), transform)
        gen = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                                  num_workers=workers, generator=gen)
        self.student = student.to(device).train()
        self.teacher = teacher.to(device).eval()
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.T, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.losses, self.top1, self.top5 = _Meter(), _Meter(), _Meter()
        self._batches = _stream(lambda epoch: self.loader)

    def _kl(self, logit_s, logit_t):
        log_p_s = F.log_softmax(logit_s / self.T, dim=1)
        p_t = F.softmax(logit_t / self.T, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="sum") * self.T ** 2 / logit_s.shape[0]

    def step(self) -> int:
        x, target, index = next(self._batches)
        x = x.float()
        if self.cuda:
            x, target, index = x.cuda(self.device), target.cuda(self.device), index.cuda(self.device)
        # the student is called for its features too, as RepDistiller's is_feat=True does
        logit_s, _feat_s = self.student(x, return_features=True)
        with torch.no_grad():
            logit_t, _feat_t = self.teacher(x, return_features=True)
        loss = self.ce_weight * F.cross_entropy(logit_s, target) + self.kd_weight * self._kl(logit_s, logit_t)
        acc1, acc5 = _topk_correct(logit_s, target)
        self.losses.update(loss.item(), x.shape[0])  # .item(): the host waits for the GPU here
        self.top1.update(acc1, x.shape[0])
        self.top5.update(acc5, x.shape[0])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return x.shape[0]

    def run(self, steps: int) -> tuple[float, int]:
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        synchronize(self.device)
        t0 = time.perf_counter()
        images = sum(self.step() for _ in range(steps))
        synchronize(self.device)
        return time.perf_counter() - t0, images


# ----------------------------------------------------------------------------- output

def atomic_write_json(path, obj) -> Path:
    """Write JSON atomically (kd.io), numpy numbers and paths included."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")
    return Path(path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def isfinite(x) -> bool:
    return x is not None and math.isfinite(x)


def sync_check(loop: "OursLoop", steps: int = 3) -> dict:
    """Run `steps` steps of a warmed-up loop under torch.cuda.set_sync_debug_mode("warn") and
    list where the host waited for the GPU (blocking copies, .item(), boolean-mask indexing)."""
    import warnings

    if not loop.cuda:
        return {"skipped": "CUDA only"}
    loop.run(1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(steps):
                loop.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    where: dict[str, int] = {}
    for w in caught:
        if "synchroniz" not in str(w.message).lower():
            continue
        key = f"{os.path.relpath(w.filename, REPO) if w.filename.startswith(str(REPO)) else w.filename}:{w.lineno}"
        where[key] = where.get(key, 0) + 1
    return {"steps": steps, "syncs_per_step": sum(where.values()) / steps,
            "locations": {k: v / steps for k, v in sorted(where.items())}}
