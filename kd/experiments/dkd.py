"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu, Liang; CVPR 2022): the trainings
of notebooks/dkd.ipynb and its analysis helpers.

Every training the notebook needs (params.yaml section `dkd`, resolved for a profile):
- for each teacher -> student pair: CE (the student alone), KD and DKD with the pair's
  paper beta (or `beta` when it is set);
- on the first pair, the ablation of the paper's Table 1: TCKD only (DKD's loss with
  beta = 0) and NCKD only (alpha = 0), each at unit weight (`ablation_weight`); DKD's
  method always adds CE at weight 1, like mdistiller, so the ablation's KD row is KD with
  CE at weight 1 and the KL at `ablation_weight` too ("KD (CE 1)"): the rows differ only in
  the distillation term. The pair table's KD is mdistiller's baseline, 0.1 CE + 0.9 KD;
- on the first pair, the beta sweep `betas` (alpha fixed) on the first `sweep_seeds` seeds.
Identical configurations are one run (the cache is keyed by the configuration's hash),
so the first pair's CE / KD / DKD serve the ablation, the pair table and the sweep.
"""
from __future__ import annotations

import pandas as pd

from kd.experiments import coupling_weight, decomposition  # noqa: F401  (E.decomposition, E.coupling_weight in the notebook)
from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's dkd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "alpha", "temperature", "warmup", "beta", "ablation_weight", "pairs", "betas",
    "sweep_seeds", "sweep_rising_up_to", "decomposition_tol", "cost_margin", "timing",
)


# ---------------------------------------------------------------- the design

def pair_beta(sec: dict, pair: dict) -> float:
    """`beta` of the section when set (a papermill / `dvc exp run -S dkd.beta=..` override),
    else the paper's beta of the pair."""
    return float(sec["beta"] if sec.get("beta") is not None else pair["beta"])


def kd_args(sec: dict) -> dict:
    """KD baseline as in mdistiller / CRD: 0.1 CE + 0.9 T^2 KL, T = `temperature`."""
    return {"temperature": float(sec["temperature"]), "ce_weight": 0.1, "kd_weight": 0.9}


def ablation_kd_args(sec: dict) -> dict:
    """KD in the ablation: CE at weight 1 and T^2 KL at `ablation_weight`, like its DKD rows."""
    return {"temperature": float(sec["temperature"]), "ce_weight": 1.0,
            "kd_weight": float(sec.get("ablation_weight", 1.0))}


def dkd_args(sec: dict, *, beta: float, alpha: float | None = None) -> dict:
    """DKD: CE + min(epoch / warmup, 1) (alpha TCKD + beta NCKD) (paper Eq. 6)."""
    return {"alpha": float(sec["alpha"] if alpha is None else alpha), "beta": float(beta),
            "temperature": float(sec["temperature"]), "warmup": float(sec["warmup"])}


def ablation_args(sec: dict) -> dict[str, dict]:
    """Table 1's rows that are not CE / KD: each part of KD alone, at weight `ablation_weight`."""
    w = float(sec.get("ablation_weight", 1.0))
    return {"TCKD only": dkd_args(sec, alpha=w, beta=0.0), "NCKD only": dkd_args(sec, alpha=0.0, beta=w)}


def _train(sec: dict, pair: dict) -> dict:
    return dict(pair.get("train") or {})


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "pairs" (rows '<pair> CE|KD|DKD'),
    "ablation" (CE, TCKD only, NCKD only, KD (CE 1), KD, DKD on the first pair), "sweep" (rows 'beta=b')."""
    out: dict[str, dict[str, list[TrainConfig]]] = {"pairs": {}, "ablation": {}, "sweep": {}}
    sweep_seeds = P.first_seeds(sec.get("sweep_seeds"))
    for i, pair in enumerate(sec["pairs"]):
        rows = {}
        for seed in P.seeds:
            teacher = P.teacher_config(pair["teacher"], seed)
            train = _train(sec, pair)
            cfgs = {"CE": P.config(pair["student"], "ce", seed=seed, paper="dkd", **train),
                    "KD": P.config(pair["student"], "kd", seed=seed, method_args=kd_args(sec), teacher=teacher,
                                   paper="dkd", **train),
                    "DKD": P.config(pair["student"], "dkd", seed=seed, teacher=teacher, paper="dkd",
                                    method_args=dkd_args(sec, beta=pair_beta(sec, pair)), **train)}
            if i == 0:
                cfgs.update({name: P.config(pair["student"], "dkd", seed=seed, method_args=args, teacher=teacher,
                                            paper="dkd", **train)
                             for name, args in ablation_args(sec).items()})
                cfgs["KD (CE 1)"] = P.config(pair["student"], "kd", seed=seed, method_args=ablation_kd_args(sec),
                                             teacher=teacher, paper="dkd", **train)
                if seed in sweep_seeds:
                    cfgs.update({f"beta={b:g}": P.config(pair["student"], "dkd", seed=seed, teacher=teacher,
                                                         paper="dkd", method_args=dkd_args(sec, beta=b), **train)
                                 for b in sec["betas"]})
            for k, c in cfgs.items():
                rows.setdefault(k, []).append(c)
        for k in ("CE", "KD", "DKD"):
            out["pairs"][f"{label(pair)} {k}"] = rows[k]
        if i == 0:
            out["ablation"] = {k: rows[k] for k in ("CE", "TCKD only", "NCKD only", "KD (CE 1)", "KD", "DKD")}
            out["sweep"] = {f"beta={b:g}": rows[f"beta={b:g}"] for b in sec["betas"]}
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return list(dict.fromkeys(p["teacher"] for p in sec["pairs"]))


# ---------------------------------------------------------------- analysis
def paper_table(results: dict) -> pd.DataFrame:
    """The paper's CIFAR-100 KD / DKD table (data/paper_results.yaml)."""
    rows = [{"pair (CIFAR-100)": k, "KD": v[0], "DKD": v[1], "DKD - KD": round(v[1] - v[0], 2)}
            for k, v in results["pairs"].items()]
    return pd.DataFrame(rows).set_index("pair (CIFAR-100)")


def paper_text(results: dict, pair: str) -> str:
    """'KD a / DKD b' for a paper pair, or 'n/a' when the paper has no number for it."""
    v = results["pairs"].get(pair)
    return f"KD {v[0]:.2f} / DKD {v[1]:.2f} ({pair})" if v else "n/a"


def time_steps(P, sec: dict, runs: dict, steps: int, rounds: int) -> dict:
    """KD's and DKD's training step on the first pair, interleaved in the same process
    (kd.timing.step_times); ratio = DKD / KD."""
    from kd.timing import step_times

    pair = sec["pairs"][0]
    kd_run = runs["pairs"][f"{label(pair)} KD"][0]
    cfg = kd_run.config
    teacher = P.teacher(pair["teacher"], cfg.seed).model(P.device)
    ds = cfg.load_data()
    return step_times({"KD": ("kd", kd_args(sec)), "DKD": ("dkd", dkd_args(sec, beta=pair_beta(sec, pair)))},
                      cfg.model, ds, teacher=teacher, batch_size=cfg.batch_size, steps=steps, rounds=rounds,
                      device=P.device, seed=cfg.seed)

