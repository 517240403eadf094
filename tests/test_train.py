"""kd.train: determinism, resume, the NaN stop, bad arguments, schedules, metrics files,
atomic writes, and data-parallel training (2 CPU processes, gloo) against one process.

Runs are tiny (plane2 on 300 of scikit-learn's 8x8 digits, 3 epochs) so that the file runs
in well under two minutes on a shared 2-core CPU.
"""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import kd.methods
import kd.models
from kd import train as kd_train
from kd.io import atomic_save, atomic_write_text
from kd.metrics import classification_metrics
from kd.train import NonFiniteLoss, TrainConfig, fit, learning_rate

TIMING = ["epoch_time_s"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train as fast on one thread, and two OpenMP threads stall badly (20-50x)
    when other processes share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes) -> TrainConfig:
    cfg = TrainConfig(model="plane2", dataset="digits", train_subset=300, eval_subset=200, epochs=3,
                      batch_size=50, lr=0.05, schedule="cosine", crop_pad=1, flip=True, seed=0)
    return cfg.replace(**changes)


def train(cfg, run_dir, **kw):
    kw.setdefault("progress", False)
    return fit(cfg, run_dir, device="cpu", **kw)


def metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING)


def final(run_dir) -> dict:
    d = json.loads((run_dir / "final.json").read_text())
    return {k: v for k, v in d.items() if k not in ("epoch_time_s", "train_time_s", "files")}  # files: timings


