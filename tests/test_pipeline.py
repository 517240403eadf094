"""The pipeline's files agree with each other: dvc.yaml, params.yaml, notebooks, experiments."""
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kd.experiments
from kd.params import PROFILES, resolve

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PAPERS = [k for k in PARAMS if k not in ("profile", "profiles", "teachers", "testbed")]
STUDIES = PAPERS + ["testbed"]  # every notebook: the papers and the testbed
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_profiles_are_the_documented_ones():
    assert set(PARAMS["profiles"]) == set(PROFILES)
    assert PARAMS["profile"] == "quick", "the default (README main command) is the quick profile"


def test_every_paper_has_a_stage_a_notebook_and_an_experiment_module():
    stages = DVC["stages"]["paper"]["foreach"]
    assert sorted(stages) == sorted(PAPERS)
    for paper in PAPERS:
        assert (ROOT / "notebooks" / f"{paper}.ipynb").exists(), paper
        module = importlib.import_module(f"kd.experiments.{paper}")
        assert callable(module.plan) and callable(module.teacher_names), paper
    report_deps = DVC["stages"]["report"]["deps"]
    assert all(f"results/${{profile}}/{p}/metrics.json" in report_deps for p in STUDIES)


def _method_files(configs) -> set[str]:
    """The kd/methods files defining the methods of these configurations and of their teachers."""
    import inspect

    import kd.methods

    files, todo = set(), list(configs)
    while todo:
        cfg = todo.pop()
        files.add(Path(inspect.getfile(kd.methods.REGISTRY[cfg.method])).relative_to(ROOT).as_posix())
        todo += cfg.dependencies  # teachers (an ensemble's members) and the runs it starts from
    return files


@pytest.mark.parametrize("paper", PAPERS)
def test_each_paper_stage_depends_on_the_files_of_the_methods_it_trains(paper):
    """Editing a method any of a paper's trainings uses (another paper's, as a baseline, included)
    reruns that paper's stage: the stage depends on kd/methods as a whole."""
    from kd.params import Profile

    deps = set(DVC["stages"]["paper"]["do"]["deps"])
    assert "kd/methods" in deps
    covered = lambda f: any(f == d or f.startswith(d + "/") for d in deps)  # noqa: E731  (a directory dep covers its files)
    module = importlib.import_module(f"kd.experiments.{paper}")
    for profile in ("quick", "cpu"):
        P = Profile(profile)
        configs = kd.experiments.configs(module.plan(P, P.section(paper)))
        configs += [P.teacher_config(name) for name in module.teacher_names(P, P.section(paper))]
        assert all(covered(f) for f in _method_files(configs)), f"{paper} ({profile}): add these to its dvc deps"


def test_dvc_ignores_bytecode_beside_directory_deps():
    """kd/methods is a directory dependency: its __pycache__ must not make the stages look changed."""
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_the_teachers_stage_depends_on_the_files_of_the_teachers_methods():
    from kd.params import Profile

    deps = set(DVC["stages"]["teachers"]["deps"])
    for profile in ("quick", "cpu"):
        P = Profile(profile)
        assert _method_files([P.teacher_config(name) for name in P.teacher_names()]) <= deps


@pytest.mark.parametrize("stage", ["testbed", "paper"])
def test_a_notebook_stage_never_destroys_results(stage):
    """Outputs persist (DVC does not delete them before the command) and the executed notebook
    is moved into place only after papermill finished (Report does the same for its files)."""
    spec = DVC["stages"][stage].get("do", DVC["stages"][stage])
    outputs = [o for kind in ("outs", "metrics", "plots") for o in spec[kind]]
    assert all(next(iter(o.values())).get("persist") for o in outputs)
    assert ".running.ipynb" in spec["cmd"].split("papermill")[1].split("&&")[0], "papermill writes a temporary file"
    assert spec["cmd"].rstrip().split("&&")[-1].strip().startswith("mv "), "moved into place last"


def test_the_teachers_stage_never_destroys_results():
    """Its runs, metrics and curves persist (DVC does not delete them before the command); the command
    writes each file atomically after the trainings and removes only files of teachers no longer used."""
    spec = DVC["stages"]["teachers"]
    outputs = [o for kind in ("outs", "metrics", "plots") for o in spec[kind]]
    assert len(outputs) == 3 and all(next(iter(o.values())).get("persist") for o in outputs)


