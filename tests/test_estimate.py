"""kd.estimate: the operations and FLOPs of a step, the cost model, the stages and the CLI."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kd import estimate as E
from kd import models as kd_models
from kd.__main__ import main
from kd.params import Profile


@pytest.fixture(scope="module")
def P():
    return Profile("quick")


def test_a_kd_step_costs_a_ce_step_plus_the_teachers_forward(P):
    ce = P.config("resnet8", "ce")
    kd = P.config("resnet8", "kd", teacher=P.teacher_config("resnet14"))
    ds = E._data(ce)
    teacher = kd_models.create("resnet14", ds.num_classes, in_channels=ds.in_channels).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        teacher(ds.x_eval[:1].float())
    ce_cost, kd_cost = E.step_cost(ce), E.step_cost(kd)
    assert kd_cost["step_flops"] - ce_cost["step_flops"] == pytest.approx(counter.get_total_flops() * kd.batch_size)
    assert kd_cost["step_ops"] > ce_cost["step_ops"]
    # one epoch; fit drops a last partial batch
    assert kd_cost["steps"] == ce_cost["steps"] == len(ds.y_train) // kd.batch_size


def test_a_steps_operations_do_not_depend_on_its_batch_and_its_flops_grow_with_it(P):
    # what lets step_cost count on a few images and scale the FLOPs to the run's batch
    two, four = (P.config("resnet8", "kd", teacher=P.teacher_config("resnet14"), batch_size=b) for b in (2, 4))
    ds = E._data(two)
    (ops2, flops2), (ops4, flops4) = E._step_ops(two, ds), E._step_ops(four, ds)
    assert ops2 == ops4
    assert flops4 == pytest.approx(2 * flops2)


def cost(steps, ops=1000, flops=0.0):
    return {"steps": steps, "step_ops": ops, "step_flops": flops, "eval_batches": 0, "eval_ops": 0, "eval_flops": 0.0}


def test_stage_seconds_runs_levels_in_turn_workers_at_a_time_and_waits_for_the_gpu():
    a = E.Assumptions(seconds_per_op=1e-5, achieved_tflops=1.0, start_s=0.0, level_start_s=0.0)
    one = E.training_seconds(cost(100), a)[0]  # 100 steps x 1000 operations x 10 us = 1 s
    assert one == pytest.approx(1.0)
    assert E.stage_seconds([[cost(100)] * 4], workers=4, a=a) == pytest.approx(1.0)
    assert E.stage_seconds([[cost(100)] * 4], workers=2, a=a) == pytest.approx(2.0)
    assert E.stage_seconds([[cost(100)], [cost(100)] * 2], workers=8, a=a) == pytest.approx(2.0)  # a chain waits
    assert E.stage_seconds([[cost(100), cost(300)]], workers=2, a=a) == pytest.approx(3.0)  # the longest
    measured = E.Assumptions(seconds_per_op=1e-5, achieved_tflops=1.0, start_s=0.0, level_start_s=0.0,
                             packing_gain=2.0)
    assert E.stage_seconds([[cost(100)] * 4], workers=4, a=measured) == pytest.approx(2.0)
    gpu_bound = [[cost(100, flops=1e11)] * 4]  # 100 steps x 0.1 TFLOP at 1 TFLOP/s: 10 s each on the GPU
    assert E.stage_seconds(gpu_bound, workers=4, a=a) == pytest.approx(40.0)


def test_estimate_counts_each_training_in_the_first_stage_that_runs_it(P):
    rows = {r["stage"]: r for r in E.estimate(P, papers=["testbed", "dkd"])}
    assert list(rows) == ["teachers", "testbed", "dkd"]
    assert rows["teachers"]["trainings"] == len(P.teacher_names()) * len(P.teacher_seeds())
    # quick's DKD shares the testbed's CE and KD students: they count in its stage alone, not after the testbed
    assert 0 < rows["dkd"]["new_trainings"] < rows["dkd"]["trainings"]
    assert rows["dkd"]["minutes"] < rows["dkd"]["minutes_alone"]
    assert all(r["steps"] > 0 and r["tflop"] > 0 and r["runs_mib"] > 0 for r in rows.values())


def throughput(step_ms):
    return {"environment": {"device_name": "NVIDIA H200", "time": "2026-12-03T12:00:00"},
            "pairs": [{"teacher": "resnet56", "student": "resnet20",
                       "results": [{"loop": "reference", "batch_size": 64, "step_ms": 99.0, "compiled": False},
                                   {"loop": "ours", "batch_size": 64, "step_ms": step_ms, "compiled": False},
                                   {"loop": "ours", "batch_size": 64, "step_ms": 1.0, "compiled": True}]}]}


def test_calibrate_takes_the_measured_step_over_its_counted_operations(tmp_path, P):
    packing = {"rows": [{"n": 1, "ratio_vs_one_at_a_time": 1.0}, {"n": 4, "ratio_vs_one_at_a_time": 3.1},
                        {"n": 16, "ratio_vs_one_at_a_time": 9.0}]}
    a = E.calibrate(throughput(12.0), packing, workers=8)
    ops = E._synthetic_step_ops(E._calibration_step())
    assert a.seconds_per_op == pytest.approx(12.0e-3 / ops)
    assert a.packing_gain == 3.1  # the largest measured N that the profile's workers reach
    assert "measured on NVIDIA H200" in a.source
    assert E.measured_assumptions(P, tmp_path) == E.Assumptions()  # nothing measured: the assumptions
    (tmp_path / "throughput_nvidia-h200.json").write_text(json.dumps(throughput(12.0)))
    assert E.measured_assumptions(P, tmp_path).seconds_per_op == pytest.approx(a.seconds_per_op)


def test_the_estimate_command(tmp_path, capsys):
    assert main(["estimate", "--profile", "quick", "nosuch"]) == 2
    assert "unknown paper(s) nosuch" in capsys.readouterr().err
    out = tmp_path / "estimate.json"
    assert main(["estimate", "--profile", "quick", "testbed", "--out", str(out)]) == 0
    assert "ESTIMATE, assumed" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["estimate"] is True and [r["stage"] for r in saved["stages"]] == ["teachers", "testbed"]


def test_a_papers_own_seeds_count():
    # PS-KD runs 10 paired seeds on cpu (its params.yaml section's `seeds`), as its notebook does
    cpu = Profile("cpu")
    assert sorted({c.seed for c in E.stages(cpu, ["pskd"])["pskd"]}) == list(range(10))