def assert_same_model(a, b):
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def no_temp_files(run_dir):
    return [p.name for p in run_dir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run per method, shared by the determinism and resume tests."""
    cache = {}

    def get(method="ce", **method_args):
        key = (method, tuple(sorted(method_args.items())))
        if key not in cache:
            run_dir = tmp_path_factory.mktemp(f"ref-{method}")
            train(tiny(method=method, method_args=method_args), run_dir, checkpoint_every=1)
            cache[key] = run_dir
        return cache[key]

    return get


def _seen_indices(monkeypatch, method_class):
    """Record the sample indices of every training batch `method_class` sees."""
    seen = []
    original = method_class.forward_train

    def spy(self, student, teacher, batch):
        seen.append(batch.index.clone())
        return original(self, student, teacher, batch)

    monkeypatch.setattr(method_class, "forward_train", spy)
    return seen


def test_pskd_sees_every_sample_each_epoch_and_ce_drops_the_last_batch(tmp_path, monkeypatch):
    """PS-KD's memory holds each sample's previous prediction: the official loader drops no
    batch, so none goes stale. 300 images in batches of 50 plus a tail: batch 64."""
    seen = _seen_indices(monkeypatch, kd.methods.PSKD)
    train(tiny(method="pskd", epochs=1, batch_size=64), tmp_path / "pskd")
    assert sorted(torch.cat(seen).tolist()) == list(range(300))
    seen = _seen_indices(monkeypatch, kd.methods.CrossEntropy)
    train(tiny(epochs=1, batch_size=64), tmp_path / "ce")
    assert len(torch.cat(seen)) == 256, "other methods keep full batches only (drop_last)"


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_bit_identical_metrics(reference, tmp_path):
    ref = reference("ce")
    train(tiny(), tmp_path)
    pd.testing.assert_frame_equal(metrics(ref), metrics(tmp_path), check_exact=True)
    assert final(ref) == final(tmp_path)
    assert_same_model(ref, tmp_path)
    assert torch.equal(torch.load(ref / "eval_logits.pt")["logits"], torch.load(tmp_path / "eval_logits.pt")["logits"])
    other = tmp_path / "seed1"
    train(tiny(seed=1), other)
    assert not metrics(ref)["train_loss"].equals(metrics(other)["train_loss"]), "another seed, another run"


# ----------------------------------------------------------------------------- resume

@pytest.mark.parametrize("method, method_args, kill_in_epoch, checkpoint_every", [
    ("ce", {}, 2, 1),             # killed in epoch 2: resumes from epoch 1's checkpoint
    ("ce", {}, 3, 2),             # checkpoint every 2 epochs: epoch 3 reruns from epoch 2
    ("pskd", {"alpha_T": 0.8}, 3, 1),   # method state (PS-KD's per-sample memory) is restored
    ("mixup", {"mixup_alpha": 1.0}, 2, 1),  # the method's own generator is restored
    ("switokd", {"teacher_model": "plane2", "teacher_lr_scale": 2.0}, 2, 1),  # a co-trained teacher, its own lr
])
def test_resume_after_a_kill_equals_an_uninterrupted_run(reference, tmp_path, killed_at_epoch, method, method_args,
                                                         kill_in_epoch, checkpoint_every):
    ref = reference(method, **method_args)
    cfg = tiny(method=method, method_args=method_args)
    with killed_at_epoch(kill_in_epoch):  # dies after training that epoch, before its files are written
        train(cfg, tmp_path, checkpoint_every=checkpoint_every)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    done = (kill_in_epoch - 1) // checkpoint_every * checkpoint_every
    assert saved["epoch"] == done and not (tmp_path / "final.json").exists()
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == kill_in_epoch - 1

    train(cfg, tmp_path, checkpoint_every=checkpoint_every)
    pd.testing.assert_frame_equal(metrics(ref), metrics(tmp_path), check_exact=True)
    assert final(ref) == final(tmp_path)
    assert_same_model(ref, tmp_path)


def test_crd_resumes_its_banks_constants_and_generator(reference, tmp_path, killed_at_epoch):
    """CRD's state (its heads, both memory banks, Z, the negatives' generator) is checkpointed: killed in
    epoch 2 and resumed, the run equals an uninterrupted one, bit for bit."""
    teacher = kd_train.load_model(reference("ce"))
    cfg = tiny(method="crd", teacher=tiny(), method_args={"nce_k": 64, "kd_weight": 1.0})
    train(cfg, tmp_path / "ref", teacher=teacher)
    with killed_at_epoch(2):
        train(cfg, tmp_path / "run", teacher=teacher)
    train(cfg, tmp_path / "run", teacher=teacher)
    pd.testing.assert_frame_equal(metrics(tmp_path / "ref"), metrics(tmp_path / "run"), check_exact=True)
    assert final(tmp_path / "ref") == final(tmp_path / "run")
    assert_same_model(tmp_path / "ref", tmp_path / "run")


def test_a_run_replaying_recorded_teacher_outputs_is_the_run_that_computes_them(reference, tmp_path):
    """kd.replay: KD on seed 0 records the teacher's logits epoch by epoch; DKD on seed 0 replays them (the
    teacher runs only for the test split's logits) and is bit for bit the DKD run that computes them; seed 1
    records its own; a batch whose images differ from the recorded fingerprint is computed, not replayed."""
    import kd.replay

    teacher = kd_train.load_model(reference("ce"))
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    store = tmp_path / "outputs"
    kd_cfg, dkd_cfg = tiny(method="kd", teacher=tiny()), tiny(method="dkd", teacher=tiny())
    recorded = train(kd_cfg, tmp_path / "kd", teacher=teacher, teacher_outputs=store)
    assert recorded["teacher_replay"] == {"epochs_replayed": 0, "batches_recomputed": 0}
    assert len(list(store.glob("*/epoch_*.pt"))) == 3 and len(calls) == 3 * 6 + 1
    train(dkd_cfg, tmp_path / "dkd computed", teacher=teacher)
    calls.clear()
    replayed = train(dkd_cfg, tmp_path / "dkd replayed", teacher=teacher, teacher_outputs=store)
    assert len(calls) == 1, "the teacher ran only on the test split"
    assert replayed.pop("teacher_replay") == {"epochs_replayed": 3, "batches_recomputed": 0}
    pd.testing.assert_frame_equal(metrics(tmp_path / "dkd computed"), metrics(tmp_path / "dkd replayed"),
                                  check_exact=True)
    assert final(tmp_path / "dkd computed") == {k: v for k, v in final(tmp_path / "dkd replayed").items()
                                                if k != "teacher_replay"}
    assert_same_model(tmp_path / "dkd computed", tmp_path / "dkd replayed")

    assert train(dkd_cfg.replace(seed=1), tmp_path / "seed 1", teacher=teacher,
                 teacher_outputs=store)["teacher_replay"]["epochs_replayed"] == 0, "another seed, other batches"
    assert len(list(store.glob("*/epoch_*.pt"))) == 6
    epoch_1 = next(f for f in store.glob("*/epoch_1.pt")
                   if json.loads((f.parent / "key.json").read_text())["seed"] == 0)
    stored = torch.load(epoch_1, weights_only=True)
    stored["fingerprints"][2] = stored["fingerprints"][2] + 1
    torch.save(stored, epoch_1)
    again = train(kd_cfg, tmp_path / "kd again", teacher=teacher, teacher_outputs=store)
    assert again["teacher_replay"] == {"epochs_replayed": 2, "batches_recomputed": 1}
    assert_same_model(tmp_path / "kd", tmp_path / "kd again")
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0] = x[1, 0, 0, 1] = 1  # a flip moves a pixel: its fingerprint changes
    assert kd.replay.fingerprint(x).tolist() == [1.0, 2.0]


def test_mixup_kd_replays_the_teacher_on_its_mixed_batches(reference, tmp_path):
    """MixUp-KD's teacher sees the mixed batch (kd.replay: its `teacher_inputs`): the fixed-T run records
    the teacher's logits on it, the std-scaling run of that seed and mixup replays them and is bit for bit
    the run that computes them; plain KD of that seed, whose teacher sees the batch itself, records its own."""
    teacher = kd_train.load_model(reference("ce"))
    store = tmp_path / "outputs"
    mixing = {"mixup_alpha": 1.0, "unmixed_fraction": 0.5, "sampler": "official", "temperature": 4.0}
    fixed_t = tiny(method="mixup_kd", method_args={**mixing, "std_scaling": False}, teacher=tiny())
    std = tiny(method="mixup_kd", method_args={**mixing, "std_scaling": True}, teacher=tiny())
    assert train(fixed_t, tmp_path / "fixed T", teacher=teacher, teacher_outputs=store)["teacher_replay"] == {
        "epochs_replayed": 0, "batches_recomputed": 0}
    train(std, tmp_path / "std computed", teacher=teacher)
    replayed = train(std, tmp_path / "std replayed", teacher=teacher, teacher_outputs=store)
    assert replayed.pop("teacher_replay") == {"epochs_replayed": 3, "batches_recomputed": 0}
    pd.testing.assert_frame_equal(metrics(tmp_path / "std computed"), metrics(tmp_path / "std replayed"),
                                  check_exact=True)
    assert_same_model(tmp_path / "std computed", tmp_path / "std replayed")
    kd_cfg = tiny(method="kd", teacher=tiny())
    assert train(kd_cfg, tmp_path / "kd", teacher=teacher, teacher_outputs=store)["teacher_replay"] == {
        "epochs_replayed": 0, "batches_recomputed": 0}, "unmixed batches: another stream"
    assert len({f.parent for f in store.glob("*/epoch_*.pt")}) == 2


def test_resuming_a_finished_run_trains_nothing(reference, tmp_path, monkeypatch):
    ref = reference("ce")
    for name in ("checkpoint.pt", "config.json", "metrics.csv"):
        (tmp_path / name).write_bytes((ref / name).read_bytes())
    monkeypatch.setattr(torch.optim.SGD, "step", lambda *a, **k: pytest.fail("trained again"))
    summary = train(tiny(), tmp_path)
    assert summary["top1"] == final(ref)["top1"] and summary["epochs"] == 3
    assert_same_model(ref, tmp_path)


# ----------------------------------------------------------------------------- NaN stop

class NaNAt(kd.methods.CrossEntropy):
    """CE whose loss turns NaN at one (epoch, step), with a second, finite term."""

    name = "nan_at"

    def __init__(self, epoch: int = 1, step: int = 3):
        self.bad = (epoch, step)

    def on_epoch_start(self, epoch, epochs):
        self.epoch, self.step = epoch, 0

    def forward_train(self, student, teacher, batch):
        logits, terms = super().forward_train(student, teacher, batch)
        if (self.epoch, self.step) == self.bad:
            terms["ce"] = terms["ce"] * float("nan")
        terms["aux"] = torch.tensor(0.25)
        self.step += 1
        return logits, terms


def test_nan_loss_stops_naming_epoch_step_and_terms_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(kd.methods.REGISTRY, "nan_at", NaNAt)
    with pytest.raises(NonFiniteLoss) as e:
        train(tiny(method="nan_at", method_args={"epoch": 1, "step": 3}), tmp_path, checkpoint_every=1)
    msg = str(e.value)
    assert "epoch 2, step 3" in msg and "ce=nan" in msg and "aux=0.25" in msg
    assert "last good checkpoint" in msg and "learning rate" in msg
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1, "the checkpoint of the last good epoch is kept"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 1
    assert not (tmp_path / "final.json").exists() and not (tmp_path / "model.pt").exists()
    assert not no_temp_files(tmp_path)


def test_a_diverging_learning_rate_stops_with_nonfinite_loss(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch \d+, step \d+: ce=nan"):
        train(tiny(lr=1e9, schedule="constant"), tmp_path)


def test_gpu_style_guard_reports_the_first_bad_step_once_per_epoch():
    """On CUDA the check waits for the epoch's end (no per-step sync); it must still name the
    first bad step and its terms, not a later one."""
    guard = kd_train.FiniteGuard(check_every_step=False)
    for step in range(8):
        bad = step in (4, 6)
        ce = torch.tensor(float("inf") if step == 6 else float("nan") if bad else 1.0 + step)
        terms = {"ce": ce, "kd": torch.tensor(0.5 * step)}
        guard.record(sum(terms.values()), terms, epoch=2, step=step)
    with pytest.raises(NonFiniteLoss, match=r"epoch 3, step 4: ce=nan, kd=2\b"):
        guard.check()
    fine = kd_train.FiniteGuard(check_every_step=False)
    fine.record(torch.tensor(1.0), {"ce": torch.tensor(1.0)}, 0, 0)
    fine.check()


# ----------------------------------------------------------------------------- bad arguments

def _kd(**changes):
    return tiny(**{"method": "kd", "teacher": tiny(), **changes})


BAD = [
    (lambda: tiny(model="resnet9"), "unknown model 'resnet9'; available: .*resnet8"),
    (lambda: tiny(method="kdd"), "unknown method 'kdd'; available: .*dkd"),
    (lambda: tiny(dataset="mnist"), "unknown dataset 'mnist'; choose one of"),
    (lambda: _kd(method_args={"temperature": -1.0}), "temperature must be positive, got -1"),
    (lambda: _kd(method_args={"temprature": 4.0}), "unknown hyperparameters \\['temprature'\\]; it accepts"),
    (lambda: tiny(method="kd"), "in Python set `teacher`"),
    (lambda: tiny(teacher=tiny()), "uses no teacher, but one was given"),
    (lambda: _kd(teacher=tiny(dataset="cifar10")), "teacher trained on 'cifar10' but the student on 'digits'"),
    (lambda: _kd(method="self_distillation", teacher=tiny(model="resnet8")), "needs the teacher's architecture"),
    (lambda: tiny(schedule="step"), "unknown schedule 'step'; choose one of multistep, cosine, constant"),
    (lambda: tiny(milestones=[150, 180]), "milestones are fractions"),
    (lambda: tiny(lr=0.0), "need lr > 0"),
    (lambda: tiny(epochs=0), "epochs and batch_size must be >= 1"),
    (lambda: tiny(cutout=-2), "cutout=-2"),
    (lambda: _kd(method_args={"temperature": "4"}), "temperature must be a float like its default 4.0, got '4'"),
    (lambda: tiny(method="mixup_kd", teacher=tiny(), method_args={"mixup": 1}), "mixup must be a bool"),
    (lambda: tiny(method="bake", batch_size=50), "multiple of 1 \\+ same_class"),
]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a training step starts."""
    monkeypatch.setattr(kd_train.FiniteGuard, "record", lambda *a, **k: pytest.fail("training started"))


