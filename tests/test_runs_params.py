"""kd.runs (runs cached by configuration hash) and kd.params (params.yaml profiles)."""
import importlib
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import kd.__main__
import kd.data
import kd.experiments
import kd.methods
import kd.models
import kd.report
import kd.train
from kd import params as kd_params
from kd import runs as kd_runs
from kd.params import PROFILES, ROOT, Profile, images_seen, load_params, resolve
from kd.train import TrainConfig, fit

PARAMS = yaml.safe_load(kd_params.params_path().read_text())
PAPERS = [k for k in PARAMS if k not in ("profile", "profiles", "teachers")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and avoids OpenMP stalls on a shared 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes) -> TrainConfig:
    cfg = TrainConfig(model="plane2", dataset="digits", train_subset=200, eval_subset=100, epochs=1,
                      batch_size=50, lr=0.05, schedule="cosine", crop_pad=1, seed=0)
    return cfg.replace(**changes)


@pytest.fixture
def fits(monkeypatch):
    """Records every training that kd.runs starts (config hashes, in order)."""
    calls = []
    real = kd_runs.fit

    def recording(cfg, run_dir, **kw):
        calls.append(cfg.hash())
        return real(cfg, run_dir, **kw)

    monkeypatch.setattr(kd_runs, "fit", recording)
    return calls


# ----------------------------------------------------------------------------- the run cache

def test_second_run_returns_the_stored_run_without_training(tmp_path, fits):
    cfg = tiny()
    first = kd_runs.run(cfg, root=tmp_path, device="cpu", progress=False)
    assert fits == [cfg.hash()]
    assert first.path == tmp_path / f"plane2-ce-{cfg.hash()}"
    again = kd_runs.run(tiny(), root=tmp_path, device="cpu", progress=False)
    assert fits == [cfg.hash()], "the second run() trains nothing"
    assert again.path == first.path
    assert again.config == cfg.resolved() and again.summary["hash"] == cfg.hash()
    assert again.summary["versions"] == {"method": 1, "train": kd.train.TRAIN_VERSION}
    where = again.summary["provenance"]
    assert where["device"] == "cpu" and where["torch"] == torch.__version__ and where["threads"] >= 1
    assert set(where) >= {"device_name", "cpu_capability", "python", "git_commit", "kd_modified"}
    assert again.history["epoch"].tolist() == [1]
    logits, targets = again.eval_logits()
    assert logits.shape == (100, 10) and targets.shape == (100,)
    model = again.model()
    assert not model.training
    x = next(iter(kd.data.Loader(*_eval_split(cfg), batch_size=100, train=False))).x
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=1e-4, atol=1e-4)
    kd_runs.run(tiny(seed=1), root=tmp_path, device="cpu", progress=False)
    assert len(fits) == 2, "another configuration is another run"


def test_kd_threads_overrides_the_profiles_threads(monkeypatch):
    """KD_THREADS (./test.sh's two processes side by side, one thread each) wins over a profile's `threads`."""
    monkeypatch.delenv("KD_THREADS", raising=False)
    assert Profile("quick", params=PARAMS, check_device=False).threads == PARAMS["profiles"]["quick"]["threads"]
    monkeypatch.setenv("KD_THREADS", "1")
    assert Profile("quick", params=PARAMS, check_device=False).threads == 1


def test_run_many_trains_with_the_threads_asked_for_and_restores_them(tmp_path):
    before = torch.get_num_threads()
    (r,) = kd_runs.run_many([tiny()], root=tmp_path, device="cpu", threads=1, progress=False)
    assert r.summary["provenance"]["threads"] == 1 and torch.get_num_threads() == before


def test_run_identity_spells_out_defaults_and_versions(monkeypatch):
    """A default given explicitly names the same run; a changed default, a new method version
    or a new training-loop version names a new one, and so does the teacher's."""
    kd_cfg = tiny(method="kd", teacher=tiny(seed=5))
    assert kd_cfg.hash() == kd_cfg.replace(method_args={"temperature": 4.0}).hash()
    assert kd_cfg.identity()["method_args"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    before = kd_cfg.hash()
    monkeypatch.setattr(kd.methods.KD.__init__, "__defaults__", (2.0, 0.1, 0.9))
    assert kd_cfg.hash() != before, "a changed default is a new run"
    monkeypatch.undo()
    assert kd_cfg.hash() == before
    monkeypatch.setattr(kd.methods.KD, "version", 2)
    assert kd_cfg.hash() != before, "a new method version is a new run"
    monkeypatch.undo()
    teacher_before = kd_cfg.teacher.hash()
    monkeypatch.setattr(kd.methods.CrossEntropy, "version", 2)
    assert kd_cfg.teacher.hash() != teacher_before, "a new CE version is a new teacher run"
    assert kd_cfg.hash() != before, "and a new student run: the teacher's identity is part of the student's"
    monkeypatch.undo()
    monkeypatch.setattr(kd.train, "TRAIN_VERSION", kd.train.TRAIN_VERSION + 1)
    assert kd_cfg.hash() != before, "a new training-loop version is a new run"
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        tiny(method="kd", method_args={"temprature": 2}).hash()


def _eval_split(cfg):
    ds = kd.data.load(cfg.dataset, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset, seed=cfg.seed)
    return ds.x_eval, ds.y_eval, ds.mean, ds.std


def test_an_unfinished_run_is_not_a_cache_hit(tmp_path, fits):
    cfg = tiny()
    path = kd_runs.run_dir(cfg, tmp_path)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg.to_dict()))  # a killed run: no final.json
    assert kd_runs.find(cfg, [tmp_path]) is None
    kd_runs.run(cfg, root=tmp_path, device="cpu", progress=False)
    assert fits == [cfg.hash()] and (path / "final.json").exists()


def test_student_trains_its_teacher_first_and_lookup_finds_teachers_elsewhere(tmp_path, fits):
    teacher = tiny(seed=5)
    student = tiny(method="kd", teacher=teacher, model="plane2")
    elsewhere, here = tmp_path / "teachers", tmp_path / "students"
    kd_runs.run(teacher, root=elsewhere, device="cpu", progress=False)
    assert fits == [teacher.hash()]
    run = kd_runs.run(student, root=here, device="cpu", progress=False, lookup=[elsewhere])
    assert fits == [teacher.hash(), student.hash()], "the teacher in the lookup folder is not retrained"
    assert run.path.parent == here and not kd_runs.run_dir(teacher, here).exists()
    assert run.summary["teacher_hash"] == teacher.hash() and "agreement" in run.summary
    # without the lookup folder the teacher is trained (once) under the root
    fits.clear()
    other = tmp_path / "fresh"
    kd_runs.run(student, root=other, device="cpu", progress=False)
    assert fits == [teacher.hash(), student.hash()]
    assert (kd_runs.run_dir(teacher, other) / "final.json").exists()


_RACE = """
import sys
import torch
from kd import runs
from kd.train import TrainConfig
torch.set_num_threads(1)
real = runs.fit
def recording(cfg, run_dir, **kw):
    open(sys.argv[2], "a").write("trained\\n")
    return real(cfg, run_dir, **kw)
runs.fit = recording
cfg = TrainConfig(model="plane2", dataset="digits", train_subset=200, eval_subset=100, epochs=2, batch_size=50,
                  lr=0.05, schedule="cosine", crop_pad=1, seed=5)
print(runs.run(cfg, root=sys.argv[1], device="cpu", progress=False).path)
"""


