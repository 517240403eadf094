"""Efficient One Pass Self-distillation with Zipf's Label Smoothing (Liang, Li, Bing, Zhao, Tang,
Lin, Fan; ECCV 2022; github.com/megvii-research/zipfls): the trainings of notebooks/zipf_ls.ipynb and
its analysis helpers.

Every training the notebook needs (params.yaml section `zipf_ls`, resolved for a profile),
all of one model (`model`), without a teacher:
- "main": CE, uniform label smoothing (`smoothing`), Zipf's LS with image-level ranking
  (dense=False) and with dense ranking (dense=True, the official CIFAR-100 command), both at
  `power` and `weight`;
- "powers": Zipf's LS with each power of `powers` (ranking `dense`, weight `weight`);
  power 0 gives the uniform distribution over the non-target classes (the official code's
  `constant` distribution);
- "weights": Zipf's LS with each loss weight lambda of `weights` (power `power`).
Identical configurations are one run (the cache is keyed by the configuration's hash), so
the default Zipf's LS run is shared by the three groups.

The observation (claim 1) uses the params.yaml teacher `teacher` (trained with CE) and the
CE run: `sorted_softmax` / `fit_power_law` / `bootstrap_exponent`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kd.train import TrainConfig

# The keys of params.yaml's zipf_ls section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "power", "weight", "dense", "smoothing", "powers", "weights", "sweep_seeds", "model",
    "teacher", "bootstrap", "cost_margin", "timing", "train",
)

PAPER = "zipf_ls"


# ---------------------------------------------------------------- the design
def zipf_args(sec: dict, *, power: float | None = None, weight: float | None = None,
              dense: bool | None = None) -> dict:
    """Zipf's LS: CE + weight * KL(zipf(rank; power) || softmax over the non-target logits)."""
    return {"power": float(sec["power"] if power is None else power),
            "weight": float(sec["weight"] if weight is None else weight),
            "dense": bool(sec["dense"] if dense is None else dense)}


def zipf_label(args: dict) -> str:
    ranking = "dense" if args["dense"] else "image-level"
    return f"Zipf LS ({ranking}, power {args['power']:g}, lambda {args['weight']:g})"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "main" (CE, label smoothing, Zipf LS
    image-level, Zipf LS dense), "powers" (rows 'power=p'), "weights" (rows 'lambda=w'); the sweeps
    on the first `sweep_seeds` seeds."""
    model = sec["model"]
    out: dict[str, dict[str, list[TrainConfig]]] = {"main": {}, "powers": {}, "weights": {}}

    def add(group, label, method, args=None, seeds=P.seeds):
        out[group][label] = [P.config(model, method, seed=s, method_args=args, paper=PAPER) for s in seeds]

    add("main", "CE", "ce")
    add("main", f"label smoothing {sec['smoothing']:g}", "label_smoothing", {"smoothing": float(sec["smoothing"])})
    add("main", "Zipf LS (image-level)", "zipf_ls", zipf_args(sec, dense=False))
    add("main", "Zipf LS (dense)", "zipf_ls", zipf_args(sec, dense=True))
    sweep_seeds = P.first_seeds(sec.get("sweep_seeds"))
    for p in sec["powers"]:
        add("powers", f"power={float(p):g}", "zipf_ls", zipf_args(sec, power=p), sweep_seeds)
    for w in sec["weights"]:
        add("weights", f"lambda={float(w):g}", "zipf_ls", zipf_args(sec, weight=w), sweep_seeds)
    return out


def main_label(sec: dict) -> str:
    """The row of "main" that the sweeps share (the default ranking)."""
    return "Zipf LS (dense)" if sec["dense"] else "Zipf LS (image-level)"


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["teacher"]]


# ---------------------------------------------------------------- the observation (claim 1)
def sorted_softmax(logits: torch.Tensor, targets: torch.Tensor | None = None) -> np.ndarray:
    """Each sample's softmax sorted in decreasing order (N x C). Given `targets`, the softmax
    over the C - 1 non-target logits instead (N x (C-1)): the distribution Zipf's LS shapes."""
    z = logits.double()
    if targets is not None:
        mask = F.one_hot(targets.long(), z.shape[1]).bool()
        z = z[~mask].view(z.shape[0], -1)
    return torch.sort(z.softmax(1), dim=1, descending=True).values.numpy()


