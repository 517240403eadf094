"""What a GPU profile's stages will cost before they run: an estimate that sizes `full`'s chunks.

A stage is what one call trains: the teachers (`python -m kd teachers`), then the testbed and each
paper (`python -m kd run-many --paper <p>`), each in a run store that already holds the earlier
stages' runs (a run two papers share trains in the first) or, `alone`, in an empty one. For each
training: its optimiser steps (its loader's batches x epochs), and for one step of its kind, counted
once on this machine's CPU under bf16 autocast as a GPU trains: the ATen operations it dispatches
(forward, backward, optimiser; the teacher's forward included) and its FLOPs
(torch.utils.flop_counter). Evaluations add the student's forward over the evaluation split.

Time on a GPU. A step of these small CNNs is bound by the host dispatching each operation, not by
the GPU's arithmetic (at batch 128 on 28x28 images a resnet20 step is tens of GFLOPs, well under a
millisecond of an H200): a training takes steps x operations x `seconds_per_op` on its host core,
plus `start_s`, and `workers` trainings run at once in separate processes, one dependency level
(teachers before students, generations of a chain) after another, each starting its processes
(`level_start_s`). A level also takes at least its FLOPs at `achieved_tflops`. The constants are
assumptions until measured: `calibrate` replaces `seconds_per_op` by the step time that
benchmarks/throughput.py measured on the GPU (our loop, resnet56 -> resnet20, batch 64) over the
operations counted for that step here, and the packing benchmark's measured gain of N trainings at
once replaces the assumed `workers`-fold one.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from kd import data as kd_data
from kd import models as kd_models
from kd import train as kd_train
from kd.runs import dependency_levels
from kd.train import TrainConfig

CHUNK_MINUTES = 8.0  # a stage must fit one call of the GPU machine (10 minutes) with time to spare (issue 21)


@dataclass
class Assumptions:
    """The cost model's constants; `source` says whether each is assumed or measured."""

    seconds_per_op: float = 15e-6    # host time to dispatch one ATen operation in eager PyTorch (CUDA)
    achieved_tflops: float = 50.0    # what small convolutions reach in bf16 on an H200 (peak 989)
    start_s: float = 5.0             # per training: data to the device, model, cuDNN autotuning, files
    level_start_s: float = 15.0      # per dependency level: its worker processes start (torch, CUDA context)
    packing_gain: float | None = None  # aggregate speed of `workers` trainings at once over one; None: `workers`
    source: str = "assumed (no GPU measurement yet)"


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _count(fn) -> tuple[int, float]:
    """(ATen operations, FLOPs) of one call of `fn`."""
    flops = FlopCounterMode(display=False)
    with flops, _CountOps() as ops:
        fn()
    return ops.ops, float(flops.get_total_flops())


_DATA: dict[tuple, kd_data.Dataset] = {}


def _data(cfg: TrainConfig) -> kd_data.Dataset:
    key = (cfg.dataset, cfg.train_subset, cfg.eval_subset, cfg.val_fraction, cfg.views, cfg.subset_seed)
    if key not in _DATA:
        _DATA[key] = cfg.load_data()
    return _DATA[key]


def _model(cfg: TrainConfig, ds: kd_data.Dataset) -> torch.nn.Module:
    return kd_models.create(cfg.model, ds.num_classes, in_channels=ds.in_channels, channels=cfg.seen_channels())


def _step_ops(cfg: TrainConfig, ds: kd_data.Dataset) -> tuple[int, float]:
    """(ATen operations, FLOPs) of one training step of `cfg` on `ds`, set up as `fit` sets it up
    (random weights), under bf16 autocast as a GPU trains (its casts are operations too). Counted on a
    batch of a few images (the operations do not depend on its size) and the FLOPs scaled to `cfg`'s."""
    method = cfg.validate()
    full_batch, cfg = cfg.batch_size, cfg.replace(batch_size=min(cfg.batch_size, 4 * (1 + method.same_class)))
    torch.manual_seed(cfg.seed)
    model = _model(cfg, ds)
    teacher = None
    if cfg.teachers:
        members = [_model(t, ds).eval().requires_grad_(False) for t in cfg.teachers]
        teacher = kd_models.Ensemble(members) if isinstance(cfg.teacher, list) else members[0]
    loader = kd_train.make_train_loader(cfg, method, ds, "cpu")
    method.setup(loader.y, ds.num_classes, torch.device("cpu"), cfg.seed)
    owned = method.build(model, teacher, torch.zeros(2, *ds.x_train.shape[1:]))
    if owned is not None:
        method.owned = owned
    optimizer = kd_train.make_optimizer(cfg, model, method)
    for group in optimizer.param_groups:  # as on CUDA, where SGD's default is one multi-tensor operation per update
        group["foreach"] = True
    autocast = dict(device_type="cpu", dtype=torch.bfloat16, enabled=cfg.bf16)
    method.on_epoch_start(0, cfg.epochs)
    model.train()
    batches = iter(loader)
    kd_train.train_step(method, model, teacher, next(batches), optimizer, autocast)  # lazy state (banks, Z)
    batch = next(batches)
    ops, flops = _count(lambda: kd_train.train_step(method, model, teacher, batch, optimizer, autocast))
    return ops, flops * full_batch / cfg.batch_size