def test_two_processes_asked_for_one_run_train_it_once(tmp_path):
    """A lock per run: the second process waits, then finds the first's finished run."""
    import subprocess
    import sys

    log = tmp_path / "trained.log"
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(tmp_path / "store"), str(log)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    paths = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert paths[0] == paths[1] and log.read_text() == "trained\n"
    run = kd_runs.Run(Path(paths[0]))
    assert len(run.history) == 2 and (run.path / "final.json").exists()

def test_dependency_levels_put_teachers_first_and_drop_duplicates():
    t = tiny(model="plane4")
    a = tiny(method="kd", teacher=t, model="plane2")
    s = tiny(method="kd", teacher=a, model="plane2", seed=1)  # a chain t -> a -> s (TAKD)
    s2 = tiny(method="kd", teacher=t, model="plane2", seed=2)
    levels = kd_runs.dependency_levels([s, s2, s, t, a])
    hashes = [[c.hash() for c in level] for level in levels]
    assert hashes == [[t.hash()], [a.hash(), s2.hash()], [s.hash()]] or \
        hashes == [[t.hash()], [s2.hash(), a.hash()], [s.hash()]]
    assert kd_runs.dependency_levels([]) == []


def test_run_many_trains_teachers_before_students_and_keeps_the_order(tmp_path, fits):
    t1, t2 = tiny(seed=1), tiny(seed=2)
    s1 = tiny(method="kd", teacher=t1)
    s2 = tiny(method="dkd", method_args={"beta": 2.0, "warmup": 1}, teacher=t2)
    configs = [s1, s2, s1, t1]
    runs = kd_runs.run_many(configs, root=tmp_path, device="cpu", progress=False)
    assert [r.config.hash() for r in runs] == [c.hash() for c in configs], "Runs in the order asked"
    assert sorted(fits[:2]) == sorted([t1.hash(), t2.hash()]) and sorted(fits[2:]) == sorted([s1.hash(), s2.hash()])
    assert len(fits) == 4, "each configuration trained once"
    fits.clear()
    assert [r.path for r in kd_runs.run_many(configs, root=tmp_path)] == [r.path for r in runs]
    assert fits == [], "all cached"


def test_run_many_validates_every_config_before_training(tmp_path, fits):
    with pytest.raises(ValueError, match="unknown model"):
        kd_runs.run_many([tiny(), tiny(model="nope")], root=tmp_path, device="cpu")
    assert fits == []


def test_run_many_with_worker_processes(tmp_path, capsys):
    """workers > 1: a level's trainings run in that many spawned processes (how a GPU is
    filled with small CIFAR models); the next level waits for them. Each finished run prints
    one line (its name, top-1 and time) unless progress is False."""
    t1, t2 = tiny(seed=11), tiny(seed=12)
    s = tiny(method="kd", teacher=t1, seed=13)
    runs = kd_runs.run_many([s, t2], root=tmp_path, device="cpu", workers=2, progress=False)
    assert [r.config.hash() for r in runs] == [s.hash(), t2.hash()]
    for cfg in (t1, t2, s):
        assert (kd_runs.run_dir(cfg, tmp_path) / "final.json").exists()
    assert capsys.readouterr().out == ""
    t3, t4 = tiny(seed=14), tiny(seed=15)
    kd_runs.run_many([t3, t4], root=tmp_path, device="cpu", workers=2)
    lines = capsys.readouterr().out.splitlines()
    names = sorted(kd_runs.run_dir(c, tmp_path).name for c in (t3, t4))
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines) == names
    assert all(re.fullmatch(r"\[[12]/2\] \S+: top-1 \d+\.\d\d, \d+ s", line) for line in lines), lines


def test_runs_root_follows_kd_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RUNS", str(tmp_path))
    assert kd_runs.runs_root("quick") == tmp_path / "quick" and kd_runs.runs_root() == tmp_path


# ----------------------------------------------------------------------------- resolve

def test_resolve_picks_the_profiles_value_recursively():
    value = {"a": {"quick": 1, "full": 2, "paper": 3}, "b": [{"quick": "x", "paper": "y", "full": "z"}, 4],
             "c": {"d": {"quick": {"e": {"quick": 5, "full": 6, "paper": 7}}, "full": None, "paper": {}}},
             "plain": {"epochs": 3}, "empty": {}}
    assert resolve(value, "quick") == {"a": 1, "b": ["x", 4], "c": {"d": {"e": 5}}, "plain": {"epochs": 3}, "empty": {}}
    assert resolve(value, "full") == {"a": 2, "b": ["z", 4], "c": {"d": None}, "plain": {"epochs": 3}, "empty": {}}
    assert resolve(value, "paper")["c"] == {"d": {}}
    assert resolve({"quick": 1, "paper": 3}, "full") is None, "a profile without an entry gets None"
    assert resolve(7, "paper") == 7
    # a profile that inherits another's designs takes its entry where it has none of its own
    assert resolve(value, "cpu", inherits="quick") == resolve(value, "quick")
    assert resolve({"quick": 1, "cpu": 2}, "cpu", inherits="quick") == 2


def test_cpu_profile_shares_one_teacher_and_one_data_subset_across_seeds():
    P = Profile("cpu", params=PARAMS)
    assert P.inherits == "quick" and P.teacher_seeds() == [P.teacher_seed] and len(P.seeds) >= 5
    teachers = {P.teacher_config("resnet14", s).hash() for s in P.seeds}
    assert len(teachers) == 1, "every seed's student distils from the one teacher"
    students = [P.config("resnet8", seed=s) for s in P.seeds]
    assert len({c.hash() for c in students}) == len(P.seeds), "seeds still differ"
    subsets = {tuple(c.load_data().y_train[:50].tolist()) for c in students[:2]}
    assert len(subsets) == 1, "one training subset (data_seed) for every seed"
    assert "cpu" not in PARAMS["dist"]["student"], "the example below needs a design cpu does not set"
    assert P.section("dist")["student"] == Profile("quick", params=PARAMS).section("dist")["student"], "inherited"
    assert P.section("dkd")["pairs"] == PARAMS["dkd"]["pairs"]["cpu"], "a cpu entry wins"
    assert not P.smoke and Profile("quick", params=PARAMS).smoke


# ----------------------------------------------------------------------------- Profile

def custom_params():
    settings = {"device": "cpu", "workers": 1, "seeds": [0, 1],
                "data": {"dataset": "digits", "train_subset": 200, "eval_subset": 100, "val_fraction": 0.0},
                "train": {"epochs": 1, "batch_size": 50, "lr": 0.05, "schedule": "cosine", "crop_pad": 1,
                          "weight_decay": 0.0005},
                "teacher_train": {"epochs": 2}}
    return {
        "profile": "quick",
        "profiles": {"quick": settings, "full": {**settings, "seeds": [0, 1, 2]},
                     "paper": {**settings, "device": "cuda"}},
        "teachers": {"small": {"model": "plane2", "method": "ce", "train": {"lr": 0.02}, "profiles": ["quick"]},
                     "big": {"model": "plane4", "method": "ce", "profiles": ["full", "paper"]},
                     "smooth": {"model": "plane2", "method": "label_smoothing", "method_args": {"smoothing": 0.2}}},
        "mypaper": {"beta": {"quick": 1.0, "full": 2.0, "paper": 8.0}, "temperature": 4.0,
                    "train": {"quick": {"epochs": 3, "batch_size": 20}, "full": {}, "paper": {"epochs": 240}}},
    }


