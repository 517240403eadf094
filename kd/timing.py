"""Cost of a method's training step, measured against a baseline in the same run.

`step_times` times full training steps (forward_train, backward, optimiser step) of several
methods on the same model, data and device, interleaving the methods round by round so
that machine noise hits all of them alike. The papers' "small overhead" claims (DKD,
BAKE's +1.5%, Zipf's one pass) are checked with it; report ratios, not absolute times.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from kd import data as kd_data
from kd import methods as kd_methods
from kd import models as kd_models
from kd import train as kd_train


def step_times(methods: dict[str, tuple[str, dict]], model: str, dataset: kd_data.Dataset, *,
               teacher: torch.nn.Module | None = None, batch_size: int = 64, steps: int = 10,
               rounds: int = 5, device="cpu", seed: int = 0) -> dict[str, dict]:
    """{label: (method name, hyperparameters)} -> {label: {"median_s", "ratio"}} per step.

    The first label is the baseline; `ratio` is each median step time over the baseline's.
    Each method trains its own copy of the same initial model on the same batches."""
    device = torch.device(device)
    torch.manual_seed(seed)
    base_model = kd_models.create(model, dataset.num_classes, in_channels=dataset.in_channels).to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval().requires_grad_(False)
    autocast = kd_train.autocast_settings(device)  # as fit trains: bf16 on CUDA
    setups = {}
    for label, (name, hp) in methods.items():
        method = kd_methods.create(name, **hp)
        loader = kd_data.Loader(dataset.x_train, dataset.y_train, dataset.mean, dataset.std,
                                batch_size=batch_size, train=True, device=device, seed=seed,
                                same_class=method.same_class)
        method.setup(loader.y, dataset.num_classes, device, seed)
        net = copy.deepcopy(base_model).train()
        owned = method.build(net, teacher, torch.zeros(2, *dataset.x_train.shape[1:], device=device))
        if owned is not None:  # the method's own modules (CRD's heads and banks) train with the student, as in fit
            method.owned = owned.to(device).train()
        opt = kd_train.make_optimizer(kd_train.TrainConfig(lr=0.01, momentum=0.9, weight_decay=0.0), net, method)
        batches = [b for _, b in zip(range(steps), loader)]
        setups[label] = (method, net, opt, batches)

    def one_round(label):
        method, net, opt, batches = setups[label]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for batch in batches:
            kd_train.train_step(method, net, teacher if method.needs_teacher else None, batch, opt, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / len(batches)

    for label in setups:  # warm-up round, not timed
        one_round(label)
    times = {label: [] for label in setups}
    for _ in range(rounds):
        for label in setups:
            times[label].append(one_round(label))
    baseline = statistics.median(times[next(iter(setups))])
    return {label: {"median_s": statistics.median(t), "ratio": statistics.median(t) / baseline,
                    "all_s": t} for label, t in times.items()}
