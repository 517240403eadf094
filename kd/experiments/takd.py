"""TAKD: Mirzadeh et al., "Improved Knowledge Distillation via Teacher Assistant", AAAI 2020
(official code: github.com/imirzadeh/Teacher-Assistant-Knowledge-Distillation).

The trainings of notebooks/takd.ipynb, per family (params.yaml `takd.plane`, `takd.resnet`):

- claim 1, the capacity gap: the student trained alone (CE), and distilled from each model of
  the family trained alone (the assistants' sizes and the largest teacher; params.yaml teachers);
- claim 2, teacher assistants: each assistant distilled from the largest teacher, then the
  student distilled from that assistant (a chain of nested TrainConfigs). An assistant is
  trained as a teacher is (its params.yaml recipe: the teachers' epochs and settings, the
  profile's teacher seed), so it differs from the same model trained alone only in its loss;
- claim 3, multi-step: the student at the end of the full chain teacher -> every assistant
  (largest first) -> student.

Every distillation step uses the method `takd`: (1 - lambda) CE + lambda T^2 KL(p_t || p_s),
our KL summed over classes and averaged over the batch (the official code averages over
classes too; see `official_kd_loss`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kd.train import TrainConfig

# The keys of params.yaml's takd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "lambda_", "temperature", "plane", "resnet", "capacity_gap", "assistant_families",
    "chain_families", "train",
)

# params.yaml family -> the entry of data/paper_results.yaml `takd.chains` it stands in for
PAPER_CHAIN = {"plane": "plane", "resnet": "resnet_cifar100"}


def families(sec: dict, key: str) -> list[str]:
    """The families (`plane`, `resnet`) a claim uses: `capacity_gap`, `assistant_families`,
    `chain_families` of the section."""
    return list(sec.get(key) or [])


def family(sec: dict, name: str) -> dict:
    """One family: student, teacher, assistants (increasing size) and its training overrides."""
    f = dict(sec[name])
    f["assistants"] = list(f.get("assistants") or [])
    f["train"] = dict(f.get("train") or {})
    return f


def sizes(sec: dict, name: str) -> list[str]:
    """The family's models larger than the student, in increasing size (claim 1's teachers)."""
    f = family(sec, name)
    return f["assistants"] + [f["teacher"]]


def method_args(sec: dict) -> dict:
    return {"temperature": float(sec["temperature"]), "lambda_": float(sec["lambda_"])}


def ce_config(P, sec: dict, name: str, seed: int) -> TrainConfig:
    """The family's student trained alone with cross-entropy (the no-KD baseline)."""
    f = family(sec, name)
    return P.config(f["student"], "ce", seed=seed, paper="takd", **f["train"])


def kd_config(P, sec: dict, name: str, model: str, teacher: TrainConfig, seed: int) -> TrainConfig:
    """`model` distilled with TAKD's loss from the run `teacher` (a TrainConfig)."""
    f = family(sec, name)
    return P.config(model, "takd", seed=seed, method_args=method_args(sec), teacher=teacher,
                    paper="takd", **f["train"])


def assistant_config(P, sec: dict, assistant: str, teacher: TrainConfig, seed: int) -> TrainConfig:
    """The params.yaml teacher `assistant` distilled with TAKD's loss from the run `teacher`,
    with the recipe and seed it is trained with alone (the official code trains every model of
    a chain with the same recipe)."""
    return P.teacher_config(assistant, seed).replace(method="takd", method_args=method_args(sec), teacher=teacher)


def chain_config(P, sec: dict, name: str, models: list[str], seed: int) -> TrainConfig:
    """The last model of `models` = [teacher, assistants..., student] distilled step by step:
    the first model is the params.yaml teacher trained alone, each assistant is distilled from
    the previous run with the teachers' recipe, the student with the family's. The result is
    one TrainConfig whose `.teacher` nests the chain."""
    cfg = P.teacher_config(models[0], seed)
    for assistant in models[1:-1]:
        cfg = assistant_config(P, sec, assistant, cfg, seed)
    return kd_config(P, sec, name, models[-1], cfg, seed)


def plan(P, sec: dict) -> dict:
    """{family: {"ce": [cfg per seed], "gap": {teacher: [cfg per seed]},
    "assistant": {assistant: [cfg per seed]}, "chain": [cfg per seed] (if the family has one)}}.

    "gap"[teacher]: student <- teacher (trained alone); "assistant"[a]: student <- a <- largest
    teacher; "gap"[largest teacher] is the direct KD baseline of claims 2 and 3."""
    out = {}
    for name in plan_families(sec):
        f = family(sec, name)
        e = {"ce": [ce_config(P, sec, name, s) for s in P.seeds],
             "gap": {t: [kd_config(P, sec, name, f["student"], P.teacher_config(t, s), s) for s in P.seeds]
                     for t in sizes(sec, name)}}
        if name in families(sec, "assistant_families"):
            e["assistant"] = {a: [chain_config(P, sec, name, [f["teacher"], a, f["student"]], s) for s in P.seeds]
                              for a in f["assistants"]}
        if name in families(sec, "chain_families") and len(f["assistants"]) > 1:
            models = [f["teacher"], *reversed(f["assistants"]), f["student"]]
            e["chain"] = [chain_config(P, sec, name, models, s) for s in P.seeds]
        out[name] = e
    return out


