"""SOKD (Liu, Liu & Huang, BMVC 2021, arXiv 2111.11747; official code swlzq/Semi-Online-KD): the trainings
of notebooks/sokd.ipynb and its analysis helpers. The paper's facts: docs/papers.md, SOKD.

Every training the notebook needs (params.yaml section `sokd`, resolved for a profile), the pair's student
on every seed:
- "CE": the student alone; "KD": offline KD from the pair's frozen teacher (the testbed's 0.1 CE + 0.9
  T^2 KL at T 4, so on quick and cpu both are the testbed's runs);
- "DML": the student trained together with a network of the teacher's architecture from scratch
  (online, both updated at every step);
- "SOKD": the frozen teacher plus the trainable branch, which starts as a copy of the teacher's last
  stage and head (the paper's description);
- "SOKD, untrained branch": the same with the branch freshly initialised (what the official code
  does: its branch weights come from a vanilla checkpoint where the branch never trained).
Identical configurations are one run (the cache is keyed by the configuration's hash).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from kd import models as kd_models
from kd.data import INFO
from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.experiments.switokd import band, finish_epoch_figure
from kd.methods.sokd import Branch
from kd.train import TrainConfig

# The keys of params.yaml's sokd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "pair", "temperature", "kd", "train")

ROWS = ("CE", "KD", "DML", "SOKD", "SOKD, untrained branch")
SOKD_ROWS = {"SOKD": "teacher", "SOKD, untrained branch": "random"}  # row -> branch_init


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"rows": {row label: [TrainConfig per seed]}} with the rows of the module docstring."""
    pair, T = sec["pair"], float(sec["temperature"])
    kd_args = {k: float(v) for k, v in sec["kd"].items()}
    rows: dict[str, list[TrainConfig]] = {row: [] for row in ROWS}
    for seed in P.seeds:
        teacher = P.teacher_config(pair["teacher"], seed)
        recipes = {"CE": ("ce", {}, None), "KD": ("kd", kd_args, teacher),
                   "DML": ("dml", {"teacher_model": teacher.model}, None),
                   **{row: ("sokd", {"temperature": T, "branch_init": b}, teacher) for row, b in SOKD_ROWS.items()}}
        for row, (method, args, t) in recipes.items():
            rows[row].append(P.config(pair["student"], method, seed=seed, method_args=args, teacher=t, paper="sokd"))
    return {"rows": rows}


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["pair"]["teacher"]]


# ---------------------------------------------------------------- analysis

def branch_share(model: str, dataset: str) -> float:
    """The share of a teacher's parameters that its SOKD branch (`Branch`: last stage and head) copies."""
    info = INFO[dataset]
    net = kd_models.create(model, info.num_classes, in_channels=info.channels)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return count(Branch(net)) / count(net)


def curves_figure(rows: dict, teacher_top1: float, title: str):
    """Per epoch (mean over seeds, shaded: the seeds' range): the students' and the SOKD branches' test
    top-1 beside the frozen teacher's; the SOKD students' agreement with their branch."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, row in enumerate(("KD", "DML", *SOKD_ROWS)):
        band(axes[0], rows[row], "top1", f"{row}: student", color=f"C{i}")
    for i, row in enumerate(SOKD_ROWS, start=2):
        band(axes[0], rows[row], "branch_top1", f"{row}: branch", color=f"C{i}", ls="--")
        band(axes[1], rows[row], "branch_agreement", f"{row}: student with its branch", color=f"C{i}")
    band(axes[1], rows["KD"], "agreement", "KD: student with the teacher", color="C0")
    axes[0].axhline(teacher_top1, color="k", lw=0.8, ls=":", label="frozen teacher")
    axes[0].set_ylabel("test top-1 (%)")
    axes[1].set_ylabel("top-1 agreement on the test set (%)")
    return finish_epoch_figure(fig, axes, title)
