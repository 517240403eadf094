"""When Does Label Smoothing Help? (Müller, Kornblith & Hinton, NeurIPS 2019, arXiv 1906.02629): the
trainings of notebooks/when_ls_helps.ipynb and its analysis helpers. The paper's facts:
docs/papers.md, When does label smoothing help.

Every training the notebook needs (params.yaml section `when_ls_helps`, resolved for a profile):
- networks, every seed: the `student` architecture trained with CE and with label smoothing
  (`smoothing`), for claims 1 (calibration against temperature scaling), 3 (the penultimate layer's
  structure) and 4 (the information the logits carry);
- kd, every seed: the same student distilled (`kd` weights) from the CE teacher and from the LS
  teacher of `teachers` at each temperature of `temperatures` (claim 2, at each teacher's best T).
Identical configurations are one run: on quick and cpu the CE network and the CE teacher's KD
student at T 4 are the testbed's runs.

Our reconstruction (no official code is public): temperature scaling fitted on one half of the
test split and applied to the other (cross-fitted both ways); the projection onto the plane
through three class templates (the classifier's weight rows with the bias as an extra coordinate,
the paper's method); and, as a stated proxy for the paper's mutual-information estimate, a
Gaussian estimate of the information the logits carry about which image they came from, under the
training augmentation.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar

from kd import data as kd_data
from kd import metrics as kd_metrics
from kd.train import TrainConfig

# The keys of params.yaml's when_ls_helps section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "ece_margin", "smoothing", "student", "teachers", "kd", "temperatures",
                "projection_classes", "mi_images", "mi_views")


# ---------------------------------------------------------------- the design

def kd_args(sec: dict, temperature: float) -> dict:
    return {"temperature": float(temperature), **{k: float(v) for k, v in sec["kd"].items()}}


def kd_label(teacher_kind: str, temperature: float) -> str:
    return f"{teacher_kind} teacher, T={float(temperature):g}"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}: "networks" ("CE", "LS") and "kd"
    ("CE teacher, T=<t>", "LS teacher, T=<t>" for each temperature)."""
    s = sec["student"]
    out: dict[str, dict[str, list[TrainConfig]]] = {"networks": {}, "kd": {}}
    for seed in P.seeds:
        out["networks"].setdefault("CE", []).append(P.config(s, "ce", seed=seed, paper="when_ls_helps"))
        out["networks"].setdefault("LS", []).append(
            P.config(s, "label_smoothing", seed=seed, method_args={"smoothing": float(sec["smoothing"])},
                     paper="when_ls_helps"))
        for kind, name in (("CE", sec["teachers"]["ce"]), ("LS", sec["teachers"]["label_smoothing"])):
            t = P.teacher_config(name, seed)
            for T in sec["temperatures"]:
                out["kd"].setdefault(kd_label(kind, T), []).append(
                    P.config(s, "kd", seed=seed, method_args=kd_args(sec, T), teacher=t, paper="when_ls_helps"))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["teachers"]["ce"], sec["teachers"]["label_smoothing"]]


# ---------------------------------------------------------------- claim 1: calibration