def preconditions(P, sec: dict) -> dict[str, dict]:
    """{family: kd.report.teacher_spread of its largest teacher and assistants trained alone}: a
    family whose sizes span fewer than testbed.ladder_spread top-1 points (mean over the teacher
    seeds) has no capacity gap to test, so kd.experiments.Study does not train its students."""
    from kd.report import teacher_spread

    bound = P.params["testbed"]["ladder_spread"]
    return {name: teacher_spread({t: float(np.mean([P.teacher(t, s).summary["top1"] for s in P.teacher_seeds()]))
                                  for t in sizes(sec, name)}, bound)
            for name in plan_families(sec)}


def plan_families(sec: dict) -> list[str]:
    """The families some claim uses, in params.yaml order."""
    return list(dict.fromkeys(families(sec, "capacity_gap") + families(sec, "assistant_families")
                              + families(sec, "chain_families")))


def teacher_names(P, sec: dict) -> list[str]:
    """The params.yaml teachers the notebook distils from."""
    return list(dict.fromkeys(t for name in plan(P, sec) for t in sizes(sec, name)))


def chain_models(cfg: TrainConfig) -> list[str]:
    """The models of a chain, largest teacher first: 'plane10 -> plane4 -> plane2'."""
    models = []
    while cfg is not None:
        models.append(cfg.model)
        cfg = cfg.teacher
    return models[::-1]


def official_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 4.0) -> torch.Tensor:
    """The KD term of TAKD's official train.py: T^2 * nn.KLDivLoss()(log p_s, p_t) with
    PyTorch's default reduction, the mean over all B x C elements, i.e. our `kd.losses.kd_loss`
    (sum over classes, mean over the batch) divided by the number of classes C."""
    T = temperature
    log_p_t, log_p_s = F.log_softmax(teacher_logits / T, dim=1), F.log_softmax(student_logits / T, dim=1)
    # written out: F.kl_div(..., reduction="mean") is this element-wise mean today, but PyTorch
    # announces that "mean" will become "batchmean"
    return T * T * (log_p_t.exp() * (log_p_t - log_p_s)).mean()


def official_learning_rate(epoch: int, epochs: int, plane: bool) -> float:
    """The learning rate of the official code's `adjust_learning_rate` (train.py), as written:
    plain CNNs get 0.01 throughout; for ResNets the first test `epoch < int(epoch / 2)` is never
    true, so they start at 0.01 (not 0.1) and drop to 0.001 at 3/4 of training."""
    if plane:
        return 0.01
    if epoch < int(epoch / 2.0):
        return 0.1
    if epoch < int(epochs * 3 / 4.0):
        return 0.1 * 0.1
    return 0.1 * 0.01


# ----------------------------------------------------------------------------- running and analysis
def paper_assistant(paper: dict, name: str) -> str | None:
    """The assistant of the paper's chain that our family stands in for (data/paper_results.yaml
    `takd.chains`, e.g. 'plane10 -> plane4 -> plane2' gives plane4), or None."""
    chain = (paper.get("chains") or {}).get(PAPER_CHAIN.get(name, name))
    if not chain:
        return None
    models = [m.strip() for m in chain.split("->")]
    return models[1] if len(models) == 3 else None


def gap_frame(P, sec: dict, R: dict, name: str) -> pd.DataFrame:
    """Claim 1, one row per (teacher, seed): the teacher's size and accuracy (trained alone)
    and its student's last-epoch top-1, ECE, agreement and KL(t||s)."""
    rows = []
    for t, runs in R[name]["gap"].items():
        for r in runs:
            seed = r.config.seed
            tr = P.teacher(t, seed)
            s = r.summary
            rows.append({"teacher": t, "seed": seed, "teacher_params": tr.summary["params"],
                         "teacher_top1": tr.summary["top1"], "student_top1": s["top1"], "student_ece": s["ece"],
                         "agreement": s.get("agreement"), "kl_teacher": s.get("kl_teacher")})
    return pd.DataFrame(rows)


def best_label(groups: dict) -> str:
    """The label whose runs have the highest mean last-epoch top-1."""
    return max(groups, key=lambda k: sum(r.summary["top1"] for r in groups[k]) / len(groups[k]))
