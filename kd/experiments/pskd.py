"""Self-Knowledge Distillation with Progressive Refinement of Targets (PS-KD; Kim, Ji, Yoon,
Hwang; ICCV 2021): the trainings of notebooks/pskd.ipynb and its analysis helpers.

Every training the notebook needs (params.yaml section `pskd`, resolved for a profile), all
on one network (`model`) and one schedule, without a teacher:
- claim 1 / 2: cross-entropy (CE), label smoothing (`smoothing`) and PS-KD (`alpha_T`);
- claim 4: PS-KD for each alpha_T of `alphas` (the run with alpha_T itself is shared);
- claim 5: CE + cutout and PS-KD + cutout (`cutout`-pixel squares, DeVries & Taylor 2017);
claims 4 and 5 on the first `sweep_seeds` seeds.
Claim 3 (hard-example mining) needs no training of its own: it differentiates the losses at
the logits of the trained PS-KD model (`logit_gradients`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kd import losses
from kd import metrics as kd_metrics
from kd.experiments import train_logits
from kd.train import TrainConfig

# The keys of params.yaml's pskd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "alpha_T", "alphas", "sweep_seeds", "smoothing", "ece_bins", "model", "cutout",
    "grad_samples", "difficulty_bins", "train",
)

PAPER = "pskd"

# ---------------------------------------------------------------- the design
def pskd_args(alpha_T: float) -> dict:
    return {"alpha_T": float(alpha_T)}


def alpha_label(a: float) -> str:
    return f"alpha_T={float(a):g}"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "main" (CE, label smoothing,
    PS-KD), "alphas" ('alpha_T=a'), "cutout" (CE, CE + cutout, PS-KD, PS-KD + cutout)."""
    out: dict[str, dict[str, list[TrainConfig]]] = {"main": {}, "alphas": {}, "cutout": {}}
    model, cut = sec["model"], int(sec["cutout"])
    sweep_seeds = P.first_seeds(sec.get("sweep_seeds"))

    def add(group, row, cfg):
        out[group].setdefault(row, []).append(cfg)

    for seed in P.seeds:
        ce = P.config(model, "ce", seed=seed, paper=PAPER)
        ls = P.config(model, "label_smoothing", seed=seed, method_args={"smoothing": float(sec["smoothing"])},
                      paper=PAPER)
        ps = P.config(model, "pskd", seed=seed, method_args=pskd_args(sec["alpha_T"]), paper=PAPER)
        add("main", "CE", ce)
        add("main", "label smoothing", ls)
        add("main", "PS-KD", ps)
        if seed not in sweep_seeds:
            continue
        for a in sec["alphas"]:
            add("alphas", alpha_label(a), P.config(model, "pskd", seed=seed, method_args=pskd_args(a), paper=PAPER))
        add("cutout", "CE", ce)
        add("cutout", "CE + cutout", P.config(model, "ce", seed=seed, paper=PAPER, cutout=cut))
        add("cutout", "PS-KD", ps)
        add("cutout", "PS-KD + cutout", P.config(model, "pskd", seed=seed, method_args=pskd_args(sec["alpha_T"]),
                                                 paper=PAPER, cutout=cut))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    """PS-KD is its own teacher (its predictions of the previous epoch): no params.yaml teacher."""
    return []


# ---------------------------------------------------------------- confidence metrics
METRIC_COLUMNS = {"top1_error": "top-1 error (%)", "nll": "NLL", "ece_paper": "ECE (%, {bins} bins)",
                  "ece15": "ECE (%, 15 bins)", "aurc": "AURC (x1000)", "eaurc": "E-AURC (x1000)",
                  "overconfidence": "conf. - acc. (%)"}


def run_metrics(run, ece_bins: int = 10) -> dict:
    """The paper's metrics of one run on the test split, last epoch: top-1 error, NLL, ECE with
    the paper's `ece_bins` (recomputed from the stored logits) and with the runs' 15, AURC and
    E-AURC (x1000), and mean confidence minus accuracy; with the run's `seed` (pairs and trends)."""
    logits, targets = run.eval_logits()
    s = run.summary
    return {"seed": int(run.config.seed), "top1_error": 100 - s["top1"], "nll": s["nll"],
            "ece_paper": 100 * kd_metrics.ece(logits, targets, ece_bins), "ece15": s["ece"], "aurc": s["aurc"],
            "eaurc": s["eaurc"], "overconfidence": kd_metrics.overconfidence(logits, targets)}


def metrics_by_row(groups: dict, ece_bins: int = 10) -> dict[str, list[dict]]:
    """{row: [run_metrics per seed]}."""
    return {k: [run_metrics(r, ece_bins) for r in runs] for k, runs in groups.items()}


