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

from kd import data as kd_data
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
