"""Contrastive Representation Distillation (CRD; Tian, Krishnan & Isola, ICLR 2020, arXiv 1910.10699; official
code HobbitLong/RepDistiller): the trainings of notebooks/crd.ipynb and its analysis helpers. The paper's
facts: docs/papers.md, CRD.

Every training the notebook needs (params.yaml section `crd`, resolved for a profile), on the pair's student:
- main, every seed: alone (CE), KD, CRD and CRD + KD with `nce_k` negatives;
- sweep, on the first `sweep_seeds` seeds: CRD at each K of `sweep_k` (claim 3; the main K is the main run).
Identical configurations are one run (the cache is keyed by the configuration's hash): on quick and cpu the
student's CE and KD runs are the testbed's.
"""
from __future__ import annotations

from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's crd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("pair", "kd", "crd", "crd_kd_weight", "nce_k", "sweep_k", "sweep_seeds", "timing")

ROWS = ("CE", "KD", "CRD", "CRD + KD")


def kd_args(sec: dict) -> dict:
    return {k: float(v) for k, v in sec["kd"].items()}


def crd_args(sec: dict, nce_k: int | None = None, with_kd: bool = False) -> dict:
    """CRD's hyperparameters (RepDistiller's), with `nce_k` negatives (default: the section's) and, for
    CRD + KD, the KD term at `crd_kd_weight` and the KD temperature."""
    args = {k: (int(v) if k == "feat_dim" else float(v)) for k, v in sec["crd"].items()}
    args["nce_k"] = int(nce_k if nce_k is not None else sec["nce_k"])
    if with_kd:
        args.update(kd_weight=float(sec["crd_kd_weight"]), temperature=float(sec["kd"]["temperature"]))
    return args


def plan(P, sec: dict) -> dict[str, dict]:
    """{"main": {row: [TrainConfig per seed]}, "sweep": {K: [TrainConfig per sweep seed]}}."""
    if int(sec["nce_k"]) not in [int(k) for k in sec["sweep_k"]]:
        raise ValueError(f"crd.nce_k {sec['nce_k']} must be one of crd.sweep_k {sec['sweep_k']}: the sweep's "
                         "main point is the main CRD run")
    pair = sec["pair"]
    s = pair["student"]
    main: dict[str, list[TrainConfig]] = {row: [] for row in ROWS}
    sweep: dict[int, list[TrainConfig]] = {int(k): [] for k in sec["sweep_k"]}
    sweep_seeds = P.first_seeds(sec["sweep_seeds"])
    for seed in P.seeds:
        t = P.teacher_config(pair["teacher"], seed)
        main["CE"].append(P.config(s, "ce", seed=seed, paper="crd"))
        main["KD"].append(P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=t, paper="crd"))
        main["CRD"].append(P.config(s, "crd", seed=seed, method_args=crd_args(sec), teacher=t, paper="crd"))
        main["CRD + KD"].append(P.config(s, "crd", seed=seed, method_args=crd_args(sec, with_kd=True), teacher=t,
                                         paper="crd"))
        if seed in sweep_seeds:
            for k in sweep:
                sweep[k].append(P.config(s, "crd", seed=seed, method_args=crd_args(sec, k), teacher=t, paper="crd"))
    return {"main": main, "sweep": sweep}


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["pair"]["teacher"]]


# ---------------------------------------------------------------- analysis
def time_steps(P, sec: dict, runs: dict, steps: int, rounds: int) -> dict:
    """KD's and CRD's training steps on the pair, interleaved in the same process (kd.timing.step_times);
    ratio = CRD / KD."""
    from kd.timing import step_times

    cfg = runs["KD"][0].config
    teacher = P.teacher(sec["pair"]["teacher"], cfg.seed).model(P.device)
    return step_times({"KD": ("kd", kd_args(sec)), "CRD": ("crd", crd_args(sec)),
                       "CRD + KD": ("crd", crd_args(sec, with_kd=True))},
                      cfg.model, cfg.load_data(), teacher=teacher, batch_size=cfg.batch_size, steps=steps,
                      rounds=rounds, device=P.device, seed=cfg.seed)
