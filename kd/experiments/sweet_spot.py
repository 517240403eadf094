"""The teacher's sweet spot: Controlling the Quality of Distillation in Response-Based Network
Compression (Vats & Crandall, arXiv 2112.10047), with Cho & Hariharan (ICCV 2019) and Wang et al.
(NeurIPS 2022) on early-stopped and intermediate teachers: the trainings of notebooks/sweet_spot.ipynb
and its analysis helpers. The papers' facts: docs/papers.md, The teacher's sweet spot.

Every training the notebook needs (params.yaml section `sweet_spot`, resolved for a profile):
- teachers, one per teacher seed, all of the pair's teacher architecture: trained on the grid
  `batch_sizes` x `teacher_epochs` (each a whole schedule; the profile's teacher recipe is one point
  of it, the teachers stage's run), and the profile's teacher stopped at each epoch of `checkpoints`
  (the same run to that epoch: `stop_epoch`);
- main, every seed, on the pair's student: alone (CE), KD (the testbed's recipe) from every teacher,
  and label smoothing at each alpha of `ls_alphas` (claim 3's entropy-matched control).
Identical configurations are one run (the cache is keyed by the configuration's hash).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kd import data as kd_data
from kd import metrics as kd_metrics
from kd.experiments import pair_label as label, train_logits  # noqa: F401  (E.label in the notebook)
from kd.stats import ALPHA
from kd.train import TrainConfig

# The keys of params.yaml's sweet_spot section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "pair", "kd", "batch_sizes", "teacher_epochs", "checkpoints", "early_epoch", "ls_alphas",
                "similarity_bound")


def kd_args(sec: dict) -> dict:
    return {k: float(v) for k, v in sec["kd"].items()}


def teacher_label(cfg: TrainConfig) -> str:
    """"batch 64, 60 epochs", or for a checkpoint "batch 64, epoch 30 of 60"."""
    if cfg.stop_epoch is not None:
        return f"batch {cfg.batch_size}, epoch {cfg.stop_epoch} of {cfg.epochs}"
    return f"batch {cfg.batch_size}, {cfg.epochs} epochs"


def teachers(P, sec: dict, seed: int) -> dict[str, TrainConfig]:
    """{label: config} of the teachers for `seed`: the profile's teacher at each checkpoint, then the
    grid of batch sizes x epochs (the profile's teacher among them), each label once."""
    base = P.teacher_config(sec["pair"]["teacher"], seed)
    batch_sizes, epochs = [int(b) for b in sec["batch_sizes"]], [int(e) for e in sec["teacher_epochs"]]
    checkpoints = [int(e) for e in sec["checkpoints"]]
    if base.batch_size not in batch_sizes or base.epochs not in epochs:
        raise ValueError(f"sweet_spot: the profile's teacher recipe (batch {base.batch_size}, {base.epochs} epochs) "
                         f"must be a point of the grid batch_sizes {batch_sizes} x teacher_epochs {epochs}")
    if not all(1 <= e < base.epochs for e in checkpoints):
        raise ValueError(f"sweet_spot.checkpoints {checkpoints} must lie in [1, {base.epochs}), the teacher's epochs")
    if int(sec["early_epoch"]) not in checkpoints:
        raise ValueError(f"sweet_spot.early_epoch {sec['early_epoch']} must be one of sweet_spot.checkpoints "
                         f"{checkpoints}")
    out = [base.replace(stop_epoch=e) for e in sorted(checkpoints)]
    out += [base.replace(batch_size=b, epochs=e) for b in batch_sizes for e in epochs]
    return {teacher_label(c): c for c in out}


def converged_label(P, sec: dict) -> str:
    """The label of the profile's teacher recipe (the teachers stage's run)."""
    return teacher_label(P.teacher_config(sec["pair"]["teacher"], P.seeds[0]))


def early_label(P, sec: dict) -> str:
    base = P.teacher_config(sec["pair"]["teacher"], P.seeds[0])
    return teacher_label(base.replace(stop_epoch=int(sec["early_epoch"])))


def ls_label(alpha: float) -> str:
    return f"LS, alpha {float(alpha):g}"


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"teachers": {label: [TrainConfig per seed]}, "main": {"CE", "KD, <teacher label>" per teacher,
    "LS, alpha <a>" per alpha: [TrainConfig per seed]}}."""
    s = sec["pair"]["student"]
    out: dict[str, dict[str, list[TrainConfig]]] = {"teachers": {}, "main": {}}
    for seed in P.seeds:
        out["main"].setdefault("CE", []).append(P.config(s, "ce", seed=seed, paper="sweet_spot"))
        for name, t in teachers(P, sec, seed).items():
            out["teachers"].setdefault(name, []).append(t)
            out["main"].setdefault(f"KD, {name}", []).append(
                P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=t, paper="sweet_spot"))
        for a in sec["ls_alphas"]:
            out["main"].setdefault(ls_label(a), []).append(
                P.config(s, "label_smoothing", seed=seed, method_args={"smoothing": float(a)}, paper="sweet_spot"))
    return out


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["pair"]["teacher"]]


# ---------------------------------------------------------------- analysis
def teacher_frame(runs: dict[str, list], temperature: float) -> pd.DataFrame:
    """One row per teacher (its first run: one teacher serves every seed on a profile with
    teacher_seed): batch size, epochs trained and scheduled, test top-1 (last epoch), and what its
    soft labels at the KD temperature carry on the training images the student learns from: their
    entropy, and the share of their non-target probability on classes similar to the target
    (kd.metrics.similarity_mass with kd.data.class_similarity) beside the uniform share."""
    rows = []
    for name, rs in runs.items():
        r = rs[0]
        logits, y = train_logits(r.model(), r.config.load_data())
        sim = kd_data.class_similarity(r.config.dataset)
        share, uniform = (kd_metrics.similarity_mass(logits, y, sim, temperature) if sim is not None
                          else (np.nan, np.nan))
        rows.append({"teacher": name, "batch": r.config.batch_size,
                     "epochs trained": r.config.stop_epoch or r.config.epochs,
                     "schedule (epochs)": r.config.epochs, "top-1": r.summary["top1"],
                     "train top-1": 100 * (logits.argmax(1) == y).float().mean().item(),
                     f"entropy at T={temperature:g}": kd_metrics.entropy(logits, temperature),
                     "similar-class share": share, "uniform share": uniform})
    return pd.DataFrame(rows)


def ls_entropy(alpha: float, classes: int) -> float:
    """The entropy (nats) of the label-smoothing target (1 - alpha) onehot + alpha / C."""
    top, rest = 1 - alpha + alpha / classes, alpha / classes
    return -(top * math.log(top) + (classes - 1) * (rest * math.log(rest) if rest > 0 else 0.0))


def matched_alpha(target_entropy: float, alphas, classes: int) -> tuple[float, dict[float, float]]:
    """The alpha of `alphas` whose label-smoothing target's entropy is closest to `target_entropy` (the
    teacher's soft labels', from the teacher's outputs only, never the students' accuracies), and each
    alpha's entropy."""
    entropies = {float(a): ls_entropy(float(a), classes) for a in alphas}
    return min(entropies, key=lambda a: abs(entropies[a] - target_entropy)), entropies