def test_profile_settings_and_sections():
    P = Profile(params=custom_params())
    assert P.name == "quick" and P.seeds == [0, 1] and P.device == "cpu" and P.workers == 1
    assert Profile("full", params=custom_params()).seeds == [0, 1, 2]
    sec = P.section("mypaper")
    assert sec["beta"] == 1.0 and sec["train"] == {"epochs": 3, "batch_size": 20}
    assert P.section("mypaper", beta=None, temperature=None) == sec, "None overrides are ignored"
    with pytest.raises(KeyError, match=r"overrides: unknown key\(s\) \['tempreature'\] for 'mypaper'; known: beta"):
        P.section("mypaper", beta=16, tempreature=2.0)
    assert P.section("mypaper", beta=16)["temperature"] == 4.0
    with pytest.raises(KeyError, match="no section 'nopaper'"):
        P.section("nopaper")
    with pytest.raises(ValueError, match="unknown profile 'huge'; params.yaml defines quick, full, paper"):
        Profile("huge", params=custom_params())


@pytest.mark.parametrize("given, seeds", [([0, 2], [0, 2]), (3, [3]), ("[0, 1]", [0, 1]), ("0,1", [0, 1]), ("4", [4])])
def test_a_notebooks_seeds_parameter_in_any_form_papermill_passes(given, seeds):
    assert Profile("quick", seeds=given).seeds == seeds


@pytest.mark.parametrize("given", ["[0, a]", "abc", [0, 0], [-1], [], 1.5, [True]])
def test_bad_seeds_are_a_clear_error(given):
    with pytest.raises(ValueError, match="seeds must be distinct non-negative integers"):
        Profile("quick", seeds=given)


def test_a_paper_section_with_an_unknown_key_is_rejected():
    """`dvc exp run -S dkd.temprature=2` writes the typo into params.yaml: the stage fails naming it."""
    params = load_params()
    params["dkd"]["temprature"] = 2.0
    with pytest.raises(KeyError, match=r"params.yaml: unknown key\(s\) \['temprature'\] for 'dkd'"):
        Profile("quick", params=params).section("dkd")


@pytest.mark.parametrize("paper", kd.__main__.studies())
def test_each_experiment_module_knows_its_section_keys(paper):
    own = set(load_params()[paper]) - set(kd_params.SHARED_SECTION_KEYS)
    assert set(importlib.import_module(f"kd.experiments.{paper}").SECTION_KEYS) == own


def test_config_merges_profile_then_paper_then_explicit_settings():
    P = Profile(params=custom_params())
    plain = P.config("plane2", seed=3)
    assert (plain.dataset, plain.train_subset, plain.epochs, plain.batch_size, plain.lr, plain.seed) == \
        ("digits", 200, 1, 50, 0.05, 3)
    paper = P.config("plane2", paper="mypaper")
    assert (paper.epochs, paper.batch_size, paper.lr) == (3, 20, 0.05), "the paper's train overrides the profile's"
    explicit = P.config("plane2", "kd", paper="mypaper", epochs=9, lr=0.01, method_args={"temperature": 2.0},
                        teacher=tiny())
    assert (explicit.epochs, explicit.batch_size, explicit.lr) == (9, 20, 0.01), "explicit settings win"
    assert explicit.method == "kd" and explicit.method_args == {"temperature": 2.0} and explicit.teacher == tiny()
    explicit.validate()
    assert Profile("full", params=custom_params()).config("plane2", paper="mypaper").epochs == 1


def test_teacher_configs():
    P = Profile(params=custom_params())
    assert P.teacher_names() == ["small", "smooth"], "only the teachers of the profile (all if unspecified)"
    assert Profile("full", params=custom_params()).teacher_names() == ["big", "smooth"]
    small = P.teacher_config("small", seed=1)
    assert (small.model, small.method, small.epochs, small.lr, small.seed) == ("plane2", "ce", 2, 0.02, 1), \
        "teacher_train, then the recipe's train"
    smooth = P.teacher_config("smooth")
    assert smooth.method == "label_smoothing" and smooth.method_args == {"smoothing": 0.2}
    with pytest.raises(KeyError, match="teacher 'resnet1000' is not in params.yaml's `teachers`; add it there "
                                       "\\(known: small, big, smooth\\)"):
        P.teacher_config("resnet1000")


def test_profile_trains_teachers_and_students_into_its_folders(tmp_path, monkeypatch, fits):
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KD_RESULTS", str(tmp_path / "results"))
    P = Profile(params=custom_params())
    teachers = P.teachers(["small", "small"])
    assert sorted(teachers) == [("small", 0), ("small", 1)]
    assert teachers[("small", 0)].path.parent == tmp_path / "runs" / "quick" / "teachers" / "small"
    assert len(fits) == 2
    students = [P.config("plane2", "kd", seed=s, teacher=teachers[("small", s)].config, paper="mypaper")
                for s in P.seeds]
    runs = P.run_all(students)
    assert [r.path.parent for r in runs] == [tmp_path / "runs" / "quick" / "students"] * 2
    assert len(fits) == 4, "the teachers are found in their folders, not retrained"
    assert len(list((tmp_path / "runs" / "quick" / "teacher_outputs").glob("*/epoch_0.pt"))) == 2, \
        "each seed's KD student recorded its teacher's outputs for the others of its seed (kd.replay)"
    assert P.teacher("small", 1).path == teachers[("small", 1)].path and len(fits) == 4
    out = P.results_dir("mypaper")
    assert out == tmp_path / "results" / "quick" / "mypaper" and (out / "figures").is_dir()



def test_the_teachers_command_trains_the_profiles_teachers_in_one_process_and_writes_their_metrics(
        tmp_path, monkeypatch, fits):
    """`python -m kd teachers` (dvc's teachers stage): every teacher the profile uses, for every teacher
    seed; metrics per teacher in results/<profile>/teachers, curves in teacher_curves; a teacher the
    profile no longer uses loses its files; named teachers train alone and remove nothing."""
    main = kd.__main__.main
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(custom_params()))
    for var, sub in (("KD_PARAMS", "params.yaml"), ("KD_RUNS", "runs"), ("KD_RESULTS", "results")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    metrics, curves = tmp_path / "results" / "quick" / "teachers", tmp_path / "results" / "quick" / "teacher_curves"
    metrics.mkdir(parents=True)
    (metrics / "gone.json").write_text("{}")  # a teacher an older params.yaml had
    assert main(["teachers", "--profile", "quick"]) == 0
    assert len(fits) == 4, "small and smooth (big is for full and paper only), seeds 0 and 1"
    assert sorted(f.name for f in metrics.iterdir()) == ["small.json", "smooth.json"]
    assert sorted(f.name for f in curves.iterdir()) == ["small.csv", "smooth.csv"]
    record = json.loads((metrics / "small.json").read_text())
    assert sorted(record["seeds"]) == ["seed0", "seed1"] and set(record["seeds"]["seed0"]) >= {"top1", "ece"}
    seeds = [line.split(",")[-1] for line in (curves / "small.csv").read_text().splitlines()]
    assert seeds == ["seed", "0", "0", "1", "1"], "two epochs per seed"
    (metrics / "gone.json").write_text("{}")
    assert main(["teachers", "big", "--profile", "quick"]) == 0, "a named teacher trains even if no paper uses it"
    assert len(fits) == 6 and (metrics / "big.json").exists() and (metrics / "gone.json").exists()


def test_a_plan_lists_each_training_once_and_comes_back_with_runs_in_place(tmp_path, monkeypatch, fits):
    """kd.experiments.configs / run_plan: any nesting of dicts and lists, a config shared by two
    rows trained once, the plan's shape kept."""
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    P = Profile(params=custom_params())
    a, b = tiny(seed=0), tiny(seed=1)
    plan = {"main": {"CE": [a, b], "again": [a]}, "chains": [[b], {"x": a}]}
    assert [c.hash() for c in kd.experiments.configs(plan)] == [a.hash(), b.hash()]
    runs = kd.experiments.run_plan(P, plan)
    assert len(fits) == 2
    assert runs["main"]["CE"][0].path == runs["main"]["again"][0].path == runs["chains"][1]["x"].path
    assert runs["chains"][0][0].config.hash() == b.hash()

# ----------------------------------------------------------------------------- params.yaml

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("paper", PAPERS)
def test_every_papers_training_overrides_resolve_in_every_profile(paper, profile):
    """Profile.config(..., paper=p) must work in every profile: a paper's `train` written as
    {paper: {...}} alone has no value for quick and full."""
    P = Profile(profile, params=PARAMS, check_device=False)  # nothing trains here
    cfg = P.config("resnet8", paper=paper)
    cfg.validate()
    assert cfg.dataset == PARAMS["profiles"][profile]["data"]["dataset"]


def test_paper_profile_needs_a_gpu_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError,
                       match="profile 'paper' runs on CUDA, but no GPU is visible; use the quick profile"):
        Profile("paper")


