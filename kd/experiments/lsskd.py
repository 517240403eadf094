"""LSSKD (Dahri et al., arXiv 2506.07055, 2025; no official code, our reconstruction: kd/methods/lsskd.py): the
trainings of notebooks/lsskd.ipynb and its analysis helpers. The paper's facts: docs/papers.md, LSSKD.

Every training the notebook needs (params.yaml section `lsskd`, resolved for a profile), one network (`model`)
without a teacher, in two data regimes (`regimes`: "small", few images for many epochs, and "large", more
images for proportionally fewer epochs on quick and cpu, so both take the same number of steps):
- "main" (claims 1 and 2), small regime, every seed: CE; PS-KD (alpha_T); "HSAKD-style" (auxiliary heads on
  the joint (class, rotation) labels, CE only: HSAKD's teacher-free training of its heads); LSSKD;
- "ablation", small regime, the first `ablation_seeds` seeds: LSSKD and LSSKD without one part (the rotations,
  the previous-epoch targets, the cross-layer KL and feature terms; HSAKD-style lacks the last two);
- "data" (claim 3), every seed: CE and LSSKD in each regime (the small regime's are main's runs).
On cpu the small regime is PS-KD's (500 images, 160 epochs), so CE and PS-KD are the pskd notebook's runs, and
the large one the testbed's (2000 images, 40 epochs), so its CE is the testbed's. Identical configurations are
one run (the cache is keyed by the configuration's hash).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from kd import methods as kd_methods
from kd.train import TrainConfig

# The keys of params.yaml's lsskd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "model", "alpha_T", "rotations", "temperature", "kl_weight", "feature_weight",
                "ablation_seeds", "regimes", "train")

PAPER = "lsskd"
REGIMES = ("small", "large")


def lsskd_args(sec: dict, **changes) -> dict:
    """The method arguments of LSSKD from the section, with `changes` (an ablation)."""
    args = {"alpha_T": float(sec["alpha_T"]), "rotations": int(sec["rotations"]),
            "temperature": float(sec["temperature"]), "kl_weight": float(sec["kl_weight"]),
            "feature_weight": float(sec["feature_weight"])}
    return {**args, **changes}


def ablations(sec: dict) -> dict[str, dict]:
    """{row: LSSKD's method arguments}: the full method, then each part removed."""
    no_cross_layer = {"kl_weight": 0.0, "feature_weight": 0.0}
    return {"LSSKD": lsskd_args(sec),
            "without rotations": lsskd_args(sec, rotations=1),
            "without previous-epoch targets": lsskd_args(sec, alpha_T=0.0),
            "without cross-layer terms": lsskd_args(sec, **no_cross_layer),
            "HSAKD-style (neither)": lsskd_args(sec, alpha_T=0.0, **no_cross_layer)}


def plan(P, sec: dict) -> dict:
    """{"main": {row: [cfg per seed]}, "ablation": {row: [cfg per ablation seed]},
    "data": {regime: {"CE" | "LSSKD": [cfg per seed]}}}, as the module docstring says."""
    model, regimes = sec["model"], sec["regimes"]
    if set(regimes) != set(REGIMES):
        raise ValueError(f"lsskd.regimes must name exactly {REGIMES}, got {sorted(regimes)}")
    ablation_seeds = set(P.first_seeds(sec.get("ablation_seeds")))
    rows = ablations(sec)

    def config(method, seed, args=None, regime="small"):
        return P.config(model, method, seed=seed, method_args=args, paper=PAPER, **(regimes[regime] or {}))

    out: dict = {"main": {r: [] for r in ("CE", "PS-KD", "HSAKD-style", "LSSKD")}, "ablation": {r: [] for r in rows},
                 "data": {g: {"CE": [], "LSSKD": []} for g in REGIMES}}
    for seed in P.seeds:
        main = {"CE": config("ce", seed), "PS-KD": config("pskd", seed, {"alpha_T": float(sec["alpha_T"])}),
                "HSAKD-style": config("lsskd", seed, rows["HSAKD-style (neither)"]),
                "LSSKD": config("lsskd", seed, rows["LSSKD"])}
        for row, cfg in main.items():
            out["main"][row].append(cfg)
        for g in REGIMES:
            out["data"][g]["CE"].append(config("ce", seed, regime=g))
            out["data"][g]["LSSKD"].append(config("lsskd", seed, rows["LSSKD"], regime=g))
        if seed in ablation_seeds:
            for row, args in rows.items():
                out["ablation"][row].append(config("lsskd", seed, args))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    """LSSKD is teacher-free: no params.yaml teacher."""
    return []


# ---------------------------------------------------------------- analysis
def regime_label(cfg: TrainConfig) -> str:
    return f"{cfg.train_subset or 'all'} images x {cfg.epochs} epochs"


def inference_cost(run) -> dict:
    """What the run's deployed network (model.pt, the auxiliary heads gone) costs: its parameters and forward
    FLOPs on one test-sized image (torch's FlopCounterMode)."""
    net = run.model().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, *run.config.load_data().x_train.shape[1:]))
    return {"params": sum(p.numel() for p in net.parameters()), "flops": counter.get_total_flops()}


def auxiliary_params(run) -> int:
    """The parameters of the training-only modules of an LSSKD run (its auxiliary heads), built as training
    builds them."""
    cfg = run.config
    ds = cfg.load_data()
    method = kd_methods.create(cfg.method, **cfg.method_args)
    method.setup(ds.y_train, ds.num_classes, torch.device("cpu"), cfg.seed)
    heads = method.build(run.model(), None, torch.zeros(2, *ds.x_train.shape[1:]))
    return sum(p.numel() for p in heads.parameters())