def fit_power_law(mean_probs: np.ndarray) -> dict:
    """Least-squares fit of log p_r = a - s log r over ranks r = 1..K (Zipf's law p_r ~ r^-s).

    Returns the exponent s, its standard error from the regression (K - 2 degrees of freedom),
    R^2 of the log-log fit, and R^2 of the exponential alternative log p_r = a - b r (a
    straight line on semi-log axes), to tell a power law from a geometric fall-off."""
    p = np.asarray(mean_probs, float)
    r = np.arange(1, len(p) + 1, dtype=float)
    y = np.log(p)

    def ols(x):
        X = np.column_stack([np.ones_like(x), x])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ coef
        ss_res = float(resid @ resid)
        ss_tot = float(((y - y.mean()) ** 2).sum())
        dof = len(y) - 2
        cov = ss_res / dof * np.linalg.inv(X.T @ X) if dof > 0 else np.full((2, 2), np.nan)
        return coef, math.sqrt(cov[1, 1]), 1 - ss_res / ss_tot

    (a, slope), se, r2 = ols(np.log(r))
    _, _, r2_exp = ols(r)
    return {"exponent": -float(slope), "se": float(se), "intercept": float(a), "r2": float(r2),
            "r2_exponential": float(r2_exp), "ranks": len(p)}


def bootstrap_exponent(sorted_probs: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The fitted exponent on `n_boot` resamples (with replacement) of the samples: its spread
    is the uncertainty due to the finite evaluation set (the regression's standard error
    treats the K ranks as independent, which they are not)."""
    rng = np.random.default_rng(seed)
    n = len(sorted_probs)
    out = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        out[b] = fit_power_law(sorted_probs[idx].mean(0))["exponent"]
    return out


def zipf_fits(named_logits: dict[str, tuple[torch.Tensor, torch.Tensor]], n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """{network: (logits, targets)} -> per network and per class set ("all classes" or
    "non-target classes") the power-law fit of the mean sorted softmax with its regression
    standard error and a bootstrap 95% interval over samples."""
    rows = []
    for name, (logits, targets) in named_logits.items():
        for which, t in (("all classes", None), ("non-target classes", targets)):
            sp = sorted_softmax(logits, t)
            fit = fit_power_law(sp.mean(0))
            boot = bootstrap_exponent(sp, n_boot, seed)
            rows.append({"network": name, "classes": which, "exponent s": fit["exponent"],
                         "s.e. (regression)": fit["se"], "bootstrap 2.5%": float(np.quantile(boot, 0.025)),
                         "bootstrap 97.5%": float(np.quantile(boot, 0.975)), "R2 power law": fit["r2"],
                         "R2 exponential": fit["r2_exponential"], "ranks": fit["ranks"], "samples": len(sp)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- cost (claim 4)
def time_steps(P, sec: dict, cfg: TrainConfig, steps: int, rounds: int, teacher=None) -> dict:
    """CE's, Zipf LS's (image-level and dense) and, given a teacher, KD's training step on the
    same model and batches, interleaved round by round (kd.timing.step_times); ratio to CE."""
    from kd.timing import step_times

    methods = {"CE": ("ce", {}), "Zipf LS (image-level)": ("zipf_ls", zipf_args(sec, dense=False)),
               "Zipf LS (dense)": ("zipf_ls", zipf_args(sec, dense=True))}
    if teacher is not None:
        methods[f"KD from {sec['teacher']} (for reference)"] = ("kd", {})
    return step_times(methods, cfg.model, cfg.load_data(), teacher=teacher, batch_size=cfg.batch_size,
                      steps=steps, rounds=rounds, device=P.device, seed=cfg.seed)