def test_every_paper_stage_reads_the_positive_control():
    assert "results/${profile}/testbed/metrics.json" in DVC["stages"]["paper"]["do"]["deps"]
    testbed = DVC["stages"]["testbed"]
    assert "notebooks/testbed.ipynb" in testbed["deps"] and "kd/experiments/testbed.py" in testbed["deps"]
    assert any("results/${profile}/testbed/metrics.json" in o for o in testbed["outs"])


@pytest.mark.parametrize("stage", ["testbed", "paper"])
def test_dvc_metrics_are_the_short_headlines(stage):
    """`dvc metrics show` reads only headline.json (verdict counts, the same keys for every
    notebook); metrics.json, with every number and claim, is a plain output."""
    spec = DVC["stages"][stage].get("do", DVC["stages"][stage])
    assert [next(iter(m)).rsplit("/", 1)[1] for m in spec["metrics"]] == ["headline.json"]
    assert any(next(iter(o)).endswith("/metrics.json") for o in spec["outs"])


@pytest.mark.parametrize("paper", STUDIES)
def test_notebook_has_parameters_cell_and_no_outputs(paper):
    nb = json.loads((ROOT / "notebooks" / f"{paper}.ipynb").read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters` (papermill)"
    assert 'profile = "quick"' in "".join(tagged[0]["source"]), "the defaults are the quick profile"
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), \
        "notebooks are committed without outputs; executed copies live in results/"
    ids = [c.get("id") for c in nb["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), "every cell has its own id (nbformat 4.5 warns otherwise)"


@pytest.mark.parametrize("paper", STUDIES)
def test_every_saved_figure_is_shown_in_its_notebook(paper):
    import re

    nb = json.loads((ROOT / "notebooks" / f"{paper}.ipynb").read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        for fig in re.findall(r"rep\.savefig\((\w+),", source):
            last = source.rstrip().splitlines()[-1].strip()
            assert last == fig or f"display({fig})" in source, f"{paper}: {fig} is saved but not shown"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_paper_section_resolves_for_every_profile(profile):
    for paper in STUDIES:
        resolve(PARAMS[paper], profile, PARAMS["profiles"][profile].get("inherits"))


@pytest.mark.parametrize("profile", PROFILES)
def test_teachers_used_by_papers_are_trained_in_that_profile(profile):
    """Every teacher a paper asks for is in params.yaml and trained by the profile's teachers stage."""
    from kd import params as kd_params

    P = kd_params.Profile(profile, params=PARAMS, check_device=False)  # no training here
    trained = set(P.teacher_names())
    for paper in STUDIES:
        module = importlib.import_module(f"kd.experiments.{paper}")
        sec = P.section(paper)
        needed = set(module.teacher_names(P, sec))
        assert needed <= trained, f"{paper} on {profile} needs untrained teachers {needed - trained}"
        for cfg in kd.experiments.configs(module.plan(P, sec)):
            cfg.validate()


@pytest.mark.skipif(shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists(),
                    reason="dvc not installed")
def test_dvc_parses_the_pipeline():
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    out = subprocess.run([dvc, "stage", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    assert "data" in names and "report" in names
    assert all(f"paper@{p}" in names for p in PAPERS)
    assert "teachers" in names, "one stage trains every teacher"


def test_committed_results_hold_no_paths_of_the_machine_that_made_them():
    import re

    pattern = re.compile(r"(?<![\w.~-])/(?:home|root|tmp|work|Users|mnt|private|var/folders)/")
    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    offending = [name for name in listed.stdout.split()
                 if name.endswith((".ipynb", ".json", ".md", ".log", ".csv"))
                 and pattern.search((ROOT / name).read_text(errors="replace"))]
    assert not offending, f"absolute paths of a machine in {offending}"


def test_the_repository_cites_its_own_paper_facts():
    """Paper facts live in docs/papers.md (one section per paper, cited), numbers in
    data/paper_results.yaml; nothing tracked points outside the repository for them."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    outside = [name for name in listed.stdout.split() if not name.startswith(("results/", "tests/test_pipeline.py"))
               and (ROOT / name).is_file() and "shared/papers" in (ROOT / name).read_text(errors="replace")]
    assert not outside, f"references to paper notes outside the repository in {outside}"
    facts = (ROOT / "docs" / "papers.md").read_text()
    sections = {line[3:].strip() for line in facts.splitlines() if line.startswith("## ")}
    assert {"DKD", "DIST", "TAKD", "PS-KD", "BAKE", "Zipf's LS", "MIX-KD", "Self-distillation"} <= sections
