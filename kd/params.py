"""params.yaml profiles: from a profile and a paper's section to training configurations.

    P = kd.params.Profile("quick")                 # reads <repo>/params.yaml (or $KD_PARAMS)
    sec = P.section("dkd", beta=None)              # the paper's section; non-None overrides win
    t = P.teacher("resnet20", seed=0)              # a Run, trained on demand like the teachers stage
    cfg = P.config("resnet8", "kd", seed=0, teacher=t.config, paper="dkd")
    runs = P.run_all([cfg, ...])                   # cached by configuration hash

Runs live in runs/<profile>/ ($KD_RUNS overrides runs/): teachers in teachers/<name>/, every
other run in students/ (one store for all papers); results in results/<profile>/
($KD_RESULTS overrides results/), so one profile never overwrites another's.
"""
from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path

import yaml

from kd import runs as kd_runs
from kd.runs import ROOT
from kd.train import TrainConfig

PROFILES = ("quick", "cpu", "full", "paper")


def params_path() -> Path:
    return Path(os.environ.get("KD_PARAMS", ROOT / "params.yaml"))


def load_params(path=None) -> dict:
    path = Path(path) if path is not None else params_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run from a clone of the repository or set KD_PARAMS")
    return read_yaml(path)


def read_yaml(path: Path):
    """A YAML file's content; a syntax error names the file, line and column, not only YAML's traceback."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e}); fix the file "
                         f"(`git diff {path.name}` shows what changed)") from None


def resolve(value, profile: str, inherits: str | None = None):
    """Pick the profile's entry out of {quick: .., full: .., paper: ..} values, recursively;
    a profile without an entry takes the `inherits` profile's, else None (e.g.
    `train: {paper: {...}}` overrides only `paper`)."""
    if isinstance(value, dict):
        if value and set(value) <= set(PROFILES):
            return resolve(value.get(profile, value.get(inherits)), profile, inherits)
        return {k: resolve(v, profile, inherits) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, profile, inherits) for v in value]
    return value


def _assigned_names(source: str) -> set[str]:
    import ast

    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def check_papermill_parameters(history: list[str] | None = None) -> None:
    """In a notebook run by papermill, a `-p name value` whose name is not a parameter of the
    notebook is an error naming the notebook's parameters (papermill itself only logs a warning,
    and the value would be silently ignored). `history` is the kernel's executed cells (IPython's
    `In`): papermill's injected cell starts with "# Parameters" and follows the parameters cell.
    Outside a kernel, or in a notebook not run by papermill, nothing to check."""
    if history is None:
        ipython = sys.modules.get("IPython")  # imported in a kernel; never imported here
        shell = ipython.get_ipython() if ipython else None
        if shell is None:
            return
        history = shell.user_ns.get("In", [])
    injected = [i for i, cell in enumerate(history) if i > 0 and cell.startswith("# Parameters\n")]
    if not injected:
        return
    i = injected[-1]
    declared = _assigned_names(history[i - 1])
    unknown = sorted(_assigned_names(history[i]) - declared)
    if unknown:
        raise ValueError(f"papermill -p {', '.join(unknown)}: not a parameter of this notebook; "
                         f"its parameters: {', '.join(sorted(declared))}")


def parse_seeds(seeds) -> list[int]:
    """[0, 1], 3, "[0, 1]", "0,1" or "3" as a list of distinct non-negative ints, else a clear error."""
    value = yaml.safe_load(f"[{seeds.strip().strip('[]')}]") if isinstance(seeds, str) else seeds
    value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(value, (list, tuple)) or not value or len(set(value)) != len(value)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise ValueError(f"seeds must be distinct non-negative integers such as [0, 1, 2], got {seeds!r}")
    return list(value)


# Keys any paper's section may hold besides its module's SECTION_KEYS; `kd.experiments.Study` reads them:
# `seeds`, the paper's own seeds for a profile instead of the profile's (a design whose comparisons need
# more paired seeds than the profile gives every paper)
SHARED_SECTION_KEYS = ("seeds",)


def _section_keys(paper: str) -> set[str] | None:
    """The keys a paper's section may hold: its experiment module's SECTION_KEYS and the shared
    ones, or None for a section without a module."""
    import importlib

    try:
        module = importlib.import_module(f"kd.experiments.{paper}")
    except ModuleNotFoundError as e:
        if e.name != f"kd.experiments.{paper}":
            raise
        return None
    return set(module.SECTION_KEYS) | set(SHARED_SECTION_KEYS)


class Profile:
    """One profile of params.yaml, with helpers that turn paper sections into runs."""

    def __init__(self, name: str | None = None, params: dict | None = None, check_device: bool = True,
                 seeds=None):
        """check_device=False: read a GPU profile on a machine without one (nothing trains).
        seeds: the seeds to run instead of the profile's (a notebook's `seeds` parameter): a
        list, one int, or their text as papermill's `-p seeds "[0, 1]"` passes it."""
        self.params = copy.deepcopy(params) if params is not None else load_params()
        name = name or self.params.get("profile", "quick")
        if name not in self.params["profiles"]:
            raise ValueError(f"unknown profile {name!r}; params.yaml defines "
                             f"{', '.join(self.params['profiles'])}")
        self.name = name
        self.settings = self.params["profiles"][name]
        self.seeds: list[int] = list(self.settings["seeds"]) if seeds is None else parse_seeds(seeds)
        self.device: str = self.settings.get("device", "cpu")
        self.workers: int = int(self.settings.get("workers", 1))
        # CPU threads per training (None: torch's default); a CPU run's last digits depend on it. KD_THREADS
        # overrides it (./test.sh runs two test processes side by side, one thread each: more threads than
        # cores stall OpenMP)
        self.threads: int | None = int(os.environ["KD_THREADS"]) if os.environ.get("KD_THREADS") else \
            self.settings.get("threads")
        # a smoke-test profile: its verdicts are `not tested` (kd.report.Report)
        self.smoke: bool = bool(self.settings.get("smoke", False))
        # one teacher (this seed) for the students of every seed, or None: a teacher per seed
        self.teacher_seed: int | None = self.settings.get("teacher_seed")
        # evaluate each run this many times over its epochs (and at the last; None: every epoch),
        # so a long run costs no more evaluation than a short one; it changes no final number
        self.evaluations: int | None = self.settings.get("evaluations")
        # designs (pairs, sweeps, models) written per profile fall back to this profile's
        self.inherits: str | None = self.settings.get("inherits")
        if self.device == "cuda" and check_device:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(f"profile {name!r} runs on CUDA, but no GPU is visible; use the "
                                   "quick profile on a CPU machine")

    # ------------------------------------------------------------------ paths
    @property
    def runs_root(self) -> Path:
        return kd_runs.runs_root(self.name)

    @property
    def results_root(self) -> Path:
        """results/<profile> ($KD_RESULTS overrides results/)."""
        return Path(os.environ.get("KD_RESULTS", ROOT / "results")) / self.name

    def results_dir(self, paper: str) -> Path:
        path = self.results_root / paper
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
        check_papermill_parameters()
        sec = resolve(self.params[paper], self.name, self.inherits)
        known = _section_keys(paper) or set(sec)
        for where, keys in (("params.yaml", set(sec)), ("the overrides", set(overrides))):
            if keys - known:  # a typo (`dvc exp run -S dkd.temprature=2`) would otherwise be ignored
                raise KeyError(f"{where}: unknown key(s) {sorted(keys - known)} for {paper!r}; "
                               f"known: {', '.join(sorted(known))}")
        sec.update({k: v for k, v in overrides.items() if v is not None})
        return sec

    def config(self, model: str, method: str = "ce", *, seed: int = 0, method_args: dict | None = None,
               teacher: TrainConfig | None = None, paper: str | None = None, **train) -> TrainConfig:
        """A TrainConfig with the profile's data and training settings, then the paper's
        `train` overrides, then `train` given here."""
        settings = dict(self.settings["data"])
        settings.update(self.settings["train"])
        if paper is not None:
            settings.update(resolve(self.params.get(paper, {}).get("train", {}), self.name, self.inherits) or {})
        settings.update(train)
        return TrainConfig(model=model, method=method, method_args=dict(method_args or {}),
                           teacher=teacher, seed=seed, **settings)

    def teacher_names(self) -> list[str]:
        return [n for n, r in self.params.get("teachers", {}).items() if self.name in r.get("profiles", PROFILES)]

    def first_seeds(self, n: int | None) -> list[int]:
        """The first `n` of the profile's seeds (all of them when `n` is None or 0): a design's
        secondary rows (sweeps, costly controls) run on fewer seeds than its central ones."""
        return list(self.seeds[:n]) if n else list(self.seeds)

    def teacher_seeds(self) -> list[int]:
        """The seeds teachers are trained with: the profile's `teacher_seed`, or every seed."""
        return [self.teacher_seed] if self.teacher_seed is not None else list(self.seeds)

    def teacher_config(self, name: str, seed: int = 0) -> TrainConfig:
        """The teacher `name` for the student of `seed` (with `teacher_seed` set, the one teacher)."""
        if self.teacher_seed is not None:
            seed = self.teacher_seed
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
        with kd_runs.num_threads(self.threads):
            return kd_runs.run(cfg, root=self.teacher_root(name), device=self.device, progress=progress,
                               lookup=self._lookup(), evaluations=self.evaluations)

    def teachers(self, names, progress: bool | None = False) -> dict[tuple[str, int], kd_runs.Run]:
        """{(name, seed): Run} for every name and seed of the profile; missing teachers train
        `workers` at a time in separate processes (fills a GPU), else one after another."""
        keys = [(n, s) for n in dict.fromkeys(names) for s in self.teacher_seeds()]
        todo = [(n, s) for n, s in keys
                if kd_runs.find(self.teacher_config(n, s), [self.teacher_root(n)]) is None]
        if self.workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            # longest first, one at a time per worker: a long teacher started last (or two queued on
            # one worker) leaves the other workers idle at the end
            todo.sort(key=lambda ns: -images_seen(self.teacher_config(*ns)))
            with mp.get_context("spawn").Pool(min(self.workers, len(todo))) as pool:
                for _ in pool.imap_unordered(_train_teacher, [(self.name, self.params, n, s) for n, s in todo]):
                    pass
        return {(n, s): self.teacher(n, s, progress) for n, s in keys}

    @property
    def students_root(self) -> Path:
        """The one store of the profile's non-teacher runs, shared by every paper: a run two
        papers need (the standard pair's CE and KD students) trains once."""
        return self.runs_root / "students"

    def run_all(self, configs: list[TrainConfig], progress: bool | None = False) -> list[kd_runs.Run]:
        """Train (or fetch from the cache) every configuration, `workers` at a time; runs of one
        seed and teacher share the teacher's outputs (kd.replay, under runs/<profile>/teacher_outputs)."""
        return kd_runs.run_many(configs, root=self.students_root, device=self.device,
                                workers=self.workers, progress=progress, lookup=self._lookup(),
                                threads=self.threads, evaluations=self.evaluations,
                                teacher_outputs=self.runs_root / "teacher_outputs")


def images_seen(cfg: TrainConfig) -> float:
    """Training images a run passes through (subset x epochs; the whole split counts as more
    than any subset): the order in which Profile.teachers hands teachers to its workers."""
    return (cfg.train_subset or math.inf) * cfg.epochs


def _train_teacher(args) -> None:
    """Worker of Profile.teachers: one teacher in its own process (one thread unless the profile says)."""
    name, params, teacher, seed = args
    P = Profile(name, params)
    P.threads = P.threads or 1
    P.teacher(teacher, seed)