@pytest.mark.parametrize("make, match", BAD, ids=[m.split(" ")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_arguments_fail_before_training(tmp_path, no_training, make, match):
    with pytest.raises(ValueError, match=match):
        train(make(), tmp_path / "run", teacher=kd.models.create("plane2", 10, in_channels=1))
    assert not (tmp_path / "run").exists(), "nothing is written for an invalid configuration"


def test_unknown_training_setting_in_a_stored_config():
    with pytest.raises(ValueError, match="unknown training settings \\['epoch'\\]"):
        TrainConfig.from_dict({**tiny().to_dict(), "epoch": 3})


def test_teacher_with_another_class_count_fails_before_training(tmp_path, no_training):
    teacher = kd.models.create("plane2", 100, in_channels=1)
    with pytest.raises(ValueError, match="teacher predicts 100 classes but digits has 10: distil from a teacher"):
        train(_kd(), tmp_path, teacher=teacher)
    assert not (tmp_path / "metrics.csv").exists()


def test_missing_teacher_model_fails_before_training(tmp_path, no_training):
    with pytest.raises(ValueError, match="needs a trained teacher model \\(pass teacher=...\\)"):
        train(_kd(), tmp_path)


def test_missing_dataset_fails_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    (tmp_path / "no-data").mkdir()  # the data root exists, without the dataset
    with pytest.raises(FileNotFoundError, match="dataset 'cifar100' not found"):
        fit(tiny(dataset="cifar100"), run_dir, device="cpu", data_root=tmp_path / "no-data", progress=False)
    assert not run_dir.exists(), "no run folder is left behind"


def test_resuming_from_another_configurations_checkpoint_fails(tmp_path, monkeypatch):
    train(tiny(epochs=1), tmp_path)
    monkeypatch.setattr(kd_train.FiniteGuard, "record", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ValueError, match="holds the run of another configuration .*resume=False"):
        train(tiny(epochs=1, lr=0.01), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.05, "the old run is untouched"
    assert (tmp_path / "final.json").exists()
    (tmp_path / "config.json").write_text(json.dumps(tiny(epochs=1, lr=0.01).to_dict()))  # a config.json alone
    with pytest.raises(ValueError, match="belongs to another configuration .*delete it, pass resume=False"):
        train(tiny(epochs=1, lr=0.01), tmp_path)  # the checkpoint is still the other run's
    monkeypatch.undo()
    train(tiny(epochs=1, lr=0.01), tmp_path, resume=False)  # the way out the messages name
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.01
    assert json.loads((tmp_path / "final.json").read_text())["hash"] == tiny(epochs=1, lr=0.01).hash()


def test_a_finished_run_records_checksums_and_a_damaged_file_is_refused(tmp_path):
    from kd.runs import Run

    train(tiny(epochs=1), tmp_path)
    run = Run(tmp_path)
    assert set(run.summary["files"]) == set(kd_train.FINISHED_FILES)
    run.model(), run.eval_logits()
    atomic_save({"logits": torch.zeros(3, 10), "targets": torch.zeros(3)}, tmp_path / "eval_logits.pt")
    with pytest.raises(RuntimeError, match="eval_logits.pt does not match the checksum .*delete the folder"):
        run.eval_logits()


def test_a_resumed_run_says_from_which_epoch(tmp_path, capsys, killed_at_epoch):
    with killed_at_epoch(2):
        fit(tiny(epochs=2), tmp_path, device="cpu", progress=None)
    fit(tiny(epochs=2), tmp_path, device="cpu", progress=None)
    assert "resuming from epoch 1 of 2" in capsys.readouterr().out, "checkpoints every epoch by default"



def test_a_truncated_checkpoint_is_a_clear_error_not_a_restart(tmp_path, monkeypatch):
    train(tiny(epochs=1), tmp_path)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    monkeypatch.setattr(kd_train.FiniteGuard, "record", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(RuntimeError, match="checkpoint.pt cannot be read .*truncated or corrupt.*Delete it"):
        train(tiny(epochs=1), tmp_path)

# ----------------------------------------------------------------------------- schedules

def test_multistep_decays_at_fractional_milestones():
    cfg = TrainConfig(epochs=240, lr=0.05, schedule="multistep", milestones=[0.625, 0.75, 0.875], gamma=0.1)
    assert learning_rate(cfg, 0) == 0.05
    assert learning_rate(cfg, 149.99) == 0.05
    assert learning_rate(cfg, 150) == pytest.approx(0.005)
    assert learning_rate(cfg, 179.5) == pytest.approx(0.005)
    assert learning_rate(cfg, 180) == pytest.approx(0.0005)
    assert learning_rate(cfg, 210) == pytest.approx(0.00005)
    assert learning_rate(cfg, 239.9) == pytest.approx(0.00005)


def test_cosine_and_constant():
    cfg = TrainConfig(epochs=10, lr=0.1, schedule="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 5) == pytest.approx(0.05)
    assert learning_rate(cfg, 2.5) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(cfg, 10) == pytest.approx(0.0, abs=1e-12)
    values = [learning_rate(cfg, e / 10) for e in range(100)]
    assert all(a >= b for a, b in zip(values, values[1:])), "monotone decreasing"
    assert learning_rate(cfg.replace(schedule="constant"), 7.3) == 0.1


def test_linear_warmup_then_the_schedule():
    cfg = TrainConfig(epochs=20, lr=0.1, schedule="multistep", milestones=[0.5], warmup_epochs=5)
    assert learning_rate(cfg, 0) < 0.001
    assert learning_rate(cfg, 2.5) == pytest.approx(0.05, rel=1e-3)
    ramp = [learning_rate(cfg, e / 4) for e in range(20)]
    assert all(b > a for a, b in zip(ramp, ramp[1:])), "increasing during warm-up"
    assert learning_rate(cfg, 5) == 0.1 and learning_rate(cfg, 10) == pytest.approx(0.01)
    cos = cfg.replace(schedule="cosine")
    assert learning_rate(cos, 5) == pytest.approx(0.1)
    assert learning_rate(cos, 12.5) == pytest.approx(0.05)  # cosine spans the epochs after warm-up
    assert learning_rate(cos, 20) == pytest.approx(0.0, abs=1e-12)


def test_fit_follows_the_schedule(reference):
    hist = pd.read_csv(reference("ce") / "metrics.csv")
    cfg, steps = tiny(), 300 // 50
    for _, row in hist.iterrows():  # the logged lr is that of the epoch's last step
        assert row["lr"] == pytest.approx(learning_rate(cfg, row["epoch"] - 1 + (steps - 1) / steps))


# ----------------------------------------------------------------------------- files and metrics

def test_metrics_csv_and_final_json(reference):
    ref = reference("ce")
    hist = pd.read_csv(ref / "metrics.csv")
    assert hist["epoch"].tolist() == [1, 2, 3]
    for col in ("lr", "train_ce", "train_loss", "epoch_time_s", "top1", "nll", "ece", "aurc", "eaurc"):
        assert hist[col].notna().all(), col
    assert "top5" not in hist and "agreement" not in hist, "top-5 only for 100 classes; fidelity only with a teacher"
    assert hist["top1"].between(0, 100).all() and hist["ece"].between(0, 100).all() and (hist["nll"] > 0).all()
    assert (hist["train_loss"] == hist["train_ce"]).all()
    summary = json.loads((ref / "final.json").read_text())
    last = hist.iloc[-1]
    assert summary["top1"] == last["top1"] and summary["nll"] == last["nll"], "the reported number is the last epoch's"
    assert summary["best_top1"] == hist["top1"].max()
    assert summary["best_epoch"] == int(hist.loc[hist["top1"].idxmax(), "epoch"])
    assert summary["num_train"] == 300 and summary["num_eval"] == 200 and summary["eval_split"] == "test"
    assert summary["params"] == sum(p.numel() for p in kd.models.create("plane2", 10, 1).parameters())
    assert summary["hash"] == tiny().hash() and summary["teacher_hash"] is None
    config = TrainConfig.from_dict(json.loads((ref / "config.json").read_text()))
    assert config == tiny().resolved(), "config.json spells out the method's defaults"
    # the logged metrics are those of the saved model on the eval split
    logits = torch.load(ref / "eval_logits.pt")
    recomputed = classification_metrics(logits["logits"], logits["targets"])
    for k, v in recomputed.items():
        assert summary[k] == pytest.approx(v), k
    model = kd_train.load_model(ref)
    from kd.data import load
    ds = load("digits", eval_subset=200, train_subset=300, seed=0)
    x = (ds.x_eval.float() / 255 - ds.mean[0]) / ds.std[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits["logits"], rtol=1e-4, atol=1e-4)
    assert not no_temp_files(ref), "atomic writes leave no temporary files"


def test_student_with_teacher_logs_fidelity(reference, tmp_path):
    teacher_dir = reference("ce")
    teacher = kd_train.load_model(teacher_dir)
    cfg = tiny(method="kd", teacher=tiny())
    summary = train(cfg, tmp_path, teacher=teacher, eval_every=2)
    hist = pd.read_csv(tmp_path / "metrics.csv")
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert hist["top1"].isna().tolist() == [True, False, False], "eval every 2 epochs, and always the last"
    assert {"train_ce", "train_kd", "agreement", "kl_teacher"} <= set(hist.columns)
    assert hist["train_loss"].iloc[0] == pytest.approx(hist["train_ce"].iloc[0] + hist["train_kd"].iloc[0])
    s_logits = torch.load(tmp_path / "eval_logits.pt")["logits"]
    t_logits = torch.load(teacher_dir / "eval_logits.pt")["logits"]
    agree = 100 * (s_logits.argmax(1) == t_logits.argmax(1)).float().mean().item()
    assert summary["agreement"] == pytest.approx(agree, abs=1e-4)
    kl = (t_logits.softmax(1) * (t_logits.log_softmax(1) - s_logits.log_softmax(1))).sum(1).mean().item()
    assert summary["kl_teacher"] == pytest.approx(kl, rel=1e-3) and summary["kl_teacher"] > 0
    assert summary["teacher_hash"] == tiny().hash()


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "final.json"
    atomic_write_text(path, "old")

    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        atomic_save({"a": torch.zeros(1000), "b": Boom()}, path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"], "no temporary file is left"
    atomic_save({"a": 1}, path)
    assert torch.load(path) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "the usual permissions, not mkstemp's 0600"


def test_progress_bar_when_asked(tmp_path, capsys):
    train(tiny(epochs=1), tmp_path / "barrun", progress=True)
    err = capsys.readouterr().err
    assert "barrun 1/1" in err and ("it/s" in err or "s/it" in err), err


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    train(tiny(epochs=2), tmp_path / "myrun", progress=None)
    lines = [l for l in capsys.readouterr().out.splitlines() if "epoch" in l]
    assert len(lines) == 2 and lines[0].startswith("myrun epoch 1/2  loss ") and "top1" in lines[1]


# ----------------------------------------------------------------------------- data parallel

DDP_SCRIPT = textwrap.dedent('''
    """Trains through the command line twice: the zoo's plane2, then plane2 without BatchNorm."""
    import sys
    import torch
    import kd.models
    from kd.__main__ import main

    def without_batchnorm(create):
        def wrapped(*args, **kwargs):
            model = create(*args, **kwargs)
            for module in list(model.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, torch.nn.BatchNorm2d):
                        setattr(module, name, torch.nn.Identity())
            return model
        return wrapped

    out, *args = sys.argv[1:]
    assert main(["train", *args, "--out", out + "/bn"]) == 0
    kd.models.create = without_batchnorm(kd.models.create)
    assert main(["train", *args, "--out", out + "/nobn"]) == 0
''')
DDP_ARGS = ["--model", "plane2", "--dataset", "digits", "--train-subset", "300", "--eval-subset", "200",
            "--epochs", "3", "--batch-size", "50", "--lr", "0.02", "--schedule", "cosine", "--crop-pad", "1",
            "--device", "cpu", "--no-resume", "--seed", "0"]


def test_ddp_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    """`torchrun --standalone --nproc_per_node 2 -m kd train ...` on CPU (gloo). batch_size is
    the global batch (25 per process here), and the processes share the samples and
    augmentations one process would draw, so:

    - without BatchNorm, two processes equal one process up to float rounding: per-epoch
      training loss and NLL within relative 1e-4, top-1 within one eval sample (0.5 points);
    - with BatchNorm (statistics per process, over 25 instead of 50 samples) the runs differ
      slightly: training loss and NLL within relative 3e-2, top-1 within 3 points.
    """
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path / "two"), *DDP_ARGS]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert sum(l.startswith("bn epoch 3/3") for l in lines) == 1, "one process (rank 0) logs"
    assert sum(l.startswith("training plane2") for l in lines) == 2 and out.stdout.count('"top1"') == 2

    from kd.__main__ import main
    for variant in ("bn", "nobn"):
        if variant == "nobn":
            monkeypatch.setattr(kd.models, "create", _without_batchnorm(kd.models.create))
        assert main(["train", *DDP_ARGS, "--out", str(tmp_path / "one" / variant)]) == 0
    for variant, rtol, top1_tol in (("nobn", 1e-4, 0.5), ("bn", 3e-2, 3.0)):
        one, two = metrics(tmp_path / "one" / variant), metrics(tmp_path / "two" / variant)
        assert one["epoch"].tolist() == two["epoch"].tolist() == [1, 2, 3]
        assert one["lr"].tolist() == two["lr"].tolist()
        for col in ("train_loss", "nll"):
            assert ((one[col] - two[col]).abs() <= rtol * one[col].abs()).all(), (variant, col, one[col], two[col])
        assert ((one["top1"] - two["top1"]).abs() <= top1_tol + 1e-6).all(), (variant, one["top1"], two["top1"])
        assert json.loads((tmp_path / "two" / variant / "final.json").read_text())["num_train"] == 300
        assert not no_temp_files(tmp_path / "two" / variant)


def _without_batchnorm(create):
    def wrapped(*args, **kwargs):
        model = create(*args, **kwargs)
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(module, name, torch.nn.Identity())
        return model
    return wrapped


def test_fit_timing_and_the_benchmark_loop_run_the_one_training_step(tmp_path, monkeypatch):
    """kd.train.train_step is the only training step: fit, kd.timing and the benchmarks' loop call it."""
    import kd.data
    import kd.timing

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_common

    calls = []
    real = kd_train.train_step
    monkeypatch.setattr(kd_train, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(tiny(epochs=1), tmp_path)
    assert len(calls) == 6, "fit: 300 images / batch 50"
    ds = kd.data.load("digits", train_subset=100, eval_subset=50)
    kd.timing.step_times({"CE": ("ce", {})}, "plane2", ds, batch_size=50, steps=2, rounds=1)
    assert len(calls) == 6 + 4, "timing: a warm-up round and a timed round of 2 steps"
    x, y = bench_common.synthetic_split(64, shape=(3, 32, 32), classes=10)
    loop = bench_common.OursLoop(None, kd.models.create("plane2", 10, in_channels=3), x, y, batch_size=32,
                                 device=torch.device("cpu"), method="ce")
    loop.run(1)
    assert len(calls) == 11


def test_evaluations_spread_the_test_evaluations_over_the_run(tmp_path):
    train(tiny(epochs=4), tmp_path, evaluations=2)
    hist = pd.read_csv(tmp_path / "metrics.csv")
    assert hist.dropna(subset=["top1"])["epoch"].tolist() == [2, 4]


def test_a_run_stopped_at_a_chosen_epoch_is_the_full_runs_model_at_that_epoch(tmp_path):
    """stop_epoch takes a run's model at an epoch of its schedule (an early-stopped teacher): its
    own cached run, equal on a CPU to the first epochs of the full run."""
    full, early = tiny(epochs=4), tiny(epochs=4, stop_epoch=2)
    assert "stop_epoch" not in full.identity(), "unset, it leaves the identity of existing runs alone"
    assert early.hash() != full.hash()
    train(full, tmp_path / "full")
    train(early, tmp_path / "early")
    pd.testing.assert_frame_equal(metrics(tmp_path / "full").iloc[:2], metrics(tmp_path / "early"), check_exact=True)
    with pytest.raises(ValueError, match="stop_epoch must be in"):
        tiny(epochs=4, stop_epoch=5).validate()


def test_a_pruned_fine_tuned_run_is_a_cached_derived_run(tmp_path, killed_at_epoch):
    """Derived runs (kd.prune): the dense run's weights, the `amount` of them with the smallest
    magnitude removed globally and held at zero while fine-tuning; a second round removes a
    fraction of what remains (iterative pruning with learning-rate rewinding); each round is its own
    cached run, trained after the run it starts from, and resumes like any run."""
    from kd import prune, runs

    dense = tiny(epochs=2)
    round1 = tiny(epochs=2, init_from=dense, prune={"amount": 0.5})
    round2 = round1.replace(init_from=round1, prune={"amount": 0.5})
    assert "init_from" not in dense.identity() and "prune" not in dense.identity(), "old runs keep their names"
    assert round1.identity()["prune"] == {"amount": 0.5, "score": "magnitude", "layers": "conv+linear"}
    assert len({dense.hash(), round1.hash(), round2.hash(), round1.replace(prune={"amount": 0.4}).hash()}) == 4
    assert TrainConfig.from_dict(json.loads(json.dumps(round2.to_dict()))).hash() == round2.hash()
    assert [len(level) for level in runs.dependency_levels([round2])] == [1, 1, 1]

    got = runs.run_many([round2], root=tmp_path, progress=False)[0]  # dense, then round 1, then round 2
    d, r1 = runs.find(dense, [tmp_path]), runs.find(round1, [tmp_path])
    weights = {name: prune.prunable(r.model()) for name, r in (("dense", d), ("r1", r1), ("r2", got))}
    n = sum(w.numel() for w in weights["dense"].values())
    for name, expected in (("r1", 0.5), ("r2", 0.75)):
        zeros = sum(int((w == 0).sum()) for w in weights[name].values())
        assert abs(zeros / n - expected) <= 1 / n, name
    assert r1.summary["sparsity"] == pytest.approx(0.5, abs=1 / n)
    assert got.summary["sparsity"] == pytest.approx(0.75, abs=1 / n)
    # round 2 keeps round 1's zeros, and round 1 removed the dense run's smallest weights
    for key, w in weights["r1"].items():
        assert bool(((w == 0) <= (weights["r2"][key] == 0)).all())
    dense_w = torch.cat([w.abs().flatten() for w in weights["dense"].values()])
    pruned = torch.cat([(w == 0).flatten() for w in weights["r1"].values()])
    assert dense_w[pruned].max() <= dense_w[~pruned].min()
    assert runs.run(round2, root=tmp_path, progress=False).path == got.path, "cached"

    # killed after an epoch, a pruned run resumes to the same model as an uninterrupted one
    with killed_at_epoch(2):
        train(round1, tmp_path / "killed", init=d.model().state_dict())
    train(round1, tmp_path / "killed", init=d.model().state_dict())
    pd.testing.assert_frame_equal(metrics(tmp_path / "killed"), metrics(r1.path), check_exact=True)


def test_the_prue_score_is_the_gradient_with_respect_to_masks_of_the_spread_around_class_means():
    """PrUE (kd.prune.prue) against its definition, computed another way: masks m = 1 multiplying
    the weights (torch.func.functional_call), the objective sum_i |pbar_{y_i} - p_i| with pbar the
    class means of the true-class probabilities, and |d objective / d m|."""
    from torch.func import functional_call

    from kd import data as kd_data
    from kd import models, prune

    torch.manual_seed(0)
    model = models.create("plane2", 10, 1)
    ds = tiny().load_data()
    weights = prune.prunable(model, "conv")
    got = prune.prue(model, weights, ds)
    assert model.training, "the model's mode is restored"

    model.eval()
    x = torch.cat([b.x for b in kd_data.Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=1000,
                                               train=False)])
    y = ds.y_train
    ones = {name: torch.ones_like(w, requires_grad=True) for name, w in weights.items()}
    params = {**dict(model.named_parameters()), **{n: weights[n].detach() * ones[n] for n in weights}}
    logits = functional_call(model, (params, dict(model.named_buffers())), (x,))
    p = logits.softmax(1).gather(1, y.view(-1, 1)).flatten()
    pbar = torch.stack([p[y == c].mean() for c in range(10)]).detach()
    (pbar[y] - p).abs().sum().backward()
    for name in weights:
        torch.testing.assert_close(got[name], ones[name].grad.abs(), rtol=1e-4, atol=1e-7)
    keep = prune.masks(model, {"amount": 0.5, "score": "prue", "layers": "conv"}, data=ds)
    flat_score = torch.cat([got[n].flatten() for n in weights])
    flat_keep = torch.cat([keep[n].flatten() for n in weights])
    assert flat_keep.float().mean() == pytest.approx(0.5, abs=1e-3)
    assert flat_score[flat_keep].min() >= flat_score[~flat_keep].max(), "the largest scores are kept"
    with pytest.raises(ValueError, match="computed on the training images: pass data="):
        prune.masks(model, {"amount": 0.5, "score": "prue"})


def test_a_prue_pruned_run_fine_tunes_with_its_masks_held(tmp_path):
    from kd import prune, runs

    dense = tiny(epochs=1)
    prued = dense.replace(init_from=dense, prune={"amount": 0.5, "score": "prue", "layers": "conv"})
    magnitude = prued.replace(prune={"amount": 0.5, "layers": "conv"})
    got = runs.run_many([prued, magnitude], root=tmp_path, progress=False)
    assert got[0].summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    w_prue, w_mag = (prune.prunable(r.model(), "conv") for r in got)
    assert any(not torch.equal(w_prue[n] == 0, w_mag[n] == 0) for n in w_prue), "another ranking than |w|"
    assert all(float((w != 0).float().mean()) == 1.0 for w in prune.prunable(got[0].model(), "linear").values())


def test_a_fine_tune_starts_from_the_weights_of_the_run_it_names(tmp_path):
    dense = tiny(epochs=2)
    train(dense, tmp_path / "dense")
    start = kd_train.load_model(tmp_path / "dense").state_dict()
    still = tiny(epochs=1, lr=1e-12, init_from=dense)  # a fine-tune too small to move the weights
    train(still, tmp_path / "still", init=start)
    tuned = kd_train.load_model(tmp_path / "still").state_dict()
    weights = [k for k in start if k.endswith("weight")]
    assert all(torch.allclose(tuned[k], start[k], atol=1e-9) for k in weights), "(BatchNorm's running stats move)"


def test_a_shaped_student_keeps_the_pruned_runs_surviving_weights_per_layer(tmp_path):
    """shape_from (Park & No 2022): the student's convolution widths are c'_l = nonzero_l /
    (k^2 c'_{l-1}), so each of its convolutions has about as many weights as the pruned run's has
    left; a cached derived run, trained after the pruned run, whose model loads with its widths."""
    from kd import models, prune, runs

    dense = tiny(model="plane4", epochs=1)
    pruned = dense.replace(init_from=dense, prune={"amount": 0.6})
    shaped = tiny(model="plane4", epochs=1, shape_from=pruned)
    assert "shape_from" not in dense.identity(), "old runs keep their names"
    assert shaped.hash() != tiny(model="plane4", epochs=1).hash()
    assert shaped.hash() != shaped.replace(shape_from=pruned.replace(prune={"amount": 0.5})).hash()
    assert TrainConfig.from_dict(json.loads(json.dumps(shaped.to_dict()))).hash() == shaped.hash()
    assert [len(level) for level in runs.dependency_levels([shaped])] == [1, 1, 1]

    got = runs.run_many([shaped], root=tmp_path, progress=False)[0]
    source = runs.find(pruned, [tmp_path]).model()
    convs = [m for m in source.modules() if isinstance(m, torch.nn.Conv2d)]
    widths, cin = [], 1  # digits: one input channel
    for conv in convs:
        widths.append(max(1, round(int((conv.weight != 0).sum()) / (9 * cin))))
        cin = widths[-1]
    assert prune.shaped_widths(source) == widths == got.summary["widths"]
    assert widths != [c.out_channels for c in convs], "pruning 60% narrows the student"
    student = [m for m in got.model().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in student] == widths
    for mine, theirs in zip(student, convs):
        assert abs(mine.weight.numel() - int((theirs.weight != 0).sum())) <= 0.5 * 9 * mine.in_channels + 9
    assert runs.run(shaped, root=tmp_path, progress=False).path == got.path, "cached"

    with pytest.raises(ValueError, match="widths must be 4 positive integers"):
        models.create("plane4", 10, 1, widths=[8, 8, 8])
    with pytest.raises(ValueError, match="'resnet8' takes no widths"):
        models.create("resnet8", 10, 1, widths=[8])
    with pytest.raises(ValueError, match="shape_from needs a plain network"):
        tiny(model="resnet8", shape_from=pruned).validate()
    with pytest.raises(ValueError, match="shape_from must be a plane2 run on digits"):
        tiny(shape_from=pruned).validate()
    with pytest.raises(ValueError, match="needs widths="):
        fit(shaped, tmp_path / "unused", device="cpu")


def test_an_interpolated_start_lies_between_the_seeds_initialisation_and_the_run(tmp_path):
    """init_lambda (Stanton et al. 2021): the run starts at lambda * the named run's weights +
    (1 - lambda) * its own seed's random initialisation; 0 is the plain run, 1 the plain fine-tune."""
    dense = tiny(epochs=2)
    train(dense, tmp_path / "dense")
    start = kd_train.load_model(tmp_path / "dense").state_dict()
    assert "init_lambda" not in tiny(init_from=dense).identity(), "unset, old derived runs keep their names"
    assert tiny(init_from=dense, init_lambda=0.5).hash() != tiny(init_from=dense).hash()
    frozen = {"lr": 1e-12, "epochs": 1}  # too small a step to move the weights
    train(tiny(**frozen), tmp_path / "random")
    train(tiny(**frozen, init_from=dense, init_lambda=0.5), tmp_path / "half", init=start)
    random_w = kd_train.load_model(tmp_path / "random").state_dict()
    half = kd_train.load_model(tmp_path / "half").state_dict()
    weights = [k for k in start if k.endswith("weight")]
    assert all(torch.allclose(half[k], 0.5 * start[k] + 0.5 * random_w[k], atol=1e-6) for k in weights)
    train(tiny(init_from=dense, init_lambda=0.0), tmp_path / "zero", init=start)
    train(tiny(), tmp_path / "plain")
    pd.testing.assert_frame_equal(metrics(tmp_path / "zero"), metrics(tmp_path / "plain"), check_exact=True)
    for bad, message in ((1.5, "init_lambda must be in"), (True, "init_lambda must be in")):
        with pytest.raises(ValueError, match=message):
            tiny(init_from=dense, init_lambda=bad).validate()
    with pytest.raises(ValueError, match="init_lambda needs init_from"):
        tiny(init_lambda=0.5).validate()


def test_a_model_that_sees_view_0_of_two_view_data_trains_as_on_the_plain_data(tmp_path):
    """views / seen_views (MFH's image analogue): a student that sees only view 0 of the two-view data gets
    the plain dataset's images, batches and augmentation, so it trains to the plain run bit for bit; a
    teacher that sees both views (or only view 1) distils to it through the same batches."""
    assert "views" not in tiny().identity() and "seen_views" not in tiny().identity(), "unset: old runs keep theirs"
    train(tiny(), tmp_path / "plain")
    own = tiny(views=2, seen_views=[0])
    train(own, tmp_path / "own")
    pd.testing.assert_frame_equal(metrics(tmp_path / "own"), metrics(tmp_path / "plain"), check_exact=True)
    assert own.hash() != tiny().hash()
    for seen, name in ((None, "both"), ([1], "other")):
        teacher = tiny(views=2, seen_views=seen)
        train(teacher, tmp_path / name)
        model = kd_train.load_model(tmp_path / name)
        assert model.stages[0][0][0].in_channels == (2 if seen is None else 1)
        student = own.replace(method="kd", teacher=teacher)
        summary = train(student, tmp_path / f"kd-{name}", teacher=model)
        assert math.isfinite(summary["top1"]) and "agreement" in summary
        assert kd_train.load_model(tmp_path / f"kd-{name}").seen_channels.tolist() == [0]


@pytest.mark.parametrize("changes, message", [
    ({"views": 1}, "views must be an integer >= 2"),
    ({"seen_views": [0]}, "seen_views must list some, not all, of the views"),
    ({"views": 2, "seen_views": [0, 1]}, "seen_views must list some, not all"),
    ({"views": 2, "seen_views": [2]}, "seen_views must list some, not all"),
    ({"views": 2, "seen_views": [0], "method": "kd", "teacher": tiny()}, "teacher trained with views=None"),
])
def test_bad_view_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes).validate()


@pytest.mark.parametrize("changes, message", [
    ({"prune": {"amount": 0.5}}, "prune needs init_from"),
    ({"init_from": "dense", "prune": {"amount": 1.5}}, "prune amount is the fraction"),
    ({"init_from": "dense", "prune": {"amount": 0.5, "score": "gradient"}}, "unknown prune score 'gradient'"),
    ({"init_from": "dense", "prune": {"amount": 0.5, "layer": "conv"}}, r"unknown prune setting\(s\) \['layer'\]"),
    ({"init_from": "other", "prune": {"amount": 0.5}}, "init_from must be a plane2 run on digits"),
])
def test_bad_derived_run_settings_are_clear_errors(changes, message):
    starts = {"dense": tiny(), "other": tiny(model="plane4")}
    if "init_from" in changes:
        changes = {**changes, "init_from": starts[changes["init_from"]]}
    with pytest.raises(ValueError, match=message):
        tiny(**changes).validate()
    with pytest.raises(ValueError, match="needs init="):
        fit(tiny(init_from=tiny()), "unused", device="cpu")


def test_a_batch_larger_than_the_training_set_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size 400 is larger than the 300 training images"):
        train(tiny(batch_size=400), tmp_path / "r")
    assert not (tmp_path / "r").exists()
