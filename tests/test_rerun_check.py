"""benchmarks/rerun_check.py's test of whether a rerun's settings changed what the verdicts rest on."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from rerun_check import group_label, settings_effect  # noqa: E402


def key(method, **args):
    return json.dumps({"method": method, "method_args": args, "cutout": 0}, sort_keys=True)


def test_a_setting_that_shifts_one_configuration_changes_its_contrasts_and_noise_does_not():
    noise = [0.3, -0.2, 0.1, -0.3, 0.2, 0.0, -0.1, 0.25]  # run-level noise of the rerun, mean about 0
    ce = {s: (80.0 + s, 80.0 + s + noise[s]) for s in range(8)}
    kd = {s: (81.0 + s, 81.0 + s - noise[7 - s]) for s in range(8)}
    same = settings_effect({key("ce"): ce, key("kd", temperature=4): kd}, margin=0.5)
    assert same["contrasts_with_ci_holding_0"] == "1 of 1" and same["contrasts_changed_after_holm"] == 0
    assert same["contrasts_equivalent"] == "1 of 1", "the contrast is the same within the margin"
    assert [m["verdict"] for m in same["main"]] == ["reproduced", "reproduced"]
    assert same["contrasts"][0]["a"] == "ce" and same["contrasts"][0]["b"] == "kd (temperature 4)"

    shifted = {s: (c, r + 2.0) for s, (c, r) in kd.items()}  # the setting helps KD only
    moved = settings_effect({key("ce"): ce, key("kd", temperature=4): shifted}, margin=0.5)
    assert moved["contrasts_changed_after_holm"] == 1 and moved["contrasts_equivalent"] == "0 of 1"
    # (ce - kd) in the rerun minus (ce - kd) committed, per seed: noise[s] + noise[7 - s] - 2
    assert abs(moved["contrasts"][0]["difference"] - (2 * sum(noise) / 8 - 2.0)) < 1e-9
    assert [m["verdict"] for m in moved["main"]] == ["reproduced", "contradicted"]


def test_configurations_with_fewer_than_three_seeds_in_both_stores_are_left_out():
    assert settings_effect({key("ce"): {0: (1.0, 1.1), 1: (2.0, 2.1)}}, margin=0.5) is None
    assert group_label(json.dumps({"method": "pskd", "method_args": {"alpha_T": 0.8}, "cutout": 8})) == \
        "pskd (alpha_T 0.8), cutout 8"
    assert group_label(json.dumps({"method": "ce", "method_args": {"same_class": 0, "every_anchor": False}})) == "ce"
