"""Self-distillation with Batch Knowledge Ensembling (BAKE; Yixiao Ge et al., 2021;
github.com/yxgeee/BAKE): the trainings of notebooks/bake.ipynb and its analysis helpers.

Every training the notebook needs (params.yaml section `bake`, resolved for a profile), all
on one network (`model`) and one schedule, without a teacher:
- claim 1: CE (random batches), CE with BAKE's same-class sampler (`same_class` = M extra
  samples of each anchor's class; the control that keeps the sampler and drops the loss),
  label smoothing (`smoothing`, random batches) and BAKE (tau `temperature`, `omega`,
  `weight`, M);
- claim 2: BAKE for each omega of `omegas` (at M) and each M of `same_class_sweep` (at omega)
  on the first `sweep_seeds` seeds; the default's run is shared;
- the official sampler (`official_seeds` seeds): BAKE and the same-class CE whose epoch makes
  every image an anchor once (`every_anchor`), batches of `batch_size` images as above (the
  official train.py divides the batch size it is given by 1 + M to get the anchors per step):
  1 + M times the steps and images per epoch of the runs above, which keep plain CE's.
Claim 3 times training steps (`time_steps`); claim 4 looks inside one batch of the trained
BAKE model (`batch_view`), for every seed (`affinity_by_seed`). Comparisons pair runs by seed
(`by_seed`, `sweep_by_seed` in kd.report: {seed: value}).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kd import data as kd_data
from kd import losses
from kd.train import TrainConfig

# The keys of params.yaml's bake section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "temperature", "omega", "weight", "same_class", "smoothing", "omegas",
    "same_class_sweep", "sweep_seeds", "official_seeds", "cost_margin", "timing", "illustrate",
    "neighbours", "model", "train",
)

PAPER = "bake"


# ---------------------------------------------------------------- the design
def class_names(dataset: str, num_classes: int) -> list[str]:
    return list(kd_data.info(dataset).classes) or [str(i) for i in range(num_classes)]


def bake_args(sec: dict, omega: float | None = None, same_class: int | None = None) -> dict:
    """BAKE: CE + weight tau^2 KL(Q || softmax(z / tau)), Q propagated with omega over the batch."""
    return {"temperature": float(sec["temperature"]), "omega": float(sec["omega"] if omega is None else omega),
            "weight": float(sec["weight"]), "same_class": int(sec["same_class"] if same_class is None else same_class)}


def omega_label(w: float) -> str:
    return f"omega={float(w):g}"


def m_label(m: int) -> str:
    return f"M={int(m)}"


def _check_batch(P, sec: dict) -> None:
    batch = P.config(sec["model"], "ce", paper=PAPER).batch_size
    for m in {int(sec["same_class"]), *map(int, sec["same_class_sweep"])}:
        if batch % (1 + m):
            raise ValueError(f"bake: batch_size {batch} is not a multiple of 1 + M = {1 + m}; change "
                             "params.yaml bake.same_class_sweep or bake.train.batch_size")


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "main" (CE, CE same-class, label
    smoothing, BAKE), "omega" ('omega=w', at M = same_class), "M" ('M=m', at omega), "official"
    (CE, CE same-class and BAKE with the official sampler's epochs)."""
    _check_batch(P, sec)
    out: dict[str, dict[str, list[TrainConfig]]] = {"main": {}, "omega": {}, "M": {}, "official": {}}
    model, M = sec["model"], int(sec["same_class"])
    sweep_seeds = P.first_seeds(sec.get("sweep_seeds"))
    official_seeds = P.first_seeds(sec["official_seeds"]) if sec.get("official_seeds") else []

    def add(group, row, cfg):
        out[group].setdefault(row, []).append(cfg)

    for seed in P.seeds:
        ce = P.config(model, "ce", seed=seed, paper=PAPER)
        add("main", "CE", ce)
        add("main", "CE same-class", P.config(model, "ce", seed=seed, method_args={"same_class": M}, paper=PAPER))
        add("main", "label smoothing", P.config(model, "label_smoothing", seed=seed,
                                                method_args={"smoothing": float(sec["smoothing"])}, paper=PAPER))
        add("main", "BAKE", P.config(model, "bake", seed=seed, method_args=bake_args(sec), paper=PAPER))
        if seed in official_seeds:
            add("official", "CE", ce)
            add("official", "CE same-class, official epochs",
                P.config(model, "ce", seed=seed, method_args={"same_class": M, "every_anchor": True}, paper=PAPER))
            add("official", "BAKE, official epochs",
                P.config(model, "bake", seed=seed, method_args={**bake_args(sec), "every_anchor": True}, paper=PAPER))
        if seed not in sweep_seeds:
            continue
        for w in sec["omegas"]:
            add("omega", omega_label(w), P.config(model, "bake", seed=seed, method_args=bake_args(sec, omega=w),
                                                  paper=PAPER))
        for m in sec["same_class_sweep"]:
            add("M", m_label(m), P.config(model, "bake", seed=seed, method_args=bake_args(sec, same_class=m),
                                          paper=PAPER))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    """BAKE's teacher is the batch's own ensembled predictions: no params.yaml teacher."""
    return []


