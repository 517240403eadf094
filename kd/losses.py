"""Distillation losses as pure functions of logits, features and labels.

Conventions (stated once, used everywhere): a KL divergence is summed over classes and
averaged over the batch; temperature-scaled terms are multiplied by T^2 so that their
gradients keep the scale of the unscaled loss (Hinton et al. 2015). Each function cites
the paper and equation it implements; `tests/test_losses.py` checks them against values
computed with the official implementations.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _kl(log_p_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from log-probabilities, summed over the last dim, mean over the batch."""
    return (log_p_target.exp() * (log_p_target - log_q)).sum(-1).mean()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_c target_c log softmax(logits)_c, mean over the batch (target rows sum to one)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def label_smoothing_targets(target: torch.Tensor, num_classes: int, smoothing: float = 0.1) -> torch.Tensor:
    """(1 - eps) * onehot(y) + eps / C (Szegedy et al., CVPR 2016, Sec. 7)."""
    onehot = F.one_hot(target, num_classes).float()
    return (1 - smoothing) * onehot + smoothing / num_classes


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)) (Hinton et al. 2015, Eq. 2 of DKD)."""
    _check_temperature(temperature)
    T = temperature
    return T * T * _kl(F.log_softmax(teacher_logits / T, dim=1), F.log_softmax(student_logits / T, dim=1))


def _split_target(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the target logit, shape B; the C - 1 non-target logits in class order, shape B x (C-1)).
    Gathers by index (no boolean masking), so that the GPU never waits for the host."""
    t = target.view(-1, 1)
    others = torch.arange(logits.shape[1] - 1, device=logits.device).expand(logits.shape[0], -1)
    others = others + (others >= t).long()
    return logits.gather(1, t).squeeze(1), logits.gather(1, others)


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, T: float) -> torch.Tensor:
    """log [p_target, 1 - p_target] of softmax(logits / T), computed stably (B x 2)."""
    log_p = F.log_softmax(logits / T, dim=1)
    log_gt, log_other = _split_target(log_p, target)
    return torch.stack([log_gt, torch.logsumexp(log_other, dim=1)], dim=1)


def tckd_loss(student_logits, teacher_logits, target, temperature: float = 4.0) -> torch.Tensor:
    """Target-class KD (DKD, Zhao et al. CVPR 2022, Eq. 3): T^2 KL(b_t || b_s) with
    b = [p_target, 1 - p_target], the binary split of softmax(z / T)."""
    _check_temperature(temperature)
    T = temperature
    return T * T * _kl(_binary_log_probs(teacher_logits, target, T), _binary_log_probs(student_logits, target, T))


def nckd_loss(student_logits, teacher_logits, target, temperature: float = 4.0) -> torch.Tensor:
    """Non-target-class KD (DKD Eq. 3): T^2 KL(p^_t || p^_s), p^ the softmax of z / T over the
    non-target classes only."""
    _check_temperature(temperature)
    T = temperature
    _, s_other = _split_target(student_logits / T, target)
    _, t_other = _split_target(teacher_logits / T, target)
    return T * T * _kl(F.log_softmax(t_other, dim=1), F.log_softmax(s_other, dim=1))


def dkd_loss(student_logits, teacher_logits, target, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0) -> torch.Tensor:
    """DKD (Eq. 6): alpha * TCKD + beta * NCKD. KD itself is TCKD + (1 - p_t,target) NCKD (Eq. 5)."""
    return (alpha * tckd_loss(student_logits, teacher_logits, target, temperature)
            + beta * nckd_loss(student_logits, teacher_logits, target, temperature))


def _pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation between matching rows of a and b."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


def dist_loss(student_logits, teacher_logits, beta: float = 1.0, gamma: float = 1.0,
              temperature: float = 1.0) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022, Eqs. 4-7): T^2 (beta * inter + gamma * intra), with
    inter = 1 - mean Pearson over each sample's class distribution and intra = 1 - mean
    Pearson over each class's column across the batch, of softmax(z / T)."""
    _check_temperature(temperature)
    T = temperature
    y_s, y_t = F.softmax(student_logits / T, dim=1), F.softmax(teacher_logits / T, dim=1)
    inter = 1 - _pearson(y_s, y_t).mean()
    intra = 1 - _pearson(y_s.t(), y_t.t()).mean()
    return T * T * (beta * inter + gamma * intra)


