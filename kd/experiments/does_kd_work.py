"""Does Knowledge Distillation Really Work? (Stanton, Izmailov, Kirichenko, Alemi & Wilson, NeurIPS
2021, arXiv 2106.05945): the trainings of notebooks/does_kd_work.ipynb and its fidelity measures.
The paper's facts: docs/papers.md, Does knowledge distillation really work.

Every training the notebook needs (params.yaml section `does_kd_work`, resolved for a profile), the
student always of the teacher's architecture (self-distillation), distilled without labels
(alpha = 0, the official default: only T^2 KL at `kd.temperature`):
- "CE": the student alone;
- "SD": distilled from the params.yaml teacher;
- "ensemble": distilled from an ensemble of `ensemble_size` teachers of that architecture (the
  params.yaml teacher and copies with other seeds; prediction = the members' mean probability);
- "SD + mixup": distilled on mixed inputs (mixup over the whole batch, lambda ~ Beta(mixup_alpha,
  mixup_alpha), the teacher seeing the same mixed images);
- "SD, init lambda=<l>": distilled from a start at l * the teacher's weights + (1 - l) * the seed's
  random initialisation, for each l of `init_lambdas`.
"""
from __future__ import annotations

import pandas as pd
import torch

from kd import data as kd_data
from kd import metrics as kd_metrics
from kd.experiments import ensemble_members, train_logits
from kd.models import ensemble_log_probs  # noqa: F401  (E.ensemble_log_probs in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's does_kd_work section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "fidelity_margin", "agreement_bound", "teacher", "ensemble_size", "kd", "mixup_alpha",
                "init_lambdas")


def kd_args(sec: dict) -> dict:
    return {k: float(v) for k, v in sec["kd"].items()}


def mixup_args(sec: dict) -> dict:
    """KD on fully mixed inputs, the teacher on the same images; no labels, fixed T (kd.methods.mixup_kd)."""
    k = kd_args(sec)
    return {"mixup": True, "mixup_alpha": float(sec["mixup_alpha"]), "unmixed_fraction": 0.0, "std_scaling": False,
            "temperature": k["temperature"], "ce_weight": k["ce_weight"], "kd_weight": k["kd_weight"],
            "sampler": "exact"}


def lambda_label(lam: float) -> str:
    return f"SD, init lambda={float(lam):g}"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"main": {row label: [TrainConfig per seed]}} with the rows of the module docstring."""
    rows: dict[str, list[TrainConfig]] = {}
    for seed in P.seeds:
        t = P.teacher_config(sec["teacher"], seed)
        s = t.model
        add = lambda label, cfg: rows.setdefault(label, []).append(cfg)  # noqa: E731
        add("CE", P.config(s, "ce", seed=seed, paper="does_kd_work"))
        add("SD", P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=t, paper="does_kd_work"))
        members = ensemble_members(P, sec["teacher"], seed, int(sec["ensemble_size"]))
        add("ensemble", P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=members,
                                 paper="does_kd_work"))
        add("SD + mixup", P.config(s, "mixup_kd", seed=seed, method_args=mixup_args(sec), teacher=t,
                                   paper="does_kd_work"))
        for lam in sec["init_lambdas"]:
            add(lambda_label(lam), P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=t, init_from=t,
                                            init_lambda=float(lam), paper="does_kd_work"))
    return {"main": rows}


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["teacher"]]


# ---------------------------------------------------------------- fidelity

def split_logits(run, ds: kd_data.Dataset, split: str) -> torch.Tensor:
    """A run's logits on a split: "test" is its stored evaluation logits (the evaluation split of `ds`),
    "train" computed on the training images."""
    return run.eval_logits()[0].cpu() if split == "test" else train_logits(run.model(), ds)[0]


def fidelity_frame(P, main: dict[str, list]) -> pd.DataFrame:
    """One row per distilled run and split (test, train): top-1 agreement (%) with its teacher and
    predictive KL(p_teacher || p_student) at T = 1, the student's and the teacher's top-1 on that
    split. Test logits are the runs' stored ones; training-image logits are computed once per teacher
    (an ensemble's from its members'). Members share the student's data subset (`ensemble_members`)."""
    cache: dict[tuple, torch.Tensor] = {}
    data: dict[int, kd_data.Dataset] = {}
    rows = []
    for label, runs in main.items():
        for r in runs:
            cfg = r.config
            if not cfg.teachers:
                continue
            key = cfg.subset_seed
            if key not in data:
                data[key] = cfg.load_data()
            ds = data[key]
            for split in ("test", "train"):
                t_logits = []
                for t in cfg.teachers:
                    k = (t.hash(), key, split)
                    if k not in cache:
                        cache[k] = split_logits(P.run_all([t])[0], ds, split)
                    t_logits.append(cache[k])
                teacher = ensemble_log_probs(t_logits) if len(t_logits) > 1 else t_logits[0]
                student = split_logits(r, ds, split)
                y = ds.y_train if split == "train" else ds.y_eval
                rows.append({"row": label, "seed": cfg.seed, "split": split,
                             "agreement": 100 * kd_metrics.agreement(student, teacher),
                             "KL(t||s)": kd_metrics.predictive_kl(student, teacher),
                             "student top-1": 100 * kd_metrics.accuracy(student, y),
                             "teacher top-1": 100 * kd_metrics.accuracy(teacher, y)})
    return pd.DataFrame(rows)
