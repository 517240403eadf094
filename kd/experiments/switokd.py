"""SwitOKD (Qian, Wang, Yin, Hong & Wang, ECCV 2022, arXiv 2209.04996; official code hfutqian/SwitOKD): the
trainings of notebooks/switokd.ipynb and its analysis helpers. The paper's facts: docs/papers.md, SwitOKD.

Every training the notebook needs (params.yaml section `switokd`, resolved for a profile), on every seed:
- "student alone": the pair's student with CE at its learning rate (`switokd.train`);
- "DML" and "SwitOKD": the student trained together with a teacher network of the pair's teacher
  architecture (owned by the method, at `teacher_lr_scale` times the student's learning rate);
- "teacher alone": the teacher architecture with CE at that learning rate, the same data, schedule and
  seed: the co-trained teachers' paired control (a DML / SwitOKD teacher starts from its initialisation).
No params.yaml teacher is used. Identical configurations are one run (the cache is keyed by the
configuration's hash): on cpu the student alone is the same run as other papers' plane2 CE students.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kd.experiments import pair_label as label, paper_pair  # noqa: F401  (E.label, E.paper_pair in the notebook)
from kd.report import accuracy_figure, fmt, mean_std  # noqa: F401  (E.accuracy_figure in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's switokd section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "pair", "teacher_lr_scale", "train")

ROWS = ("student alone", "DML", "SwitOKD", "teacher alone")
ONLINE = ("DML", "SwitOKD")


def online_args(sec: dict) -> dict:
    """DML's and SwitOKD's arguments: the teacher's architecture and its learning-rate scale."""
    return {"teacher_model": sec["pair"]["teacher"], "teacher_lr_scale": float(sec["teacher_lr_scale"])}


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"rows": {row label: [TrainConfig per seed]}} with the rows of the module docstring."""
    pair, args = sec["pair"], online_args(sec)
    rows: dict[str, list[TrainConfig]] = {row: [] for row in ROWS}
    for seed in P.seeds:
        student = P.config(pair["student"], "ce", seed=seed, paper="switokd")
        rows["student alone"].append(student)
        rows["DML"].append(P.config(pair["student"], "dml", seed=seed, method_args=args, paper="switokd"))
        rows["SwitOKD"].append(P.config(pair["student"], "switokd", seed=seed, method_args=args, paper="switokd"))
        rows["teacher alone"].append(P.config(pair["teacher"], "ce", seed=seed, paper="switokd",
                                              lr=student.lr * args["teacher_lr_scale"]))
    return {"rows": rows}


def teacher_names(P, sec: dict) -> list[str]:
    return []  # the teacher trains with the student (or alone, as a row of the plan)


# ---------------------------------------------------------------- analysis

def teacher_runs(rows: dict, online=ONLINE) -> dict[str, tuple[list, str]]:
    """The teachers' rows as {label: (runs, the summary key prefix of their metrics)}: the teacher
    alone (its own run's metrics) and the co-trained teachers of the `online` rows (the `peer_*`
    metrics of DML / SwitOKD / BD-KD runs)."""
    return {"teacher alone": (rows["teacher alone"], ""), **{f"{m} teacher": (rows[m], "peer_") for m in online}}


def teacher_values(rows: dict, key: str = "top1", online=ONLINE) -> dict[str, list[float]]:
    """Per teacher row (`teacher_runs`), its last-epoch `key` per seed."""
    return {name: [r.summary[prefix + key] for r in runs]
            for name, (runs, prefix) in teacher_runs(rows, online).items()}


def teacher_table(rows: dict, online=ONLINE) -> pd.DataFrame:
    """Mean ± std over seeds of the teachers' last-epoch test top-1, NLL and ECE."""
    cols = {"top1": "top-1 (last)", "nll": "NLL", "ece": "ECE"}
    values = {k: teacher_values(rows, k, online) for k in cols}
    return pd.DataFrame([{"": name, **{c: fmt(values[k][name]) for k, c in cols.items()}}
                         for name in teacher_runs(rows, online)]).set_index("")


