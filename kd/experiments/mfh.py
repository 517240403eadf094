"""The Modality Focusing Hypothesis (Xue, Gao, Ren & Zhao, ICLR 2023, arXiv 2206.06487; official code
zihuixue/MFH): the synthetic experiments and the trainings of notebooks/mfh.ipynb. The paper's facts:
docs/papers.md, The Modality Focusing Hypothesis.

Claim 1, the paper's synthetic Gaussian experiments, as plain functions (seconds on a CPU, no TrainConfig):
the official generators, seeding, linear classifiers and training of `gauss/main.py` (Figures 2 and 3)
and `gauss/main_modify_gamma.py` (Table 2), reproduced call for call, so that a seed draws the same data
and the same initialisations as the official script (tests/test_mfh.py checks them against numbers of
the official code).

Claim 2, its image analogue (params.yaml section `mfh`): each sample of the two-view data holds its own
image and a second image of its class (kd.data.add_views); the student sees only its own image, and is
trained alone (CE) and with KD (the testbed's 0.1 CE + 0.9 T^2 KL, T 4) from three teachers of one
architecture:
- "same image": a teacher that sees only what the student sees (all its decisive information is shared,
  the paper's gamma = 1, its modality-general teacher); the student's input is the plain dataset, so this
  row and CE are the testbed's positive-control runs on the plain data;
- "both images": a teacher that sees both (more accurate, its decision partly resting on the second image,
  which the student lacks: modality-specific information);
- "other image": a teacher that sees only the second image (nothing decisive in common with the student's
  input but the label: gamma = 0);
and "view check": the student alone on view 0 of the two-view data, first seed, which must equal the CE run
on the plain data (the pairing of the rows rests on it).
"""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kd import data as kd_data
from kd import metrics as kd_metrics
from kd.runs import num_threads
from kd.train import TrainConfig

# The keys of params.yaml's mfh section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "synthetic_margin", "synthetic_seeds", "exp1_overlaps", "exp2_teacher_dims",
                "table2_dims", "student", "view_teachers", "kd")

# ---------------------------------------------------------------- claim 1: the synthetic experiments
# gauss/main.py run_mm and gauss/main_modify_gamma.py __main__ (docs/papers.md)
N_TRAIN, N_TEST, HYPERPLANE_DIM = 200, 1000, 500
EPOCHS, LR = 1000, 0.1
EXP_SEED, TABLE2_SEED = 0, 42          # the official first seeds: exp1(seed=0) / exp2(seed=0), --seed 42
EXP1_DIMS = {"x1_dim": 25, "x2_dim": 50, "xs1_dim": 10, "xs2_dim": 10}   # Figure 2, overlap_dim varies
EXP2_DIMS = {"x1_dim": 50, "x2_dim": 50, "xs2_dim": 10}                  # Figure 3, xs1_dim varies
TABLE2_INPUT_DIM = 50                                                     # x1_dim = x2_dim = 50


def seed_everything(seed: int) -> None:
    """The official `seed()`: Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gen_mm_data(a: np.ndarray, n: int, mode: str, x1_dim: int = -1, x2_dim: int = -1, xs1_dim: int = -1,
                xs2_dim: int = -1, overlap_dim: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official generator (gauss/main.py): Gaussian decisive features xs, the label y = [xs . a > 0],
    modality x1 (x^a, the teacher's) and x2 (x^b, the student's) Gaussian noise with some decisive
    features copied in. `increase_gamma` (Figure 2): 20 decisive features, x2 holds the first xs2_dim,
    x1 xs1_dim of them of which `overlap_dim` are x2's (gamma = overlap / (20 - overlap)).
    `increase_alpha` (Figure 3): x1_dim decisive features, x2 holds the first xs2_dim, x1 the first
    xs1_dim + xs2_dim (the xs1_dim more are the teacher's own). Draws from NumPy's global generator."""
    if mode == "increase_gamma":
        xs = np.random.randn(n, xs1_dim + xs2_dim)
        a = a[0:xs1_dim + xs2_dim]
        y = (np.dot(xs, a) > 0).ravel()
        x2 = np.random.randn(n, x2_dim)
        x2[:, 0:xs2_dim] = xs[:, 0:xs2_dim]
        x1 = np.random.randn(n, x1_dim)
        shared = slice(xs2_dim - overlap_dim, xs2_dim - overlap_dim + xs1_dim)
        x1[:, shared] = xs[:, shared]
    elif mode == "increase_alpha":
        xs = np.random.randn(n, x1_dim)
        a = a[0:x1_dim]
        y = (np.dot(xs, a) > 0).ravel()
        x2 = np.random.randn(n, x2_dim)
        x2[:, 0:xs2_dim] = xs[:, 0:xs2_dim]
        x1 = np.random.randn(n, x1_dim)
        x1[:, 0:xs1_dim + xs2_dim] = xs[:, 0:xs1_dim + xs2_dim]
    else:
        raise ValueError(f"mode must be 'increase_gamma' or 'increase_alpha', got {mode!r}")
    return torch.Tensor(x1), torch.Tensor(x2), torch.LongTensor(y)


