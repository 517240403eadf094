"""benchmarks/cpu_study.py's stage records (the stages' commands are replaced: nothing trains)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cpu_study  # noqa: E402


def test_an_unknown_stage_fails_before_anything_runs(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(cpu_study, "timed", lambda cmd: ran.append(cmd) or 0.0)
    monkeypatch.setattr(cpu_study, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="unknown stage.*nosuch"):
        cpu_study.main(["--profile", "quick", "teachers", "nosuch"])
    assert ran == [] and not (tmp_path / "results").exists()


def test_the_teachers_stage_is_timed_and_merged_into_the_record_as_it_is_then(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(cpu_study, "ROOT", tmp_path)
    record = tmp_path / "results" / "benchmarks" / "quick_stages.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"dkd": {"stage_s": 1}}))

    def fake_teachers(cmd):  # trains two teachers while another process records a stage
        assert cmd[1:] == ["-m", "kd", "teachers", "--profile", "quick"]
        for name in ("resnet14", "resnet8"):
            run = tmp_path / "runs" / "quick" / "teachers" / name / f"{name}-ce-0"
            run.mkdir(parents=True)
            (run / "final.json").write_text("{}")
        record.write_text(json.dumps({"dkd": {"stage_s": 1}, "dist": {"stage_s": 2}}))
        return 12.4

    monkeypatch.setattr(cpu_study, "timed", fake_teachers)
    assert cpu_study.main(["--profile", "quick", "teachers"]) == 0
    out = json.loads(record.read_text())
    assert out["dkd"] == {"stage_s": 1} and out["dist"] == {"stage_s": 2}, "the other stages' records are kept"
    assert out["teachers"]["stage_s"] == 12 and out["teachers"]["notebook_s"] == 0
    assert out["teachers"]["runs_trained"] == 2