def metrics_table(per_row: dict[str, list[dict]], ece_bins: int, paper_column: dict | None = None,
                  paper_title: str = "paper") -> pd.DataFrame:
    """Mean ± std over seeds of every metric, one row per method, with an optional paper column."""
    from kd.report import fmt

    rows = []
    for label, ms in per_row.items():
        row = {"": label}
        for key, name in METRIC_COLUMNS.items():
            row[name.format(bins=ece_bins)] = fmt([m[key] for m in ms], 3 if key == "nll" else 2)
        if paper_column is not None:
            row[paper_title] = paper_column.get(label, "–")
        rows.append(row)
    return pd.DataFrame(rows).set_index("")


def paper_rows(results: dict, network: str = "preact_resnet18") -> dict[str, str]:
    """{our row label: "err a / ECE b"} from data/paper_results.yaml (CIFAR-100, 10-bin ECE)."""
    names = {"CE": "ce", "label smoothing": "label_smoothing", "PS-KD": "pskd"}
    out = {}
    for label, key in names.items():
        v = results.get(network, {}).get(key)
        if v:
            out[label] = f"err {v['top1_error']:.2f} / ECE {v['ece']:.2f}"
    return out


def paper_table(results: dict) -> pd.DataFrame:
    """The paper's CIFAR-100 table as restated in data/paper_results.yaml."""
    rows = []
    for net, methods in results.items():
        if not isinstance(methods, dict):
            continue
        for m, v in methods.items():
            rows.append({"network (CIFAR-100)": net, "method": m, "top-1 error (%)": v["top1_error"],
                         "ECE (%, 10 bins)": v["ece"]})
    return pd.DataFrame(rows).set_index(["network (CIFAR-100)", "method"])


# ---------------------------------------------------------------- hard-example mining (claim 3)
def previous_predictions(run) -> torch.Tensor:
    """PS-KD's memory at the end of training: for every training sample, the softmax the model
    gave it at its last training step (train mode, augmented input), i.e. the "teacher" p^{t-1}
    the next epoch would use. It is the method state kept in the run's checkpoint.pt."""
    path = run.path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: claim 3 needs PS-KD's per-sample memory, which the "
                                "training loop keeps in checkpoint.pt; rerun the PS-KD training or copy the "
                                "whole run folder")
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["method"]["memory"].float()


def logit_gradients(logits: torch.Tensor, targets: torch.Tensor, previous: torch.Tensor,
                    alpha: float) -> pd.DataFrame:
    """Per-sample gradients of the CE and PS-KD losses with respect to the logits z, by autograd.

    CE: -log softmax(z)_y. PS-KD (Kim et al. 2021, Eqs. 6-7): -sum_c q_c log softmax(z)_c with
    q = (1 - alpha) onehot(y) + alpha p_prev, the training code's own `kd.losses.pskd_targets` and
    `soft_cross_entropy` (times the batch size, to undo its batch mean). For soft-target CE the
    gradient is p - q (p = softmax(z)), so g_PSKD = (1 - alpha) g_CE + alpha (p - p_prev).
    Returns, per sample: the previous prediction's confidence in the true class (`prev_conf`,
    the difficulty: low = hard), the current one (`conf`), L1 and L2 norms of both gradients,
    their ratios PS-KD / CE, the closed form 1 - alpha (1 - prev_conf) / (1 - conf) (exact
    when q_y >= p_y and p_c >= alpha p_prev,c for c != y), whether those conditions hold,
    and |autograd - (p - q)| (max over classes). The autograd gradient is exactly p sum_c q_c - q:
    it equals p - q up to how far q's rows are from summing to one (PS-KD's memory is float32).
    """
    z = logits.double().detach()
    y = targets.long()
    prev = previous.double()
    n, C = z.shape

    z_ce = z.clone().requires_grad_(True)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(z_ce, y, reduction="sum"), z_ce)
    q = losses.pskd_targets(y, prev, alpha, C)
    z_ps = z.clone().requires_grad_(True)
    (g_ps,) = torch.autograd.grad(n * losses.soft_cross_entropy(z_ps, q), z_ps)

    p = z.softmax(1)
    onehot = F.one_hot(y, C).double()
    analytic_err = torch.maximum((g_ce - (p - onehot)).abs().amax(1), (g_ps - (p - q)).abs().amax(1))
    conf = p.gather(1, y.view(-1, 1)).squeeze(1)
    prev_conf = prev.gather(1, y.view(-1, 1)).squeeze(1)
    mask = onehot.bool()
    conditions = (q[mask] >= p[mask]) & ((p - alpha * prev)[~mask].view(n, C - 1) >= 0).all(1)
    l1_ce, l1_ps = g_ce.abs().sum(1), g_ps.abs().sum(1)
    l2_ce, l2_ps = g_ce.norm(dim=1), g_ps.norm(dim=1)
    closed = 1 - alpha * (1 - prev_conf) / (1 - conf).clamp_min(1e-12)
    return pd.DataFrame({
        "prev_conf": prev_conf.numpy(), "conf": conf.numpy(), "correct": (z.argmax(1) == y).numpy(),
        "l1_ce": l1_ce.numpy(), "l1_pskd": l1_ps.numpy(), "l2_ce": l2_ce.numpy(), "l2_pskd": l2_ps.numpy(),
        "ratio_l1": (l1_ps / l1_ce.clamp_min(1e-300)).numpy(), "ratio_l2": (l2_ps / l2_ce.clamp_min(1e-300)).numpy(),
        "closed_form": closed.numpy(), "conditions_hold": conditions.numpy(),
        "autograd_vs_analytic": analytic_err.numpy()})


