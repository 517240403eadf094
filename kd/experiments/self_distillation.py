"""Self-distillation: Born-Again Networks (Furlanello et al., ICML 2018) and "Revisiting
Self-Distillation" (Pham et al., 2022, arXiv 2206.08491).

The trainings of notebooks/self_distillation.ipynb, per architecture (params.yaml
`self_distillation.models`):

- claim 1: generation 0 trained with cross-entropy, then generations 1..G, each a student of
  the same architecture distilled (method `self_distillation`) from the previous generation;
  the ensemble of the generations averages their softmax outputs;
- claim 2: a "highly accurate" teacher, trained `long_teacher_factor` times longer with CE,
  and its same-architecture student (trained for the normal number of epochs);
- claim 3: the flatness of each generation's minimum (`top_hessian_eigenvalue`,
  `perturbation_loss_increase`) on a fixed subset of the training set (`flatness_subset`);
- claim 4 (controls, `control_models`): label smoothing, and CE trained for as many epochs as
  the whole chain of generations (G + 1 times the normal number).

Flatness is measured on the training loss without its distillation term: the cross-entropy
on the labels, the model in eval mode (BatchNorm uses its running statistics, so the loss is
a deterministic function of the weights), the same images for every generation.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F

from kd.train import TrainConfig

# The keys of params.yaml's self_distillation section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "generations", "temperature", "ce_weight", "kd_weight", "models", "model_train",
    "long_teacher_factor", "control_models", "label_smoothing", "hessian_samples",
    "power_iterations", "power_tolerance", "perturbation_norms", "perturbation_draws",
)


# ----------------------------------------------------------------------------- configurations
def model_train(sec: dict, model: str) -> dict:
    """The section's training overrides for `model` (plain CNNs train at lr 0.01)."""
    return dict((sec.get("model_train") or {}).get(model) or {})


def method_args(sec: dict) -> dict:
    return {"temperature": float(sec["temperature"]), "ce_weight": float(sec["ce_weight"]),
            "kd_weight": float(sec["kd_weight"])}


def generation_configs(P, sec: dict, model: str, seed: int) -> list[TrainConfig]:
    """[generation 0 (CE), generation 1, ..., generation G]; generation k's teacher is
    generation k - 1's configuration (Born-Again Networks, Sec. 3)."""
    train = model_train(sec, model)
    cfgs = [P.config(model, "ce", seed=seed, paper="self_distillation", **train)]
    for _ in range(int(sec["generations"])):
        cfgs.append(P.config(model, "self_distillation", seed=seed, method_args=method_args(sec),
                             teacher=cfgs[-1], paper="self_distillation", **train))
    return cfgs


def long_teacher_config(P, sec: dict, model: str, seed: int) -> TrainConfig:
    """The "highly accurate" teacher of claim 2: CE for `long_teacher_factor` times the epochs."""
    base = P.config(model, "ce", seed=seed, paper="self_distillation", **model_train(sec, model))
    return base.replace(epochs=int(round(base.epochs * float(sec["long_teacher_factor"]))))


def long_student_config(P, sec: dict, model: str, seed: int) -> TrainConfig:
    """The same-architecture student of the long-trained teacher (normal number of epochs)."""
    return P.config(model, "self_distillation", seed=seed, method_args=method_args(sec),
                    teacher=long_teacher_config(P, sec, model, seed), paper="self_distillation",
                    **model_train(sec, model))


def control_configs(P, sec: dict, model: str, seed: int) -> dict[str, TrainConfig]:
    """Claim 4: label smoothing (normal epochs) and CE for (G + 1) x the epochs, the total
    number of epochs that generations 0..G train for together."""
    train = model_train(sec, model)
    base = P.config(model, "ce", seed=seed, paper="self_distillation", **train)
    return {"label_smoothing": P.config(model, "label_smoothing", seed=seed, paper="self_distillation",
                                        method_args={"smoothing": float(sec["label_smoothing"])}, **train),
            "ce_long": base.replace(epochs=base.epochs * (int(sec["generations"]) + 1))}


def plan(P, sec: dict) -> dict:
    """{model: {"generations": [[cfg per generation] per seed], "long_teacher": [cfg per seed],
    "long_student": [...], and for control models "label_smoothing": [...], "ce_long": [...]}}."""
    out = {}
    controls = set(sec.get("control_models") or [])
    for model in sec["models"]:
        e = {"generations": [generation_configs(P, sec, model, s) for s in P.seeds],
             "long_teacher": [long_teacher_config(P, sec, model, s) for s in P.seeds],
             "long_student": [long_student_config(P, sec, model, s) for s in P.seeds]}
        if model in controls:
            for key in ("label_smoothing", "ce_long"):
                e[key] = [control_configs(P, sec, model, s)[key] for s in P.seeds]
        out[model] = e
    return out


