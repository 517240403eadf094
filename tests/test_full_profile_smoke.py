"""Every notebook (the testbed and the papers) runs on the `full` profile's code paths, shrunk
to fit a CPU.

nbval runs the notebooks on `quick` (one seed, small models). The `full` profile, which runs on
a GPU, takes other paths: several seeds (error bars, paired tests), the papers' architectures
(resnet56/110, wrn_40_2, resnet32x4, shufflenetv1 students...), its own pairs, sweeps and
families. This test keeps those paths working without a GPU: params.yaml with `full` cut down
to 2 seeds, 128 training and 100 test images, 1 epoch and 1 thread on the CPU (and small flatness measurements), then
each notebook through papermill with `-p profile full`. The numbers mean nothing; the test
checks that every cell runs and that every claim gets a verdict.
"""
import json

import pytest
import yaml

from kd.__main__ import studies
from kd.params import ROOT
from kd.report import VERDICTS

PAPERS = studies()
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def full_on_cpu(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full_smoke")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    full = params["profiles"]["full"]
    full.update(device="cpu", workers=1, seeds=SEEDS)
    full["data"].update(train_subset=128, eval_subset=100)
    full["train"]["epochs"] = 1
    full["teacher_train"] = {"epochs": 1}
    sd = params["self_distillation"]
    sd["hessian_samples"]["full"], sd["power_iterations"]["full"], sd["perturbation_draws"]["full"] = 64, 5, 2
    params["sp"]["batch_sizes"]["full"] = [64, 128]  # a training batch of at most the 128 images
    params["mfh"]["synthetic_seeds"]["full"] = 2  # the synthetic runs: seconds each, 10 seeds on full
    params["camkd"]["weak_stop_epoch"]["full"] = 1  # the weak teacher stops within the 1-epoch teachers
    crd = params["crd"]  # negatives within the 128 images, and a short timing of the steps
    crd["nce_k"]["full"], crd["sweep_k"]["full"] = 64, [32, 64]
    crd["timing"]["steps"]["full"], crd["timing"]["rounds"]["full"] = 2, 1
    # sweet_spot: a 2-epoch teacher of the full pair's architecture (a checkpoint after its first epoch), its grid
    # (batches of at most the 128 images)
    params["teachers"]["resnet56_2ep"] = {**params["teachers"]["resnet56"], "train": {"epochs": 2}}
    ss = params["sweet_spot"]
    ss["pair"]["full"] = {**ss["pair"]["full"], "teacher": "resnet56_2ep"}
    ss["batch_sizes"]["full"], ss["teacher_epochs"]["full"] = [64, 128], [1, 2]
    ss["checkpoints"]["full"], ss["early_epoch"]["full"] = [1], 1
    # every precondition holds (teachers of 1 epoch on 128 images differ at random), so TAKD's students train here;
    # quick's nbval runs a family that fails its precondition
    params["testbed"]["ladder_spread"] = 0.0
    # lsskd: its small data regime (a train override of its own) on the 128 images, one batch of the full profile
    params["lsskd"]["regimes"]["full"]["small"] = {"train_subset": 128, "epochs": 2}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"KD_PARAMS": str(tmp / "params.yaml"), "KD_RUNS": str(tmp / "runs"),
           "KD_RESULTS": str(tmp / "results"), "MPLBACKEND": "Agg"}
    with pytest.MonkeyPatch.context() as mp:  # the notebook kernels inherit the environment
        for k, v in env.items():
            mp.setenv(k, v)
        yield tmp


@pytest.mark.parametrize("paper", PAPERS)
def test_notebook_runs_on_the_full_profile_paths(paper, full_on_cpu):
    import papermill

    out = full_on_cpu / "notebooks" / f"{paper}.ipynb"
    out.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{paper}.ipynb"), str(out), parameters={"profile": "full"},
                               cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    result = full_on_cpu / "results" / "full" / paper
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["profile"] == "full" and metrics["seeds"] == SEEDS
    assert metrics["claims"], "the notebook judged no claim"
    assert all(c["verdict"] in VERDICTS for c in metrics["claims"])
    assert any(c["claim_kind"] != "check" and c["n"] >= 2 for c in metrics["claims"]), \
        "no claim was judged over several seeds"
    assert (result / "table.md").read_text().strip()
    assert list((result / "figures").glob("*.png")), "the notebook saved no figure"