def student_points(main: dict[str, list], tf: pd.DataFrame) -> pd.DataFrame:
    """One row per KD student: its seed, top-1, and its teacher's top-1 and similar-class share."""
    t = tf.set_index("teacher")
    return pd.DataFrame([{"teacher": name, "seed": r.config.seed, "top1": r.summary["top1"],
                          "teacher_top1": t.loc[name, "top-1"], "share": t.loc[name, "similar-class share"]}
                         for name in t.index for r in main[f"KD, {name}"]])


def predictor_verdict(similarity: dict, accuracy: dict, alpha: float = ALPHA) -> dict:
    """Claim 2, "the similarity in the teacher's soft labels predicts the student better than the
    teacher's accuracy", from two `kd.stats.trend` results over the same students (Spearman's rho of
    the student's top-1 with its teacher's similar-class share, and with its teacher's top-1).
    For: the similarity trend holds (its one-sided permutation test), the accuracy trend does not,
    and rho(similarity) > rho(accuracy). Against: the reverse. Neither: inconclusive. Both trends
    `not tested`: not tested. Six or so teachers cannot tell two correlations apart more finely."""
    rs, ra = similarity["difference"], accuracy["difference"]
    if "not tested" in (similarity["verdict"], accuracy["verdict"]):
        verdict, p_support, p_contra = "not tested", math.nan, math.nan
    else:
        holds_s, holds_a = similarity["p_one_sided"] < alpha / 2, accuracy["p_one_sided"] < alpha / 2
        p_support = similarity["p_support"] if rs > ra and not holds_a else 1.0
        p_contra = accuracy["p_support"] if ra > rs and not holds_s else 1.0
        verdict = "reproduced" if p_support < alpha else "contradicted" if p_contra < alpha else "inconclusive"
    test = "two permutation tests of Spearman rho within seeds (similarity share; teacher top-1)"
    evidence = (f"rho with the similar-class share {rs:+.2f} (one-sided p={similarity['p_one_sided']:.3g}), with the "
                f"teacher's top-1 {ra:+.2f} (one-sided p={accuracy['p_one_sided']:.3g}), n={similarity['n']}")
    return {"verdict": verdict, "test": test, "n": similarity["n"], "difference": rs - ra, "ci": None,
            "p": min(p_support, p_contra) if not math.isnan(p_support) else math.nan,
            "p_support": p_support, "p_contra": p_contra, "claim_kind": "trend", "evidence": evidence}
