"""One module per notebook (the testbed and each paper): the trainings it needs, as plain Python.

Each module defines `plan(P, sec)`, the notebook's trainings as TrainConfigs in nested dicts
and lists (rows of a table, seeds, chains; a teacher's config nested in its student's), and
`teacher_names(P, sec)`, the params.yaml teachers it uses. The rest is shared by every paper:
`Study` binds a paper to a profile once (what a notebook's first cell makes), `configs(plan)`
lists the distinct trainings (`python -m kd run-many --paper <paper>` trains them on a GPU
machine without Jupyter) and `run_plan(P, plan)` returns the plan with the Runs in place,
training what the cache lacks. Analysis helpers that a notebook needs beyond `kd.report` live
in its module too.
"""
from __future__ import annotations

import copy
import importlib
from functools import cached_property

import pandas as pd
import torch
import torch.nn.functional as F

from kd import data as kd_data
from kd import losses
from kd import metrics as kd_metrics
from kd.runs import Run
from kd.train import TrainConfig


class Study:
    """One notebook's paper bound to one profile, once:

        S = Study("dkd", profile, seeds=seeds, beta=beta)   # the notebook's papermill parameters
        P, sec, rep, paper, E = S.P, S.sec, S.rep, S.paper, S.module
        R = S.run()                                          # the plan, each config now its Run

    `P` is the profile with its seeds overridden by `seeds` when not None, else by the section's
    own `seeds` for the profile when it has some; `sec` the paper's params.yaml section for it
    (without `seeds`) with the parameters that are not None in place (an unknown name is an error naming the
    known ones), `module` the paper's experiment module, `rep` its Report (made on first use, so
    `run-many` writes no results), `paper` its numbers in data/paper_results.yaml ({} if none).
    `profile`: a profile's name, or a Profile (copied: a GPU profile read on a CPU, kd.estimate)."""

    def __init__(self, name: str, profile="quick", seeds=None, **parameters):
        from kd.params import Profile, parse_seeds

        self.name = name
        if isinstance(profile, Profile):
            self.P = copy.copy(profile)
            if seeds is not None:
                self.P.seeds = parse_seeds(seeds)
        else:
            self.P = Profile(profile, seeds=seeds)
        self.sec = self.P.section(name, **parameters)
        own_seeds = self.sec.pop("seeds", None)
        if seeds is None and own_seeds is not None:
            self.P.seeds = parse_seeds(own_seeds)
        self.module = importlib.import_module(f"kd.experiments.{name}")

    @cached_property
    def rep(self):
        from kd.report import Report

        return Report(self.name, self.P)

    @cached_property
    def paper(self) -> dict:
        from kd.report import paper_results

        return paper_results().get(self.name, {})

    def plan(self):
        """The notebook's trainings (its module's `plan`) for this profile and section."""
        return self.module.plan(self.P, self.sec)

    def teacher_names(self) -> list[str]:
        return self.module.teacher_names(self.P, self.sec)

    @cached_property
    def gates(self) -> dict[str, dict]:
        """{plan group: precondition}, from the module's `preconditions(P, sec)` ({} without one):
        kd.stats checks computed from the trained teachers (trained now if missing). A group whose
        check fails cannot test its claims whatever its runs would show, so it is not trained
        (`trainable`) and the notebook records its claims as `untested`."""
        gate = getattr(self.module, "preconditions", None)
        return gate(self.P, self.sec) if gate else {}

    def trainable(self, plan: dict) -> dict:
        """`plan` without the groups whose precondition failed (`gates`)."""
        return {k: v for k, v in plan.items() if self.gates.get(k, {}).get("verdict", "reproduced") == "reproduced"}

    def teachers(self) -> dict:
        """The params.yaml teachers the paper uses, trained like the teachers stage: {(name, seed): Run}."""
        return self.P.teachers(self.teacher_names())

    def run(self, plan=None):
        """`plan` (default: the whole plan) with each configuration replaced by its Run: the
        teachers first, then every training the cache lacks, `P.workers` at a time. The report
        records where they all trained (`Report.ran`)."""
        teachers = self.teachers()
        done = run_plan(self.P, self.plan() if plan is None else plan)
        self.rep.ran([*teachers.values(), *_walk(done, Run)])
        return done


def pair_label(pair: dict) -> str:
    """A params.yaml teacher -> student pair as "teacher->student"."""
    return f"{pair['teacher']}->{pair['student']}"


def paper_pair(pair: dict) -> str:
    """The paper's CIFAR-100 pair a params.yaml pair stands in for (its `paper_pair`, else itself)."""
    return pair.get("paper_pair", pair_label(pair))


def _walk(node, leaf=TrainConfig):
    """The `leaf`-typed items of a nested plan (dicts, lists, tuples)."""
    if isinstance(node, leaf):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _walk(v, leaf)
    else:
        for v in node:
            yield from _walk(v, leaf)


