"""Prune Your Model Before Distill It (Park & No, ECCV 2022, arXiv 2109.14960): the trainings of
notebooks/prune_distill.ipynb and its analysis helpers. The paper's facts: docs/papers.md,
Prune-then-distill.

Every training the notebook needs (params.yaml section `prune_distill`, resolved for a profile):
- the pruned teachers, one chain per teacher seed: round n starts from round n - 1 (round 0: the
  params.yaml teacher), removes `amount` of its remaining weights by global magnitude and retrains
  with the teacher's recipe from the start of its schedule (learning-rate rewinding) for
  `retrain_fraction` of the teacher's epochs; round n keeps 0.8^n of the weights (`rounds`: the
  rounds whose teachers distil, e.g. 2, 4, 7 for 36%, 59%, 79% sparsity);
- main, every seed, the fixed student `student`: alone (CE), distilled from the dense teacher and
  from each pruned round (KD with the official alpha and T: `kd`), and, as a control for the extra
  training the rounds give, from the dense teacher retrained as many times as each of those rounds
  without pruning anything;
- shaped, every seed: the teacher's own plain architecture with its convolution widths shaped from
  round `shape_round` (kd.prune.shaped_widths), alone (CE), distilled from the dense teacher, from
  that pruned round and from its unpruned control; at the teacher's training settings (`shaped_train`).
Identical configurations are one run (the cache is keyed by the configuration's hash).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kd import prune as kd_prune
from kd.experiments import teacher_frame, total_epochs  # noqa: F401  (E.teacher_frame, E.total_epochs in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's prune_distill section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "teacher", "student", "kd", "amount", "rounds", "retrain_fraction", "shape_round",
                "shaped_train", "entropy_temperature")


# ---------------------------------------------------------------- the design

def kd_args(sec: dict) -> dict:
    """KD as the official code: (1 - alpha) CE + alpha T^2 KL, alpha 0.95, T 10 (docs/papers.md)."""
    return {k: float(v) for k, v in sec["kd"].items()}


def sparsity_of_round(sec: dict, n: int) -> float:
    """The fraction of the prunable weights removed after n rounds: 1 - (1 - amount)^n."""
    return 1 - (1 - float(sec["amount"])) ** n


def round_label(sec: dict, n: int) -> str:
    return "dense" if n == 0 else f"pruned {100 * sparsity_of_round(sec, n):.0f}%"


def pruned_teacher(P, sec: dict, n: int, seed: int, prune: bool = True) -> TrainConfig:
    """Round n of the teacher's pruning chain for the student of `seed` (round 0: the dense teacher):
    round k starts from round k - 1, prunes `amount` of its remaining weights and retrains with the
    teacher's settings for `retrain_fraction` of its epochs (learning-rate rewinding). With
    prune=False the same retraining without pruning (the control for the extra training)."""
    dense = P.teacher_config(sec["teacher"], seed)
    epochs = max(1, int(round(float(sec["retrain_fraction"]) * dense.epochs)))
    step = {"prune": {"amount": float(sec["amount"])}} if prune else {}
    cfg = dense
    for _ in range(n):
        cfg = dense.replace(init_from=cfg, epochs=epochs, **step)
    return cfg


def retrained_label(n: int) -> str:
    return f"KD, dense teacher retrained {n}x"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}: "teachers" (the dense teacher and every round of
    the chain up to the last one used, and each used round's unpruned control), "main" (CE, KD from
    the dense teacher, KD from each pruned round of `rounds`, KD from each retrained control) and
    "shaped" (the shaped student: CE, KD from the dense teacher, from the round it is shaped from and
    from that round's control)."""
    rounds = [int(n) for n in sec["rounds"]]
    k = int(sec["shape_round"])
    last = max(rounds + [k])
    out: dict[str, dict[str, list[TrainConfig]]] = {"teachers": {}, "main": {}, "shaped": {}}
    for seed in P.seeds:
        chain = [pruned_teacher(P, sec, n, seed) for n in range(last + 1)]
        for n, t in enumerate(chain):
            out["teachers"].setdefault(f"round {n}", []).append(t)
        retrained = {n: pruned_teacher(P, sec, n, seed, prune=False) for n in sorted({*rounds, k})}
        for n, t in retrained.items():
            out["teachers"].setdefault(f"retrained {n}", []).append(t)
        student = sec["student"]
        out["main"].setdefault("CE", []).append(P.config(student, "ce", seed=seed, paper="prune_distill"))
        for n in [0, *rounds]:
            out["main"].setdefault(f"KD, {round_label(sec, n)} teacher", []).append(
                P.config(student, "kd", seed=seed, method_args=kd_args(sec), teacher=chain[n], paper="prune_distill"))
        for n in rounds:
            out["main"].setdefault(retrained_label(n), []).append(
                P.config(student, "kd", seed=seed, method_args=kd_args(sec), teacher=retrained[n],
                         paper="prune_distill"))
        shaped = {"paper": "prune_distill", "shape_from": chain[k], **(sec.get("shaped_train") or {})}
        model = chain[0].model
        out["shaped"].setdefault("shaped CE", []).append(P.config(model, "ce", seed=seed, **shaped))
        for n in (0, k):
            out["shaped"].setdefault(f"shaped KD, {round_label(sec, n)} teacher", []).append(
                P.config(model, "kd", seed=seed, method_args=kd_args(sec), teacher=chain[n], **shaped))
        out["shaped"].setdefault(f"shaped {retrained_label(k)}", []).append(
            P.config(model, "kd", seed=seed, method_args=kd_args(sec), teacher=retrained[k], **shaped))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["teacher"]]


def main_rows(sec: dict) -> tuple[str, str, list[str]]:
    """The main group's row labels: CE, KD from the dense teacher, KD from each pruned round."""
    pruned = [f"KD, {round_label(sec, int(n))} teacher" for n in sec["rounds"]]
    return "CE", f"KD, {round_label(sec, 0)} teacher", pruned


# ---------------------------------------------------------------- analysis

def layer_frame(run) -> pd.DataFrame:
    """Per prunable layer of a (pruned) run: its weights, the share still non-zero, and for the
    convolutions the width of the student shaped from it beside the layer's own width."""
    model = run.model()
    widths = iter(kd_prune.shaped_widths(model))
    rows = []
    for name, w in kd_prune.prunable(model).items():
        conv = w.dim() == 4
        rows.append({"layer": name.removesuffix(".weight"), "kind": "conv" if conv else "linear",
                     "weights": w.numel(), "kept (%)": 100 * float((w != 0).float().mean()),
                     "width": w.shape[0] if conv else np.nan,
                     "shaped width": next(widths) if conv else np.nan})
    return pd.DataFrame(rows)


def sparsity_frame(main: dict[str, list], sec: dict) -> pd.DataFrame:
    """KD students' top-1 by teacher sparsity (one row per seed and teacher; 0 for the dense one)."""
    rows = []
    for n in [0, *[int(k) for k in sec["rounds"]]]:
        for r in main[f"KD, {round_label(sec, n)} teacher"]:
            rows.append({"round": n, "sparsity": 100 * sparsity_of_round(sec, n), "seed": r.config.seed,
                         "top1": r.summary["top1"]})
    return pd.DataFrame(rows)
