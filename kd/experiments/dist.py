"""Knowledge Distillation from A Stronger Teacher (DIST; Huang, You, Wang, Qian, Xu;
NeurIPS 2022): the trainings of notebooks/dist.ipynb and its analysis helpers.

Every training the notebook needs (params.yaml section `dist`, resolved for a profile):
- stronger teachers: the fixed `student` distilled with KD and with DIST from each of
  `stronger_teachers`, plus the student trained alone (CE);
- pairs: KD and DIST for each teacher -> student pair (the paper's CIFAR-100 table);
- ablation on the first pair, where `ablation` is true: inter-class only (gamma = 0), intra-class
  only (beta = 0), both (the DIST run of the pair).
Identical configurations are one run (the cache is keyed by the configuration's hash), so
a pair whose teacher is among the stronger teachers and whose student is `student` costs
nothing extra.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kd.experiments import pair_label as label, paper_pair, train_logits  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's dist section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "temperature", "beta", "gamma", "ce_weight", "kd_weight", "ablation", "student",
    "stronger_teachers", "pairs",
)


def kd_args(sec: dict) -> dict:
    """The KD baseline of the paper's CIFAR table (CRD recipe): 0.1 CE + 0.9 T^2 KL, T = tau."""
    return {"temperature": float(sec["temperature"])}


