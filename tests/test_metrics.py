"""kd.metrics.ece against the values of torchmetrics 1.9.0's multiclass_calibration_error (norm "l1"), which
computed the ECE of the committed runs: computed once on these inputs, outside the repository, and stored here.
float32 sums round differently on other CPU kinds (a CI machine gave 0.5656739473 for 0.5656740069), so the stored
values are compared to within a relative 1e-6, a few float32 ulps."""
import pytest
import torch

from kd.metrics import ece


def test_ece_matches_torchmetrics_on_fixed_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 3
    target = torch.randint(0, 10, (500,), generator=g)
    assert ece(logits, target, n_bins=15) == pytest.approx(0.5656740069389343, rel=1e-6)
    assert ece(logits, target, n_bins=10) == pytest.approx(0.5643945336341858, rel=1e-6)


def test_a_confidence_of_one_has_its_own_bin():
    # three samples at confidence 1.0 (two right), one at 0.63: the bins of torchmetrics 1.9
    logits = torch.tensor([[200.0, 0, 0], [0, 200.0, 0], [0, 0, 200.0], [1.0, 2.0, 0.5]])
    assert ece(logits, torch.tensor([0, 2, 2, 1]), n_bins=15) == pytest.approx(0.34286707639694214, rel=1e-6)


def test_ece_of_torchmetrics_documented_example():
    probs = torch.tensor([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
    assert ece(probs.log(), torch.tensor([0, 1, 2, 0]), n_bins=3) == pytest.approx(0.2, abs=1e-6)
