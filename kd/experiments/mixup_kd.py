"""Understanding the Role of Mixup in Knowledge Distillation: An Empirical Study (Choi, Jeon,
Shukla, Turaga; WACV 2023; github.com/hchoi71/MIX-KD): the trainings of
notebooks/mixup_kd.ipynb and its smoothness measures.

Every training the notebook needs (params.yaml section `mixup_kd`, resolved for a profile),
all of the student `student`:
- "teachers": the student alone (CE), and plain KD (0.1 CE + 0.9 T^2 KL, T = `temperature`)
  from each teacher of `teachers` (kind -> params.yaml teacher: trained with CE, with mixup,
  with label smoothing);
- "grid": KD from the `grid_teacher` teacher with {no mixup, full mixup, partial mixup
  (`unmixed_fraction` of each batch left unmixed)} x {fixed temperature T, per-sample std
  scaling of the logits}, mixup sampled as `sampler` says ("official": the MIX-KD code's
  sampling; "exact": exactly that fraction unmixed, one lambda per batch). The cell "no mixup,
  fixed T" is the KD run of "teachers" (the same loss: `mixup_kd` with mixup=False and
  std_scaling=False computes 0.1 CE + 0.9 T^2 KL), so it is not trained twice.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kd import data as kd_data
from kd import losses
from kd import methods as kd_methods
from kd.experiments import train_logits
from kd.metrics import ece as ece_metric
from kd.metrics import nll as nll_metric
from kd.metrics import sample_entropy
from kd.stats import MIN_SEEDS
from kd.train import TrainConfig

# The keys of params.yaml's mixup_kd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = (
    "margin", "mixup_alpha", "unmixed_fraction", "sampler", "temperature", "ce_weight", "kd_weight",
    "student", "teachers", "grid_teacher", "official_batch", "simulation_batches",
)

PAPER = "mixup_kd"
KINDS = {"ce": "CE", "mixup": "mixup", "label_smoothing": "label smoothing"}
MIXUPS = ("none", "full", "partial")
SCALINGS = ("fixed T", "std scaling")


# ---------------------------------------------------------------- the design
def kd_args(sec: dict) -> dict:
    """Plain KD (Hinton et al. 2015) as in RepDistiller / MIX-KD: 0.1 CE + 0.9 T^2 KL."""
    return {"temperature": float(sec["temperature"]), "ce_weight": float(sec["ce_weight"]),
            "kd_weight": float(sec["kd_weight"])}


def mixkd_args(sec: dict, mixup: str, scaling: str) -> dict:
    """`mixup_kd` hyperparameters of one grid cell; mixup in MIXUPS, scaling in SCALINGS."""
    if mixup not in MIXUPS or scaling not in SCALINGS:
        raise ValueError(f"mixup must be one of {MIXUPS} and scaling one of {SCALINGS}")
    args = {"mixup": mixup != "none", "mixup_alpha": float(sec["mixup_alpha"]),
            "unmixed_fraction": float(sec["unmixed_fraction"]) if mixup == "partial" else 0.0,
            "std_scaling": scaling == "std scaling", "temperature": float(sec["temperature"]),
            "ce_weight": float(sec["ce_weight"]), "kd_weight": float(sec["kd_weight"])}
    if mixup != "none":
        args["sampler"] = sec.get("sampler", "exact")
    return args


def teacher_row(kind: str) -> str:
    return f"KD from the {KINDS.get(kind, kind)} teacher"


def grid_row(mixup: str, scaling: str) -> str:
    return f"{mixup} mixup, {scaling}"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}; groups "teachers" ('CE (student alone)',
    'KD from the <kind> teacher') and "grid" ('<none|full|partial> mixup, <fixed T|std scaling>')."""
    student = sec["student"]
    out: dict[str, dict[str, list[TrainConfig]]] = {"teachers": {}, "grid": {}}
    out["teachers"]["CE (student alone)"] = [P.config(student, "ce", seed=s, paper=PAPER) for s in P.seeds]
    for kind, name in sec["teachers"].items():
        out["teachers"][teacher_row(kind)] = [
            P.config(student, "kd", seed=s, method_args=kd_args(sec), teacher=P.teacher_config(name, s), paper=PAPER)
            for s in P.seeds]
    grid_kind = sec["grid_teacher"]
    for mix in MIXUPS:
        for scaling in SCALINGS:
            if mix == "none" and scaling == "fixed T":
                out["grid"][grid_row(mix, scaling)] = out["teachers"][teacher_row(grid_kind)]
                continue
            out["grid"][grid_row(mix, scaling)] = [
                P.config(student, "mixup_kd", seed=s, method_args=mixkd_args(sec, mix, scaling),
                         teacher=P.teacher_config(sec["teachers"][grid_kind], s), paper=PAPER)
                for s in P.seeds]
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return list(dict.fromkeys(sec["teachers"].values()))


