"""Runs cached by configuration hash.

`run(config)` trains a `TrainConfig` once and returns its `Run`; asking again returns the
stored result. A student's configuration holds its teacher's configuration, so the teacher
is found (or trained first) the same way, and chains (TAKD, born-again generations) are
just nested teachers. Finished runs are plain folders, so the heavy training can happen on
a GPU machine as plain Python (`python -m kd run-many ...`) and the notebooks pick the
results up here.

Layout: <root>/<model>-<method>-<hash>/ with config.json, metrics.csv, final.json,
model.pt, eval_logits.pt, and checkpoint.pt while a run is unfinished; beside each folder a
`.lock` file: two processes asked for the same run (two notebooks, `run-many` beside a
notebook, `dvc exp run --queue`) take turns, and the second finds the first's finished run.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from kd import prune as kd_prune
from kd.train import TrainConfig, fit, load_model, sha256


def project_root() -> Path:
    """The checkout whose params.yaml, runs/ and results/ kd uses: $KD_ROOT if set, else the
    nearest folder at or above the working directory that holds params.yaml and dvc.yaml, else
    the checkout kd is installed from. Looking from the working directory matters when kd is
    installed editable from one checkout and runs in a copy of it (`dvc exp run --temp` or
    `--queue`, which execute in a temporary copy with that experiment's params.yaml)."""
    if os.environ.get("KD_ROOT"):
        return Path(os.environ["KD_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    return Path(__file__).resolve().parent.parent


ROOT = project_root()
DEFAULT_RUNS = ROOT / "runs"


def runs_root(profile: str | None = None) -> Path:
    """Where runs live: $KD_RUNS or <repo>/runs, one sub-folder per profile."""
    base = Path(os.environ.get("KD_RUNS", DEFAULT_RUNS))
    return base / profile if profile else base


@dataclass
class Run:
    path: Path

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(json.loads((self.path / "config.json").read_text()))

    @property
    def summary(self) -> dict:
        """Final metrics (last epoch) plus best-epoch top-1 and timings."""
        return json.loads((self.path / "final.json").read_text())

    def verified(self, name: str) -> Path:
        """The run's file `name`, after checking it against the checksum final.json recorded."""
        path = self.path / name
        expected = self.summary.get("files", {}).get(name)
        if expected is not None and sha256(path) != expected:
            raise RuntimeError(f"{path} does not match the checksum its final.json recorded: the run is "
                               "damaged or was overwritten; delete the folder and the run trains again")
        return path

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "metrics.csv")

    def model(self, device="cpu") -> torch.nn.Module:
        self.verified("model.pt")
        return load_model(self.path, device)

    def eval_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = torch.load(self.verified("eval_logits.pt"), weights_only=True)
        return d["logits"], d["targets"]


def run_dir(cfg: TrainConfig, root: Path) -> Path:
    return root / f"{cfg.model}-{cfg.method}-{cfg.hash()}"


def find(cfg: TrainConfig, roots) -> Run | None:
    """The finished run of `cfg` under any of `roots`, or None."""
    for root in roots:
        path = run_dir(cfg, Path(root))
        if (path / "final.json").exists():
            return Run(path)
    return None


@contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on `path`.lock while the block runs (waits for another holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(cfg: TrainConfig, *, root: str | os.PathLike | None = None, device=None,
        progress: bool | None = None, lookup=(), **fit_options) -> Run:
    """Train `cfg` (and, first, any teacher it names and any run it starts from) into `root` unless a finished run of
    it is stored under `root` or one of the `lookup` folders; return the Run."""
    cfg.validate()
    root = Path(root) if root is not None else runs_root()
    done = find(cfg, [root, *lookup])
    if done is not None:
        return done
    teachers = [run(t, root=root, device=device, progress=progress, lookup=lookup, **fit_options).model(device or "cpu")
                for t in cfg.teachers]
    teacher = teachers if isinstance(cfg.teacher, list) else (teachers[0] if teachers else None)
    init = None
    if cfg.init_from is not None:  # a derived run starts from another run's final weights
        init = run(cfg.init_from, root=root, device=device, progress=progress, lookup=lookup,
                   **fit_options).model(device or "cpu").state_dict()
    widths = None
    if cfg.shape_from is not None:  # a student shaped from a pruned run's surviving weights
        widths = kd_prune.shaped_widths(run(cfg.shape_from, root=root, device=device, progress=progress,
                                            lookup=lookup, **fit_options).model("cpu"))
    with _locked(run_dir(cfg, root)):
        done = find(cfg, [root, *lookup])  # another process may have finished it meanwhile
        if done is None:
            fit(cfg, run_dir(cfg, root), teacher=teacher, init=init, widths=widths, device=device, progress=progress,
                **fit_options)
            done = Run(run_dir(cfg, root))
    return done


def dependency_levels(configs: list[TrainConfig]) -> list[list[TrainConfig]]:
    """Unique configurations (teachers and runs started from included), grouped so that each
    level's dependencies come earlier."""
    depth: dict[str, tuple[int, TrainConfig]] = {}

    def visit(cfg: TrainConfig) -> int:
        d = max((visit(t) + 1 for t in cfg.dependencies), default=0)
        depth[cfg.hash()] = (max(d, depth.get(cfg.hash(), (0, cfg))[0]), cfg)
        return d

    for cfg in configs:
        visit(cfg)
    levels: list[list[TrainConfig]] = [[] for _ in range(1 + max((d for d, _ in depth.values()), default=-1))]
    for d, cfg in depth.values():
        levels[d].append(cfg)
    return levels


def inventory(root: Path) -> list[dict]:
    """Every run folder under `root` (recursively), with its settings and final metrics, and
    whether it is `stale`: its name is not the identity its config.json has under this code (an
    old method version or default, or settings this code no longer knows), so the cache never
    hands it back."""
    rows = []
    for config_file in sorted(Path(root).rglob("config.json")):
        path = config_file.parent
        row = {"run": str(path.relative_to(root)), "path": path, "finished": (path / "final.json").exists()}
        try:
            cfg = TrainConfig.from_dict(json.loads(config_file.read_text()))
            row.update(model=cfg.model, method=cfg.method, seed=cfg.seed, epochs=cfg.epochs,
                       method_args=cfg.resolved().method_args, stale=run_dir(cfg, path.parent) != path)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            row.update(stale=True, problem=f"{type(e).__name__}: {e}")
        if row["finished"]:
            s = json.loads((path / "final.json").read_text())
            row.update(top1=s.get("top1"), best_top1=s.get("best_top1"), best_epoch=s.get("best_epoch"))
        rows.append(row)
    return rows


def is_busy(path: Path) -> bool:
    """Whether another process holds the run's lock (it is training it now)."""
    lock = path.with_name(path.name + ".lock")
    if not lock.exists():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextmanager
def num_threads(n: int | None):
    """Train with `n` CPU threads inside the block (None: torch's default): a CPU run's last
    digits depend on the thread count, so a profile pins it (params.yaml `threads`)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_one(args):
    cfg_dict, root, device, lookup, threads, fit_options = args
    t0 = time.perf_counter()
    with num_threads(threads or 1):
        done = run(TrainConfig.from_dict(cfg_dict), root=root, device=device, progress=False, lookup=lookup,
                   **fit_options)
    return done.path.name, done.summary["top1"], time.perf_counter() - t0


def run_many(configs: list[TrainConfig], *, root=None, device=None, workers: int = 1,
             progress: bool | None = None, lookup=(), threads: int | None = None, **fit_options) -> list[Run]:
    """Run many configurations, teachers first; `workers` > 1 trains that many at once in
    separate processes (fills a GPU with small CIFAR models). Each training uses `threads` CPU
    threads (None: torch's default, one in a worker process). `fit_options` go to `fit` (e.g.
    eval_every or evaluations). Returns the Runs in order."""
    root = Path(root) if root is not None else runs_root()
    roots = [root, *lookup]
    for cfg in configs:
        cfg.validate()
    for level in dependency_levels(configs):
        todo = [c for c in level if find(c, roots) is None]
        if workers <= 1 or len(todo) <= 1:
            with num_threads(threads):
                for cfg in todo:
                    run(cfg, root=root, device=device, progress=progress, lookup=lookup, **fit_options)
            continue
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(todo))) as pool:
            jobs = [(c.to_dict(), str(root), device, [str(p) for p in lookup], threads, fit_options) for c in todo]
            for k, (name, top1, seconds) in enumerate(pool.imap_unordered(_run_one, jobs), 1):
                if progress is not False:  # one line per finished run, in the order they finish
                    print(f"[{k}/{len(todo)}] {name}: top-1 {top1:.2f}, {seconds:.0f} s", flush=True)
    return [find(c, roots) for c in configs]