@torch.no_grad()
def bake_affinity(features: torch.Tensor) -> torch.Tensor:
    """BAKE's A: row-softmax of the cosine similarities of the batch, self-pairs masked out."""
    f = F.normalize(features.float(), dim=1)
    sim = f @ f.t()
    sim.fill_diagonal_(float("-inf"))
    return sim.softmax(dim=1)


@torch.no_grad()
def bake_targets(features: torch.Tensor, logits: torch.Tensor, temperature: float = 4.0,
                 omega: float = 0.5) -> torch.Tensor:
    """BAKE (Ge et al. 2021, Eq. 8): Q = (1 - omega) (I - omega A)^-1 softmax(z / T), the
    closed form of propagating batch knowledge until convergence. Rows sum to one."""
    _check_temperature(temperature)
    if not 0 <= omega < 1:
        raise ValueError(f"omega must be in [0, 1), got {omega}")
    A = bake_affinity(features)
    P = F.softmax(logits.float() / temperature, dim=1)
    eye = torch.eye(A.shape[0], device=A.device, dtype=A.dtype)
    return (1 - omega) * torch.linalg.solve(eye - omega * A, P)


def bake_loss(features, logits, temperature: float = 4.0, omega: float = 0.5) -> torch.Tensor:
    """BAKE's distillation term: T^2 KL(Q || softmax(z / T)), Q from `bake_targets` (no gradient)."""
    Q = bake_targets(features, logits, temperature, omega)
    T = temperature
    log_q = torch.log(Q.clamp_min(1e-12))
    return T * T * (Q * (log_q - F.log_softmax(logits / T, dim=1))).sum(1).mean()


def _competition_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1 + the number of classes with a strictly larger score: ties share the lowest rank."""
    return 1 + (scores.unsqueeze(2) < scores.unsqueeze(1)).sum(2)


def zipf_targets(logits: torch.Tensor, target: torch.Tensor, power: float = 1.0,
                 dense_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Zipf's soft targets over the C - 1 non-target classes (Liang et al., ECCV 2022, Eq. 4):
    rank^-power normalised, the rank from the logits (image-level) or, given dense logits
    B x C x H x W, from the number of locations whose argmax votes for each class."""
    with torch.no_grad():
        if dense_logits is None:
            scores = logits.float()
        else:
            votes = dense_logits.argmax(1).flatten(1)
            scores = torch.zeros_like(logits, dtype=torch.float).scatter_add_(
                1, votes, torch.ones_like(votes, dtype=torch.float))
        weights = _competition_ranks(scores).float().pow(-power)
        _, other = _split_target(weights, target)
        return other / other.sum(1, keepdim=True)


def zipf_loss(logits: torch.Tensor, target: torch.Tensor, power: float = 1.0,
              dense_logits: torch.Tensor | None = None) -> torch.Tensor:
    """KL(zipf || softmax of the non-target logits), mean over the batch (Eq. 5)."""
    zipf = zipf_targets(logits, target, power, dense_logits)
    _, other = _split_target(logits, target)
    return _kl(torch.log(zipf), F.log_softmax(other, dim=1))


def pskd_alpha(epoch: int, epochs: int, alpha_T: float = 0.8) -> float:
    """PS-KD's schedule alpha_t = alpha_T * (epoch + 1) / epochs, epochs counted from 0 (Eq. 7)."""
    return alpha_T * (epoch + 1) / epochs


def pskd_targets(target: torch.Tensor, previous: torch.Tensor, alpha: float, num_classes: int) -> torch.Tensor:
    """PS-KD (Kim et al., ICCV 2021, Eq. 6): (1 - alpha_t) onehot(y) + alpha_t p_prev(x)."""
    return (1 - alpha) * F.one_hot(target, num_classes).to(previous.dtype) + alpha * previous