def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising the NLL of softmax(logits / T)."""
    z, y = logits.double(), targets.long()

    def nll(log_t):
        return torch.nn.functional.cross_entropy(z / math.exp(log_t), y).item()

    return math.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-6}).x)


def calibration_row(run) -> dict:
    """ECE (%, 15 bins) of a run's test predictions as they are and after temperature scaling,
    cross-fitted: T fitted on the even-indexed test images is applied to the odd ones and vice
    versa; each ECE is the mean over the two halves. Also NLL before and after, and the two T."""
    logits, y = run.eval_logits()
    halves = (torch.arange(len(y)) % 2 == 0, torch.arange(len(y)) % 2 == 1)
    temps = [fit_temperature(logits[h], y[h]) for h in halves]
    before, after, nll_b, nll_a = [], [], [], []
    for h, T in zip(halves, reversed(temps)):  # each half scaled with the other half's T
        before.append(100 * kd_metrics.ece(logits[h], y[h]))
        after.append(100 * kd_metrics.ece(logits[h] / T, y[h]))
        nll_b.append(kd_metrics.nll(logits[h], y[h]))
        nll_a.append(kd_metrics.nll(logits[h] / T, y[h]))
    return {"seed": run.config.seed, "top1": run.summary["top1"], "ECE": float(np.mean(before)),
            "ECE after TS": float(np.mean(after)), "NLL": float(np.mean(nll_b)),
            "NLL after TS": float(np.mean(nll_a)), "T fitted": float(np.mean(temps))}


def calibration_frame(networks: dict[str, list]) -> pd.DataFrame:
    return pd.DataFrame([{"network": k, **calibration_row(r)} for k, runs in networks.items() for r in runs])


def reliability(run, n_bins: int = 15, temperature: float = 1.0) -> pd.DataFrame:
    """Per equal-width confidence bin of a run's test predictions: count, mean confidence, accuracy."""
    logits, y = run.eval_logits()
    p = (logits.float() / temperature).softmax(1)
    conf, pred = p.max(1)
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            rows.append({"bin": b, "count": int(m.sum()), "confidence": float(conf[m].mean()),
                         "accuracy": float((pred[m] == y[m]).float().mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- claim 3: the penultimate layer

@torch.no_grad()
def penultimate(run, classes, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The penultimate activations (the classifier's input) of the test images of `classes`, with a
    1 appended (the bias as an extra coordinate), their labels, and the classifier's weight rows with
    the bias appended (the class templates)."""
    ds = run.config.load_data()
    keep = torch.isin(ds.y_eval, torch.tensor(list(classes)))
    loader = kd_data.Loader(ds.x_eval[keep], ds.y_eval[keep], ds.mean, ds.std, batch_size=512, train=False,
                            device=device)
    model = run.model(device)
    feats = torch.cat([model(b.x, return_features=True)[1]["pooled"].float() for b in loader])
    ones = torch.ones(len(feats), 1, device=feats.device)
    w = model.classifier.weight.float()
    templates = torch.cat([w, model.classifier.bias.float().view(-1, 1)], 1)
    return torch.cat([feats, ones], 1).cpu(), ds.y_eval[keep], templates.cpu()


def project(feats: torch.Tensor, templates: torch.Tensor, classes) -> torch.Tensor:
    """Müller et al.'s visualisation: coordinates of `feats` in an orthonormal basis of the plane
    through the three templates of `classes` (Gram-Schmidt on w2 - w1 and w3 - w1)."""
    w1, w2, w3 = (templates[c].double() for c in classes)
    u = w2 - w1
    u = u / u.norm()
    v = (w3 - w1) - ((w3 - w1) @ u) * u
    v = v / v.norm()
    return torch.stack([feats.double() @ u, feats.double() @ v], 1)


def cluster_tightness(points: torch.Tensor, labels: torch.Tensor, classes) -> float:
    """Mean distance of the projected points to their class centroid over the mean distance between
    the class centroids: smaller is tighter, relative to how far apart the classes sit."""
    centroids = torch.stack([points[labels == c].mean(0) for c in classes])
    spread = torch.cat([(points[labels == c] - centroids[i]).norm(dim=1) for i, c in enumerate(classes)]).mean()
    gaps = torch.pdist(centroids).mean()
    return float(spread / gaps)


def structure_frame(networks: dict[str, list], classes: dict[str, list],
                    similarity: torch.Tensor | None) -> pd.DataFrame:
    """Per network and seed: the tightness of each class triple's projection, and the share of the
    non-target probability on similar classes (kd.metrics.similarity_mass at T = 1) with its
    uniform value."""
    rows = []
    for name, runs in networks.items():
        for r in runs:
            row = {"network": name, "seed": r.config.seed}
            for triple, cs in classes.items():
                feats, y, templates = penultimate(r, cs)
                row[f"tightness ({triple})"] = cluster_tightness(project(feats, templates, cs), y, cs)
            if similarity is not None:
                logits, y = r.eval_logits()
                share, uniform = kd_metrics.similarity_mass(logits, y, similarity, 1.0)
                row["similar-class share"], row["uniform share"] = share, uniform
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- claim 4: information in the logits

@torch.no_grad()
def logit_information(run, n_images: int, views: int, seed: int = 0, device="cpu") -> float:
    """A stated proxy for the information the logits carry about the input (nats): each of the first
    `n_images` test images seen `views` times under the run's training augmentation (random crop,
    flip); per logit dimension d, with the logits Gaussian, I_d = 1/2 log(Var(z_d) / E_x Var(z_d | x)),
    the total variance over the within-image variance; summed over d. Larger: the logits tell the
    images apart more."""
    cfg = run.config
    ds = cfg.load_data()
    x = ds.x_eval[:n_images].repeat_interleave(views, 0)
    image = torch.arange(min(n_images, len(ds.y_eval))).repeat_interleave(views)
    loader = kd_data.Loader(x, image, ds.mean, ds.std, batch_size=512, train=True, device=device, seed=seed,
                            crop_pad=cfg.crop_pad, flip=cfg.flip, drop_last=False)
    model = run.model(device)
    z, idx = [], []
    for b in loader:
        z.append(model(b.x).double())
        idx.append(b.y)
    z, idx = torch.cat(z).cpu(), torch.cat(idx).cpu()
    order = torch.argsort(idx, stable=True)
    z = z[order].view(-1, views, z.shape[1])
    within = z.var(1, unbiased=True).mean(0)
    total = z.reshape(-1, z.shape[2]).var(0, unbiased=True)
    return float(0.5 * torch.log(total / within.clamp_min(1e-12)).sum())


def information_frame(networks: dict[str, list], n_images: int, views: int) -> pd.DataFrame:
    return pd.DataFrame([{"network": k, "seed": r.config.seed,
                          "information (nats)": logit_information(r, n_images, views)}
                         for k, runs in networks.items() for r in runs])


def paper_table(results: dict) -> pd.DataFrame:
    """The paper's Table 2: accuracy without and with label smoothing (data/paper_results.yaml)."""
    return pd.DataFrame([{"network (dataset)": k, "without LS": v[0], "with LS": v[1]}
                         for k, v in results["accuracy"].items()]).set_index("network (dataset)")
