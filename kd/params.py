"""params.yaml profiles: from a profile and a paper's section to training configurations.

    P = kd.params.Profile("quick")                 # reads <repo>/params.yaml (or $KD_PARAMS)
    sec = P.section("dkd", beta=None)              # the paper's section; non-None overrides win
    t = P.teacher("resnet20", seed=0)              # a Run, trained on demand like the teachers stage
    cfg = P.config("resnet8", "kd", seed=0, teacher=t.config, paper="dkd")
    runs = P.run_all([cfg, ...], paper="dkd")      # cached by configuration hash

Runs live in runs/<profile>/ ($KD_RUNS overrides runs/), results in results/<profile>/
($KD_RESULTS overrides results/), so one profile never overwrites another's.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from kd import runs as kd_runs
from kd.runs import ROOT
from kd.train import TrainConfig

PROFILES = ("quick", "full", "paper")
_DATA_KEYS = ("dataset", "train_subset", "eval_subset", "val_fraction")


def params_path() -> Path:
    return Path(os.environ.get("KD_PARAMS", ROOT / "params.yaml"))


def load_params(path=None) -> dict:
    path = Path(path) if path is not None else params_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run from a clone of the repository or set KD_PARAMS")
    return yaml.safe_load(path.read_text())


def resolve(value, profile: str):
    """Pick the profile's entry out of {quick: .., full: .., paper: ..} values, recursively;
    a profile without an entry gets None (e.g. `train: {paper: {...}}` overrides only `paper`)."""
    if isinstance(value, dict):
        if value and set(value) <= set(PROFILES):
            return resolve(value.get(profile), profile)
        return {k: resolve(v, profile) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, profile) for v in value]
    return value


class Profile:
    """One profile of params.yaml, with helpers that turn paper sections into runs."""

    def __init__(self, name: str | None = None, params: dict | None = None):
        self.params = copy.deepcopy(params) if params is not None else load_params()
        name = name or self.params.get("profile", "quick")
        if name not in self.params["profiles"]:
            raise ValueError(f"unknown profile {name!r}; params.yaml defines "
                             f"{', '.join(self.params['profiles'])}")
        self.name = name
        self.settings = self.params["profiles"][name]
        self.seeds: list[int] = list(self.settings["seeds"])
        self.device: str = self.settings.get("device", "cpu")
        self.workers: int = int(self.settings.get("workers", 1))
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(f"profile {name!r} runs on CUDA, but no GPU is visible; use the "
                                   "quick profile on a CPU machine")

    # ------------------------------------------------------------------ paths
    @property
    def runs_root(self) -> Path:
        return kd_runs.runs_root(self.name)

    def results_dir(self, paper: str) -> Path:
        base = Path(os.environ.get("KD_RESULTS", ROOT / "results"))
        path = base / self.name / paper
        (path / "figures").mkdir(parents=True, exist_ok=True)
        return path

    def teacher_root(self, name: str) -> Path:
        return self.runs_root / "teachers" / name

    def _lookup(self) -> list[Path]:
        return [self.teacher_root(n) for n in self.params.get("teachers", {})]

    # ------------------------------------------------------------------ settings
    def section(self, paper: str, **overrides) -> dict:
        """The paper's section for this profile; overrides that are not None replace values
        (this is how a notebook's papermill parameters win over params.yaml)."""
        if paper not in self.params:
            raise KeyError(f"params.yaml has no section {paper!r}")
        sec = resolve(self.params[paper], self.name)
        sec.update({k: v for k, v in overrides.items() if v is not None})
        return sec

    def config(self, model: str, method: str = "ce", *, seed: int = 0, method_args: dict | None = None,
               teacher: TrainConfig | None = None, paper: str | None = None, **train) -> TrainConfig:
        """A TrainConfig with the profile's data and training settings, then the paper's
        `train` overrides, then `train` given here."""
        settings = dict(self.settings["data"])
        settings.update(self.settings["train"])
        if paper is not None:
            settings.update(resolve(self.params.get(paper, {}).get("train", {}), self.name) or {})
        settings.update(train)
        return TrainConfig(model=model, method=method, method_args=dict(method_args or {}),
                           teacher=teacher, seed=seed, **settings)

    def teacher_names(self) -> list[str]:
        return [n for n, r in self.params.get("teachers", {}).items() if self.name in r.get("profiles", PROFILES)]

    def teacher_config(self, name: str, seed: int = 0) -> TrainConfig:
        recipes = self.params.get("teachers", {})
        if name not in recipes:
            raise KeyError(f"teacher {name!r} is not in params.yaml's `teachers`; add it there "
                           f"(known: {', '.join(recipes)})")
        r = recipes[name]
        train = dict(self.settings.get("teacher_train") or {})
        train.update(r.get("train", {}))
        return self.config(r["model"], r.get("method", "ce"), seed=seed, method_args=r.get("method_args"), **train)

    # ------------------------------------------------------------------ running
    def teacher(self, name: str, seed: int = 0, progress: bool | None = False) -> kd_runs.Run:
        """The trained teacher `name` (trained now into its teachers-stage folder if missing)."""
        cfg = self.teacher_config(name, seed)
        return kd_runs.run(cfg, root=self.teacher_root(name), device=self.device, progress=progress,
                           lookup=self._lookup())

    def teachers(self, names, progress: bool | None = False) -> dict[tuple[str, int], kd_runs.Run]:
        """{(name, seed): Run} for every name and seed of the profile; missing teachers train
        `workers` at a time in separate processes (fills a GPU), else one after another."""
        keys = [(n, s) for n in dict.fromkeys(names) for s in self.seeds]
        todo = [(n, s) for n, s in keys
                if kd_runs.find(self.teacher_config(n, s), [self.teacher_root(n)]) is None]
        if self.workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(self.workers, len(todo))) as pool:
                pool.map(_train_teacher, [(self.name, self.params, n, s) for n, s in todo])
        return {(n, s): self.teacher(n, s, progress) for n, s in keys}

    def run_all(self, configs: list[TrainConfig], paper: str, progress: bool | None = False) -> list[kd_runs.Run]:
        """Train (or fetch from the cache) every configuration, in parallel on a GPU profile."""
        return kd_runs.run_many(configs, root=self.runs_root / paper, device=self.device,
                                workers=self.workers, progress=progress, lookup=self._lookup())


def _train_teacher(args) -> None:
    """Worker of Profile.teachers: one teacher in its own process."""
    import torch

    name, params, teacher, seed = args
    torch.set_num_threads(1)
    Profile(name, params).teacher(teacher, seed)