def mixup(x: torch.Tensor, y_soft: torch.Tensor, alpha: float = 1.0, unmixed_fraction: float = 0.0,
          generator: torch.Generator | None = None):
    """Mixup (Zhang et al., ICLR 2018), full or partial (Choi et al., WACV 2023).

    lambda ~ Beta(alpha, alpha); each sample in the mixed part of the batch becomes
    lambda x_i + (1 - lambda) x_perm(i), its label likewise. Exactly
    round(unmixed_fraction * B) randomly chosen samples stay unmixed (perm(i) = i); every
    other sample gets a partner other than itself (the mixed samples, in random order, each
    paired with the next one: a random cycle; a lone mixed sample is paired with a random
    unmixed one), so no "mixed" sample is silently left as it was. The official MIX-KD code
    draws its mixed indices with replacement, so its "0.9 unmixed" leaves about 59%
    unmixed; here the fraction is what it says. (A batch of one cannot be mixed.)
    Returns (mixed x, mixed y_soft, lambda, perm).
    """
    if not 0 <= unmixed_fraction <= 1:
        raise ValueError(f"unmixed_fraction must be in [0, 1], got {unmixed_fraction}")
    n = x.shape[0]
    seed = int(torch.randint(2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    order = torch.randperm(n, generator=generator)
    mixed = order[round(unmixed_fraction * n):]
    perm = torch.arange(n)
    # a random permutation of the mixed part would leave ~1 of them paired with itself
    perm[mixed] = mixed.roll(1) if len(mixed) > 1 else order[:1]
    perm = perm.to(x.device, non_blocking=True)
    weight = torch.ones(n, device=x.device)
    weight[mixed.to(x.device, non_blocking=True)] = lam
    wx = weight.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    wy = weight.view(-1, 1).to(y_soft.dtype)
    return wx * x + (1 - wx) * x[perm], wy * y_soft + (1 - wy) * y_soft[perm], lam, perm



def mixup_official(x: torch.Tensor, y_soft: torch.Tensor, alpha: float = 1.0, unmixed_fraction: float = 0.0,
                   generator: torch.Generator | None = None):
    """Mixup as the official MIX-KD code samples it (helper/loops_mixstd.py, PMU; FMU at
    unmixed_fraction 0): a lambda ~ Beta(alpha, alpha) per sample, partners from two
    independent random permutations (so a sample may be paired with itself), and
    int(unmixed_fraction * B) indices drawn WITH replacement set to lambda = 1. About
    1 - exp(-unmixed_fraction) of the batch stays unmixed: 59% at 0.9. The official code also
    reorders the batch by the first permutation; here the batch keeps its order, which
    changes no loss (a batch mean). Returns (mixed x, mixed y_soft, per-sample lambda, perm)
    with mixed_i = lambda_i x_i + (1 - lambda_i) x_perm(i)."""
    if not 0 <= unmixed_fraction <= 1:
        raise ValueError(f"unmixed_fraction must be in [0, 1], got {unmixed_fraction}")
    n = x.shape[0]
    seed = int(torch.randint(2**62, (1,), generator=generator))
    lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, n)).float()
    rp1, rp2 = torch.randperm(n, generator=generator), torch.randperm(n, generator=generator)
    lam[rp1[torch.randint(0, n, (int(n * unmixed_fraction),), generator=generator)]] = 1.0
    perm = torch.empty(n, dtype=torch.long)
    perm[rp1] = rp2  # the official i-th output mixes x[rp1[i]] with x[rp2[i]]
    perm, lam = perm.to(x.device, non_blocking=True), lam.to(x.device, non_blocking=True)
    wx = lam.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    wy = lam.view(-1, 1).to(y_soft.dtype)
    return wx * x + (1 - wx) * x[perm], wy * y_soft + (1 - wy) * y_soft[perm], lam, perm

def std_scale(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide each sample's logits by their own standard deviation (MIX-KD's per-sample
    temperature, instead of one fixed T)."""
    return logits / logits.std(dim=1, keepdim=True).clamp_min(eps)


def mixkd_loss(student_logits, teacher_logits, soft_target, ce_weight: float = 0.1,
               kd_weight: float = 0.9) -> dict[str, torch.Tensor]:
    """MIX-KD's loss with std-scaled logits (no T^2, as in the official code):
    ce_weight softCE(s / sd_s, y) + kd_weight KL(softmax(t / sd_t) || softmax(s / sd_s))."""
    s, t = std_scale(student_logits), std_scale(teacher_logits)
    return {"ce": ce_weight * soft_cross_entropy(s, soft_target),
            "kd": kd_weight * _kl(F.log_softmax(t, dim=1), F.log_softmax(s, dim=1))}