def step_cost(cfg: TrainConfig) -> dict:
    """One epoch of `cfg`: its steps and evaluation batches, and the operations and FLOPs of one
    step and of one evaluation batch. A pruned or shaped run is costed at its network's full widths
    (an upper bound)."""
    ds = _data(cfg)
    ops, flops = _step_ops(cfg, ds)
    model = _model(cfg, ds).eval()
    x = ds.x_eval[:2].float()
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        eval_ops, eval_flops_2 = _count(lambda: model(x))
    batch = min(1024, len(ds.y_eval))  # fit's evaluation batch on a GPU
    # the finished run's large files: model.pt (float32 weights and buffers) and eval_logits.pt (float32 logits,
    # int64 targets); its checkpoint.pt is only for resuming
    model_bytes = 4 * sum(t.numel() for t in model.state_dict().values())
    return {"steps": len(kd_train.make_train_loader(cfg, cfg.validate(), ds, "cpu")), "step_ops": ops,
            "step_flops": flops, "eval_batches": math.ceil(len(ds.y_eval) / batch), "eval_ops": eval_ops,
            "eval_flops": eval_flops_2 / 2 * batch, "model_bytes": model_bytes,
            "run_bytes": model_bytes + len(ds.y_eval) * (4 * ds.num_classes + 8)}


_KINDS: dict[str, dict] = {}


def _kind(cfg: TrainConfig) -> str:
    """What a step's cost depends on: everything but the seed, the schedule and the length."""
    d = cfg.replace(seed=0, epochs=1, stop_epoch=None, lr=0.1, data_seed=None).identity()
    return json.dumps(d, sort_keys=True)


def run_cost(cfg: TrainConfig, evaluations: int | None = None) -> dict:
    """`step_cost` of `cfg` (counted once per kind of step), its evaluations limited to `evaluations`."""
    key = _kind(cfg)
    if key not in _KINDS:
        _KINDS[key] = step_cost(cfg)
    c = dict(_KINDS[key])
    epochs = cfg.stop_epoch or cfg.epochs
    c["steps"] *= epochs
    c["eval_batches"] *= min(epochs, evaluations or epochs)
    return c


def training_seconds(c: dict, a: Assumptions) -> tuple[float, float]:
    """(host seconds, GPU seconds) of one training."""
    host = (c["steps"] * c["step_ops"] + c["eval_batches"] * c["eval_ops"]) * a.seconds_per_op + a.start_s
    gpu = (c["steps"] * c["step_flops"] + c["eval_batches"] * c["eval_flops"]) / (a.achieved_tflops * 1e12)
    return host, gpu


def trainings(configs: list[TrainConfig], exclude: set[str]) -> list[list[TrainConfig]]:
    """The dependency levels `python -m kd run-many` trains for `configs` (the runs they need that are
    missing included, such as a paper's own extra teachers) in a store that holds the runs `exclude` names."""
    return [[c for c in level if c.hash() not in exclude] for level in dependency_levels(configs)]


def stage_seconds(levels: list[list[dict]], workers: int, a: Assumptions) -> float:
    """Wall time of trainings whose `run_cost`s are `levels`: one level after another (a level's
    dependencies are in the levels before it), each `workers` at a time, at least its FLOPs' time."""
    total = 0.0
    for level in levels:
        if not level:
            continue
        times = [training_seconds(c, a) for c in level]
        n = min(workers, len(level))
        gain = n if a.packing_gain is None else min(n, a.packing_gain)
        total += a.level_start_s + max(sum(h for h, _ in times) / gain, max(h for h, _ in times),
                                       sum(g for _, g in times))
    return total


def stages(P, papers: list[str] | None = None) -> dict[str, list[TrainConfig]]:
    """{stage: its trainings}, in the order the pipeline runs them: the teachers, the testbed (whose
    positive control every paper's verdicts need), then the papers."""
    from kd.__main__ import studies
    from kd.experiments import Study, configs

    out = {"teachers": [P.teacher_config(n, s) for n in P.teacher_names() for s in P.teacher_seeds()]}
    for name in sorted(papers or studies(), key=lambda n: n != "testbed"):
        out[name] = configs(Study(name, P).plan())  # with a paper's own seeds for the profile, as its notebook
    return out


