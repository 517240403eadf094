"""The testbed (notebooks/testbed.ipynb): the measurements that justify a profile's data and
scale before any paper's verdict is trusted.

Trainings (params.yaml section `testbed`, resolved for a profile):
- the positive control: the `control` pair's student trained alone (CE) and with KD
  (0.1 CE + 0.9 T^2 KL, T 4) for every seed of the profile;
- the convergence check: the same two trained `long_factor` times longer, on the first
  `long_seeds` seeds;
- the teacher ladder: the profile's params.yaml teachers named in `ladder` (teachers stage).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kd import data as kd_data
from kd import stats
from kd.metrics import entropy, similarity_mass
from kd.train import TrainConfig

# The keys of params.yaml's testbed section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "control", "kd", "ladder", "ladder_spread", "long_factor", "long_seeds", "gap_margin",
    "effects", "similarity_temperature",
)

PAPER = "testbed"


def kd_args(sec: dict) -> dict:
    return {k: float(v) for k, v in sec["kd"].items()}


def long_epochs(P, sec: dict) -> int:
    return int(P.config(sec["control"]["student"], paper=PAPER).epochs * sec["long_factor"])


def long_seeds(P, sec: dict) -> list[int]:
    return list(P.seeds[:int(sec["long_seeds"])])


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"control": {"CE": [cfg per seed], "KD": [...]}, "long": {"CE": [cfg per long seed], "KD": [...]}}."""
    ctl = sec["control"]

    def pair(seed: int, **train) -> dict[str, TrainConfig]:
        teacher = P.teacher_config(ctl["teacher"], seed)
        return {"CE": P.config(ctl["student"], "ce", seed=seed, paper=PAPER, **train),
                "KD": P.config(ctl["student"], "kd", seed=seed, method_args=kd_args(sec), teacher=teacher,
                               paper=PAPER, **train)}

    out: dict[str, dict[str, list[TrainConfig]]] = {"control": {"CE": [], "KD": []}, "long": {"CE": [], "KD": []}}
    for seed in P.seeds:
        for k, c in pair(seed).items():
            out["control"][k].append(c)
    for seed in long_seeds(P, sec):
        for k, c in pair(seed, epochs=long_epochs(P, sec)).items():
            out["long"][k].append(c)
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return list(dict.fromkeys([sec["control"]["teacher"], *sec["ladder"]]))


# ---------------------------------------------------------------- analysis
def ladder(P, sec: dict) -> pd.DataFrame:
    """One row per ladder teacher (teacher seed of the profile), weakest first: training images, test top-1
    (last and best epoch), best epoch, parameters, training time, and what its soft labels
    carry at the similarity temperature: entropy (of log C at most) and the share of the
    non-target probability on similar classes (kd.metrics.similarity_mass) against uniform."""
    T = float(sec["similarity_temperature"])
    rows = []
    for name in sec["ladder"]:
        run = P.teacher(name, P.teacher_seeds()[0])
        s = run.summary
        logits, target = run.eval_logits()
        sim = kd_data.class_similarity(run.config.dataset)
        share, uniform = similarity_mass(logits, target, sim, T) if sim is not None else (np.nan, np.nan)
        rows.append({"teacher": name, "model": run.config.model, "images": s["num_train"], "params": s["params"],
                     "top-1": s["top1"],
                     "best top-1": s["best_top1"], "best epoch": s["best_epoch"], "epochs": s["epochs"],
                     f"entropy at T={T:g}": entropy(logits, T), "similar-class share": share,
                     "uniform share": uniform, "train time (s)": s["train_time_s"]})
    return pd.DataFrame(rows).sort_values("top-1").reset_index(drop=True)


def curves(runs_by_method: dict[str, list]) -> pd.DataFrame:
    """Per evaluated epoch: method, seed, epoch, test top-1 (from each run's metrics.csv)."""
    frames = []
    for method, runs in runs_by_method.items():
        for r in runs:
            h = r.history.dropna(subset=["top1"])
            frames.append(pd.DataFrame({"method": method, "seed": r.config.seed, "epoch": h["epoch"],
                                        "top1": h["top1"]}))
    return pd.concat(frames, ignore_index=True)


def convergence(runs_by_method: dict[str, list]) -> pd.DataFrame:
    """Per run: last and best top-1, best epoch, and whether the best epoch lies in the last
    quarter of training."""
    rows = []
    for method, runs in runs_by_method.items():
        for r in runs:
            s = r.summary
            rows.append({"method": method, "seed": r.config.seed, "epochs": s["epochs"], "top-1": s["top1"],
                         "best top-1": s["best_top1"], "best epoch": s["best_epoch"],
                         "best in last quarter": s["best_epoch"] > 0.75 * s["epochs"]})
    return pd.DataFrame(rows)


def power_table(sd_diff: float, n: int, effects) -> pd.DataFrame:
    """Power of the paired t-test (two-sided, 5%) with n seeds to detect each effect, and the
    seeds needed for 80% power, given the standard deviation of the per-seed differences."""
    rows = []
    for e in effects:
        need = next((k for k in range(3, 201) if stats.power_paired(sd_diff, e, k) >= 0.8), None)
        rows.append({"difference (top-1 points)": e, f"power with {n} seeds": stats.power_paired(sd_diff, e, n),
                     "seeds for 80% power": need if need is not None else "> 200"})
    return pd.DataFrame(rows)