def paper_text(results: dict, network: str = "resnet18") -> str:
    v = results.get("top1_error", {}).get(network)
    return f"err {v:.2f} (CIFAR-100 {network})" if v is not None else "n/a"


# ---------------------------------------------------------------- cost (claim 3)
def time_steps(P, sec: dict, cfg: TrainConfig, steps: int, rounds: int) -> dict:
    """CE's and BAKE's full training step on the same model, batch size and same-class batches,
    interleaved round by round in this process (kd.timing.step_times); ratio = BAKE / CE."""
    from kd.timing import step_times

    M = int(sec["same_class"])
    return step_times({"CE": ("ce", {"same_class": M}), "BAKE": ("bake", bake_args(sec))}, cfg.model,
                      cfg.load_data(), batch_size=cfg.batch_size, steps=steps, rounds=rounds, device=P.device,
                      seed=cfg.seed)


# ---------------------------------------------------------------- illustration (claim 4)
@torch.no_grad()
def batch_view(run, sec: dict, device="cpu") -> dict:
    """One training batch as BAKE sees it, for the trained BAKE model `run` (eval mode, no
    augmentation, BAKE's same-class sampler with the run's M): images, labels, the model's own
    softened prediction P = softmax(z / tau), the affinity A (kd.losses.bake_affinity) and the
    propagated target Q (kd.losses.bake_targets)."""
    cfg = run.config
    ds = cfg.load_data()
    M = int(cfg.method_args.get("same_class", sec["same_class"]))
    loader = kd_data.Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=cfg.batch_size, train=True,
                            device=device, seed=cfg.seed, crop_pad=0, flip=False, same_class=M)
    batch = next(iter(loader))
    model = run.model(device)
    logits, feats = model(batch.x, return_features=True)
    T = float(cfg.method_args.get("temperature", sec["temperature"]))
    omega = float(cfg.method_args.get("omega", sec["omega"]))
    pooled = feats["pooled"].float()
    A = losses.bake_affinity(pooled)
    Q = losses.bake_targets(pooled, logits, T, omega)
    P = F.softmax(logits.float() / T, dim=1)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    images = (batch.x.cpu() * std + mean).clamp(0, 1)
    return {"images": images, "y": batch.y.cpu(), "index": batch.index.cpu(), "logits": logits.cpu(),
            "P": P.cpu(), "Q": Q.cpu(), "A": A.cpu(), "T": T, "omega": omega, "M": M,
            "classes": class_names(cfg.dataset, ds.num_classes)}


