"""NKD and USKD (Yang, Zeng, Yuan & Li, ICCV 2023, arXiv 2303.13005; official code yzd-v/cls_KD): the
trainings of notebooks/nkd.ipynb and its analysis helpers. The paper's facts: docs/papers.md, NKD and USKD.

Every training the notebook needs (params.yaml section `nkd`, resolved for a profile), one student
architecture (the pair's student) on every seed:
- "teacher": with the pair's teacher: the student alone (CE), KD (the testbed's 0.1 CE + 0.9 T^2 KL,
  T 4, so on quick and cpu the testbed's runs), DKD (the DKD notebook's recipe for a ResNet pair:
  beta 2, so on cpu its runs) and NKD (CE + L_NKD at the official CIFAR-100 T 3, gamma 3.5);
- "self": teacher-free: CE, label smoothing (on cpu the LS notebook's runs), PS-KD, Zipf's LS and
  USKD (CE + L_USKD, the official ranking and CIFAR-100 weights);
- "rank_form": USKD with the official ranking and with the paper's text's (both heads'
  probabilities) on the first `rank_form_seeds` seeds.
Identical configurations are one run (the cache is keyed by the configuration's hash).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from kd import losses
from kd.experiments import coupling_weight, decomposition  # noqa: F401  (E.decomposition in the notebook)
from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.methods import REGISTRY
from kd.methods.base import split_target
from kd.train import TrainConfig

# The keys of params.yaml's nkd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "pair", "nkd", "kd", "dkd", "uskd", "smoothing", "pskd_alpha_T", "zipf", "rank_form_seeds",
                "decomposition_temperature", "decomposition_tol")

TEACHER_ROWS = ("CE", "KD", "DKD", "NKD")
SELF_ROWS = ("CE", "LS", "PS-KD", "Zipf LS", "USKD")
RANK_ROWS = {"official: log-probabilities": True, "paper's text: probabilities": False}


def _floats(d: dict) -> dict:
    return {k: v if isinstance(v, bool) else float(v) for k, v in d.items()}


def method_args(sec: dict) -> dict[str, tuple[str, dict]]:
    """Row label -> (registered method, its arguments) for every row of "teacher" and "self"."""
    return {"CE": ("ce", {}), "KD": ("kd", _floats(sec["kd"])), "DKD": ("dkd", _floats(sec["dkd"])),
            "NKD": ("nkd", _floats(sec["nkd"])), "LS": ("label_smoothing", {"smoothing": float(sec["smoothing"])}),
            "PS-KD": ("pskd", {"alpha_T": float(sec["pskd_alpha_T"])}), "Zipf LS": ("zipf_ls", _floats(sec["zipf"])),
            "USKD": ("uskd", _floats(sec["uskd"]))}


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}} with the groups of the module docstring."""
    pair = sec["pair"]
    args = method_args(sec)
    out: dict[str, dict[str, list[TrainConfig]]] = {"teacher": {}, "self": {}, "rank_form": {}}
    for seed in P.seeds:
        t = P.teacher_config(pair["teacher"], seed)
        for group, rows in (("teacher", TEACHER_ROWS), ("self", SELF_ROWS)):
            for row in rows:
                method, a = args[row]
                teacher = t if REGISTRY[method].needs_teacher else None
                out[group].setdefault(row, []).append(
                    P.config(pair["student"], method, seed=seed, method_args=a, teacher=teacher, paper="nkd"))
    for seed in P.first_seeds(sec.get("rank_form_seeds")):
        for row, log_probs in RANK_ROWS.items():
            a = {**args["USKD"][1], "rank_log_probs": log_probs}
            out["rank_form"].setdefault(row, []).append(P.config(pair["student"], "uskd", seed=seed, method_args=a,
                                                                 paper="nkd"))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["pair"]["teacher"]]


# ---------------------------------------------------------------- analysis

def nkd_decomposition(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                      temperature: float) -> pd.DataFrame:
    """Per sample, at `temperature`: NKD's target and normalised non-target terms (`kd.losses.nkd_parts`,
    each on a batch of one), DKD's NCKD, the teacher's entropy over its renormalised non-target
    classes, and |T^2 non-target - (NCKD + T^2 entropy)|: NKD's non-target term is NCKD (up to the
    constant entropy) without the (1 - p_t) weight that KD puts on it (DKD's Eq. 5)."""
    s, t, y = student_logits.double(), teacher_logits.double(), target.long()
    T = float(temperature)
    rows = []
    for i in range(len(y)):
        si, ti, yi = s[i:i + 1], t[i:i + 1], y[i:i + 1]
        target_term, non_target = losses.nkd_parts(si, ti, yi, T)
        rows.append((target_term.item(), non_target.item(), losses.nckd_loss(si, ti, yi, T).item()))
    df = pd.DataFrame(rows, columns=["nkd_target", "nkd_non_target", "nckd"])
    _, t_other = split_target(t / T, y)
    q = F.softmax(t_other, dim=1)
    df["teacher_entropy"] = (-(q * q.clamp_min(1e-300).log()).sum(1)).numpy()
    df["abs_error"] = (T * T * df["nkd_non_target"] - (df["nckd"] + T * T * df["teacher_entropy"])).abs()
    return df


def paper_table(results: dict) -> pd.DataFrame:
    """The official README's ImageNet numbers (data/paper_results.yaml `nkd`)."""
    rows = [{"method": m, "setting": k, "baseline": v[0], "with the method": v[1], "gain": round(v[1] - v[0], 2)}
            for m in ("NKD", "USKD") for k, v in results[m].items()]
    return pd.DataFrame(rows).set_index(["method", "setting"])
