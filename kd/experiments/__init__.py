"""One module per notebook (the testbed and each paper): the trainings it needs, as plain Python.

Each module defines `plan(P, sec)`, the notebook's trainings as TrainConfigs in nested dicts
and lists (rows of a table, seeds, chains; a teacher's config nested in its student's), and
`teacher_names(P, sec)`, the params.yaml teachers it uses. The two functions below do the rest
for every paper: `configs(plan)` lists the distinct trainings (`python -m kd run-many --paper
<paper>` trains them on a GPU machine without Jupyter) and `run_plan(P, plan)` returns the plan
with the Runs in place, training what the cache lacks. Analysis helpers that a notebook needs
beyond `kd.report` live in its module too.
"""
from __future__ import annotations

import pandas as pd

from kd import data as kd_data
from kd import metrics as kd_metrics
from kd.train import TrainConfig


def _walk(node):
    if isinstance(node, TrainConfig):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    else:
        for v in node:
            yield from _walk(v)


def configs(plan) -> list[TrainConfig]:
    """Every TrainConfig of a plan, each configuration once, in the plan's order."""
    unique: dict[str, TrainConfig] = {}
    for cfg in _walk(plan):
        unique.setdefault(cfg.hash(), cfg)
    return list(unique.values())


def run_plan(P, plan):
    """The plan with each TrainConfig replaced by its Run: cached runs are reused, the missing
    ones trained through one `P.run_all` (teachers first, `P.workers` at a time)."""
    cfgs = configs(plan)
    by_hash = {c.hash(): r for c, r in zip(cfgs, P.run_all(cfgs))}

    def swap(node):
        if isinstance(node, TrainConfig):
            return by_hash[node.hash()]
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        return [swap(v) for v in node]

    return swap(plan)


def scale_label(cfg: TrainConfig, P) -> str:
    """The scale of a study for its tables and figures, e.g. 'ours: Fashion-MNIST 2000 training
    images, 40 epochs, 5 seeds, last epoch'."""
    n = f"{cfg.train_subset} training images" if cfg.train_subset else "full training set"
    k = len(P.seeds)
    return (f"ours: {kd_data.info(cfg.dataset).title} {n}, {cfg.epochs} epochs, "
            f"{k} seed{'s' if k > 1 else ''}, last epoch")


def training_fit(run) -> dict:
    """How well a trained model fits its own training images (eval mode, no augmentation): top-1
    and mean confidence in the true class; beside its test top-1 and test mean confidence minus
    accuracy. Label smoothing and the self-distillation papers (PS-KD, Zipf's LS, BAKE) are
    remedies for networks that fit their training set and are over-confident on test data."""
    ds = run.config.load_data()
    loader = kd_data.Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=256, train=False)
    logits, y = kd_metrics.predict(run.model(), loader)
    test_logits, test_y = run.eval_logits()
    return {"seed": int(run.config.seed), "train_top1": 100 * (logits.argmax(1) == y).float().mean().item(),
            "train_true_conf": 100 * logits.softmax(1).gather(1, y.view(-1, 1)).mean().item(),
            "test_top1": run.summary["top1"], "test_overconfidence": kd_metrics.overconfidence(test_logits, test_y)}


def fit_table(groups: dict) -> pd.DataFrame:
    """`training_fit` of {row label: [Run per seed]}, mean ± std over seeds per row: the regime."""
    from kd.report import fmt

    names = {"train_top1": "train top-1 (%)", "train_true_conf": "train: mean p(true class) (%)",
             "test_top1": "test top-1 (%)", "test_overconfidence": "test: conf. - acc. (%)"}
    rows = []
    for label, runs in groups.items():
        fits = [training_fit(r) for r in runs]
        rows.append({"": label, **{name: fmt([f[k] for f in fits]) for k, name in names.items()}})
    return pd.DataFrame(rows).set_index("")