def mode_counts(run) -> tuple[int, int]:
    """(batches in expert mode, batches in learning mode) over a SwitOKD run: each epoch's fraction
    times its number of batches (the training images over the batch size, the last partial batch dropped)."""
    steps = run.summary["num_train"] // run.config.batch_size
    expert = int(round(float(run.history["train_expert"].sum() * steps)))
    return expert, steps * len(run.history) - expert


def over_training(run, key: str) -> float:
    """The mean over a run's epochs of a per-epoch training column (every epoch has as many steps):
    train_expert gives the fraction of all batches in expert mode, train_gap the mean gap G."""
    return float(run.history[key].mean())


QUARTER = lambda h: max(1, len(h) // 4)  # noqa: E731
PARTS = {"all epochs": lambda h: h, "first quarter": lambda h: h.iloc[:QUARTER(h)],
         "last quarter": lambda h: h.iloc[-QUARTER(h):]}
SWITCH_COLUMNS = {"train_expert": "expert mode (fraction of batches)", "train_gap": "gap G",
                  "train_threshold": "threshold delta"}


def switch_table(rows: dict) -> pd.DataFrame:
    """Per online row, mean ± std over seeds of the per-epoch means over all epochs and over the first
    and the last quarter of them: the fraction of batches in expert mode (SwitOKD only), the gap G and
    the threshold delta."""
    out = []
    for m in ONLINE:
        for part, take in PARTS.items():
            row = {"": f"{m}, {part}"}
            for key, name in SWITCH_COLUMNS.items():
                per_seed = [float(take(r.history[key]).mean()) for r in rows[m] if key in r.history]
                row[name] = fmt(per_seed, 3) if per_seed else "–"
            out.append(row)
    return pd.DataFrame(out).set_index("")


def band(ax, runs, key, name, **style):
    """Mean over seeds of a per-epoch column, the seeds' range shaded (epochs where it was logged)."""
    frames = [r.history.set_index("epoch")[key].dropna() for r in runs if key in r.history]
    table = pd.concat(frames, axis=1)
    line, = ax.plot(table.index, table.mean(1), label=name, lw=1.2, **style)
    if table.shape[1] > 1:
        ax.fill_between(table.index, table.min(1), table.max(1), color=line.get_color(), alpha=0.15, lw=0)


def switch_figure(rows: dict, title: str):
    """Claim 3's figure: per epoch, SwitOKD's fraction of batches in expert mode; the distillation gap G
    of SwitOKD and DML against SwitOKD's threshold delta; the students' and teachers' test top-1."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    band(axes[0], rows["SwitOKD"], "train_expert", "SwitOKD", color="C1")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("fraction of batches in expert mode")
    band(axes[1], rows["SwitOKD"], "train_gap", "SwitOKD: gap G", color="C1")
    band(axes[1], rows["SwitOKD"], "train_threshold", "SwitOKD: threshold delta", color="C1", ls=":")
    band(axes[1], rows["DML"], "train_gap", "DML: gap G", color="C0")
    band(axes[1], rows["DML"], "train_threshold", "DML: delta (not used)", color="C0", ls=":")
    axes[1].set_ylabel("batch mean, L1 (epoch mean)")
    for m, color in zip(ONLINE, ("C0", "C1")):
        band(axes[2], rows[m], "top1", f"{m} student", color=color)
        band(axes[2], rows[m], "peer_top1", f"{m} teacher", color=color, ls="--")
    axes[2].set_ylabel("test top-1 (%)")
    return finish_epoch_figure(fig, axes, title)


def finish_epoch_figure(fig, axes, title: str):
    """Per-epoch panels (`band`): each with an epoch axis and a legend, the figure titled and laid out."""
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def paper_table(results: dict) -> pd.DataFrame:
    """Table 4's CIFAR-100 rows (data/paper_results.yaml `switokd`): student and teacher top-1, mean ± std."""
    rows = [{"method": m, "student (0.5-MobileNetV2)": f"{v['student'][0]:.2f} ± {v['student'][1]:.2f}",
             "teacher (WRN-16-2)": f"{v['teacher'][0]:.2f} ± {v['teacher'][1]:.2f}"}
            for m, v in results["cifar100"].items()]
    return pd.DataFrame(rows).set_index("method")
