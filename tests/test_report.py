"""kd.report: the verdict rules every notebook's claims go through, and the files a Report writes."""
import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from kd import report


def test_mean_std_and_fmt():
    m, s, n = report.mean_std([70.0, 72.0, float("nan"), None])
    assert (m, n) == (71.0, 2) and s == pytest.approx(math.sqrt(2))
    assert report.fmt([70.0, 72.0]) == "71.00 ± 1.41"
    assert report.fmt([70.0]) == "70.00 (1 seed)"
    assert report.fmt([]) == "n/a"


def _run(seed, **summary):
    return SimpleNamespace(config=SimpleNamespace(seed=seed), summary=summary)


def test_by_seed_pairs_a_rows_runs_and_refuses_two_runs_of_one_seed():
    runs = [_run(2, top1=71.5, ece=3.0), _run(0, top1=70.0, ece=4.0)]
    assert report.by_seed(runs) == {2: 71.5, 0: 70.0}
    assert report.by_seed(runs, "ece") == {2: 3.0, 0: 4.0}
    with pytest.raises(ValueError, match="same seed"):
        report.by_seed([_run(1, top1=70.0), _run(1, top1=71.0)])


def test_sweep_frame_gives_one_point_per_run_and_sweep_by_seed_one_setting():
    groups = {"beta=1": [_run(0, top1=70.0, nll=0.9), _run(1, top1=71.0, nll=0.8)],
              "beta=8": [_run(0, top1=72.0, nll=0.7), _run(1, top1=73.0, nll=0.6)]}
    frame = report.sweep_frame(groups, "beta", ("top1", "nll"))
    assert frame.to_dict("records") == [
        {"beta": 1.0, "seed": 0, "top1": 70.0, "nll": 0.9}, {"beta": 1.0, "seed": 1, "top1": 71.0, "nll": 0.8},
        {"beta": 8.0, "seed": 0, "top1": 72.0, "nll": 0.7}, {"beta": 8.0, "seed": 1, "top1": 73.0, "nll": 0.6}]
    assert list(report.sweep_frame(groups, "beta").columns) == ["beta", "seed", "top1"]
    assert report.sweep_by_seed(frame, "beta", 8.0) == {0: 72.0, 1: 73.0}
    assert report.sweep_by_seed(frame, "beta", 1.0, "nll") == {0: 0.9, 1: 0.8}


def _profile(tmp_path, name="cpu", seeds=(0, 1, 2), smoke=False):
    def results_dir(paper):
        (tmp_path / name / paper / "figures").mkdir(parents=True, exist_ok=True)
        return tmp_path / name / paper
    return SimpleNamespace(name=name, seeds=list(seeds), smoke=smoke, results_dir=results_dir)


def _control(tmp_path, verdict, name="cpu"):
    d = tmp_path / name / "testbed"
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({"claims": [{"key": "positive_control", "verdict": verdict}]}))


GAIN = ([72.0, 72.4, 71.8, 72.9], [70.0, 70.3, 69.9, 70.2])


def test_report_writes_metrics_and_table_and_rejects_unknown_verdicts(tmp_path):
    _control(tmp_path, "reproduced")
    rep = report.Report("toy", _profile(tmp_path))
    rep.claim("gain", "A beats B", report.compare(*GAIN), paper="A > B (Table 1)", ours="72 vs 70")
    rep.claim("gain", "A beats B", report.compare(*GAIN[::-1]))  # the same key replaces the claim
    rep.claim("identity", "an identity", report.check(1e-15, 1e-6))
    rep.number("main/A/top1", 2.05)
    rep.table("Main", pd.DataFrame({"top-1": [2.05]}, index=["A"]))
    here = {"device": "cpu", "device_name": "AMD EPYC", "cpu_capability": "AVX2", "threads": 1, "torch": "2.14.1"}
    older = {"device": "cpu", "device_name": "Intel Xeon", "threads": 2, "torch": "2.13.0"}  # before cpu_capability
    rep.ran([SimpleNamespace(path=tmp_path / f"run{i}", summary={"provenance": {**here, "git_commit": str(i)}})
             for i in range(3)] + [SimpleNamespace(path=tmp_path / "old", summary={"provenance": older})])
    rep.ran([SimpleNamespace(path=tmp_path / "run0", summary={"provenance": here})])  # a run seen twice counts once
    with pytest.raises(ValueError, match="verdict must be one of"):
        rep.claim("bad", "x", {"verdict": "maybe"})
    rep.write()
    metrics = json.loads((tmp_path / "cpu" / "toy" / "metrics.json").read_text())
    assert metrics["verdicts"] == {"gain": "contradicted", "identity": "reproduced"}
    assert metrics["numbers"] == {"main": {"A": {"top1": 2.05}}}
    assert metrics["accuracy"].startswith("last epoch") and metrics["regime"]["valid"]
    assert metrics["ran_on"] == [{**here, "runs": 3}, {**older, "cpu_capability": None, "runs": 1}]
    gain = metrics["claims"][0]
    for field in ("key", "claim", "verdict", "test", "n", "difference", "ci", "p", "p_holm", "paper", "ours"):
        assert field in gain, field
    assert gain["n"] == 4 and len(gain["ci"]) == 2 and gain["test"] == "paired t"
    table = (tmp_path / "cpu" / "toy" / "table.md").read_text()
    assert "## Verdicts" in table and "## Main" in table and "95% CI" in table
    assert ("Trained on: AMD EPYC, AVX2 kernels, threads 1, torch 2.14.1: 3 runs; "
            "Intel Xeon, unrecorded kernels, threads 2, torch 2.13.0: 1 run.") in table
    assert not list((tmp_path / "cpu" / "toy").glob("*.tmp*")), "no temporary file left behind"