def pick_samples(view: dict, k: int = 4) -> list[int]:
    """k samples of different classes (while there are classes left) whose propagated target
    differs most from their own prediction (total variation distance between Q and P)."""
    tv = 0.5 * (view["Q"] - view["P"]).abs().sum(1)
    order = tv.argsort(descending=True).tolist()
    picked, seen = [], set()
    for i in order:
        if int(view["y"][i]) not in seen:
            picked.append(i)
            seen.add(int(view["y"][i]))
        if len(picked) == k:
            return picked
    return picked + [i for i in order if i not in picked][:k - len(picked)]


def same_class_weight(view: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of the batch: the affinity mass it puts on the other samples of its own class,
    and the share of its batch neighbours that are of its class (the mass uniform weights would
    give)."""
    y = view["y"]
    same = (y.view(-1, 1) == y.view(1, -1)).float()
    same.fill_diagonal_(0)
    mass = (view["A"] * same).sum(1)
    share = same.sum(1) / (len(y) - 1)
    return mass.numpy(), share.numpy()


def affinity_by_seed(runs, sec: dict, device="cpu") -> pd.DataFrame:
    """One row per BAKE run (seed): over one training batch (`batch_view`), the mean affinity
    mass on same-class samples and the mean share of same-class neighbours (what uniform
    weights would give). Claim 4 pairs the two by seed."""
    rows = []
    for r in runs:
        mass, share = same_class_weight(batch_view(r, sec, device))
        rows.append({"seed": int(r.config.seed), "same-class mass": float(mass.mean()),
                     "uniform share": float(share.mean()), "samples": len(mass)})
    return pd.DataFrame(rows)


def plot_batch_view(view: dict, samples: list[int], neighbours: int = 4):
    """One row per sample: the image (label, prediction), its own prediction P and the propagated
    target Q (bars over classes), and the `neighbours` batch samples with the largest affinity."""
    import matplotlib.pyplot as plt

    classes = view["classes"]
    C = len(classes)
    ncols = 2 + neighbours
    fig = plt.figure(figsize=(2.0 * ncols + 2.5, 2.2 * len(samples)))
    gs = fig.add_gridspec(len(samples), ncols, width_ratios=[1, 3.2] + [1] * neighbours)
    imgs = view["images"]

    def show(ax, i):
        img = imgs[i]
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])

    for r, i in enumerate(samples):
        y = int(view["y"][i])
        pred = int(view["logits"][i].argmax())
        ax = fig.add_subplot(gs[r, 0])
        show(ax, i)
        ax.set_title(f"label {classes[y]}\npred. {classes[pred]}", fontsize=8,
                     color="k" if pred == y else "#c0392b")
        ax = fig.add_subplot(gs[r, 1])
        x = np.arange(C)
        ax.bar(x - 0.2, view["P"][i].numpy(), 0.4, label=f"own P = softmax(z/{view['T']:g})", color="#8d99ae")
        ax.bar(x + 0.2, view["Q"][i].numpy(), 0.4, label=f"propagated Q (omega {view['omega']:g})", color="#e76f51")
        ax.axvline(y, color="k", lw=0.6, ls=":")
        ax.set_xticks(x, classes if C <= 20 else [""] * C, rotation=60, fontsize=6)
        ax.set_ylim(0, 1.25 * max(view["P"][i].max().item(), view["Q"][i].max().item()))
        ax.tick_params(axis="y", labelsize=7)
        if r == 0:
            ax.legend(fontsize=6, loc="best", framealpha=0.6)
        weights = view["A"][i]
        top = weights.argsort(descending=True)[:neighbours].tolist()
        for c, j in enumerate(top):
            ax = fig.add_subplot(gs[r, 2 + c])
            show(ax, j)
            yj = int(view["y"][j])
            ax.set_title(f"w {weights[j]:.3f} ({weights[j] * (len(weights) - 1):.2f}x unif.)\n{classes[yj]}",
                         fontsize=7,
                         color="#2a9d8f" if yj == y else "#c0392b")
    fig.suptitle(f"BAKE inside one batch of {len(view['y'])} (M = {view['M']}): own prediction, propagated "
                 "target, and the largest affinity weights w\n(x unif.: w times N - 1, the weight relative to "
                 "uniform; green: same class as the sample)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
