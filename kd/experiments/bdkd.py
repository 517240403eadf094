"""BD-KD: Balancing the Divergences for Online Knowledge Distillation (Amara, Sepahvand, Meyer, Gross &
Clark, arXiv 2212.12965; no official code): the trainings of notebooks/bdkd.ipynb. The method is our
reconstruction (kd/methods/bdkd.py); the paper's facts: docs/papers.md, BD-KD.

Every training the notebook needs (params.yaml section `bdkd`, resolved for a profile), on every seed:
- "student alone", "teacher alone" and "DML": SwitOKD's rows (kd/experiments/switokd.py), the same runs;
- "BD-KD": the student trained together with a teacher network of the pair's teacher architecture,
  balanced divergences (`balance="adaptive"`);
- "BD-KD, <mixture>" for each of `mixtures`: the same with a fixed forward / reverse mixture, on the
  first `mixture_seeds` seeds.
No params.yaml teacher is used. Identical configurations are one run (the cache is keyed by the
configuration's hash).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.experiments.switokd import (band, finish_epoch_figure, online_args,  # noqa: F401
                                    teacher_table, teacher_values)
from kd.report import accuracy_figure  # noqa: F401  (E.accuracy_figure in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's bdkd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "pair", "teacher_lr_scale", "train", "mixtures", "mixture_seeds")


def mixture_label(balance: str) -> str:
    return f"BD-KD, {balance}"


def online_rows(sec: dict) -> list[str]:
    """The rows whose teacher is trained with the student: DML, BD-KD and each fixed mixture."""
    return ["DML", "BD-KD", *(mixture_label(b) for b in sec["mixtures"])]


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"rows": {row label: [TrainConfig per seed]}} with the rows of the module docstring."""
    pair, args = sec["pair"], online_args(sec)
    rows: dict[str, list[TrainConfig]] = {"student alone": [], "teacher alone": [], "DML": [], "BD-KD": []}
    rows.update({mixture_label(b): [] for b in sec["mixtures"]})
    mixture_seeds = P.first_seeds(sec["mixture_seeds"])
    for seed in P.seeds:
        student = P.config(pair["student"], "ce", seed=seed, paper="bdkd")
        rows["student alone"].append(student)
        rows["teacher alone"].append(P.config(pair["teacher"], "ce", seed=seed, paper="bdkd",
                                              lr=student.lr * args["teacher_lr_scale"]))
        rows["DML"].append(P.config(pair["student"], "dml", seed=seed, method_args=args, paper="bdkd"))
        rows["BD-KD"].append(P.config(pair["student"], "bdkd", seed=seed, method_args=args, paper="bdkd"))
        if seed in mixture_seeds:
            for b in sec["mixtures"]:
                rows[mixture_label(b)].append(
                    P.config(pair["student"], "bdkd", seed=seed, method_args={**args, "balance": b}, paper="bdkd"))
    return {"rows": rows}


def teacher_names(P, sec: dict) -> list[str]:
    return []  # the teacher trains with the student (or alone, as a row of the plan)


# ---------------------------------------------------------------- analysis
def per_seed(runs, key: str = "top1") -> dict[int, float]:
    """{seed: the run's last-epoch `key`} (rows on fewer seeds pair by seed)."""
    return {r.config.seed: r.summary[key] for r in runs}


def balance_figure(rows: dict, online: list[str], title: str):
    """Per epoch (mean over seeds, shaded: the seeds' range): the forward KL's mean weight in the student's
    term, the entropy gap H(p_s) - H(p_t) on the training batches, and the students' test ECE."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for i, m in enumerate(online):
        style = {"color": f"C{i}"}
        if m != "DML":
            band(axes[0], rows[m], "train_forward_weight", m, **style)
            band(axes[1], rows[m], "train_entropy_gap", m, **style)
        band(axes[2], rows[m], "ece", m, **style)
    band(axes[2], rows["student alone"], "ece", "student alone", color="grey")
    axes[0].set_ylabel("mean weight w of the forward KL")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylabel("H(p_s) - H(p_t), nats (training batches)")
    axes[2].set_ylabel("student test ECE (%)")
    return finish_epoch_figure(fig, axes, title)