# ---------------------------------------------------------------- smoothness measures
def per_sample_smoothness(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample pieces of `smoothness`: the entropy of softmax(z) (T = 1), the spread
    (standard deviation) of the non-target logits and the gap between the target logit and
    the mean non-target logit."""
    z = logits.double()
    mask = F.one_hot(targets.long(), z.shape[1]).bool()
    target = z[mask]
    other = z[~mask].view(z.shape[0], -1)
    return {"entropy T=1": sample_entropy(z, 1.0), "spread": other.std(1), "gap": target - other.mean(1)}


def smoothness(logits: torch.Tensor, targets: torch.Tensor, temperatures=(1.0, 4.0)) -> dict:
    """Smoothness of a network's outputs, averaged over samples:
    - mean entropy of softmax(z / T) at each T (nats; the maximum is log C): higher = smoother;
    - the spread of the non-target logits: their standard deviation per sample. Label
      smoothing pulls the non-target logits of a sample together (Mueller et al. 2019: tight
      clusters erase the similarity between classes), so its spread is small;
    - that spread relative to the gap between the target logit and the mean non-target logit
      (scale-free: a network whose logits are all scaled up keeps the same value);
    - the mean confidence (largest softmax probability at T = 1) and the training accuracy."""
    z = logits.double()
    ps = per_sample_smoothness(z, targets)
    out = {f"entropy T={t:g}": sample_entropy(z, t).mean().item() for t in temperatures}
    out["non-target logit std"] = ps["spread"].mean().item()
    out["non-target std / target gap"] = (ps["spread"] / ps["gap"].abs().clamp_min(1e-6)).median().item()
    out["confidence"] = z.softmax(1).max(1).values.mean().item()
    out["train top-1"] = 100 * (z.argmax(1) == targets).double().mean().item()
    return out


def teacher_smoothness(P, sec: dict, teacher_runs: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The teachers' smoothness on the training split (what the student is distilled on),
    without augmentation, for every kind and teacher seed (`P.teacher_seeds()`: one seed when
    the profile shares one teacher per name across its seeds).

    Returns (summary, samples): one row per (teacher kind, teacher seed) with its test top-1
    and `smoothness`; and one row per (kind, teacher seed, training image) with the image's
    index and label, its entropy at T = 1 and log(non-target spread / |target gap|) (the log
    keeps the images whose gap is near 0 from dominating a mean)."""
    rows, samples = [], []
    for kind, name in sec["teachers"].items():
        for s in P.teacher_seeds():
            run = teacher_runs[(name, s)]
            logits, y = train_logits(run.model(), run.config.load_data())
            rows.append({"teacher": KINDS.get(kind, kind), "model": name, "seed": s,
                         "test top-1": run.summary["top1"], **smoothness(logits, y)})
            ps = per_sample_smoothness(logits, y)
            samples.append(pd.DataFrame({
                "teacher": KINDS.get(kind, kind), "seed": s, "image": np.arange(len(y)), "label": y.numpy(),
                "entropy T=1": ps["entropy T=1"].numpy(),
                "log spread / gap": (ps["spread"].clamp_min(1e-12).log()
                                     - ps["gap"].abs().clamp_min(1e-6).log()).numpy()}))
    return pd.DataFrame(rows), pd.concat(samples, ignore_index=True)


def teacher_pairs(samples: pd.DataFrame, col: str, a: str, b: str, min_seeds: int = MIN_SEEDS) -> tuple:
    """Two aligned sides for a paired comparison of teacher kinds `a` and `b` on `col` (from
    `teacher_smoothness`'s samples), and what a pair is.

    With at least `min_seeds` teacher seeds: the per-seed mean over images, {seed: value},
    paired by teacher seed. Otherwise (one teacher per kind, e.g. a profile with
    `teacher_seed`): one value per training image, paired per image (both teachers of a seed
    were trained on the same images; checked), n = images, not seeds."""
    sa = samples[samples["teacher"] == a].set_index(["seed", "image"]).sort_index()
    sb = samples[samples["teacher"] == b].set_index(["seed", "image"]).sort_index()
    if not sa.index.equals(sb.index) or not (sa["label"].to_numpy() == sb["label"].to_numpy()).all():
        raise ValueError(f"the {a} and {b} teachers were not measured on the same training images")
    seeds = sa.index.get_level_values("seed").unique()
    if len(seeds) >= min_seeds:
        return (sa.groupby(level="seed")[col].mean().to_dict(), sb.groupby(level="seed")[col].mean().to_dict(),
                f"paired by teacher seed, n = {len(seeds)} teacher seeds")
    return (sa[col].to_numpy(), sb[col].to_numpy(),
            f"one teacher per kind: paired per training image, n = {len(sa)} images, not seeds")


@torch.no_grad()
def target_entropy(cfg: TrainConfig, teacher: torch.nn.Module, epochs: int = 1) -> dict:
    """Smoothness of what the student of `cfg` is trained towards: the run's own training
    batches (same seed, augmentation and mixup draws as epoch 0 of training, replayed), the
    teacher's logits on them, and the entropy of the teacher's distribution after the run's
    temperature (fixed T, or each sample's logit standard deviation under std scaling). Also
    the mean effective temperature (T, or the mean logit std)."""
    method = kd_methods.create(cfg.method, **cfg.method_args)
    ds = cfg.load_data()
    loader = kd_data.Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=cfg.batch_size, train=True,
                            seed=cfg.seed, crop_pad=cfg.crop_pad, flip=cfg.flip, cutout=cfg.cutout)
    method.setup(loader.y, ds.num_classes, torch.device("cpu"), cfg.seed)
    teacher = teacher.eval()
    ents, temps = [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            x = batch.x
            if getattr(method, "mixup", False):
                x, _ = method.mix(batch)
            z = teacher(x).double()
            if getattr(method, "std_scaling", False):
                t = z.std(1, keepdim=True)
            else:
                t = torch.full((len(z), 1), float(method.temperature), dtype=z.dtype)
            ents.append(sample_entropy(z / t))
            temps.append(t.squeeze(1))
    return {"target entropy": torch.cat(ents).mean().item(), "effective T": torch.cat(temps).mean().item()}


def std_scaled_calibration(run) -> dict:
    """NLL and ECE of the run's test logits divided by their per-sample std, as the official
    MIX-KD code evaluates its std-scaled students (argmax, hence accuracy, is unchanged)."""
    logits, y = run.eval_logits()
    z = losses.std_scale(logits.float())
    return {"NLL (std-scaled logits)": nll_metric(z, y), "ECE (std-scaled logits)": 100 * ece_metric(z, y)}


# ---------------------------------------------------------------- partial mixup: what stays unmixed
def official_unmixed_fraction(batch_size: int, percent: float, batches: int = 10000, seed: int = 0) -> dict:
    """Simulates the official partial mixup (MIX-KD helper/loops_mixstd.py, `PMU`): each sample
    gets its own lambda ~ Beta(a, a); then `ridx = torch.randint(0, B, (int(B * percent),))`
    (indices drawn WITH replacement) are set to lambda = 1, i.e. left unmixed. Returns the
    simulated mean fraction of distinct indices set to 1, the closed form
    1 - (1 - 1/B)^int(B * percent), and the fraction also counting the mixed samples whose two
    random permutations happen to pick the same image (mixed with itself: unmixed in effect)."""
    g = torch.Generator().manual_seed(seed)
    n_draw = int(batch_size * percent)
    frac, eff = [], []
    for _ in range(batches):
        ridx = torch.randint(0, batch_size, (n_draw,), generator=g)
        unmixed = torch.zeros(batch_size, dtype=torch.bool)
        unmixed[ridx] = True
        rp1 = torch.randperm(batch_size, generator=g)
        rp2 = torch.randperm(batch_size, generator=g)
        frac.append(unmixed.float().mean().item())
        eff.append((unmixed | (rp1 == rp2)).float().mean().item())
    return {"batch size": batch_size, "requested unmixed": percent,
            "official: unmixed (simulated)": float(np.mean(frac)),
            "official: closed form": 1 - (1 - 1 / batch_size) ** n_draw,
            "official: unmixed incl. self-pairs": float(np.mean(eff))}


def our_unmixed_fraction(batch_size: int, unmixed_fraction: float, sampler: str = "exact", batches: int = 1000,
                         seed: int = 0) -> float:
    """The fraction of samples our training's mixup leaves unmixed (lambda = 1 or perm(i) = i),
    measured on kd.losses.mixup ("exact") or kd.losses.mixup_official ("official")."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(batch_size, 1)
    y = torch.zeros(batch_size, 2)
    mix = losses.mixup_official if sampler == "official" else losses.mixup
    out = []
    for _ in range(batches):
        _, _, lam, perm = mix(x, y, 1.0, unmixed_fraction, generator=g)
        unmixed = (perm == torch.arange(batch_size)) | (torch.as_tensor(lam) == 1)
        out.append(unmixed.float().mean().item())
    return float(np.mean(out))


def same_loss_check(sec: dict, teacher: torch.nn.Module, cfg: TrainConfig, seed: int = 0) -> float:
    """|KD loss - mixup_kd(mixup=False, std_scaling=False) loss| on one training batch: the
    two methods compute the same objective, so the grid reuses the KD run for that cell."""
    ds = cfg.load_data()
    loader = kd_data.Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=cfg.batch_size, train=True,
                            seed=seed, crop_pad=cfg.crop_pad, flip=cfg.flip)
    batch = next(iter(loader))
    torch.manual_seed(seed)
    from kd import models as kd_models

    student = kd_models.create(cfg.model, ds.num_classes, in_channels=ds.in_channels).eval()
    a = kd_methods.create("kd", **kd_args(sec))
    b = kd_methods.create("mixup_kd", **mixkd_args(sec, "none", "fixed T"))
    for m in (a, b):
        m.setup(loader.y, ds.num_classes, torch.device("cpu"), seed)
    with torch.no_grad():
        la = sum(a.forward_train(student, teacher.eval(), batch)[1].values())
        lb = sum(b.forward_train(student, teacher.eval(), batch)[1].values())
    return abs(la.item() - lb.item())


def student_entropy(run) -> float:
    """Mean entropy (nats) of the student's own test softmax at T = 1."""
    logits, _ = run.eval_logits()
    return sample_entropy(logits).mean().item()
