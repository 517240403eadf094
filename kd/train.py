"""One training loop for every method: `fit(config, run_dir)`.

A `TrainConfig` says everything that changes the result (data, model, method, teacher,
optimiser, schedule, seed, precision); its hash names the run. `fit` trains, evaluates
every `eval_every` epochs, writes per-epoch metrics (`metrics.csv`), checkpoints atomically
and resumes a killed run to the same metrics (on CPU). On CUDA it uses bf16 autocast,
channels_last, the GPU-resident loader and no per-step host synchronisation.

Determinism: one seed fixes the initialisation, the batches, the augmentation and the
methods' randomness; on CPU the same seed gives bit-identical metrics. On GPU, cuDNN's
algorithm choice, atomics in backward kernels and bf16 rounding make runs differ slightly.

Data parallel (`torchrun --nproc_per_node N -m kd train ...`): `batch_size` is the GLOBAL
batch; each process trains on its batch_size // N share of the same samples and
augmentations one process would draw, and DDP averages the gradients, so a step equals
one process's step except for BatchNorm, whose batch statistics are per process (plain
BatchNorm, not SyncBatchNorm, which has no CPU kernel; running statistics are rank 0's). tests/test_train.py checks
that two CPU processes (gloo) match one process, exactly up to float rounding without
BatchNorm and within a stated tolerance with it. Logged training losses are averaged over
the processes; rank 0 evaluates and writes the files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kd import data as kd_data
from kd import methods as kd_methods
from kd import models as kd_models
from kd import prune as kd_prune
from kd import replay as kd_replay
from kd.env import provenance
from kd.io import atomic_save, atomic_write_text, write_csv
from kd.metrics import classification_metrics, predict

SCHEDULES = ("multistep", "cosine", "constant")
# Part of every run's identity: bump when the loop, the loader or the data pipeline changes what
# a configuration trains to, so that no run of the old code is handed back as a run of the new.
TRAIN_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that determines a run's result. Milestones are fractions of `epochs`."""

    model: str = "resnet20"
    dataset: str = "fashion_mnist"
    train_subset: int | None = None
    eval_subset: int | None = None
    val_fraction: float = 0.0
    data_seed: int | None = None  # seed of the data subset; None: `seed` (see load_data)
    method: str = "ce"
    method_args: dict = field(default_factory=dict)
    teacher: "TrainConfig | list[TrainConfig] | None" = None  # a list: an ensemble teacher (kd.models.Ensemble)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: list = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    crop_pad: int = 4
    flip: bool = True
    cutout: int = 0
    seed: int = 0
    bf16: bool = True          # autocast on CUDA only; CPU runs stay in float32
    channels_last: bool = True  # CUDA only
    # the run's model after this many epochs of the `epochs`-long schedule (a teacher taken at a
    # chosen epoch: an early-stopped teacher); None: the whole schedule
    stop_epoch: int | None = None
    # a derived run (kd.prune): start from this run's final weights (a fine-tune with this
    # configuration's schedule), pruned first when `prune` is given, e.g. {"amount": 0.5}
    init_from: "TrainConfig | None" = None
    prune: dict | None = None
    # with init_from: start at init_lambda * its weights + (1 - init_lambda) * this seed's random
    # initialisation (Stanton et al. 2021's interpolated initialisation); None: its weights as they are
    init_lambda: float | None = None
    # a student shaped from a pruned run of the same plain network: its convolution widths keep
    # as many weights as that run's convolutions have non-zero (kd.prune.shaped_widths)
    shape_from: "TrainConfig | None" = None
    # each sample holds this many images of its class as channels (kd.data.add_views: its own, then
    # others of its class), and the model sees only the views `seen_views` lists (None: all): two
    # "modalities" of one sample, a teacher that sees both and a student that sees one (MFH)
    views: int | None = None
    seen_views: list | None = None

    # settings added after runs were stored: left out of the identity while unset, so those runs keep theirs
    LATER_FIELDS = ("stop_epoch", "init_from", "prune", "shape_from", "init_lambda", "views", "seen_views")

    def __post_init__(self):
        if isinstance(self.teacher, dict):
            self.teacher = TrainConfig.from_dict(self.teacher)
        elif isinstance(self.teacher, (list, tuple)):
            self.teacher = [TrainConfig.from_dict(t) if isinstance(t, dict) else t for t in self.teacher]
        if isinstance(self.init_from, dict):
            self.init_from = TrainConfig.from_dict(self.init_from)
        if isinstance(self.shape_from, dict):
            self.shape_from = TrainConfig.from_dict(self.shape_from)

    @property
    def teachers(self) -> list["TrainConfig"]:
        """The teacher's configuration, or an ensemble's members; [] without a teacher."""
        if self.teacher is None:
            return []
        return list(self.teacher) if isinstance(self.teacher, list) else [self.teacher]

    @property
    def dependencies(self) -> list["TrainConfig"]:
        """The runs this one needs finished first: its teachers, and the runs it starts from or is shaped from."""
        return self.teachers + [c for c in (self.init_from, self.shape_from) if c is not None]

    def _map_teacher(self, fn):
        if isinstance(self.teacher, list):
            return [fn(t) for t in self.teacher]
        return fn(self.teacher) if self.teacher is not None else None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["teacher"] = self._map_teacher(lambda t: t.to_dict())
        d["init_from"] = self.init_from.to_dict() if self.init_from is not None else None
        d["shape_from"] = self.shape_from.to_dict() if self.shape_from is not None else None
        for name in self.LATER_FIELDS:
            if d[name] is None:
                del d[name]
        return d

    def resolved(self) -> "TrainConfig":
        """This configuration with every method hyperparameter spelled out, defaults included
        (the teacher's too): {"temperature": 4} and {} name the same KD run."""
        return dataclasses.replace(self, method_args=kd_methods.resolved_args(self.method, self.method_args),
                                   teacher=self._map_teacher(lambda t: t.resolved()),
                                   init_from=self.init_from.resolved() if self.init_from is not None else None,
                                   shape_from=self.shape_from.resolved() if self.shape_from is not None else None,
                                   prune=kd_prune.resolved(self.prune) if self.prune is not None else None)

    def identity(self) -> dict:
        """What names a run: the resolved configuration, the version of its method (which
        covers the loss functions the method calls) and the training loop's version, for the
        teacher too. Changing a default or a method's behaviour (with its version) gives new runs."""
        d = self.resolved().to_dict()
        d["versions"] = {"method": kd_methods.REGISTRY[self.method].version, "train": TRAIN_VERSION}
        d["teacher"] = self._map_teacher(lambda t: t.identity())
        if self.init_from is not None:
            d["init_from"] = self.init_from.identity()
        if self.shape_from is not None:
            d["shape_from"] = self.shape_from.identity()
        return d

    @property
    def subset_seed(self) -> int:
        """The seed that draws the data subsets: `data_seed` (one subset for every seed), else `seed`."""
        return self.seed if self.data_seed is None else self.data_seed

    def load_data(self, root=None) -> "kd_data.Dataset":
        """The data this configuration trains and evaluates on: its dataset, subsets drawn with
        `data_seed` (one subset for every seed, e.g. the shared teacher's) or else `seed`."""
        return kd_data.load(self.dataset, root, train_subset=self.train_subset, eval_subset=self.eval_subset,
                            val_fraction=self.val_fraction, views=self.views,
                            seed=self.subset_seed)

    def seen_channels(self) -> list[int] | None:
        """The input channels the model sees: those of its `seen_views` (None: every channel)."""
        if self.seen_views is None:
            return None
        c = kd_data.info(self.dataset).channels
        return [v * c + i for v in self.seen_views for i in range(c)]

    def hash(self) -> str:
        """A short content hash of the run's identity (teacher included)."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> kd_methods.Method:
        """Check every setting before any work starts; returns the method object."""
        if self.model not in kd_models.available():
            raise ValueError(f"unknown model {self.model!r}; available: {', '.join(kd_models.available())}")
        if self.dataset not in kd_data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(kd_data.DATASETS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.stop_epoch is not None and not 1 <= self.stop_epoch <= self.epochs:
            raise ValueError(f"stop_epoch must be in [1, epochs = {self.epochs}], got {self.stop_epoch}")
        if self.init_lambda is not None:
            if self.init_from is None:
                raise ValueError("init_lambda needs init_from, the trained run the initialisation moves towards")
            if isinstance(self.init_lambda, bool) or not isinstance(self.init_lambda, (int, float)) \
                    or not 0 <= self.init_lambda <= 1:
                raise ValueError(f"init_lambda must be in [0, 1], got {self.init_lambda!r}")
        if self.prune is not None:
            if self.init_from is None:
                raise ValueError("prune needs init_from, the trained run whose weights are pruned")
            kd_prune.check(self.prune)
        if self.init_from is not None:
            if (self.init_from.model, self.init_from.dataset) != (self.model, self.dataset):
                raise ValueError(f"init_from must be a {self.model} run on {self.dataset} (the weights are loaded "
                                 f"as they are), got {self.init_from.model} on {self.init_from.dataset}")
            self.init_from.validate()
        if self.shape_from is not None:
            if not kd_models.shapeable(self.model):
                raise ValueError(f"shape_from needs a plain network for the student (VGG, plane), got {self.model!r}")
            if (self.shape_from.model, self.shape_from.dataset) != (self.model, self.dataset):
                raise ValueError(f"shape_from must be a {self.model} run on {self.dataset} (its convolutions give "
                                 f"the student's widths), got {self.shape_from.model} on {self.shape_from.dataset}")
            self.shape_from.validate()
        if self.views is not None and (isinstance(self.views, bool) or not isinstance(self.views, int)
                                       or self.views < 2):
            raise ValueError(f"views must be an integer >= 2 (None: the images alone), got {self.views!r}")
        if self.seen_views is not None:
            views = list(range(self.views or 1))
            if self.views is None or not self.seen_views or len(set(self.seen_views)) != len(self.seen_views) \
                    or not set(self.seen_views) < set(views):
                raise ValueError(f"seen_views must list some, not all, of the views {views} (views: {self.views}) "
                                 f"once each; got {self.seen_views!r} (None: the model sees every view)")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, momentum={self.momentum}")
        if self.crop_pad < 0 or self.cutout < 0 or self.warmup_epochs < 0 or not self.gamma > 0:
            raise ValueError(f"need crop_pad >= 0, cutout >= 0, warmup_epochs >= 0, gamma > 0; got crop_pad="
                             f"{self.crop_pad}, cutout={self.cutout}, warmup_epochs={self.warmup_epochs}, "
                             f"gamma={self.gamma}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the epochs in (0, 1), got {self.milestones}; "
                             "e.g. epochs 150, 180, 210 of 240 are [0.625, 0.75, 0.875]")
        method = kd_methods.create(self.method, **self.method_args)
        if method.needs_teacher and self.teacher is None:
            raise ValueError(f"method {self.method!r} needs a teacher: on the command line pass --teacher-run "
                             "<a finished run's folder>; in Python set `teacher` to the teacher's TrainConfig")
        if isinstance(self.teacher, list) and len(self.teacher) < 2:
            raise ValueError(f"an ensemble teacher needs at least 2 members, got {len(self.teacher)}; "
                             "give one teacher as a TrainConfig, not a list")
        for teacher in self.teachers:
            if not method.needs_teacher:
                raise ValueError(f"method {self.method!r} uses no teacher, but one was given; remove `teacher`")
            if teacher.dataset != self.dataset:
                raise ValueError(f"teacher trained on {teacher.dataset!r} but the student on "
                                 f"{self.dataset!r}: their class counts and inputs would not match")
            if teacher.views != self.views:
                raise ValueError(f"teacher trained with views={teacher.views} but the student with views="
                                 f"{self.views}: the teacher reads the student's batches (seen_views chooses "
                                 "what each one sees)")
            if method.same_architecture and teacher.model != self.model:
                raise ValueError(f"{self.method!r} needs the teacher's architecture for the student: "
                                 f"teacher {teacher.model!r}, student {self.model!r}")
            teacher.validate()
        if method.same_class and self.batch_size % (1 + method.same_class):
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of 1 + same_class "
                             f"({1 + method.same_class}) for {self.method!r}")
        return method


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at `progress` epochs (fractional) into training."""
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        return cfg.lr * (progress + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(progress >= m * cfg.epochs for m in cfg.milestones)
    if cfg.schedule == "cosine":
        t = (progress - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return cfg.lr


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the run stopped and the last good checkpoint is kept."""


class _Distributed:
    """torchrun's environment, if any: rank, world size, and the process group."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0


def load_model(run_dir: str | os.PathLike, device="cpu") -> torch.nn.Module:
    """The final model of a finished run, in eval mode."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    facts = kd_data.info(cfg.dataset)
    widths = json.loads((run_dir / "final.json").read_text())["widths"] if cfg.shape_from is not None else None
    model = kd_models.create(cfg.model, facts.num_classes, in_channels=facts.channels * (cfg.views or 1),
                             widths=widths, channels=cfg.seen_channels())
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    return model.to(device).eval()


def fit(cfg: TrainConfig, run_dir: str | os.PathLike, *, teacher: torch.nn.Module | list | None = None,
        init: dict | None = None, widths: list[int] | None = None, device=None, resume: bool = True,
        checkpoint_every: int = 1, eval_every: int = 1,
        evaluations: int | None = None, teacher_outputs: str | os.PathLike | None = None,
        compile: bool = False, progress: bool | None = None, data_root=None) -> dict:
    """Train `cfg` into `run_dir` and return the final summary (also written to final.json).

    Files: config.json, metrics.csv (one row per evaluated epoch), checkpoint.pt (for
    resume), model.pt and eval_logits.pt (the final model and its eval-split logits),
    final.json (last-epoch metrics, best-epoch top-1, timings). A derived run (`cfg.init_from`)
    starts from `init`, the state dict of that run's final model (or a point between it and the
    seed's random initialisation, `cfg.init_lambda`), pruned if `cfg.prune` says
    (kd.prune; the pruned weights stay zero). A shaped student (`cfg.shape_from`) is built with
    `widths`, its convolution widths from that run (kd.prune.shaped_widths). Evaluation runs every `eval_every`
    epochs, or `evaluations` times over the run when that is given, and at the last epoch. The reported accuracy is
    the LAST epoch's (`top1`); `best_top1` and `best_epoch` are kept as secondary columns.
    `teacher_outputs`: a folder where, on a CPU, a method that `replays_teacher` records the teacher's
    logits on this seed's batches or replays those another run recorded (kd.replay; the same numbers).
    """
    method = cfg.validate()
    if isinstance(teacher, (list, tuple)):  # an ensemble teacher's trained members
        teacher = kd_models.Ensemble(teacher)
    if evaluations:
        eval_every = max(1, cfg.epochs // evaluations)
    if teacher is None and method.needs_teacher:
        raise ValueError(f"method {cfg.method!r} needs a trained teacher model (pass teacher=...)")
    if (init is None) != (cfg.init_from is None):
        raise ValueError("a run with init_from needs init=, the state dict of that run's model (and only it)")
    if (widths is None) != (cfg.shape_from is None):
        raise ValueError("a run with shape_from needs widths=, the convolution widths shaped from that run (only it)")
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():  # before any file is written
        raise RuntimeError(f"device {device} asked for, but no GPU is visible (torch.cuda.is_available() is False)")
    dist = _Distributed(device)
    # the data first: a missing dataset stops the run before anything is written
    ds = cfg.load_data(data_root)
    if cfg.batch_size > len(ds.y_train):
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(ds.y_train)} training images: "
                         "an epoch would have no full batch")
    run_dir = Path(run_dir)
    if resume:
        _check_folder_is_this_run(run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    start_epoch, state = 0, None
    if resume and ckpt_path.exists():
        try:
            state = torch.load(ckpt_path, map_location=device, weights_only=False)
        except Exception as e:  # truncated or corrupt: never restart silently, never resume garbage
            raise RuntimeError(f"{ckpt_path} cannot be read ({type(e).__name__}: {e}); the file is truncated or "
                               "corrupt (checkpoints are written atomically, so a disk error or another program). "
                               "Delete it to train this run from the start, or pass resume=False") from e
        if state["hash"] != cfg.hash():
            raise ValueError(f"{ckpt_path} belongs to another configuration (hash {state['hash']}, this run "
                             f"{cfg.hash()}); delete it, pass resume=False, or use another run directory")
        start_epoch = state["epoch"]
    if dist.main:
        (run_dir / "final.json").unlink(missing_ok=True)  # unfinished until final.json is written at the end
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.resolved().to_dict(), indent=2, sort_keys=True))

    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fastest kernels for fixed shapes (not bit-deterministic)
    channels_last = cfg.channels_last and cuda
    train_loader = make_train_loader(cfg, method, ds, device, channels_last=channels_last,
                                     shard=(dist.rank, dist.world))
    # evaluation batches: large on a GPU; 256 on a CPU, where 1024 runs at half the speed (cache)
    eval_loader = kd_data.Loader(ds.x_eval, ds.y_eval, ds.mean, ds.std, batch_size=1024 if cuda else 256,
                                 train=False, device=device, channels_last=channels_last)

    torch.manual_seed(cfg.seed)
    model = kd_models.create(cfg.model, ds.num_classes, in_channels=ds.in_channels, widths=widths,
                             channels=cfg.seen_channels()).to(device)
    if init is not None:
        if cfg.init_lambda is not None:  # between this seed's random initialisation and the run's weights
            own = model.state_dict()
            init = {k: cfg.init_lambda * v.to(own[k]) + (1 - cfg.init_lambda) * own[k]
                    if v.is_floating_point() else v for k, v in init.items()}
        model.load_state_dict(init)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    pruned = None  # (weight, mask) pairs held at zero where pruned
    if cfg.prune is not None:
        pruned = kd_prune.hold(model, kd_prune.masks(model, cfg.prune, data=ds))
        kd_prune.apply(pruned)
    if teacher is not None:
        t_classes = _out_features(teacher)
        if t_classes != ds.num_classes:
            raise ValueError(f"teacher predicts {t_classes} classes but {cfg.dataset} has {ds.num_classes}: "
                             f"distil from a teacher trained on {cfg.dataset}")
        teacher = teacher.to(device).eval().requires_grad_(False)
        if channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
    method.setup(train_loader.y, ds.num_classes, device, cfg.seed)
    owned = method.build(model, teacher, torch.zeros(2, *ds.x_train.shape[1:], device=device))
    if owned is not None:  # the method's own modules train with the student; model.pt holds the student only
        if dist.world > 1:
            raise NotImplementedError(f"method {cfg.method!r} owns trainable modules, which data-parallel "
                                      "training does not synchronise yet; train it in one process")
        method.owned = owned.to(device)
    optimizer = make_optimizer(cfg, model, method)
    history: list[dict] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng"])
        history = state["history"]
    train_model = model
    if dist.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None)
    if compile:
        train_model = torch.compile(train_model)
    autocast = autocast_settings(device, cfg.bf16)
    teacher_eval_logits = replay = None
    if teacher is not None:
        teacher_eval_logits, _ = predict(teacher, eval_loader, torch.bfloat16 if autocast["enabled"] else None)
        if teacher_outputs is not None and method.replays_teacher and not cuda and dist.world == 1:
            replay = kd_replay.TeacherReplay(teacher_outputs, kd_replay.stream_key(cfg, method, device), teacher)

    show_bar = sys.stderr.isatty() if progress is None else progress
    log = _Logger(run_dir.name, cfg.epochs, show_bar and dist.main, quiet=(progress is False) or not dist.main)
    if start_epoch:
        log.message(f"{run_dir.name}: resuming from epoch {start_epoch} of {cfg.epochs} (checkpoint.pt)")
    steps_per_epoch = len(train_loader)
    logits = targets = None  # the last evaluation's, reused for eval_logits.pt (the last epoch always evaluates)
    end = cfg.stop_epoch or cfg.epochs  # the schedule is always the `epochs`-long one
    for epoch in range(start_epoch, end):
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        method.on_epoch_start(epoch, cfg.epochs)
        model.train()
        if method.owned is not None:
            method.owned.train()
        sums: dict[str, torch.Tensor] = {}
        guard = FiniteGuard(check_every_step=not cuda)
        step_teacher = replay.epoch(epoch) if replay is not None else teacher
        for step, batch in enumerate(log.steps(train_loader, epoch)):
            lr = learning_rate(cfg, epoch + step / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss, terms = train_step(method, train_model, step_teacher, batch, optimizer, autocast)
            if pruned is not None:
                kd_prune.apply(pruned)
            guard.record(loss, terms, epoch, step)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
        guard.check()
        if replay is not None:
            replay.end_epoch()
        if dist.world > 1 and sums:  # the logged training loss is the mean over all processes
            stacked = torch.stack([sums[k] for k in sums])
            torch.distributed.all_reduce(stacked)
            sums = dict(zip(sums, stacked / dist.world))
        row = {"epoch": epoch + 1, "lr": lr}
        row.update({f"train_{k}": (v / steps_per_epoch).item() for k, v in sums.items()})
        row["train_loss"] = sum(row[f"train_{k}"] for k in sums if k not in method.monitored)
        if cuda:
            torch.cuda.synchronize()
        row["epoch_time_s"] = time.perf_counter() - t0
        last = epoch + 1 == end
        if last or (epoch + 1) % eval_every == 0:
            logits, targets = predict(model, eval_loader, torch.bfloat16 if autocast["enabled"] else None)
            row.update(classification_metrics(logits, targets, teacher_eval_logits))
            row.update(method.evaluate(eval_loader))
        history.append(row)
        log.epoch(row)
        if dist.main:
            write_csv(run_dir / "metrics.csv", history)
            if last or (checkpoint_every and (epoch + 1) % checkpoint_every == 0):
                atomic_save({"hash": cfg.hash(), "epoch": epoch + 1, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "method": method.state_dict(),
                             "rng": torch.get_rng_state(), "history": history}, ckpt_path)
    log.close()

    if logits is None:  # a finished run resumed: nothing trained, evaluate the final model once
        logits, targets = predict(model, eval_loader, torch.bfloat16 if autocast["enabled"] else None)
    evaluated = [r for r in history if "top1" in r]
    best = max(evaluated, key=lambda r: r["top1"])
    summary = {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "epoch_time_s")}
    summary.update({"hash": cfg.hash(), "model": cfg.model, "method": cfg.method, "seed": cfg.seed,
                    "epochs": cfg.epochs, "best_top1": best["top1"], "best_epoch": best["epoch"],
                    "eval_split": ds.eval_split, "num_train": len(ds.y_train), "num_eval": len(ds.y_eval),
                    "params": sum(p.numel() for p in model.parameters()),
                    "train_time_s": sum(r["epoch_time_s"] for r in history),
                    "epoch_time_s": _median([r["epoch_time_s"] for r in history]),
                    "device": str(device), "teacher_hash": cfg._map_teacher(lambda t: t.hash()),
                    "versions": cfg.identity()["versions"], "provenance": provenance(device)})
    if replay is not None:
        summary["teacher_replay"] = {"epochs_replayed": replay.replayed_epochs,
                                     "batches_recomputed": replay.recomputed_batches}
    if cfg.prune is not None:
        summary["sparsity"] = kd_prune.sparsity(model, kd_prune.resolved(cfg.prune)["layers"])
    if widths is not None:
        summary["widths"] = list(widths)
    if dist.main:
        atomic_save(model.state_dict(), run_dir / "model.pt")
        atomic_save({"logits": logits.cpu(), "targets": targets.cpu()}, run_dir / "eval_logits.pt")
        # final.json is written last and marks the run finished; it holds the other files' checksums
        summary["files"] = {name: sha256(run_dir / name) for name in FINISHED_FILES}
        atomic_write_text(run_dir / "final.json", json.dumps(summary, indent=2))
    return summary


# written before final.json, whose `files` holds their checksums (kd.runs.Run checks them on loading)
FINISHED_FILES = ("config.json", "metrics.csv", "model.pt", "eval_logits.pt")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_folder_is_this_run(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse a folder that holds another configuration's run (two trainings given one --out)."""
    config_file = run_dir / "config.json"
    if not config_file.exists():
        return
    try:
        other = TrainConfig.from_dict(json.loads(config_file.read_text())).hash()
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        other = None
    if other != cfg.hash():
        raise ValueError(f"{run_dir} holds the run of another configuration (its config.json): give this "
                         "training another folder, or replace that run with resume=False (--no-resume)")


def autocast_settings(device: torch.device, bf16: bool = True) -> dict:
    """torch.autocast's arguments for training: bf16 on CUDA when asked, float32 on a CPU."""
    return dict(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def make_train_loader(cfg: TrainConfig, method: kd_methods.Method, ds: "kd_data.Dataset", device, *,
                      channels_last: bool = False, shard: tuple[int, int] = (0, 1)) -> "kd_data.Loader":
    """The training batches `fit` draws for `cfg`: its seed, augmentation and the method's sampler
    (same-class samples, every image an anchor, no sample dropped)."""
    return kd_data.Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=cfg.batch_size, train=True,
                          device=device, seed=cfg.seed, crop_pad=cfg.crop_pad, flip=cfg.flip, cutout=cfg.cutout,
                          same_class=method.same_class, every_anchor=method.every_anchor,
                          drop_last=False if method.every_sample else None, channels_last=channels_last, shard=shard)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, method: kd_methods.Method) -> torch.optim.SGD:
    """SGD over the student and the method's own modules (`method.owned`); those train at
    `method.owned_lr_scale` times the student's learning rate (a second parameter group with its
    `lr_scale`) when that is not 1."""
    params, scaled, scale = list(model.parameters()), [], method.owned_lr_scale
    if method.owned is not None:
        (params if scale == 1 else scaled).extend(method.owned.parameters())
    groups = [{"params": params}] + ([{"params": scaled, "lr": cfg.lr * scale, "lr_scale": scale}] if scaled else [])
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def train_step(method: kd_methods.Method, model: torch.nn.Module, teacher: torch.nn.Module | None, batch,
               optimizer: torch.optim.Optimizer, autocast: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step, the same for every method and every caller (`fit`, `kd.timing`, the
    benchmarks): the method's forward under autocast, the sum of its loss terms (its `monitored`
    terms only logged), backward, and the optimiser's step. Returns (loss, terms); nothing waits
    for the device (except a method that decides on the host, SwitOKD)."""
    with torch.autocast(**autocast):
        _, terms = method.forward_train(model, teacher, batch)
    loss = sum(v for k, v in terms.items() if k not in method.monitored)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, terms


def _out_features(model: torch.nn.Module) -> int:
    return getattr(model, "module", model).classifier.out_features


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


class FiniteGuard:
    """Stops on a NaN/Inf loss. On CPU it checks every step; on CUDA it records the first bad
    step on the device and checks once per epoch, so that training never waits for the host."""

    def __init__(self, check_every_step: bool):
        self.every_step = check_every_step
        self.bad = None

    def record(self, loss, terms, epoch, step):
        if self.every_step:
            if not torch.isfinite(loss):
                self._raise(epoch, step, {k: v.item() for k, v in terms.items()})
            return
        if self.bad is None:
            self.bad = {"found": torch.zeros((), dtype=torch.bool, device=loss.device),
                        "step": torch.zeros((), dtype=torch.long, device=loss.device),
                        "terms": torch.zeros(len(terms), device=loss.device), "names": list(terms),
                        "epoch": epoch}
        b = self.bad
        new = ~torch.isfinite(loss.detach()) & ~b["found"]
        b["step"] = torch.where(new, step, b["step"])
        b["terms"] = torch.where(new, torch.stack([v.detach().float() for v in terms.values()]), b["terms"])
        b["found"] = b["found"] | new

    def check(self):
        if self.bad is not None and self.bad["found"].item():
            b = self.bad
            self._raise(b["epoch"], int(b["step"]), dict(zip(b["names"], b["terms"].tolist())))

    @staticmethod
    def _raise(epoch, step, terms):
        detail = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step {step}: {detail}. "
                            "Training stopped; the last good checkpoint is kept. Lower the learning "
                            "rate or check the method's hyperparameters.")


class _Logger:
    """A tqdm bar on a terminal; one short line per epoch otherwise."""

    def __init__(self, name: str, epochs: int, bar: bool, quiet: bool):
        self.name, self.epochs, self.bar, self.quiet = name, epochs, bar, quiet
        self._tqdm = None

    def steps(self, loader, epoch):
        if not self.bar:
            return loader
        from tqdm.auto import tqdm

        self._tqdm = tqdm(loader, desc=f"{self.name} {epoch + 1}/{self.epochs}", leave=False)
        return self._tqdm

    def message(self, text: str):
        if not self.quiet:
            print(text, flush=True)

    def epoch(self, row):
        if self.quiet:
            return
        parts = [f"{self.name} epoch {row['epoch']}/{self.epochs}", f"loss {row['train_loss']:.4f}"]
        parts += [f"{k} {row[k]:.2f}" for k in ("top1", "ece", "agreement") if k in row]
        parts.append(f"{row['epoch_time_s']:.1f}s")
        print("  ".join(parts), flush=True)

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