def test_figures_and_results_appear_only_when_the_report_is_written(tmp_path):
    """A notebook killed half-way leaves the previous results in place: the figures wait in
    .staging until write(), which puts them, metrics.json and table.md in place."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _control(tmp_path, "reproduced")
    old = report.Report("toy", _profile(tmp_path))
    old.savefig(plt.figure(), "curve")
    old.claim("gain", "A beats B", report.compare(*GAIN))
    old.write()
    final = tmp_path / "cpu" / "toy"
    before = {p.name: p.read_bytes() for p in [final / "metrics.json", final / "figures" / "curve.png"]}
    killed = report.Report("toy", _profile(tmp_path))  # a second run that never reaches write()
    fig = plt.figure()
    fig.gca().plot([0, 1], [1, 0])
    killed.savefig(fig, "curve")
    killed.claim("gain", "A beats B", report.compare(*reversed(GAIN)))
    assert {p.name: p.read_bytes() for p in [final / "metrics.json", final / "figures" / "curve.png"]} == before
    done = report.Report("toy", _profile(tmp_path))  # the rerun starts from a clean staging folder
    assert not (final / ".staging").exists()
    done.savefig(fig, "curve")
    done.write()
    assert (final / "figures" / "curve.png").read_bytes() != before["curve.png"] and not (final / ".staging").exists()
    fewer = report.Report("toy", _profile(tmp_path))  # a design that no longer draws "curve": no stale figure stays
    fewer.savefig(plt.figure(), "other")
    fewer.write()
    assert sorted(p.name for p in (final / "figures").iterdir()) == ["other.png"]


def test_holm_across_a_papers_claims(tmp_path):
    _control(tmp_path, "reproduced")
    rep = report.Report("toy", _profile(tmp_path))
    weak = report.compare([70.9, 71.6, 70.2, 71.0, 70.5], [70.0, 70.3, 69.9, 70.2, 70.4])
    assert weak["verdict"] == "reproduced" and 0.01 < weak["p"] < 0.05
    rep.claim("weak", "A beats B", weak)
    for i in range(4):  # four more claims with p ~ 1: Holm multiplies the smallest p by 5
        rep.claim(f"null{i}", "no gain", report.compare([70.0, 71.0, 69.0, 70.0, 70.5], [70.1, 70.9, 69.1, 70.0, 70.4]))
    rep.write()
    claims = {c["key"]: c for c in json.loads((tmp_path / "cpu" / "toy" / "metrics.json").read_text())["claims"]}
    assert claims["weak"]["verdict"] == "inconclusive" and claims["weak"]["verdict_raw"] == "reproduced"
    assert claims["weak"]["p_holm"] == pytest.approx(5 * weak["p"])


@pytest.mark.parametrize("ladder", ["reproduced", "contradicted"])
def test_a_claim_that_requires_a_testbed_result_is_not_tested_without_it(tmp_path, ladder):
    d = tmp_path / "cpu" / "testbed"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"claims": [{"key": "positive_control", "verdict": "reproduced"},
                                                           {"key": "ladder_spread", "verdict": ladder}]}))
    rep = report.Report("toy", _profile(tmp_path))
    gain = report.compare(*GAIN)
    rep.claim("stronger", "gains grow with the teacher", gain, requires="ladder_spread")
    rep.claim("plain", "A beats B", gain)
    rep.write()
    claims = {c["key"]: c for c in json.loads((tmp_path / "cpu" / "toy" / "metrics.json").read_text())["claims"]}
    assert claims["plain"]["verdict"] == "reproduced"
    if ladder == "reproduced":
        assert claims["stronger"]["verdict"] == "reproduced"
        assert claims["plain"]["p_holm"] == pytest.approx(min(1.0, 2 * gain["p"])), "two claims in Holm's family"
    else:
        assert claims["stronger"]["verdict"] == "not tested" and claims["stronger"]["verdict_raw"] == "reproduced"
        assert "needs the testbed's `ladder_spread` reproduced on `cpu`; it is contradicted" in \
            claims["stronger"]["reason"]
        assert claims["plain"]["p_holm"] == pytest.approx(gain["p"]), "an untested claim is not in Holm's family"


@pytest.mark.parametrize("top", [89.0, 86.0])
def test_a_claim_whose_own_teachers_span_too_little_is_not_tested(tmp_path, top):
    _control(tmp_path, "reproduced")
    rep = report.Report("toy", _profile(tmp_path))
    spread = report.teacher_spread({"small": 84.0, "mid": 85.5, "large": top}, 5.0)
    assert spread["evidence"] == f"large - small top-1 = {top - 84:.3g} {'>=' if top == 89.0 else '<'} 5"
    gain = report.compare(*GAIN)
    rep.claim("stronger", "gains grow with the teacher", gain, requires=spread)
    rep.claim("plain", "A beats B", gain)
    with pytest.raises(ValueError, match="check result"):
        rep.claim("bad", "needs a comparison", gain, requires=gain)
    rep.write()
    claims = {c["key"]: c for c in json.loads((tmp_path / "cpu" / "toy" / "metrics.json").read_text())["claims"]}
    assert claims["stronger"]["precondition"]["evidence"] == spread["evidence"]
    if top == 89.0:
        assert claims["stronger"]["verdict"] == "reproduced"
    else:
        assert claims["stronger"]["verdict"] == "not tested" and claims["stronger"]["verdict_raw"] == "reproduced"
        assert claims["stronger"]["reason"] == f"its precondition failed: {spread['evidence']}"
        assert claims["plain"]["p_holm"] == pytest.approx(gain["p"]), "an untested claim is not in Holm's family"


def test_an_untested_claim_says_which_precondition_kept_it_from_training(tmp_path):
    _control(tmp_path, "reproduced")
    rep = report.Report("toy", _profile(tmp_path))
    spread = report.teacher_spread({"small": 84.0, "large": 85.0}, 5.0)
    rep.claim("gap", "a gap", report.untested(f"students not trained: {spread['evidence']}"), requires=spread)
    rep.write()
    (c,) = json.loads((tmp_path / "cpu" / "toy" / "metrics.json").read_text())["claims"]
    assert c["verdict"] == "not tested" and c["n"] == 0 and c["p_holm"] is None
    assert c["reason"] == "its precondition failed: large - small top-1 = 1 < 5"


@pytest.mark.parametrize("control", ["inconclusive", None])
def test_a_failed_or_missing_positive_control_makes_the_regime_invalid(tmp_path, control):
    if control:
        _control(tmp_path, control)
    rep = report.Report("toy", _profile(tmp_path))
    rep.claim("gain", "A beats B", report.compare(*GAIN))
    rep.claim("identity", "an identity", report.check(1e-15, 1e-6))
    rep.write()
    m = json.loads((tmp_path / "cpu" / "toy" / "metrics.json").read_text())
    assert m["verdicts"] == {"gain": "not tested", "identity": "reproduced"}  # checks need no regime
    assert json.loads((tmp_path / "cpu" / "toy" / "headline.json").read_text()) == {
        "claims": 2, "reproduced": 1, "inconclusive": 0, "contradicted": 0, "not tested": 1, "regime_valid": False}
    assert "regime invalid" in m["claims"][0]["reason"] and not m["regime"]["valid"]
    assert "regime invalid" in (tmp_path / "cpu" / "toy" / "table.md").read_text()


def test_smoke_profile_tests_nothing(tmp_path):
    rep = report.Report("toy", _profile(tmp_path, name="quick", smoke=True))
    rep.claim("gain", "A beats B", report.compare(*GAIN))
    rep.claim("identity", "an identity", report.check(1e-15, 1e-6))
    rep.write()
    m = json.loads((tmp_path / "quick" / "toy" / "metrics.json").read_text())
    assert set(m["verdicts"].values()) == {"not tested"}
    assert all("smoke" in c["reason"] for c in m["claims"])


def test_build_report_and_update_readme(tmp_path):
    paper_dir = tmp_path / "quick" / "toy"
    paper_dir.mkdir(parents=True)
    claim = {"claim": "A beats B", "paper": "A > B", "ours": "2 vs 1", "verdict": "inconclusive",
             "evidence": "difference +1", "p_holm": 0.2}
    (paper_dir / "metrics.json").write_text(json.dumps({"paper": "toy", "claims": [claim]}))
    out = report.build_report("quick", results_root=tmp_path)
    assert "A beats B" in out.read_text() and (tmp_path / "quick" / "summary.png").exists()

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\noutro\n")
    report.update_readme("quick", readme=readme, results_root=tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "A beats B" in text and "results/quick/summary.png" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="results:start"):
        report.update_readme("quick", readme=readme, results_root=tmp_path)
