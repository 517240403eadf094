"""The command line: `python -m kd ...`."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import kd.train
from kd import runs
from kd.__main__ import main

# One OpenMP thread: two stall badly when other processes share a 2-core machine.
ENV = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}, "OMP_NUM_THREADS": "1"}


def kd_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kd", *args], capture_output=True, text=True, timeout=300,
                          env=ENV, cwd=cwd)


def test_help_lists_the_commands():
    out = kd_cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("train", "data", "teachers", "run-many", "report"):
        assert command in out.stdout
    assert "python -m kd train --model resnet8" in out.stdout, "the usage examples are shown"


def test_train_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--dataset", "--method", "--method-args", "--teacher-run", "--train-subset", "--epochs",
                   "--batch-size", "--lr", "--schedule", "--warmup-epochs", "--seed", "--out", "--device",
                   "--no-resume", "--checkpoint-every", "--compile", "--data-root"):
        assert option in text, option


def test_train_writes_metrics_checkpoint_and_summary_and_prints_epochs(tmp_path):
    out_dir = tmp_path / "run"
    out = kd_cli("train", "--model", "resnet8", "--dataset", "digits", "--epochs", "2", "--train-subset", "200",
                 "--eval-subset", "100", "--batch-size", "50", "--crop-pad", "1", "--device", "cpu",
                 "--checkpoint-every", "1", "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("training resnet8 with ce on digits -> ")
    epoch_lines = [l for l in lines if l.startswith("run epoch ")]
    assert [l.split()[2] for l in epoch_lines] == ["1/2", "2/2"], out.stdout
    assert all(" loss " in l and " top1 " in l and " ece " in l for l in epoch_lines)
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    assert set(summary) == {"top1", "best_top1", "nll", "ece", "train_time_s"}
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "final.json", "model.pt", "eval_logits.pt"):
        assert (out_dir / name).exists(), name
    hist = pd.read_csv(out_dir / "metrics.csv")
    assert hist["epoch"].tolist() == [1, 2] and hist["top1"].notna().all()
    final = json.loads((out_dir / "final.json").read_text())
    assert final["top1"] == pytest.approx(summary["top1"]) and final["num_train"] == 200
    assert torch.load(out_dir / "checkpoint.pt", weights_only=False)["epoch"] == 2
    config = json.loads((out_dir / "config.json").read_text())
    assert (config["model"], config["dataset"], config["epochs"], config["batch_size"]) == ("resnet8", "digits", 2, 50)


def test_train_a_student_from_a_teacher_run(tmp_path, capsys):
    common = ["--dataset", "digits", "--epochs", "1", "--train-subset", "200", "--eval-subset", "100",
              "--batch-size", "50", "--crop-pad", "1", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--model", "plane2", *common, "--out", str(tmp_path / "teacher")]) == 0
        assert main(["train", "--model", "plane2", "--method", "kd", "--method-args", '{"temperature": 2}',
                     "--teacher-run", str(tmp_path / "teacher"), *common, "--out", str(tmp_path / "student")]) == 0
    finally:
        torch.set_num_threads(threads)
    final = json.loads((tmp_path / "student" / "final.json").read_text())
    assert "agreement" in final and "kl_teacher" in final
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["method_args"] == {"temperature": 2, "ce_weight": 0.1, "kd_weight": 0.9}, "defaults spelled out"
    assert config["teacher"]["model"] == "plane2"
    # a derived run: the teacher's weights pruned by half, then fine-tuned
    torch.set_num_threads(1)
    try:
        assert main(["train", "--model", "plane2", "--init-run", str(tmp_path / "teacher"), "--prune", "0.5",
                     *common, "--out", str(tmp_path / "pruned")]) == 0
    finally:
        torch.set_num_threads(threads)
    final = json.loads((tmp_path / "pruned" / "final.json").read_text())
    assert final["sparsity"] == pytest.approx(0.5, abs=1e-3)
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["prune"]["amount"] == 0.5 and config["init_from"]["model"] == "plane2"


def test_unknown_model_exits_nonzero_with_a_clear_message(tmp_path):
    out = kd_cli("train", "--model", "resnet9", "--dataset", "digits", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert out.returncode != 0
    assert "unknown model 'resnet9'; available:" in out.stderr and "resnet8" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "kd"], "needs a teacher: on the command line pass --teacher-run"),
    (["--method", "kd", "--method-args", '{"temperature": "abc"}'], "temperature must be a float like its default"),
    (["--data-root", "/nonexistent", "--dataset", "digits"], "data root /nonexistent does not exist"),
    (["--cutout", "-2"], "cutout=-2"),
    (["--crop-pad", "-1"], "crop_pad=-1"),
    (["--method", "kd", "--method-args", '{"temperature": -1}'], "temperature must be positive, got -1"),
    (["--method", "kd", "--teacher-run", "/nonexistent"], "no finished run there"),
    (["--prune", "0.5"], "--prune needs --init-run"),
    (["--init-run", "/nonexistent"], "--init-run /nonexistent: no finished run there"),
    (["--model", "plane2", "--method", "kdd"], "unknown method 'kdd'; available:"),
    (["--schedule", "step"], "invalid choice: 'step'"),
    (["--dataset", "mnist"], "invalid choice: 'mnist'"),
])
def test_other_bad_input_fails_cleanly(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        code = main(["train", "--model", "plane2", "--device", "cpu", "--out", str(tmp_path / "r"), *args])
        raise SystemExit(code)
    assert e.value.code not in (0, None)
    captured = capsys.readouterr()
    assert message in captured.err + str(e.value.code)
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_device_cuda_without_a_gpu_fails_before_writing(tmp_path, capsys):
    assert main(["train", "--model", "plane2", "--dataset", "digits", "--device", "cuda",
                 "--out", str(tmp_path / "r")]) == 2
    assert "no GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_data_command_accepts_the_profile_form(monkeypatch):
    """`python -m kd data --profile quick` (dvc.yaml's data stage) still parses beside the
    optional dataset argument that DatasetNotFoundError's message uses."""
    import kd.__main__ as cli

    seen = []
    monkeypatch.setattr(cli, "_data", lambda args: seen.append(vars(args)) or 0)
    assert main(["data", "--profile", "quick"]) == 0
    assert main(["data", "cifar10", "--root", "/some/where"]) == 0
    assert (seen[0]["dataset"], seen[0]["profile"], seen[0]["root"]) == (None, "quick", None)
    assert (seen[1]["dataset"], seen[1]["root"]) == ("cifar10", "/some/where")


@pytest.mark.parametrize("argv, message", [
    (["report", "--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["run-many", "--paper", "nosuch", "--profile", "quick"], "unknown paper 'nosuch'; known: bake, bdkd, camkd"),
    (["teachers", "resnet20", "nosuch", "--profile", "quick"], "teacher 'nosuch' is not in params.yaml"),
])
def test_unknown_names_fail_before_anything_is_written(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KD_RESULTS", str(tmp_path / "results"))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_runs_list_show_and_gc(tmp_path, monkeypatch, capsys):
    """`runs list` shows every run with its resolved settings, `show` one run, `gc` removes only
    stale runs (a name that is not their identity under this code), tmp leftovers and orphan locks."""
    import shutil

    from kd.train import TrainConfig

    monkeypatch.setenv("KD_RUNS", str(tmp_path))
    store = tmp_path / "quick" / "students"
    cfg = TrainConfig(model="plane2", dataset="digits", train_subset=100, eval_subset=50, epochs=1, batch_size=50,
                      seed=0)
    with runs.num_threads(1):
        good = runs.run(cfg, root=store, device="cpu", progress=False).path
    stale = store / "plane2-ce-000000000000"  # as if trained by an older version of the code
    shutil.copytree(good, stale)
    (good / ".final.json.abc.tmp").write_text("half")
    (store / "plane2-ce-111111111111.lock").write_text("")
    outputs = tmp_path / "quick" / "teacher_outputs"  # kd.replay's recordings: one of an older training loop
    for name, version in (("old", 0), ("current", kd.train.TRAIN_VERSION)):
        (outputs / name).mkdir(parents=True)
        (outputs / name / "key.json").write_text(json.dumps({"train_version": version}))
    assert main(["runs", "list", "--profile", "quick"]) == 0
    listing = capsys.readouterr().out
    assert good.name in listing and stale.name in listing and "same_class" in listing, "defaults spelled out"
    assert main(["runs", "show", good.name[-12:], "--profile", "quick"]) == 0
    shown = capsys.readouterr().out
    assert '"model": "plane2"' in shown and '"top1"' in shown
    assert main(["runs", "gc", "--profile", "quick"]) == 0
    assert "4 to remove; pass --yes" in capsys.readouterr().out and stale.exists(), "without --yes nothing goes"
    assert main(["runs", "gc", "--profile", "quick", "--yes"]) == 0
    assert not stale.exists() and not (store / "plane2-ce-111111111111.lock").exists()
    assert not list(good.glob(".*.tmp")) and (good / "final.json").exists()
    assert not (outputs / "old").exists() and (outputs / "current" / "key.json").exists()
    assert runs.find(cfg, [store]).path == good, "the good run is still a cache hit"


def test_a_second_configuration_into_the_same_out_folder_is_refused(tmp_path, capsys):
    common = ["--model", "plane2", "--dataset", "digits", "--epochs", "1", "--train-subset", "100",
              "--eval-subset", "50", "--batch-size", "50", "--device", "cpu", "--out", str(tmp_path / "r")]
    with runs.num_threads(1):
        assert main(["train", *common]) == 0
        before = (tmp_path / "r" / "final.json").read_text()
        assert main(["train", *common, "--lr", "0.01"]) == 2
    assert "holds the run of another configuration" in capsys.readouterr().err
    assert (tmp_path / "r" / "final.json").read_text() == before, "the first run is untouched"
