"""Metrics the papers report, computed from logits.

Accuracy (top-1, top-5), NLL, expected calibration error (ECE), AURC / E-AURC (PS-KD,
Kim et al. ICCV 2021, after Geifman et al. 2019), and the fidelity of a student to its
teacher from "Does knowledge distillation really work?" (Stanton et al., NeurIPS 2021):
top-1 agreement and the mean predictive KL(p_teacher || p_student).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, target: torch.Tensor, k: int = 1) -> float:
    """Fraction of samples whose target is among the k largest logits (x100 for percent)."""
    topk = logits.topk(k, dim=1).indices
    return (topk == target.unsqueeze(1)).any(1).float().mean().item()


def nll(logits: torch.Tensor, target: torch.Tensor) -> float:
    return F.cross_entropy(logits.float(), target).item()


def entropy_rows(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row's distribution, from its log-probabilities."""
    return -(log_p.exp() * log_p).sum(-1)


def sample_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample entropy (nats) of softmax(logits / T), in float64."""
    return entropy_rows(torch.log_softmax(logits.double() / temperature, 1))


def entropy(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean entropy (nats) of softmax(logits / T): how soft a teacher's targets at T are."""
    return float(sample_entropy(logits, temperature).mean())


def ece(logits: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al., ICML 2017, Eq. 3): sum over equal-width confidence bins of
    |accuracy - mean confidence| weighted by the bin's share of samples, confidence = max softmax (float32).
    A bin holds [i/n_bins, (i+1)/n_bins); a confidence of exactly 1 has a bin of its own (as torchmetrics 1.9's
    multiclass_calibration_error, norm l1, which the committed runs used: tests/test_metrics.py holds its values)."""
    conf, pred = logits.float().softmax(1).max(1)
    correct = pred.eq(target).float()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    bins = torch.bucketize(conf, edges, right=True) - 1
    count = torch.zeros(n_bins + 1, dtype=conf.dtype, device=conf.device).scatter_add_(0, bins, torch.ones_like(conf))
    mean_conf = torch.zeros_like(count).scatter_add_(0, bins, conf).div(count).nan_to_num()
    hit_rate = torch.zeros_like(count).scatter_add_(0, bins, correct).div(count).nan_to_num()
    return float(((hit_rate - mean_conf).abs() * (count / count.sum())).sum())


def aurc(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Area under the risk-coverage curve and its excess over the optimal ranking (E-AURC).

    Samples are ranked by confidence (max softmax); risk at coverage k/n is the error rate
    of the k most confident. E-AURC = AURC - AURC*, with AURC* = r + (1 - r) ln(1 - r) for
    error rate r (Geifman et al. 2019). Returned as fractions (PS-KD reports x1000).
    """
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    errors = (pred != target).double()[conf.argsort(descending=True)]
    n = len(errors)
    risks = errors.cumsum(0) / torch.arange(1, n + 1, dtype=torch.float64)
    area = risks.mean().item()
    r = errors.mean().item()
    optimal = r + (1 - r) * torch.log1p(torch.tensor(-r, dtype=torch.float64)).item() if r < 1 else 1.0
    return area, area - optimal


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Top-1 agreement: fraction of samples where student and teacher predict the same class."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


def predictive_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean KL(p_teacher || p_student) at temperature 1, summed over classes."""
    log_ps = F.log_softmax(student_logits.float(), 1)
    log_pt = F.log_softmax(teacher_logits.float(), 1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean().item()


def classification_metrics(logits: torch.Tensor, target: torch.Tensor,
                           teacher_logits: torch.Tensor | None = None) -> dict[str, float]:
    """All per-epoch metrics in one dict (accuracies and ECE in percent)."""
    area, excess = aurc(logits, target)
    out = {"top1": 100 * accuracy(logits, target), "nll": nll(logits, target),
           "ece": 100 * ece(logits, target), "aurc": 1000 * area, "eaurc": 1000 * excess}
    if logits.shape[1] >= 100:
        out["top5"] = 100 * accuracy(logits, target, k=5)
    if teacher_logits is not None:
        out["agreement"] = 100 * agreement(logits, teacher_logits)
        out["kl_teacher"] = predictive_kl(logits, teacher_logits)
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, loader, autocast_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the loader's device) and targets for a whole evaluation loader."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for batch in loader:
        with torch.autocast(batch.x.device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            logits.append(model(batch.x).float())
        targets.append(batch.y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def overconfidence(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean confidence (max softmax) minus accuracy, in percent: > 0 is over-confident."""
    conf, pred = logits.float().softmax(1).max(1)
    return 100 * (conf.mean() - (pred == targets).float().mean()).item()


def reliability(logits: torch.Tensor, target: torch.Tensor, n_bins: int = 15):
    """Per-bin (confidence, accuracy, count) for a reliability diagram."""
    conf, pred = logits.float().softmax(1).max(1)
    correct = (pred == target).float()
    bins = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).float()
    mean_conf = torch.bincount(bins, conf, minlength=n_bins) / count.clamp(min=1)
    mean_acc = torch.bincount(bins, correct, minlength=n_bins) / count.clamp(min=1)
    return mean_conf, mean_acc, count


def similarity_mass(logits: torch.Tensor, target: torch.Tensor, similarity: torch.Tensor,
                    temperature: float = 1.0) -> tuple[float, float]:
    """How much of a model's non-target probability follows a known class similarity.

    With p = softmax(logits / T) and S the C x C similarity (kd.data.class_similarity), the
    share of the non-target mass on classes similar to the target, sum_{j != t} p_j S_tj /
    sum_{j != t} p_j, averaged over samples; and the same share for a uniform spread over the
    non-target classes (the value a model that ignores the structure would get).
    """
    p = F.softmax(logits.double() / temperature, 1)
    s = similarity.to(p).clone()
    s.fill_diagonal_(0.0)
    rows = s[target.long()]                          # S_tj, with S_tt = 0
    non_target = 1 - p.gather(1, target.long().view(-1, 1)).squeeze(1)
    share = (p * rows).sum(1) / non_target.clamp_min(1e-300)
    uniform = rows.sum(1) / (p.shape[1] - 1)
    return share.mean().item(), uniform.mean().item()