@pytest.fixture
def paper_profile(monkeypatch):
    """Profile("paper") as on a GPU machine (only the availability check is faked: nothing
    here trains on CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return Profile("paper")


def test_paper_profile_is_the_cifar100_recipe(paper_profile):
    P = paper_profile
    assert P.device == "cuda" and len(P.seeds) >= 2
    cfg = P.config("resnet8")
    assert (cfg.dataset, cfg.train_subset, cfg.eval_subset, cfg.val_fraction) == ("cifar100", None, None, 0.0)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.schedule, cfg.milestones, cfg.crop_pad, cfg.flip) == \
        (240, 64, 0.05, "multistep", [0.625, 0.75, 0.875], 4, True)
    for name in P.teacher_names():
        t = P.teacher_config(name)
        t.validate()
        assert t.dataset == "cifar100" and t.model in kd.models.available()


def _unresolved(value) -> bool:
    if isinstance(value, dict):
        return bool(value) and set(value) <= set(PROFILES) or any(_unresolved(v) for v in value.values())
    if isinstance(value, list):
        return any(_unresolved(v) for v in value)
    return False


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_profile_resolves_every_section_and_its_configs_validate(paper_profile, paper):
    P = paper_profile
    sec = P.section(paper)
    assert not _unresolved(sec), "every {quick, full, paper} value is resolved"
    try:
        module = importlib.import_module(f"kd.experiments.{paper}")
    except ModuleNotFoundError:
        pytest.skip(f"kd.experiments.{paper} is not written yet")
    configs = kd.experiments.configs(module.plan(P, sec))
    assert configs, "the paper profile trains something"
    trained = set(P.teacher_names())
    assert set(module.teacher_names(P, sec)) <= trained
    for cfg in configs:
        cfg.validate()
        assert cfg.dataset == "cifar100"
        todo = list(cfg.dependencies)  # teachers (an ensemble's members) and the runs it starts from
        while todo:
            t = todo.pop()
            assert t.dataset == "cifar100"
            todo += t.dependencies


def _write_cifar100(root, n_train=300, n_test=200):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [j % 100 for j in range(n)]
        d = {b"filenames": [b"f.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
             b"coarse_labels": [f // 5 for f in fine], b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"x"] * 100,
                                                b"coarse_label_names": [b"y"] * 20}, protocol=2))


def test_a_paper_profile_config_trains_on_cifar100_format_files(paper_profile, tmp_path):
    """The CIFAR-100 recipe end to end on CPU, on small CIFAR-format files given by data_root:
    one epoch of a student distilled (DKD) from a 100-class teacher."""
    _write_cifar100(tmp_path / "data")
    P = paper_profile
    small = dict(train_subset=200, eval_subset=100, epochs=1)
    teacher_cfg = P.teacher_config("resnet20").replace(**small)
    cfg = P.config("resnet8", "dkd", method_args={"beta": 8.0, "warmup": 20}, teacher=teacher_cfg,
                   paper="dkd", **small)
    teacher = kd.models.create("resnet20", 100, in_channels=3)
    summary = fit(cfg, tmp_path / "run", teacher=teacher, device="cpu", progress=False, data_root=tmp_path / "data")
    assert summary["num_train"] == 200 and summary["num_eval"] == 100
    for key in ("top1", "top5", "nll", "ece", "agreement", "kl_teacher"):
        assert np.isfinite(summary[key]), key
    assert summary["top5"] >= summary["top1"]
    hist = kd_runs.Run(tmp_path / "run").history
    assert {"train_ce", "train_tckd", "train_nckd", "top5"} <= set(hist.columns)
    assert kd_runs.Run(tmp_path / "run").model().classifier.out_features == 100


def test_project_root_follows_kd_root_then_the_working_directory(tmp_path, monkeypatch):
    copy = tmp_path / "exp-copy"  # e.g. the temporary copy `dvc exp run --temp` executes in
    (copy / "notebooks").mkdir(parents=True)
    (copy / "params.yaml").write_text("profile: quick\n")
    (copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("KD_ROOT", raising=False)
    monkeypatch.chdir(copy / "notebooks")  # papermill runs the notebooks from notebooks/
    assert kd_runs.project_root() == copy.resolve()
    monkeypatch.chdir(tmp_path)  # not inside a checkout: the one kd is installed from
    assert kd_runs.project_root() == Path(kd_runs.__file__).resolve().parent.parent
    monkeypatch.setenv("KD_ROOT", str(copy))
    assert kd_runs.project_root() == copy.resolve()


def test_an_ensemble_teacher_trains_its_members_first_and_distils_their_mean_prediction(tmp_path, fits):
    members = [tiny(seed=11), tiny(seed=12, model="plane4")]
    student = tiny(method="kd", teacher=members)
    assert student.teachers == members and student.hash() != tiny(method="kd", teacher=members[:1] * 2).hash()
    assert TrainConfig.from_dict(student.to_dict()) == student, "a list of teachers round-trips through config.json"
    with pytest.raises(ValueError, match="at least 2 members"):
        tiny(method="kd", teacher=[tiny(seed=11)]).validate()
    run = kd_runs.run(student, root=tmp_path, device="cpu", progress=False)
    assert fits == [m.hash() for m in members] + [student.hash()], "members first, once each"
    assert run.summary["teacher_hash"] == [m.hash() for m in members]
    nets = [kd_runs.find(m, [tmp_path]).model() for m in members]
    ensemble = kd.models.Ensemble(nets)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        mean = torch.stack([n(x).softmax(1) for n in nets]).mean(0)
        torch.testing.assert_close(ensemble(x).softmax(1), mean)
    assert kd_runs.dependency_levels([student])[0] == members


def test_invalid_params_yaml_names_the_file_and_line(tmp_path, monkeypatch):
    bad = tmp_path / "params.yaml"
    bad.write_text("profiles:\n  quick: {seeds: [0, 1]\ndkd:\n  beta: 8\n")  # unclosed flow mapping
    monkeypatch.setenv("KD_PARAMS", str(bad))
    with pytest.raises(ValueError, match=r"params.yaml, line \d+, column \d+: invalid YAML") as e:
        Profile("quick")
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no YAML traceback behind it


def test_papermill_parameter_that_the_notebook_lacks_is_an_error(tmp_path, monkeypatch, capfd):
    """`papermill -p temprature 2` names the notebook's parameters instead of being ignored; and
    the kernel prints no warning (scripts/setup.sh installs scripts/ipython_kernel_config.py)."""
    import nbformat
    import papermill

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's kd

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "quick"\nbeta = None', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('from kd.params import Profile\n'
                                          'sec = Profile(profile).section("dkd", beta=beta)')]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, tmp_path / "toy.ipynb")
    papermill.execute_notebook(str(tmp_path / "toy.ipynb"), str(tmp_path / "ok.ipynb"),
                               parameters={"profile": "quick", "beta": 4}, progress_bar=False, cwd=str(tmp_path))
    assert "without encryption" not in capfd.readouterr().err, "the kernel's TCP warning"
    with pytest.raises(papermill.PapermillExecutionError, match=r"papermill -p temprature: not a parameter of this "
                                                                  r"notebook; its parameters: beta, profile"):
        papermill.execute_notebook(str(tmp_path / "toy.ipynb"), str(tmp_path / "bad.ipynb"),
                                   parameters={"profile": "quick", "temprature": 2}, progress_bar=False,
                                   cwd=str(tmp_path))


def test_a_study_binds_a_paper_to_a_profile_once(tmp_path, monkeypatch):
    from kd.experiments import Study, configs

    monkeypatch.setenv("KD_RESULTS", str(tmp_path / "results"))
    S = Study("dkd", "quick", seeds="[0, 1]", beta=4.0)
    assert S.P.seeds == [0, 1] and S.sec["beta"] == 4.0 and S.module is kd.experiments.dkd
    assert S.paper == kd.report.paper_results("dkd")
    assert configs(S.plan()) == configs(kd.experiments.dkd.plan(S.P, S.sec))
    assert not (tmp_path / "results").exists(), "no results folder until the notebook reports (run-many writes none)"
    assert S.rep.dir == tmp_path / "results" / "quick" / "dkd"
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['temprature'\] for 'dkd'"):
        Study("dkd", "quick", temprature=2)


def test_a_papers_own_seeds_replace_the_profiles_and_a_notebooks_replace_both(tmp_path, monkeypatch):
    """A section's `seeds` (kd.params.SHARED_SECTION_KEYS), for one profile: the paper's plan and
    report use them; other profiles keep theirs; the notebook's `seeds` parameter wins."""
    from kd.experiments import Study, configs

    params = load_params()
    params["dkd"]["seeds"] = {"cpu": [0, 1, 2, 3, 4, 5, 6]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("KD_PARAMS", str(path))
    own = Study("dkd", "cpu")
    assert own.P.seeds == [0, 1, 2, 3, 4, 5, 6] and "seeds" not in own.sec
    assert {c.seed for c in configs(own.plan())} >= set(range(7))
    assert Study("dkd", "quick").P.seeds == params["profiles"]["quick"]["seeds"]
    assert Study("dkd", "cpu", seeds="[0, 1]").P.seeds == [0, 1]
    params["dkd"]["seeds"] = {"cpu": [0, 0]}
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        Study("dkd", "cpu")


def test_a_study_does_not_train_the_groups_whose_precondition_failed(monkeypatch):
    """TAKD's families (kd.experiments.takd.preconditions, read from the trained teachers): a family
    whose sizes span too few top-1 points is left out of the trainings; with no `preconditions`
    every group trains. The teachers' accuracies are stubbed here (no training)."""
    from types import SimpleNamespace

    import kd.experiments.takd as takd
    from kd.experiments import Study

    S = Study("takd", "cpu")
    top1 = {"plane4": 80.0, "plane6": 83.0, "plane8": 86.0, "plane10": 88.0, "resnet14": 87.1, "resnet20": 87.6,
            "resnet32": 87.2}
    monkeypatch.setattr(S.P, "teacher", lambda name, seed=0: SimpleNamespace(summary={"top1": top1[name]}))
    assert {k: g["verdict"] for k, g in S.gates.items()} == {"plane": "reproduced", "resnet": "contradicted"}
    assert S.gates["resnet"]["evidence"] == "resnet20 - resnet14 top-1 = 0.5 < 5"
    plan = S.plan()
    assert list(S.trainable(plan)) == ["plane"] and S.trainable(plan)["plane"] is plan["plane"]
    assert takd.plan_families(S.sec) == list(plan)
    plain = Study("dkd", "quick")
    assert plain.gates == {} and plain.trainable(plain.plan()) == plain.plan()


def test_prune_distill_plans_a_pruning_chain_its_control_and_a_shaped_student():
    """Prune-then-distill (kd/experiments/prune_distill.py) on cpu: round n starts from round n - 1
    and removes 20% of what remains (sparsity 1 - 0.8^n) with the teacher's settings for 65% of its
    epochs; the control retrains as often without pruning; the shaped students come from round
    `shape_round` and are distilled from the dense teacher and from that round."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("prune_distill")
    E = importlib.import_module("kd.experiments.prune_distill")
    plan = E.plan(P, sec)
    dense = P.teacher_config(sec["teacher"])
    chain = [plan["teachers"][f"round {n}"][0] for n in range(max(sec["rounds"]) + 1)]
    assert chain[0].hash() == dense.hash()
    for n in range(1, len(chain)):
        assert chain[n].init_from.hash() == chain[n - 1].hash() and chain[n].prune == {"amount": 0.2}
        assert chain[n].epochs == round(0.65 * dense.epochs) and chain[n].lr == dense.lr
    assert [round(100 * E.sparsity_of_round(sec, n)) for n in sec["rounds"]] == [36, 59, 79]
    control = plan["teachers"]["retrained 7"][0]
    assert E.total_epochs(control) == E.total_epochs(chain[7]) == dense.epochs + 7 * chain[1].epochs
    c = control
    while c.init_from is not None:
        assert c.prune is None
        c = c.init_from
    assert c.hash() == dense.hash()
    k = sec["shape_round"]
    for row, teacher in zip(plan["shaped"].values(), (None, dense, chain[k])):
        for cfg in row:
            assert cfg.shape_from.hash() == chain[k].hash() and cfg.model == dense.model
            assert (cfg.teacher.hash() if cfg.teacher else None) == (teacher.hash() if teacher else None)
    ce = plan["main"]["CE"]
    assert [c.seed for c in ce] == P.seeds and all(c.teacher is None for c in ce)
    assert len({c.hash() for row in plan["main"].values() for c in row}) == len(plan["main"]) * len(P.seeds)


def test_prue_plans_one_shot_pruned_teachers_fine_tuned_from_the_dense_one():
    """PrUE (kd/experiments/prue.py) on cpu: each pruned teacher starts from the dense teacher, is pruned
    once (PrUE score or magnitude, the convolutions only) and fine-tuned with the teacher's recipe; the
    dense teacher also distils at the matching temperatures; a compare_sparsity outside the list is an error."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("prue")
    E = importlib.import_module("kd.experiments.prue")
    plan = E.plan(P, sec)
    dense = plan["teachers"]["dense"][0]
    assert dense.hash() == P.teacher_config(sec["pair"]["teacher"]).hash()
    for name, (score, s) in E.teacher_labels(sec).items():
        t = plan["teachers"][name][0]
        assert t.init_from.hash() == dense.hash() and t.epochs == dense.epochs and t.lr == dense.lr
        assert t.prune == {"amount": s, "score": score, "layers": "conv"}
        assert all(c.teacher.hash() == t.hash() for c in plan["main"][f"KD, {name}"])
    for T in sec["match_temperatures"]:
        assert all(c.method_args["temperature"] == T and c.teacher.hash() == dense.hash()
                   for c in plan["main"][E.matched_label(T)])
    assert all(c.method_args["ce_weight"] == 0.9 for row in plan["main"].values() for c in row if c.method == "kd")
    with pytest.raises(ValueError, match="compare_sparsity 0.4 must be one of prue.sparsities"):
        E.plan(P, {**sec, "compare_sparsity": 0.4})


def test_sweet_spot_plans_a_grid_with_the_teachers_stage_teacher_and_its_checkpoints():
    """The teacher's sweet spot (kd/experiments/sweet_spot.py) on cpu: the grid of batch sizes x epochs
    holds the teachers stage's teacher (the same run), the checkpoints are that teacher stopped early,
    KD from it is the testbed's KD run, the LS students are label smoothing at each alpha; a design without
    the profile's teacher in its grid, or an early_epoch that is no checkpoint, is an error."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("sweet_spot")
    E = importlib.import_module("kd.experiments.sweet_spot")
    plan = E.plan(P, sec)
    base = P.teacher_config(sec["pair"]["teacher"])
    conv = E.converged_label(P, sec)
    assert plan["teachers"][conv][0].hash() == base.hash()
    assert len(plan["teachers"]) == len(sec["checkpoints"]) + len(sec["batch_sizes"]) * len(sec["teacher_epochs"])
    for e in sec["checkpoints"]:
        t = plan["teachers"][E.teacher_label(base.replace(stop_epoch=e))][0]
        assert t.replace(stop_epoch=None).hash() == base.hash()
    for b in sec["batch_sizes"]:
        for e in sec["teacher_epochs"]:
            t = plan["teachers"][f"batch {b}, {e} epochs"][0]
            assert (t.batch_size, t.epochs, t.lr, t.model) == (b, e, base.lr, base.model)
    T = Profile("cpu", params=PARAMS, check_device=False)
    testbed = importlib.import_module("kd.experiments.testbed").plan(T, T.section("testbed"))
    assert [c.hash() for c in plan["main"][f"KD, {conv}"]] == [c.hash() for c in testbed["control"]["KD"]]
    assert [c.hash() for c in plan["main"]["CE"]] == [c.hash() for c in testbed["control"]["CE"]]
    for a in sec["ls_alphas"]:
        assert all(c.method == "label_smoothing" and c.method_args == {"smoothing": a}
                   for c in plan["main"][E.ls_label(a)])
    assert E.early_label(P, sec) in plan["teachers"]
    with pytest.raises(ValueError, match="must be a point of the grid"):
        E.plan(P, {**sec, "teacher_epochs": [15]})
    with pytest.raises(ValueError, match="early_epoch 20 must be one of"):
        E.plan(P, {**sec, "early_epoch": 20})
    with pytest.raises(ValueError, match="checkpoints"):
        E.plan(P, {**sec, "checkpoints": [15, base.epochs]})


def test_sweet_spot_label_smoothing_entropy_and_the_predictor_rule():
    """The label-smoothing target's entropy in closed form against the entropy of the target itself; the
    matched alpha is the closest in entropy; claim 2's rule: the similarity trend must hold, the accuracy
    trend must not, and the similarity rho must be the larger (and the reverse for against)."""
    E = importlib.import_module("kd.experiments.sweet_spot")
    from kd import metrics, stats
    from kd.losses import label_smoothing_targets

    for a in (0.1, 0.42, 0.9):
        p = label_smoothing_targets(torch.arange(10), 10, a)
        assert E.ls_entropy(a, 10) == pytest.approx(metrics.entropy(p.log(), 1.0), abs=1e-6)
    alpha, ent = E.matched_alpha(E.ls_entropy(0.42, 10), [0.3, 0.4, 0.5], 10)
    assert alpha == 0.4 and set(ent) == {0.3, 0.4, 0.5}
    seeds = np.repeat(np.arange(5), 6)
    level = np.tile(np.arange(6.0), 5)
    rises = stats.trend(level, level + 0.01 * seeds, seeds=seeds)
    flat = stats.trend(level, np.tile([3.0, 1.0, 4.0, 1.5, 5.0, 2.0], 5) + 0.01 * seeds, seeds=seeds)
    assert rises["verdict"] == "reproduced" and flat["verdict"] == "inconclusive"
    assert E.predictor_verdict(rises, flat)["verdict"] == "reproduced"
    assert E.predictor_verdict(flat, rises)["verdict"] == "contradicted"
    assert E.predictor_verdict(rises, rises)["verdict"] == "inconclusive"
    few = stats.trend([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    assert E.predictor_verdict(few, few)["verdict"] == "not tested"


def test_when_ls_helps_measurements_against_their_definitions():
    """Temperature scaling recovers the temperature logits were drawn at; the template projection
    keeps the distances between the three templates (they lie in its plane); tightness is the spread
    around the class centroids over the distance between them."""
    E = importlib.import_module("kd.experiments.when_ls_helps")
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(20000, 10, generator=g)
    y = torch.multinomial((z / 2.5).softmax(1), 1, generator=g).flatten()
    assert E.fit_temperature(z, y) == pytest.approx(2.5, rel=0.05)

    templates = torch.randn(10, 6, generator=g, dtype=torch.float64)
    pts = E.project(templates, templates, [0, 2, 6])[[0, 2, 6]]
    assert torch.allclose(torch.pdist(pts), torch.pdist(templates[[0, 2, 6]]), atol=1e-9)
    labels = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[0.0, 0.0], [0.0, 0.2], [10.0, 0.0], [10.0, 0.2]])
    assert E.cluster_tightness(tight, labels, [0, 1]) == pytest.approx(0.1 / 10)


def test_does_kd_work_plans_self_distillation_an_ensemble_mixup_and_interpolated_starts():
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("does_kd_work")
    E = importlib.import_module("kd.experiments.does_kd_work")
    main = E.plan(P, sec)["main"]
    teacher = P.teacher_config(sec["teacher"])
    for cfgs in main.values():
        for c in cfgs:
            assert c.model == teacher.model, "self-distillation: the teacher's architecture"
            if c.method != "ce":
                assert c.method_args["ce_weight"] == 0.0, "alpha = 0: no labels"
    members = main["ensemble"][0].teacher
    assert len(members) == 3 and members[0].hash() == teacher.hash() and len({m.seed for m in members}) == 3
    assert all(m.replace(seed=0).hash() == teacher.hash() for m in members), "the same recipe, other seeds"
    for lam in sec["init_lambdas"]:
        for c in main[E.lambda_label(lam)]:
            assert c.init_from.hash() == teacher.hash() and c.init_lambda == lam and c.teacher.hash() == teacher.hash()
    probs = E.ensemble_log_probs([torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 10.0], [0.0, 0.0, 0.0]])]).exp()
    assert torch.allclose(probs.sum(1), torch.ones(2)) and probs[1].allclose(torch.full((3,), 1 / 3))


def test_nkd_shares_the_dkd_and_ls_runs_and_trains_the_teacher_free_rows_without_a_teacher():
    """On cpu the pair's CE, KD and DKD are the DKD notebook's runs and LS the label-smoothing
    notebook's (the same configurations, so the same cached runs); the teacher-free rows have no
    teacher; the official ranking row of Section 4.4 is the USKD row itself."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("nkd")
    plan = importlib.import_module("kd.experiments.nkd").plan(P, sec)
    dkd_sec = P.section("dkd")
    dkd_E = importlib.import_module("kd.experiments.dkd")
    dkd = dkd_E.plan(P, dkd_sec)["pairs"]
    pair = dkd_E.label(sec["pair"])
    for row in ("CE", "KD", "DKD"):
        assert [c.hash() for c in plan["teacher"][row]] == [c.hash() for c in dkd[f"{pair} {row}"]], row
    ls = importlib.import_module("kd.experiments.when_ls_helps").plan(P, P.section("when_ls_helps"))["networks"]["LS"]
    assert [c.hash() for c in plan["self"]["LS"]] == [c.hash() for c in ls]
    assert all(not c.teachers for row in plan["self"].values() for c in row)
    official = plan["rank_form"]["official: log-probabilities"]
    assert [c.hash() for c in official] == [c.hash() for c in plan["self"]["USKD"][:len(official)]]
    assert all(c.method_args["rank_log_probs"] is False for c in plan["rank_form"]["paper's text: probabilities"])


def test_camkd_plans_three_teachers_a_weak_set_and_shares_the_single_teacher_kd():
    """Three teachers of one recipe (the params.yaml teacher and two other seeds, the same images); the
    weak set stops the last one early; KD from one teacher is the DKD notebook's "KD (CE 1)" run."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("camkd")
    E = importlib.import_module("kd.experiments.camkd")
    plan = E.plan(P, sec)
    teacher = P.teacher_config(sec["teacher"])
    for c in plan["main"]["CA-MKD"]:
        members = c.teachers
        assert len(members) == 3 and members[0].hash() == teacher.hash() and len({m.seed for m in members}) == 3
        assert all(m.replace(seed=teacher.seed).hash() == teacher.hash() for m in members)
        assert c.method_args["weighting"] == "confidence" and c.method_args["feature_weight"] == 50.0
    for c in plan["weak"]["CA-MKD, weak teacher"]:
        *good, weak = c.teachers
        assert weak.stop_epoch == sec["weak_stop_epoch"] and all(m.stop_epoch is None for m in good)
    aver = plan["main"]["AVER"][0].method_args
    assert aver["weighting"] == "average" and aver["feature_weight"] == 0.0
    dkd_E = importlib.import_module("kd.experiments.dkd")
    dkd_sec = P.section("dkd")
    assert dkd_E.label(dkd_sec["pairs"][0]) == f"{sec['teacher']}->{sec['student']}", "the DKD ablation's pair"
    single = dkd_E.plan(P, dkd_sec)["ablation"]["KD (CE 1)"]
    assert [c.hash() for c in plan["main"]["KD (one teacher)"]] == [c.hash() for c in single]
    assert len(plan["weak"]["AVER, weak teacher"]) == len(plan["ablation"]["CA-MKD, logits only"]) == 3
def test_switokd_pairs_every_row_by_seed_and_shares_the_networks_trained_alone():
    """On cpu the student alone is TAKD's plane2 CE run and the teacher alone the testbed's CE run (the
    same configurations, so the same cached runs); DML and SwitOKD train the student with a co-trained
    teacher of the teacher's architecture at the teacher-alone row's learning rate; the paper profile
    keeps the official schedule (x0.1 from epochs 140, 200, 250 of 299) and learning rates."""
    E = importlib.import_module("kd.experiments.switokd")
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("switokd")
    rows = E.plan(P, sec)["rows"]
    testbed = importlib.import_module("kd.experiments.testbed").plan(P, P.section("testbed"))["control"]["CE"]
    takd = importlib.import_module("kd.experiments.takd").plan(P, P.section("takd"))["plane"]["ce"]
    assert [c.hash() for c in rows["teacher alone"]] == [c.hash() for c in testbed]
    assert [c.hash() for c in rows["student alone"]] == [c.hash() for c in takd]
    for m in E.ONLINE:
        for c, alone, teacher in zip(rows[m], rows["student alone"], rows["teacher alone"]):
            assert c.replace(method="ce", method_args={}).hash() == alone.hash() and not c.teachers
            assert c.method_args == {"teacher_model": teacher.model, "teacher_lr_scale": teacher.lr / c.lr}
    assert [c.seed for c in rows["SwitOKD"]] == P.seeds
    paper = Profile("paper", params=PARAMS, check_device=False)
    rows = E.plan(paper, paper.section("switokd"))["rows"]
    s, t = rows["SwitOKD"][0], rows["teacher alone"][0]
    assert (s.model, s.lr, t.model, t.lr, s.epochs, s.batch_size) == ("mobilenetv2", 0.01, "wrn_16_2", 0.1, 299, 128)
    step = 1 / 391  # one step of CIFAR-100's 50000 images in batches of 128
    decays = [e for e in range(1, 299) if kd.train.learning_rate(s, e) < kd.train.learning_rate(s, e - step)]
    assert [e + 1 for e in decays] == [140, 200, 250]  # the official epochs count from 1


def test_bdkd_shares_switokd_runs_and_runs_the_fixed_mixtures_on_the_first_seeds():
    """BD-KD on cpu: the student alone, the teacher alone and DML are SwitOKD's runs (the same configurations);
    BD-KD is DML's configuration with the bdkd method (balance adaptive by default), and each fixed mixture
    runs on the first `mixture_seeds` seeds."""
    E = importlib.import_module("kd.experiments.bdkd")
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("bdkd")
    rows = E.plan(P, sec)["rows"]
    switokd = importlib.import_module("kd.experiments.switokd").plan(P, P.section("switokd"))["rows"]
    for row in ("student alone", "teacher alone", "DML"):
        assert [c.hash() for c in rows[row]] == [c.hash() for c in switokd[row]]
    for c, dml in zip(rows["BD-KD"], rows["DML"]):
        assert c.replace(method="dml").hash() == dml.hash()
        assert kd.methods.resolved_args("bdkd", c.method_args)["balance"] == "adaptive"
    assert E.online_rows(sec) == ["DML", "BD-KD", *(E.mixture_label(b) for b in sec["mixtures"])]
    for b in sec["mixtures"]:
        cs = rows[E.mixture_label(b)]
        assert [c.seed for c in cs] == P.seeds[:sec["mixture_seeds"]]
        assert all(c.method == "bdkd" and c.method_args["balance"] == b for c in cs)


def test_mfh_shares_the_testbed_runs_and_shows_the_student_only_its_own_image():
    """MFH's image analogue on cpu: the student alone and KD from the teacher of the same image are the
    testbed's positive-control runs; the teachers of the two-view data see both images or only the other,
    and their students see only their own (view 0), as does the view check's CE run."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    plan = importlib.import_module("kd.experiments.mfh").plan(P, P.section("mfh"))
    control = importlib.import_module("kd.experiments.testbed").plan(P, P.section("testbed"))["control"]
    images = plan["images"]
    assert [c.hash() for c in images["CE"]] == [c.hash() for c in control["CE"]]
    assert [c.hash() for c in images["KD, teacher sees the same image"]] == [c.hash() for c in control["KD"]]
    for row, seen in (("KD, teacher sees both images", None), ("KD, teacher sees the other image", [1])):
        assert all((c.views, c.seen_views, c.teacher.views, c.teacher.seen_views) == (2, [0], 2, seen)
                   for c in images[row]), row
        assert len({c.teacher.hash() for c in images[row]}) == 1, "one shared teacher per name on cpu"
        assert [c.replace(views=None, seen_views=None, teacher=control["KD"][0].teacher).hash()
                for c in images[row]] == [c.hash() for c in control["KD"]], "only the views differ"
    check = plan["view_check"]["CE on view 0 of the two-view data"][0]
    assert check.replace(views=None, seen_views=None).hash() == control["CE"][0].hash()


def test_sokd_shares_the_nkd_ce_and_kd_runs_and_pairs_every_row_by_seed():
    """On cpu the student alone and KD are the runs NKD's (and the DKD notebook's) rows use; the SOKD rows
    distil from the pair's params.yaml teacher and differ only in the branch's initialisation; DML
    co-trains the teacher's architecture and has no params.yaml teacher."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("sokd")
    plan = importlib.import_module("kd.experiments.sokd").plan(P, sec)["rows"]
    nkd = importlib.import_module("kd.experiments.nkd").plan(P, P.section("nkd"))["teacher"]
    for row in ("CE", "KD"):
        assert [c.hash() for c in plan[row]] == [c.hash() for c in nkd[row]], row
    teacher = P.teacher_config(sec["pair"]["teacher"])
    for copied, untrained in zip(plan["SOKD"], plan["SOKD, untrained branch"]):
        assert copied.teacher.hash() == untrained.teacher.hash() == teacher.hash() and copied.seed == untrained.seed
        assert (copied.method_args["branch_init"], untrained.method_args["branch_init"]) == ("teacher", "random")
    assert all(c.teacher is None and c.method_args["teacher_model"] == teacher.model for c in plan["DML"])
    assert all([c.seed for c in cs] == P.seeds for cs in plan.values())


def test_pskd_alpha_sweep_takes_ce_only_on_the_swept_seeds():
    """PS-KD's claim 4 (kd.experiments.pskd.sweep_frame): CE is the sweep's alpha_T = 0, but the CE row may
    run on more seeds than the sweep (cpu: 10 against `sweep_seeds` 5); a CE point of an unswept seed would
    stand alone in its permutation stratum and only inflate n."""
    E = importlib.import_module("kd.experiments.pskd")
    m = lambda seed, err: {"seed": seed, "top1_error": err, "ece_paper": 1.0, "nll": 0.5}
    ce = [m(s, 20.0) for s in range(4)]
    per_alpha = {"alpha_T=0.5": [m(0, 19.0), m(1, 18.0)], "alpha_T=0.8": [m(0, 17.0), m(1, 16.0)]}
    assert [r["seed"] for r in E.sweep_rows(ce, per_alpha)["CE (alpha_T=0)"]] == [0, 1]
    frame = E.sweep_frame(ce, per_alpha)
    assert frame[["alpha_T", "seed", "top1"]].values.tolist() == [
        [0.0, 0, 80.0], [0.0, 1, 80.0], [0.5, 0, 81.0], [0.5, 1, 82.0], [0.8, 0, 83.0], [0.8, 1, 84.0]]


def test_lsskd_shares_the_pskd_and_testbed_runs_and_pairs_every_row_by_seed():
    """On cpu the small regime is PS-KD's (its CE and PS-KD rows are the pskd notebook's runs) and the large one
    the testbed's (its CE is the positive control's student); the ablation rows are LSSKD with one part off,
    on the first `ablation_seeds` seeds; the same seeds in every row."""
    P = Profile("cpu", params=PARAMS, check_device=False)
    sec = P.section("lsskd")
    plan = importlib.import_module("kd.experiments.lsskd").plan(P, sec)
    pskd = importlib.import_module("kd.experiments.pskd").plan(P, P.section("pskd"))["main"]
    control = importlib.import_module("kd.experiments.testbed").plan(P, P.section("testbed"))["control"]
    assert [c.hash() for c in plan["main"]["CE"]] == [c.hash() for c in pskd["CE"]]
    assert [c.hash() for c in plan["main"]["PS-KD"]] == [c.hash() for c in pskd["PS-KD"]]
    assert [c.hash() for c in plan["data"]["large"]["CE"]] == [c.hash() for c in control["CE"]]
    assert plan["data"]["small"]["LSSKD"] == plan["main"]["LSSKD"] and plan["data"]["small"]["CE"] == plan["main"]["CE"]
    small, large = plan["main"]["LSSKD"][0], plan["data"]["large"]["LSSKD"][0]
    assert small.epochs * small.train_subset == large.epochs * large.train_subset, "the same steps in both regimes"
    assert all([c.seed for c in cs] == P.seeds for cs in [*plan["main"].values(), *plan["data"]["large"].values()])
    full = plan["ablation"]["LSSKD"][0].method_args
    assert [c.seed for c in plan["ablation"]["LSSKD"]] == P.first_seeds(sec["ablation_seeds"])
    for row, cs in plan["ablation"].items():
        changed = {k for k, v in cs[0].method_args.items() if v != full[k]}
        assert changed == {"LSSKD": set(), "without rotations": {"rotations"},
                           "without previous-epoch targets": {"alpha_T"},
                           "without cross-layer terms": {"kl_weight", "feature_weight"},
                           "HSAKD-style (neither)": {"alpha_T", "kl_weight", "feature_weight"}}[row], row
    assert plan["ablation"]["HSAKD-style (neither)"][0].hash() == plan["main"]["HSAKD-style"][0].hash()


def test_teachers_are_handed_to_workers_longest_first():
    P = Profile("cpu", params=PARAMS)
    order = sorted(P.teacher_names(), key=lambda n: -images_seen(P.teacher_config(n)))
    assert order[:2] == ["resnet14_60k", "resnet14_10k"], "the teachers on more images start first"
    assert images_seen(P.teacher_config("resnet14").replace(train_subset=None)) == math.inf, "the whole split"


def test_cpu_leaves_the_dist_ablation_and_the_bake_sweeps_to_full():
    """The 45 minutes a paper is given on `cpu`: DIST's ablation (params.yaml dist.ablation) and BAKE's omega and M
    sweeps (empty bake.omegas, bake.same_class_sweep) train nothing there (their notebooks say `not tested`) and
    still run on full; every other row keeps the profile's seeds."""
    for profile, left_out in (("cpu", True), ("full", False)):
        P = Profile(profile, params=PARAMS, check_device=False)
        dist = importlib.import_module("kd.experiments.dist").plan(P, P.section("dist"))
        bake = importlib.import_module("kd.experiments.bake").plan(P, P.section("bake"))
        assert (not dist["ablation"]) == (not bake["omega"]) == (not bake["M"]) == left_out, profile
        assert all([c.seed for c in cs] == P.seeds for g in ("stronger", "pairs") for cs in dist[g].values())
        assert all([c.seed for c in cs] == P.seeds for cs in bake["main"].values())