def teacher_names(P, sec: dict) -> list[str]:
    """Self-distillation trains its own teachers: no params.yaml teacher is needed."""
    return []


# ----------------------------------------------------------------------------- ensembles
def ensemble_top1(logits_list: list[torch.Tensor], targets: torch.Tensor) -> float:
    """Top-1 (%) of the average softmax of several models' logits (BAN's ensemble, Sec. 4)."""
    probs = torch.stack([l.float().softmax(1) for l in logits_list]).mean(0)
    return 100.0 * (probs.argmax(1) == targets).float().mean().item()


# ----------------------------------------------------------------------------- flatness
def flatness_subset(cfg: TrainConfig, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed subset of `n` training images of the run's data (normalised, not augmented)
    and their labels; the same images for every model trained on that data."""
    ds = cfg.load_data()
    idx = torch.randperm(len(ds.y_train), generator=torch.Generator().manual_seed(seed))[:n]
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    x = (ds.x_train[idx].float() / 255.0 - mean) / std
    return x, ds.y_train[idx]


def _params(params) -> list[torch.Tensor]:
    return [p for p in params if p.requires_grad]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def hessian_vector_product(loss: torch.Tensor, params: list[torch.Tensor], v: list[torch.Tensor],
                           grads: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """H v for the Hessian H of `loss` w.r.t. `params`, by differentiating twice (Pearlmutter
    1994): g = d loss / d w with create_graph=True, then H v = d (g . v) / d w. Pass `grads`
    (computed once with create_graph=True) to reuse the first derivative across products."""
    if grads is None:
        grads = torch.autograd.grad(loss, params, create_graph=True)
    return list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))


def top_hessian_eigenvalue(loss_fn, params, iterations: int = 20, tolerance: float = 1e-3,
                           seed: int = 0) -> dict:
    """The eigenvalue of largest magnitude of the Hessian of `loss_fn()` w.r.t. `params`, by
    power iteration with Hessian-vector products (as in PyHessian, Yao et al. 2020).

    v_0 is a seeded Gaussian unit vector; v_{k+1} = H v_k / ||H v_k|| and the estimate is the
    Rayleigh quotient v_k . H v_k; the iteration stops when it changes by less than
    `tolerance` (relative) or after `iterations` products. At a trained network's minimum the
    top eigenvalue is positive and larger in magnitude than the negative ones, and a larger
    value means a sharper minimum along its sharpest direction.
    Returns {"eigenvalue", "iterations", "history"}.
    """
    params = _params(params)
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    norm = torch.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    history, eig = [], math.nan
    for _ in range(int(iterations)):
        hv = hessian_vector_product(loss, params, v, grads)
        new = _dot(v, hv).item()
        history.append(new)
        norm = torch.sqrt(_dot(hv, hv))
        if norm.item() == 0:
            eig = 0.0
            break
        v = [x.detach() / norm for x in hv]
        converged = not math.isnan(eig) and abs(new - eig) <= tolerance * max(abs(eig), 1e-12)
        eig = new
        if converged:
            break
    return {"eigenvalue": eig, "iterations": len(history), "history": history}


def perturbation_loss_increase(loss_fn, params, norms, draws: int = 5, seed: int = 0) -> dict:
    """Loss increase under random weight perturbations of given relative norm.

    For each relative norm r and each of `draws` draws, every parameter tensor W gets
    W + r ||W|| u / ||u|| with u a Gaussian tensor of W's shape (a random direction, scaled
    per tensor so that layers with small weights, e.g. BatchNorm, are perturbed in proportion),
    and the increase loss_fn(perturbed) - loss_fn(original) is recorded; the weights are
    restored afterwards. A flatter minimum loses less. Returns {r: [increase per draw]}.
    """
    params = _params(params)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        base = float(loss_fn())
        saved = [p.detach().clone() for p in params]
        out = {}
        try:
            for r in norms:
                inc = []
                for _ in range(int(draws)):
                    for p, w in zip(params, saved):
                        u = torch.randn(w.shape, generator=gen).to(w)
                        p.copy_(w + float(r) * w.norm() * u / u.norm().clamp_min(1e-12))
                    inc.append(float(loss_fn()) - base)
                out[float(r)] = inc
        finally:
            for p, w in zip(params, saved):
                p.copy_(w)
    return out


def ce_loss_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024):
    """A closure: the mean cross-entropy of `model` (eval mode) on (x, y), in chunks."""
    model.eval()

    def loss():
        total = 0.0
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            total = total + F.cross_entropy(model(xb), yb, reduction="sum")
        return total / len(y)

    return loss


def flatness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norms, *, iterations: int = 20,
             tolerance: float = 1e-3, draws: int = 5, seed: int = 0) -> dict:
    """Both sharpness measures of a trained model on (x, y): {"loss", "top_eigenvalue",
    "power_iterations", "perturbation": {r: [loss increase per draw]}}."""
    model = model.float().eval()
    params = list(model.parameters())
    fn = ce_loss_fn(model, x, y)
    with torch.no_grad():
        loss = float(fn())
    top = top_hessian_eigenvalue(fn, params, iterations, tolerance, seed)
    pert = perturbation_loss_increase(fn, params, norms, draws, seed)
    return {"loss": loss, "top_eigenvalue": top["eigenvalue"], "power_iterations": top["iterations"],
            "perturbation": pert}


# ----------------------------------------------------------------------------- running and analysis
def flatness_settings(sec: dict) -> dict:
    return {"samples": int(sec["hessian_samples"]), "iterations": int(sec["power_iterations"]),
            "tolerance": float(sec["power_tolerance"]), "norms": [float(r) for r in sec["perturbation_norms"]],
            "draws": int(sec["perturbation_draws"]), "loss": "ce, eval mode"}


def run_flatness(run, sec: dict, device="cpu") -> dict:
    """`flatness` of a finished run's model on its fixed training subset (`flatness_subset`),
    with the section's settings; cached in the run folder as flatness-<settings hash>.json, so
    that a notebook re-run does not repeat the Hessian-vector products."""
    import hashlib
    import json

    from kd.io import atomic_write_text

    st = flatness_settings(sec)
    key = hashlib.sha256(json.dumps(st, sort_keys=True).encode()).hexdigest()[:10]
    path = run.path / f"flatness-{key}.json"
    if path.exists():
        out = json.loads(path.read_text())
        out["perturbation"] = {float(k): v for k, v in out["perturbation"].items()}
        return out
    x, y = flatness_subset(run.config, st["samples"])
    model = run.model(device)
    out = flatness(model, x.to(device), y.to(device), st["norms"], iterations=st["iterations"],
                   tolerance=st["tolerance"], draws=st["draws"])
    out["settings"] = st
    atomic_write_text(path, json.dumps({**out, "perturbation": {str(k): v for k, v in out["perturbation"].items()}},
                                       indent=2))
    return out


def ensemble_frame(R: dict, generations: int) -> pd.DataFrame:
    """One row per (model, seed, k): the top-1 of the ensemble of generations 0..k (mean of their
    softmax outputs) beside the best single generation among them; R is `run_plan`'s result."""
    rows = []
    for model, e in R.items():
        for seed_runs in e["generations"]:
            logits = [r.eval_logits() for r in seed_runs]
            targets = logits[0][1]
            for k in range(1, generations + 1):
                rows.append({"model": model, "seed": seed_runs[0].config.seed, "generations": f"0..{k}", "k": k,
                             "ensemble top-1": ensemble_top1([lg for lg, _ in logits[:k + 1]], targets),
                             "best single top-1": max(r.summary["top1"] for r in seed_runs[:k + 1])})
    return pd.DataFrame(rows)


def flatness_frames(R: dict, sec: dict, device="cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """`run_flatness` of every generation and control run of R: (one row per run: train CE loss,
    top Hessian eigenvalue, power iterations, test top-1; one row per (run, norm r, draw): the
    training-loss increase under a random perturbation of relative norm r)."""
    flat_rows, pert_rows = [], []

    def measure(model, label, k, run):
        f = run_flatness(run, sec, device=device)
        key = {"model": model, "run": label, "generation": k, "seed": run.config.seed}
        flat_rows.append({**key, "train CE loss": f["loss"], "top eigenvalue": f["top_eigenvalue"],
                          "power iterations": f["power_iterations"], "test top-1": run.summary["top1"]})
        pert_rows.extend({**key, "r": r, "increase": v} for r, inc in f["perturbation"].items() for v in inc)

    for model, e in R.items():
        for seed_runs in e["generations"]:
            for k, run in enumerate(seed_runs):
                measure(model, f"gen {k}", k, run)
        for key in ("label_smoothing", "ce_long"):
            for run in e.get(key, []):
                measure(model, "label smoothing" if key == "label_smoothing" else f"CE {run.config.epochs} epochs",
                        None, run)
    return pd.DataFrame(flat_rows), pd.DataFrame(pert_rows)