def dist_args(sec: dict, beta: float | None = None, gamma: float | None = None) -> dict:
    """DIST on CIFAR: ce_weight CE + kd_weight tau^2 (beta inter + gamma intra)."""
    return {"beta": float(sec["beta"] if beta is None else beta),
            "gamma": float(sec["gamma"] if gamma is None else gamma),
            "temperature": float(sec["temperature"]), "ce_weight": float(sec["ce_weight"]),
            "kd_weight": float(sec["kd_weight"])}


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "stronger" (rows '<teacher> KD|DIST'
    and 'CE'), "pairs" (rows '<pair> KD|DIST'), "ablation" (rows 'inter only', 'intra only',
    'inter + intra' on the first pair; empty where `ablation` is false)."""
    out: dict[str, dict[str, list[TrainConfig]]] = {"stronger": {}, "pairs": {}, "ablation": {}}

    def add(group, row, cfg):
        out[group].setdefault(row, []).append(cfg)

    for seed in P.seeds:
        student = sec["student"]
        add("stronger", "CE", P.config(student, "ce", seed=seed, paper="dist"))
        for name in sec["stronger_teachers"]:
            t = P.teacher_config(name, seed)
            add("stronger", f"{name} KD", P.config(student, "kd", seed=seed, method_args=kd_args(sec), teacher=t,
                                                    paper="dist"))
            add("stronger", f"{name} DIST", P.config(student, "dist", seed=seed, method_args=dist_args(sec),
                                                      teacher=t, paper="dist"))
        for i, pair in enumerate(sec["pairs"]):
            t = P.teacher_config(pair["teacher"], seed)
            train = dict(pair.get("train") or {})
            add("pairs", f"{label(pair)} KD", P.config(pair["student"], "kd", seed=seed, method_args=kd_args(sec),
                                                       teacher=t, paper="dist", **train))
            dist = P.config(pair["student"], "dist", seed=seed, method_args=dist_args(sec), teacher=t,
                            paper="dist", **train)
            add("pairs", f"{label(pair)} DIST", dist)
            if i == 0 and sec["ablation"]:
                add("ablation", "inter only", dist.replace(method_args=dist_args(sec, gamma=0.0)))
                add("ablation", "intra only", dist.replace(method_args=dist_args(sec, beta=0.0)))
                add("ablation", "inter + intra", dist)
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return list(dict.fromkeys([*sec["stronger_teachers"], *(p["teacher"] for p in sec["pairs"])]))


def stronger_frame(P, sec: dict, stronger: dict) -> pd.DataFrame:
    """One row per (teacher, seed, method): the teacher's test top-1, parameter count and number
    of training images, and the student's top-1, KL(t||s) and agreement with its teacher (test
    split, last epoch).

    `teacher_level` is the teacher's strength as a trend level (kd.stats.trend): its test
    top-1 averaged over the seeds it was trained with, the same for every seed of a name.
    With one teacher per name (`teacher_seed`) it is that teacher's top-1; with one teacher
    per seed the per-seed accuracies would make every point its own level, and the trend
    test needs every level observed on several seeds."""
    rows = []
    for name in sec["stronger_teachers"]:
        for method in ("KD", "DIST"):
            for run in stronger[f"{name} {method}"]:
                t = P.teacher(name, run.config.seed).summary
                s = run.summary
                rows.append({"teacher": name, "seed": run.config.seed, "method": method,
                             "teacher_top1": t["top1"], "teacher_params": t["params"],
                             "teacher_images": t["num_train"], "top1": s["top1"],
                             "kl_teacher": s["kl_teacher"], "agreement": s["agreement"]})
    df = pd.DataFrame(rows)
    if len(df):
        df["teacher_level"] = df.groupby("teacher")["teacher_top1"].transform("mean")
    return df


def inherited_errors(P, sec: dict, stronger: dict) -> pd.DataFrame:
    """One row per (teacher, seed, method): the teacher's top-1 error (%) on the student's training
    images (un-augmented, eval mode: what the student is taught) and the share (%) of the images
    the teacher gets wrong that the student, trained on them, gets wrong too; method "CE" is the
    student trained alone with that seed, the share of hard images any student gets wrong."""
    data, wrong, student_wrong, rows = {}, {}, {}, []
    for name in sec["stronger_teachers"]:
        for method in ("KD", "DIST", "CE"):
            for run in stronger[f"{name} {method}" if method != "CE" else "CE"]:
                cfg = run.config
                if cfg.subset_seed not in data:
                    data[cfg.subset_seed] = cfg.load_data()
                ds = data[cfg.subset_seed]
                key = (P.teacher_config(name, cfg.seed).hash(), cfg.subset_seed)
                if key not in wrong:
                    wrong[key] = train_logits(P.teacher(name, cfg.seed).model(), ds)[0].argmax(1) != ds.y_train
                teacher_wrong = wrong[key]
                if run.path not in student_wrong:  # a CE run appears once per teacher
                    student_wrong[run.path] = train_logits(run.model(), ds)[0].argmax(1) != ds.y_train
                rows.append({"teacher": name, "seed": cfg.seed, "method": method,
                             "teacher_train_error": 100 * teacher_wrong.float().mean().item(),
                             "inherited": 100 * student_wrong[run.path][teacher_wrong].float().mean().item()
                             if teacher_wrong.any() else float("nan")})
    return pd.DataFrame(rows)


def gain_frame(df: pd.DataFrame) -> pd.DataFrame:
    """DIST - KD student top-1 per (teacher, seed) (paired by seed), with the teacher's
    accuracy and its trend level (`teacher_level`, see `stronger_frame`)."""
    wide = df.pivot_table(index=["teacher", "seed", "teacher_top1", "teacher_level"], columns="method",
                          values="top1").reset_index()
    wide["gain"] = wide["DIST"] - wide["KD"]
    return wide


def paper_pairs_table(results: dict) -> pd.DataFrame:
    rows = [{"pair (CIFAR-100)": k, "KD": v[0], "DIST": f"{v[1]:.2f} ± {v[2]:.2f}", "DIST - KD": round(v[1] - v[0], 2)}
            for k, v in results["pairs"].items()]
    return pd.DataFrame(rows).set_index("pair (CIFAR-100)")


def paper_stronger_table(results: dict) -> pd.DataFrame:
    st = results["stronger_teachers"]
    return pd.DataFrame({"teacher (ImageNet)": st["teachers"], "KD": st["kd"], "DIST": st["dist"],
                         "DIST - KD": np.round(np.subtract(st["dist"], st["kd"]), 2)}).set_index("teacher (ImageNet)")


def paper_text(results: dict, pair: str, method: str) -> str:
    v = results["pairs"].get(pair)
    if not v:
        return "–"
    return f"{v[0]:.2f} ({pair})" if method == "KD" else f"{v[1]:.2f} ± {v[2]:.2f} ({pair})"