def estimate(P, a: Assumptions | None = None, papers: list[str] | None = None) -> list[dict]:
    """One row per stage: trainings and minutes alone (an empty run store but for the teachers) and
    after the stages before it, with the steps, FLOPs and stored size (MiB of model.pt and
    eval_logits.pt: what a call of a GPU machine brings back) of its own trainings, and the MiB of
    the teachers' model.pt it reads (what such a call must take along). Every precondition is taken
    to hold (TAKD's families train): an upper bound."""
    a = a or Assumptions()
    rows, done, teachers = [], set(), set()
    for stage, cfgs in stages(P, papers).items():
        needed = [c for level in dependency_levels(cfgs) for c in level if c.hash() in teachers]
        alone = [[run_cost(c, P.evaluations) for c in level] for level in trainings(cfgs, teachers)]
        new = [[run_cost(c, P.evaluations) for c in level] for level in trainings(cfgs, done)]
        cost = [c for level in new for c in level]
        rows.append({"stage": stage, "trainings": sum(map(len, alone)), "new_trainings": len(cost),
                     "minutes_alone": stage_seconds(alone, P.workers, a) / 60,
                     "minutes": stage_seconds(new, P.workers, a) / 60,
                     "steps": sum(c["steps"] for c in cost), "runs_mib": sum(c["run_bytes"] for c in cost) / 2**20,
                     "teachers_mib": sum(run_cost(t)["model_bytes"] for t in needed) / 2**20,
                     "tflop": sum(c["steps"] * c["step_flops"] + c["eval_batches"] * c["eval_flops"]
                                  for c in cost) / 1e12})
        done |= {c.hash() for level in trainings(cfgs, teachers) for c in level}
        if stage == "teachers":
            teachers = set(done)
    return rows


def calibrate(throughput: dict, packing: dict | None, workers: int) -> Assumptions:
    """Assumptions from the GPU benchmarks' JSON (benchmarks/throughput.py, benchmarks/packing.py):
    seconds per operation = our loop's measured step time (resnet56 -> resnet20, batch 64, not
    compiled) over the operations counted here for that step; the packing gain at `workers`."""
    pair = next(p for p in throughput["pairs"] if (p["teacher"], p["student"]) == ("resnet56", "resnet20"))
    ours = next(r for r in pair["results"] if r["loop"] == "ours" and r["batch_size"] == 64 and not r["compiled"])
    ops = _synthetic_step_ops(_calibration_step())
    gain = None
    if packing is not None:
        rows = [r for r in packing["rows"] if r["n"] <= workers]
        gain = max(rows, key=lambda r: r["n"])["ratio_vs_one_at_a_time"] if rows else None
    return Assumptions(seconds_per_op=ours["step_ms"] / 1e3 / ops, packing_gain=gain,
                       source=f"measured on {throughput['environment']['device_name']} "
                              f"({throughput['environment']['time']})")


def _calibration_step() -> TrainConfig:
    """The step benchmarks/throughput.py times: KD (0.1 CE + 0.9 T^2 KL, T 4), resnet56 -> resnet20,
    CIFAR-100, batch 64."""
    return TrainConfig(model="resnet20", dataset="cifar100", method="kd",
                       method_args={"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
                       teacher=TrainConfig(model="resnet56", dataset="cifar100"), batch_size=64)


def _synthetic_step_ops(cfg: TrainConfig) -> int:
    """Operations of one step of `cfg` on CIFAR-shaped random images (the throughput benchmark's data)."""
    info = kd_data.info(cfg.dataset)
    y = torch.arange(cfg.batch_size * 4) % info.num_classes
    x = torch.randint(0, 256, (len(y), info.channels, 32, 32), dtype=torch.uint8)
    ds = kd_data.Dataset(cfg.dataset, x, y, x, y, "test", info.num_classes, info.mean, info.std)
    return _step_ops(cfg, ds)[0]


def measured_assumptions(P, results: Path) -> Assumptions:
    """Calibrated assumptions when results/benchmarks holds an H200's throughput (and packing) JSON,
    else the assumed ones."""
    found = sorted(results.glob("throughput_*h200*.json"))
    found = [f for f in found if not f.stem.endswith("_compile")]
    if not found:
        return Assumptions()
    packing = sorted(results.glob("packing_steps_*h200*.json"))
    return calibrate(json.loads(found[-1].read_text()),
                     json.loads(packing[-1].read_text()) if packing else None, P.workers)