def gen_table2_data(a: np.ndarray, n: int, x1_dim: int, x2_dim: int, xs1_dim: int,
                    xs2_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Table 2's generator (gauss/main_modify_gamma.py): xs1_dim + xs2_dim decisive features, all in x1
    (its first columns), the first xs2_dim of them in x2: gamma = xs2_dim / (xs1_dim + xs2_dim)."""
    xs = np.random.randn(n, xs1_dim + xs2_dim)
    a = a[0:xs1_dim + xs2_dim]
    y = (np.dot(xs, a) > 0).ravel()
    x1 = np.random.randn(n, x1_dim)
    x1[:, 0:xs1_dim + xs2_dim] = xs
    x2 = np.random.randn(n, x2_dim)
    x2[:, 0:xs2_dim] = xs[:, 0:xs2_dim]
    return torch.Tensor(x1), torch.Tensor(x2), torch.LongTensor(y)


def student_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                 weights=(1.0, 1.0)) -> torch.Tensor:
    """The official cross-modal KD loss (gauss/main.py, train_kd): weights[0] CE + weights[1]
    nn.KLDivLoss()(log_softmax(s), softmax(t)), at T = 1. KLDivLoss's default reduction, 'mean', averages
    over all N x C entries: its KL term is the repository's class-summed, batch-averaged KL
    (kd.losses.kd_loss at T = 1) divided by C (tests/test_losses.py checks both)."""
    kl = F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction="none").mean()
    return weights[0] * F.cross_entropy(student_logits, target) + weights[1] * kl


def train_linear(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 teacher_logits: torch.Tensor | None = None, weights=(1.0, 1.0)) -> tuple[torch.nn.Module, float]:
    """The official `train` (teacher_logits None: CE) and `train_kd` (`student_loss` against the fixed
    teacher_logits of the training inputs): a new two-class linear classifier, initialised from torch's
    global generator as the official code draws it, full-batch SGD at lr 0.1 for 1000 epochs. Returns
    the model and its test accuracy (%) after the last epoch (the official code's return value)."""
    model = torch.nn.Linear(x.shape[1], 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(EPOCHS):
        output = model(x)
        loss = (F.cross_entropy(output, y) if teacher_logits is None
                else student_loss(output, teacher_logits, y, weights))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        accuracy = 100.0 * int((model(x_test).argmax(1) == y_test).sum()) / len(y_test)
    return model, accuracy


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def mm_run(seed: int, varied: int, mode: str) -> dict[str, float]:
    """One run of Figure 2 (`increase_gamma`, varied = overlap_dim) or Figure 3 (`increase_alpha`,
    varied = xs1_dim, the teacher's own decisive features): the official run_mm. Test accuracy (%) of the
    x1 teacher, the x2 student without KD and the x2 student distilled from the teacher."""
    seed_everything(seed)
    a = np.random.randn(HYPERPLANE_DIM)  # the separating hyperplane
    dims = {**EXP1_DIMS, "overlap_dim": varied} if mode == "increase_gamma" else {**EXP2_DIMS, "xs1_dim": varied}
    x1, x2, y = gen_mm_data(a, N_TRAIN, mode, **dims)
    seed_everything(seed + 1)
    x1_test, x2_test, y_test = gen_mm_data(a, N_TEST, mode, **dims)
    with num_threads(1):  # one thread: the float sums, so the last digits, of the official numbers
        teacher, teacher_acc = train_linear(x1, y, x1_test, y_test)
        _, kd_acc = train_linear(x2, y, x2_test, y_test, logits_of(teacher, x1))
        _, no_kd_acc = train_linear(x2, y, x2_test, y_test)
    return {"teacher": teacher_acc, "no_kd": no_kd_acc, "kd": kd_acc}


def table2_run(seed: int, xs1_dim: int, xs2_dim: int) -> dict[str, float]:
    """One run of Table 2 (gauss/main_modify_gamma.py, `run` in its 'gt' mode): a = ones; the regular
    teacher on x1 of a first draw; the students and the modality-general teacher (x1's first xs2_dim
    columns, exactly the decisive features x2 shares: gamma 1) on a second draw ('use_unlabeled'); one
    test draw. Test accuracy (%) of the regular teacher, the no-KD student, the regular-KD student as
    the paper describes it (the regular teacher on x1, the student on x2), the regular-KD student as
    the official script calls it (`train_kd(x2_train, x1_train, ...)`: the teacher fed x2, the student
    trained on x1 and tested on x2; both start from the same initialisation), the modality-general
    teacher and its KD student."""
    dims = {"x1_dim": TABLE2_INPUT_DIM, "x2_dim": TABLE2_INPUT_DIM, "xs1_dim": xs1_dim, "xs2_dim": xs2_dim}
    seed_everything(seed)
    a = np.ones(HYPERPLANE_DIM)
    x1, x2, y = gen_table2_data(a, N_TRAIN, **dims)
    x1_test, x2_test, y_test = gen_table2_data(a, N_TEST, **dims)
    general = torch.arange(xs2_dim)  # 'gt': keep x1's modality-general decisive columns
    with num_threads(1):
        teacher, teacher_acc = train_linear(x1, y, x1_test, y_test)
        x1, x2, y = gen_table2_data(a, N_TRAIN, **dims)
        _, no_kd_acc = train_linear(x2, y, x2_test, y_test)
        state = torch.get_rng_state()
        _, official_acc = train_linear(x1, y, x2_test, y_test, logits_of(teacher, x2))
        torch.set_rng_state(state)  # one initialisation for both forms, as the official sequence draws one
        _, regular_acc = train_linear(x2, y, x2_test, y_test, logits_of(teacher, x1))
        mg_teacher, mg_teacher_acc = train_linear(x1[:, general], y, x1_test[:, general], y_test)
        _, mg_acc = train_linear(x2, y, x2_test, y_test, logits_of(mg_teacher, x1[:, general]))
    return {"teacher": teacher_acc, "no_kd": no_kd_acc, "regular_kd": regular_acc,
            "regular_kd_official_call": official_acc, "mg_teacher": mg_teacher_acc, "mg_kd": mg_acc}


def synthetic_seeds(sec: dict, first: int) -> list[int]:
    """The official runs' seeds: `synthetic_seeds` of them from `first` (EXP_SEED or TABLE2_SEED)."""
    return list(range(first, first + int(sec["synthetic_seeds"])))


def exp1(sec: dict) -> pd.DataFrame:
    """Figure 2: one row per (overlap, seed), gamma = overlap / (20 - overlap), and the KD gain."""
    rows = [{"overlap": o, "gamma": o / (20 - o), "seed": s, **mm_run(s, o, "increase_gamma")}
            for o in sec["exp1_overlaps"] for s in synthetic_seeds(sec, EXP_SEED)]
    return _with_gain(pd.DataFrame(rows))


def exp2(sec: dict) -> pd.DataFrame:
    """Figure 3: one row per (teacher-only decisive dims, seed), alpha = dims / (dims + 10), the KD gain."""
    rows = [{"teacher_dims": k, "alpha": k / (k + EXP2_DIMS["xs2_dim"]), "seed": s, **mm_run(s, k, "increase_alpha")}
            for k in sec["exp2_teacher_dims"] for s in synthetic_seeds(sec, EXP_SEED)]
    return _with_gain(pd.DataFrame(rows))


def table2(sec: dict) -> pd.DataFrame:
    """Table 2: one row per ([xs1_dim, xs2_dim], seed), gamma = xs2 / (xs1 + xs2)."""
    rows = [{"xs1_dim": d1, "xs2_dim": d2, "gamma": d2 / (d1 + d2), "seed": s, **table2_run(s, d1, d2)}
            for d1, d2 in sec["table2_dims"] for s in synthetic_seeds(sec, TABLE2_SEED)]
    return pd.DataFrame(rows)


TABLE2_COLUMNS = ("teacher", "mg_teacher", "no_kd", "regular_kd", "mg_kd")  # data/paper_results.yaml's order


def paper_table2(results: dict) -> pd.DataFrame:
    """The paper's Table 2 (data/paper_results.yaml `mfh.table2`) with `table2`'s column names."""
    rows = {float(gamma): dict(zip(TABLE2_COLUMNS, v)) for gamma, v in results["table2"].items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("gamma")


def _with_gain(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(gain=df["kd"] - df["no_kd"])


def level_means(df: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean over seeds per level (the paper's figures and table), indexed by the last of `by` (gamma, alpha),
    the others as columns, with the number of seeds."""
    levels = df.groupby(by)
    return levels[columns].mean().round(2).assign(seeds=levels["seed"].nunique()).reset_index(by[:-1])


def at_level(df: pd.DataFrame, column: str, level, value: str) -> dict[int, float]:
    """{seed: value} of the rows where `column` == level (the pairs of a comparison)."""
    rows = df[df[column] == level]
    return dict(zip(rows["seed"], rows[value]))


def seed_means(df: pd.DataFrame, value: str) -> dict[int, float]:
    """{seed: mean of `value` over the levels}: one paired value per seed pooling a table's rows."""
    return df.groupby("seed")[value].mean().to_dict()


# ---------------------------------------------------------------- claim 2: the image analogue
VIEWS = 2                    # each sample: its own image (view 0) and another image of its class (view 1)
STUDENT_VIEW = [0]
TEACHERS = {"same": "the same image", "both": "both images", "other": "the other image"}  # view_teachers keys
ROWS = {"CE": None, **{f"KD, teacher sees {what}": key for key, what in TEACHERS.items()}}  # row -> its teacher


def kd_args(sec: dict) -> dict:
    return {k: float(v) for k, v in sec["kd"].items()}


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{"images": {row: [TrainConfig per seed]}, "view_check": {label: [one TrainConfig]}} (module doc)."""
    student, teachers = sec["student"], sec["view_teachers"]
    images: dict[str, list[TrainConfig]] = {row: [] for row in ROWS}
    for seed in P.seeds:
        for row, key in ROWS.items():
            if key is None:
                images[row].append(P.config(student, "ce", seed=seed, paper="mfh"))
                continue
            teacher = P.teacher_config(teachers[key], seed)
            views = {} if teacher.views is None else {"views": teacher.views, "seen_views": STUDENT_VIEW}
            images[row].append(P.config(student, "kd", seed=seed, method_args=kd_args(sec), teacher=teacher,
                                        paper="mfh", **views))
    first = P.seeds[0]
    check = {"CE on the plain data": images["CE"][:1],
             "CE on view 0 of the two-view data": [P.config(student, "ce", seed=first, paper="mfh", views=VIEWS,
                                                            seen_views=STUDENT_VIEW)]}
    return {"images": images, "view_check": check}


def teacher_names(P, sec: dict) -> list[str]:
    return list(sec["view_teachers"].values())


def what_it_sees(cfg: TrainConfig) -> str:
    """Which images of a sample a configuration's model sees, in words."""
    if cfg.views is None:
        return "its own image (plain data)"
    seen = range(cfg.views) if cfg.seen_views is None else cfg.seen_views
    return " and ".join({0: "its own image", 1: "the other image"}.get(v, f"view {v}") for v in seen)


def permuted_view_top1(run, view: int, seed: int = 0) -> float:
    """Test top-1 (%) of a two-view run with view `view` of every test sample taken from another test
    sample (one seeded permutation of the test split): what the model's decision loses without the
    information that view holds (the permutation idea of MFH's Algorithm 1, applied to a whole view)."""
    cfg = run.config
    ds = cfg.load_data()
    c = kd_data.info(cfg.dataset).channels
    x = ds.x_eval.clone()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x[:, view * c:(view + 1) * c] = ds.x_eval[perm, view * c:(view + 1) * c]
    loader = kd_data.Loader(x, ds.y_eval, ds.mean, ds.std, batch_size=256, train=False)
    logits, y = kd_metrics.predict(run.model(), loader)
    return 100.0 * (logits.argmax(1) == y).float().mean().item()


def teacher_reliance(teachers: dict[str, object]) -> pd.DataFrame:
    """{row label: teacher Run} -> per teacher: the images it sees, its test top-1, and its top-1 with its
    own image (view 0) or the other image (view 1) permuted across the test split, where it sees them."""
    rows = []
    for name, run in teachers.items():
        cfg = run.config
        seen = list(range(cfg.views or 1)) if cfg.seen_views is None else cfg.seen_views
        row = {"teacher": name, "sees": what_it_sees(cfg), "test top-1": run.summary["top1"]}
        for view, col in ((0, "top-1, own image permuted"), (1, "top-1, other image permuted")):
            row[col] = permuted_view_top1(run, view) if cfg.views is not None and view in seen else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("teacher")
