"""Mixup (Zhang et al., ICLR 2018), exact or as the MIX-KD code samples it, and mixup training."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_positive, register, soft_cross_entropy


# the loss functions of this file, importable from kd.losses
LOSSES = ("mixup", "mixup_official")


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


class MixupSampling:
    """Owns the generator that draws mixup's pairs and coefficients (saved for resume)."""

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.generator = torch.Generator().manual_seed(seed + 7919)

    def state_dict(self):
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])

    sampler = "exact"

    def mix(self, batch):
        onehot = F.one_hot(batch.y, self.num_classes).float()
        mix = mixup_official if self.sampler == "official" else mixup
        x, y_soft, _, _ = mix(batch.x, onehot, self.mixup_alpha, self.unmixed_fraction, generator=self.generator)
        return x, y_soft


@register("mixup")
class Mixup(MixupSampling, Method):
    """Mixup (Zhang et al. 2018) without a teacher: soft CE against the mixed labels
    (used to train the smoother teachers of the MixUp-KD study)."""

    def __init__(self, mixup_alpha: float = 1.0, unmixed_fraction: float = 0.0):
        check_positive(mixup_alpha=mixup_alpha)
        self.mixup_alpha, self.unmixed_fraction = mixup_alpha, unmixed_fraction

    def forward_train(self, student, teacher, batch):
        x, y_soft = self.mix(batch)
        logits = student(x)
        return logits, {"ce": soft_cross_entropy(logits, y_soft)}