def gradient_study(run, alpha: float, n: int | None = None) -> pd.DataFrame:
    """`logit_gradients` at the final logits of a trained PS-KD run on its first `n` training
    images, with that run's memory as the previous predictions and alpha = the last epoch's
    alpha_t (= alpha_T)."""
    cfg = run.config
    logits, targets = train_logits(run.model(), cfg.load_data(), n)
    memory = previous_predictions(run)
    df = logit_gradients(logits, targets, memory[:len(targets)], alpha)
    df.insert(0, "seed", cfg.seed)
    return df


def binned(df: pd.DataFrame, x: str, y: str, bins: int = 10) -> pd.DataFrame:
    """Mean, std and count of `y` in equal-width bins of `x` over [0, 1]."""
    edges = np.linspace(0, 1, bins + 1)
    cut = pd.cut(df[x], edges, include_lowest=True)
    g = df.groupby(cut, observed=True)[y].agg(["mean", "std", "count"]).reset_index()
    g["centre"] = [iv.mid for iv in g[x]]
    return g


def binned_by_seed(df: pd.DataFrame, x: str, y: str, bins: int = 10) -> pd.DataFrame:
    """`binned` for each seed's run apart (one row per seed and populated bin: seed, centre,
    mean, count), keeping only the bins populated in every seed's run, so that every bin is
    a level with one point per seed (claim 3's trend)."""
    parts = [binned(g, x, y, bins).assign(seed=s) for s, g in df.groupby("seed")]
    out = pd.concat(parts, ignore_index=True)[["seed", "centre", "mean", "count"]]
    n_seeds = out["seed"].nunique()
    full = out.groupby("centre")["seed"].transform("nunique") == n_seeds
    return out[full].reset_index(drop=True)


def ratio_curve(prev_conf: np.ndarray, conf: float, alpha: float) -> np.ndarray:
    """The closed-form L1 ratio 1 - alpha (1 - prev_conf) / (1 - conf) for a fixed current
    confidence (valid where the sign conditions of `logit_gradients` hold)."""
    return 1 - alpha * (1 - np.asarray(prev_conf, float)) / (1 - conf)


def values_by_seed(per_row: dict[str, list[dict]], row: str, key: str) -> list[float]:
    """One row's metric, one value per seed in the profile's seed order (for tables and plots)."""
    return [m[key] for m in per_row[row]]


def by_seed(per_row: dict[str, list[dict]], row: str, key: str) -> dict[int, float]:
    """{seed: metric} of one row: the paired form kd.stats.compare aligns by seed."""
    return {m["seed"]: float(m[key]) for m in per_row[row]}


def sweep_rows(ce: list[dict], per_alpha: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Claim 4's rows: CE as alpha_T = 0 (PS-KD with alpha_T = 0 keeps one-hot targets: it is CE),
    on the sweep's seeds only (`sweep_seeds` may be fewer than the CE row's), then each alpha_T."""
    swept = {m["seed"] for ms in per_alpha.values() for m in ms}
    return {"CE (alpha_T=0)": [m for m in ce if m["seed"] in swept], **per_alpha}


def sweep_frame(ce: list[dict], per_alpha: dict[str, list[dict]]) -> pd.DataFrame:
    """Claim 4's seed-level points: one row per run (alpha_T, seed, top1, ece, nll), the CE run of
    each swept seed at alpha_T = 0 (`sweep_rows`)."""
    swept_ce = sweep_rows(ce, per_alpha)["CE (alpha_T=0)"]
    sweep = [(0.0, m) for m in swept_ce] + [(float(k.split("=")[1]), m) for k, ms in per_alpha.items() for m in ms]
    return pd.DataFrame([{"alpha_T": a, "seed": m["seed"], "top1": 100 - m["top1_error"], "ece": m["ece_paper"],
                          "nll": m["nll"]} for a, m in sweep])