def ensemble_members(P, teacher: str, seed: int, size: int) -> list[TrainConfig]:
    """The params.yaml teacher `teacher` for `seed` and `size - 1` copies trained with other seeds
    (seed + 1000 k) on the teacher's data subset (its `data_seed`, else its seed: TrainConfig.load_data):
    teachers of one architecture from different seeds (an ensemble teacher, several teachers)."""
    t = P.teacher_config(teacher, seed)
    data_seed = t.subset_seed
    return [t, *(t.replace(seed=t.seed + 1000 * k, data_seed=data_seed) for k in range(1, size))]


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


@torch.no_grad()
def train_logits(model: torch.nn.Module, ds: kd_data.Dataset, n: int | None = None,
                 device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A model's logits and labels on the first `n` (default: all) training images of `ds`, in
    order, eval mode, no augmentation: what a student distilled from it on those images is taught."""
    n = len(ds.y_train) if n is None else min(int(n), len(ds.y_train))
    loader = kd_data.Loader(ds.x_train[:n], ds.y_train[:n], ds.mean, ds.std, batch_size=512, train=False,
                            device=device)
    logits, targets = kd_metrics.predict(model.to(device), loader)
    return logits.cpu(), targets.cpu()


def training_fit(run) -> dict:
    """How well a trained model fits its own training images (eval mode, no augmentation): top-1
    and mean confidence in the true class; beside its test top-1 and test mean confidence minus
    accuracy. Label smoothing and the self-distillation papers (PS-KD, Zipf's LS, BAKE) are
    remedies for networks that fit their training set and are over-confident on test data."""
    logits, y = train_logits(run.model(), run.config.load_data())
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


def output_entropy(run, temperature: float) -> float:
    """The mean entropy (nats) of a run's test predictions softened at `temperature`: how soft the
    targets a KD student gets from it are."""
    return kd_metrics.entropy(run.eval_logits()[0], temperature)


def total_epochs(cfg: TrainConfig) -> int:
    """A run's epochs plus those of the runs it started from (init_from, recursively)."""
    return cfg.epochs + (total_epochs(cfg.init_from) if cfg.init_from is not None else 0)


def teacher_frame(teachers: dict[str, list], temperature: float) -> pd.DataFrame:
    """{label: [Run per seed]} of teachers (dense, pruned, fine-tuned) -> one row per distinct run,
    in order: its sparsity (the share of its prunable weights removed, 0 if not pruned), test top-1,
    ECE, `output_entropy` at `temperature`, its epochs of training with those of the runs it started
    from, and its training time."""
    rows, seen = [], set()
    for name, runs in teachers.items():
        for r in runs:
            if r.path in seen:  # one teacher serves every seed on a profile with teacher_seed
                continue
            seen.add(r.path)
            rows.append({"teacher": name, "seed": r.config.seed, "sparsity (%)": 100 * r.summary.get("sparsity", 0.0),
                         "top-1": r.summary["top1"], "ECE": r.summary.get("ece"),
                         f"entropy at T={temperature:g}": output_entropy(r, temperature),
                         "epochs in all": total_epochs(r.config), "train time (s)": r.summary["train_time_s"]})
    return pd.DataFrame(rows).sort_values("seed", kind="stable").reset_index(drop=True)


def decomposition(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                  temperature: float = 4.0) -> pd.DataFrame:
    """Per sample: KD, TCKD, NCKD (from kd.losses, each on a batch of one, so that the batch
    mean is the sample's value), the coupling weight w = 1 - p_t,target at temperature T,
    and |KD - (TCKD + w NCKD)|: DKD's Eq. 5, KD = TCKD + (1 - p_t,target) NCKD, per sample."""
    s, t, y = student_logits.double(), teacher_logits.double(), target.long()
    rows = []
    for i in range(len(y)):
        si, ti, yi = s[i:i + 1], t[i:i + 1], y[i:i + 1]
        rows.append((losses.kd_loss(si, ti, temperature).item(), losses.tckd_loss(si, ti, yi, temperature).item(),
                     losses.nckd_loss(si, ti, yi, temperature).item()))
    df = pd.DataFrame(rows, columns=["kd", "tckd", "nckd"])
    df["weight"] = coupling_weight(teacher_logits, target, temperature).numpy()
    df["weight_T1"] = coupling_weight(teacher_logits, target, 1.0).numpy()
    df["abs_error"] = (df["kd"] - (df["tckd"] + df["weight"] * df["nckd"])).abs()
    return df


def coupling_weight(teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """1 - p_t,target of softmax(z_t / T): the weight KD puts on NCKD (DKD Eq. 5)."""
    p = F.softmax(teacher_logits.double() / temperature, dim=1)
    return 1 - p.gather(1, target.long().view(-1, 1)).squeeze(1)
