"""Similarity-Preserving Knowledge Distillation (SP; Tung & Mori, ICCV 2019, arXiv 1907.09682): the
trainings of notebooks/sp.ipynb and its analysis helpers. The paper's facts: docs/papers.md, SP.

Every training the notebook needs (params.yaml section `sp`, resolved for a profile):
- main, on the pair `pair`, every seed: the student alone (CE), KD (0.1 CE + 0.9 T^2 KL, the
  testbed's positive-control recipe, so on quick and cpu these two are the testbed's runs), SP
  (CE + gamma L_SP on the last stage's maps) and SP + KD (SP's gamma term plus KD's 0.1 CE + 0.9 KD);
- batch, on the first `batch_seeds` seeds: CE and SP at each batch size of `batch_sizes`, at the
  profile's learning rate and epochs (so the number of steps changes with the batch size); the
  profile's own batch size is the main rows' runs.
Identical configurations are one run (the cache is keyed by the configuration's hash).

The analysis measures L_SP between a trained student and its teacher on the evaluation split (no
training): the last stage's maps of both, in order, cut into consecutive batches of B images,
and `kd.losses.sp_loss` averaged over the batches.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kd import data as kd_data
from kd import losses
from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's sp section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "gamma", "kd", "pair", "batch_sizes", "batch_seeds", "measure_batches", "similarity_batch",
)

METHODS = ("CE", "KD", "SP", "SP + KD")


# ---------------------------------------------------------------- the design

def kd_args(sec: dict) -> dict:
    """The KD baseline: ce_weight CE + kd_weight T^2 KL (0.1 / 0.9, T 4: RepDistiller's -r 0.1 -a 0.9)."""
    return {k: float(v) for k, v in sec["kd"].items()}


def sp_args(sec: dict) -> dict:
    """SP alone: CE + gamma L_SP (RepDistiller's -r 1 -a 0 -b 3000)."""
    return {"gamma": float(sec["gamma"])}


def sp_kd_args(sec: dict) -> dict:
    """SP + KD: the KD baseline's 0.1 CE + 0.9 T^2 KL plus SP's gamma L_SP."""
    k = kd_args(sec)
    return {"gamma": float(sec["gamma"]), "ce_weight": k["ce_weight"], "kd_weight": k["kd_weight"],
            "temperature": k["temperature"]}


def configs_for(P, sec: dict, seed: int, **train) -> dict[str, TrainConfig]:
    """The four students of the pair for one seed: CE, KD, SP, SP + KD."""
    pair = sec["pair"]
    t = P.teacher_config(pair["teacher"], seed)
    s = pair["student"]
    return {"CE": P.config(s, "ce", seed=seed, paper="sp", **train),
            "KD": P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=t, paper="sp", **train),
            "SP": P.config(s, "sp", seed=seed, method_args=sp_args(sec), teacher=t, paper="sp", **train),
            "SP + KD": P.config(s, "sp", seed=seed, method_args=sp_kd_args(sec), teacher=t, paper="sp", **train)}


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "main" (rows CE, KD, SP, SP + KD on
    every seed) and "batch" (rows 'B=<b> CE' and 'B=<b> SP' on the first `batch_seeds` seeds)."""
    out: dict[str, dict[str, list[TrainConfig]]] = {"main": {m: [] for m in METHODS}, "batch": {}}
    batch_seeds = P.first_seeds(sec.get("batch_seeds"))
    for seed in P.seeds:
        for m, c in configs_for(P, sec, seed).items():
            out["main"][m].append(c)
    for b in sec["batch_sizes"]:
        for seed in batch_seeds:
            cfgs = configs_for(P, sec, seed, batch_size=int(b))
            for m in ("CE", "SP"):
                out["batch"].setdefault(f"B={int(b)} {m}", []).append(cfgs[m])
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["pair"]["teacher"]]


# ---------------------------------------------------------------- analysis

@torch.no_grad()
def last_maps(model: torch.nn.Module, ds: kd_data.Dataset, device="cpu", n: int | None = None,
              batch_size: int = 256) -> torch.Tensor:
    """The last stage's maps (before pooling: the maps SP distils) of `model` on the evaluation
    split (its first `n` images), in order, eval mode, flattened to [N, C*H*W] float32 on `device`."""
    x, y = ds.x_eval[:n], ds.y_eval[:n]
    loader = kd_data.Loader(x, y, ds.mean, ds.std, batch_size=batch_size, train=False, device=device)
    model = model.to(device).eval()
    out = []
    for batch in loader:
        _, feats = model(batch.x, return_features=True)
        out.append(feats["maps"][-1].float().flatten(1))
    return torch.cat(out)


@torch.no_grad()
def sp_by_batch(student_maps: torch.Tensor, teacher_maps: torch.Tensor, sizes) -> dict[int, float]:
    """{B: mean of kd.losses.sp_loss over the consecutive batches of B images} (a last incomplete
    batch is dropped, so every value is at batch size exactly B; a B larger than the images is left out)."""
    out = {}
    for b in sizes:
        b = int(b)
        n = len(student_maps) // b
        if n == 0:
            continue
        vals = [losses.sp_loss(student_maps[i * b:(i + 1) * b], teacher_maps[i * b:(i + 1) * b]).item()
                for i in range(n)]
        out[b] = float(np.mean(vals))
    return out


def similarity_frame(P, sec: dict, main: dict[str, list]) -> pd.DataFrame:
    """One row per (method, seed, B): mean L_SP(student, teacher) on the evaluation split in
    batches of B, for every student of the main rows and every B of `measure_batches` and
    `similarity_batch`. The data and the teacher's maps are computed once per teacher and data
    subset (one for every seed on a profile with `teacher_seed` and `data_seed`)."""
    sizes = sorted({int(b) for b in sec["measure_batches"]} | {int(sec["similarity_batch"])})
    pair = sec["pair"]
    shared: dict[tuple, tuple] = {}  # (teacher run, data seed) -> (dataset, teacher's maps)
    rows = []
    for method, runs in main.items():
        for run in runs:
            cfg = run.config
            teacher = P.teacher(pair["teacher"], cfg.seed)
            key = (teacher.path, cfg.subset_seed)
            if key not in shared:
                ds = cfg.load_data()
                shared[key] = ds, last_maps(teacher.model(), ds, P.device)
            ds, teacher_maps = shared[key]
            s_maps = last_maps(run.model(), ds, P.device)
            for b, v in sp_by_batch(s_maps, teacher_maps, sizes).items():
                rows.append({"method": method, "seed": cfg.seed, "B": b, "L_SP": v})
    return pd.DataFrame(rows)


def example_similarities(P, sec: dict, main: dict[str, list], n: int, methods=("CE", "KD", "SP")) -> dict:
    """G~ (kd.losses.batch_similarity) of the first batch of `n` evaluation images, for the
    teacher and the first seed's student of each method, rows and columns reordered by class:
    {"labels": [n], "teacher": [n, n], <method>: [n, n]} (numpy)."""
    run0 = main[methods[0]][0]
    ds = run0.config.load_data()
    order = torch.argsort(ds.y_eval[:n], stable=True).to(P.device)
    teacher = P.teacher(sec["pair"]["teacher"], run0.config.seed)

    def sim(model):
        return losses.batch_similarity(last_maps(model, ds, P.device, n=n))[order][:, order].cpu().numpy()

    return {"labels": ds.y_eval[:n][order.cpu()].numpy(), "teacher": sim(teacher.model()),
            **{m: sim(main[m][0].model()) for m in methods}}


def batch_frame(batch: dict[str, list]) -> pd.DataFrame:
    """One row per run of the batch sweep: B, method, seed, top-1, optimisation steps, and the
    last epoch's mean training terms (the SP run's gamma L_SP, `train_sp`, and CE, `train_ce`)."""
    rows = []
    for name, runs in batch.items():
        b, method = name.split(" ", 1)
        for r in runs:
            s, h = r.summary, r.history
            last = h.iloc[-1]
            n_train = r.config.train_subset or len(r.config.load_data().y_train)
            rows.append({"B": int(b.split("=")[1]), "method": method, "seed": r.config.seed, "top1": s["top1"],
                         "steps": (n_train // r.config.batch_size) * r.config.epochs,
                         "train_ce": float(last.get("train_ce", np.nan)),
                         "train_sp": float(last["train_sp"]) if "train_sp" in h else np.nan})
    return pd.DataFrame(rows)


def gain_frame(bf: pd.DataFrame) -> pd.DataFrame:
    """SP - CE top-1 per (B, seed), paired by seed."""
    wide = bf.pivot_table(index=["B", "seed"], columns="method", values="top1").reset_index()
    wide["gain"] = wide["SP"] - wide["CE"]
    return wide


def paper_table(results: dict) -> pd.DataFrame:
    """RepDistiller's CIFAR-100 student-alone, KD and SP numbers (data/paper_results.yaml `sp.pairs`)."""
    rows = [{"pair (CIFAR-100)": k, "student alone": v[0], "KD": v[1], "SP": v[2],
             "SP - student": round(v[2] - v[0], 2), "SP - KD": round(v[2] - v[1], 2)}
            for k, v in results["pairs"].items()]
    return pd.DataFrame(rows).set_index("pair (CIFAR-100)")


PAPER_COLUMNS = {"CE": 0, "KD": 1, "SP": 2}


def paper_text(results: dict, pair: str, method: str | None = None) -> str:
    """One method's RepDistiller number for a pair ('CE' = the student alone), or 'student a / KD b /
    SP c (pair)' without a method; '–' where RepDistiller has no such pair or method."""
    v = results.get("pairs", {}).get(pair)
    if not v or (method is not None and method not in PAPER_COLUMNS):
        return "–"
    if method is not None:
        return f"{v[PAPER_COLUMNS[method]]:.2f} ({pair})"
    return f"student {v[0]:.2f} / KD {v[1]:.2f} / SP {v[2]:.2f} ({pair})"


def sp_below_kd(results: dict) -> tuple[int, int]:
    """(pairs where RepDistiller's SP is below its KD, pairs)."""
    v = list(results["pairs"].values())
    return sum(sp < kd for _, kd, sp in v), len(v)


def sp_above_student(results: dict) -> tuple[int, int]:
    """(pairs where RepDistiller's SP is above its student trained alone, pairs)."""
    v = list(results["pairs"].values())
    return sum(sp > ce for ce, _, sp in v), len(v)
