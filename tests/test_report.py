"""kd.report: the verdict rules every notebook's claims go through, and the files a Report writes."""
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kd import report


def test_compare_verdicts_follow_sign_and_significance():
    better, worse = [72.0, 72.4, 71.8], [70.0, 70.3, 69.9]
    assert report.compare(better, worse)["verdict"] == "reproduced"
    assert report.compare(worse, better)["verdict"] == "not reproduced"
    noisy = report.compare([71.0, 75.0, 67.5], [70.5, 74.0, 67.0])  # right sign, not significant
    assert noisy["verdict"] == "partly" and noisy["p_value"] > 0.05
    one_seed = report.compare([72.0], [70.0])
    assert one_seed["verdict"] == "partly" and math.isnan(one_seed["p_value"])
    assert "too few seeds" in one_seed["evidence"]


def test_compare_lower_is_better_and_margin():
    assert report.compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], higher_is_better=False)["verdict"] == "reproduced"
    assert report.compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])["verdict"] == "not reproduced"
    # a gain smaller than the margin is not the claimed gain
    r = report.compare([70.2, 70.3, 70.1], [70.0, 70.1, 69.9], margin=0.5)
    assert r["verdict"] == "not reproduced" and r["difference"] == pytest.approx(0.2)


def test_compare_p_value_is_one_sided_welch():
    a, b = np.array([72.0, 71.0, 73.5, 72.2]), np.array([70.0, 71.5, 70.2])
    expected = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert report.compare(a, b)["p_value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("constant_side", ["a", "b"])
def test_compare_with_a_constant_side_is_the_one_sample_test_and_warns_nothing(constant_side):
    # e.g. a cost claim: measured ratios against a fixed budget of 1.05
    budget, ratios = np.full(5, 1.05), np.array([0.98, 1.01, 0.97, 1.02, 0.99])
    a, b = (budget, ratios) if constant_side == "a" else (-ratios, -budget)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = report.compare(a, b)
    expected = stats.ttest_1samp(ratios, 1.05, alternative="less").pvalue
    assert r["p_value"] == pytest.approx(expected, rel=1e-12)
    assert r["verdict"] == "reproduced"


def test_trend_is_spearman_with_direction():
    x = [0, 1, 2, 3, 4, 5]
    assert report.trend(x, [1, 2, 3, 4, 5, 6])["verdict"] == "reproduced"
    assert report.trend(x, [6, 5, 4, 3, 2, 1])["verdict"] == "not reproduced"
    assert report.trend(x, [6, 5, 4, 3, 2, 1], increasing=False)["verdict"] == "reproduced"
    assert report.trend([0, 1], [1, 2])["verdict"] == "not reproduced"  # two points: no trend can be shown
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = report.trend(x, [10.0] * 6)  # e.g. every student at chance
    assert flat["verdict"] == "not reproduced" and math.isnan(flat["difference"])
    r = report.trend(x, [1, 3, 2, 5, 4, 6])
    assert r["difference"] == pytest.approx(stats.spearmanr(x, [1, 3, 2, 5, 4, 6])[0])


def test_mean_std_and_fmt():
    m, s, n = report.mean_std([70.0, 72.0, float("nan"), None])
    assert (m, n) == (71.0, 2) and s == pytest.approx(math.sqrt(2))
    assert report.fmt([70.0, 72.0]) == "71.00 ± 1.41"
    assert report.fmt([70.0]) == "70.00 (1 seed)"
    assert report.fmt([]) == "n/a"


def test_report_writes_metrics_and_table_and_rejects_unknown_verdicts(tmp_path):
    profile = SimpleNamespace(name="quick", seeds=[0, 1],
                              results_dir=lambda paper: (tmp_path / "quick" / paper / "figures").mkdir(
                                  parents=True, exist_ok=True) or tmp_path / "quick" / paper)
    rep = report.Report("toy", profile)
    rep.claim("gain", "A beats B", report.compare([2.0, 2.1], [1.0, 1.1]), paper="A > B (Table 1)", ours="2.05 vs 1.05")
    rep.claim("gain", "A beats B", report.compare([1.0, 1.1], [2.0, 2.1]))  # the same key replaces the claim
    rep.number("main/A/top1", 2.05)
    rep.table("Main", pd.DataFrame({"top-1": [2.05]}, index=["A"]))
    with pytest.raises(ValueError, match="verdict must be one of"):
        rep.claim("bad", "x", {"verdict": "maybe"})
    rep.write()
    metrics = json.loads((tmp_path / "quick" / "toy" / "metrics.json").read_text())
    assert metrics["verdicts"] == {"gain": "not reproduced"}
    assert metrics["numbers"] == {"main": {"A": {"top1": 2.05}}}
    assert metrics["accuracy"].startswith("last epoch")
    table = (tmp_path / "quick" / "toy" / "table.md").read_text()
    assert "## Verdicts" in table and "## Main" in table
    assert not list((tmp_path / "quick" / "toy").glob("*.tmp*")), "no temporary file left behind"


def test_build_report_and_update_readme(tmp_path):
    paper_dir = tmp_path / "quick" / "toy"
    paper_dir.mkdir(parents=True)
    claim = {"claim": "A beats B", "paper": "A > B", "ours": "2 vs 1", "verdict": "partly"}
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
