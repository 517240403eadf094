"""Confidence-Aware Multi-Teacher Knowledge Distillation (CA-MKD; Zhang, Chen & Wang, ICASSP 2022, arXiv
2201.00007): the trainings of notebooks/camkd.ipynb and its analysis helpers. The paper's facts:
docs/papers.md, CA-MKD.

Every training the notebook needs (params.yaml section `camkd`, resolved for a profile); the teachers are
the params.yaml teacher and `teachers - 1` copies trained with other seeds (`kd.experiments.ensemble_members`):
- "main", every seed: the student alone (CE); KD from the first teacher alone (CE + KD at weight 1, T 4:
  the official single-teacher run; on cpu the DKD notebook's "KD (CE 1)" runs); AVER (CE + the mean of
  the teachers' KD losses, the official AVERAGE_LOSS); CA-MKD (CE + its confidence-weighted KD term +
  50 x its feature term, off in the first epoch);
- "ablation", the first `secondary_seeds` seeds: CA-MKD without its feature term (claim 3);
- "weak", the first `secondary_seeds` seeds: AVER and CA-MKD with the last teacher replaced by its own
  run stopped at epoch `weak_stop_epoch` of its schedule (claim 2).
"""
from __future__ import annotations

import pandas as pd
import torch

from kd import losses
from kd.experiments import ensemble_members
from kd.train import TrainConfig

# The keys of params.yaml's camkd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "teacher", "student", "teachers", "temperature", "kd_weight", "feature_weight",
                "feature_warmup", "single_kd", "weak_stop_epoch", "secondary_seeds")

MAIN_ROWS = ("CE", "KD (one teacher)", "AVER", "CA-MKD")


def camkd_args(sec: dict, *, weighting: str = "confidence", features: bool = True) -> dict:
    """The camkd method's arguments: CA-MKD (confidence weights, the feature term) or AVER (average, none)."""
    return {"weighting": weighting, "temperature": float(sec["temperature"]), "kd_weight": float(sec["kd_weight"]),
            "feature_weight": float(sec["feature_weight"]) if features else 0.0,
            "feature_warmup": int(sec["feature_warmup"])}


def teacher_sets(P, sec: dict, seed: int) -> dict[str, list[TrainConfig]]:
    """{"normal": the K teachers, "weak": the same with the last one stopped at `weak_stop_epoch`}."""
    members = ensemble_members(P, sec["teacher"], seed, int(sec["teachers"]))
    return {"normal": members, "weak": [*members[:-1], members[-1].replace(stop_epoch=int(sec["weak_stop_epoch"]))]}


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}} with the groups and rows of the module docstring."""
    s = sec["student"]
    out: dict[str, dict[str, list[TrainConfig]]] = {"main": {}, "ablation": {}, "weak": {}}
    secondary = P.first_seeds(sec.get("secondary_seeds"))
    aver, full = camkd_args(sec, weighting="average", features=False), camkd_args(sec)
    for seed in P.seeds:
        sets = teacher_sets(P, sec, seed)
        add = lambda group, row, cfg: out[group].setdefault(row, []).append(cfg)  # noqa: E731
        add("main", "CE", P.config(s, "ce", seed=seed, paper="camkd"))
        single = {k: float(v) for k, v in sec["single_kd"].items()}
        add("main", "KD (one teacher)", P.config(s, "kd", seed=seed, method_args=single, teacher=sets["normal"][0],
                                                 paper="camkd"))
        add("main", "AVER", P.config(s, "camkd", seed=seed, method_args=aver, teacher=sets["normal"], paper="camkd"))
        add("main", "CA-MKD", P.config(s, "camkd", seed=seed, method_args=full, teacher=sets["normal"], paper="camkd"))
        if seed in secondary:
            logits_only = camkd_args(sec, features=False)
            add("ablation", "CA-MKD, logits only", P.config(s, "camkd", seed=seed, method_args=logits_only,
                                                            teacher=sets["normal"], paper="camkd"))
            add("weak", "AVER, weak teacher", P.config(s, "camkd", seed=seed, method_args=aver, teacher=sets["weak"],
                                                       paper="camkd"))
            add("weak", "CA-MKD, weak teacher", P.config(s, "camkd", seed=seed, method_args=full, teacher=sets["weak"],
                                                         paper="camkd"))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["teacher"]]


# ---------------------------------------------------------------- analysis

def teacher_logits(P, teachers: list[TrainConfig]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each teacher's stored logits on the evaluation split (trained first if missing), and the labels."""
    runs = P.run_all(teachers)
    return [r.eval_logits()[0] for r in runs], runs[0].eval_logits()[1]


def weight_frame(P, sec: dict, seed: int) -> pd.DataFrame:
    """Per teacher set and teacher: its test top-1 and the mean CA-MKD weight it gets on the test split
    (`kd.losses.camkd_weights` from the teachers' logits, as the KD term uses them), with the share of
    test images on which it gets the smallest weight."""
    rows = []
    for name, teachers in teacher_sets(P, sec, seed).items():
        logits, y = teacher_logits(P, teachers)
        w = losses.camkd_weights([z.double() for z in logits], y)
        for k, (cfg, z) in enumerate(zip(teachers, logits)):
            stopped = f", epoch {cfg.stop_epoch}" if cfg.stop_epoch else ""
            rows.append({"set": name, "teacher": f"{k + 1}: seed {cfg.seed}{stopped}",
                         "top-1": 100 * (z.argmax(1) == y).float().mean().item(), "mean weight": w[k].mean().item(),
                         "lowest weight (% of images)": 100 * (w.argmin(0) == k).float().mean().item()})
    return pd.DataFrame(rows)
