"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): KD split into its target and non-target parts."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import (Method, check_non_negative, check_positive, check_temperature, kl, register,
                             split_target, teacher_logits)


# the loss functions of this file, importable from kd.losses
LOSSES = ("tckd_loss", "nckd_loss", "dkd_loss")


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, T: float) -> torch.Tensor:
    """log [p_target, 1 - p_target] of softmax(logits / T), computed stably (B x 2)."""
    log_p = F.log_softmax(logits / T, dim=1)
    log_gt, log_other = split_target(log_p, target)
    return torch.stack([log_gt, torch.logsumexp(log_other, dim=1)], dim=1)


def tckd_loss(student_logits, teacher_logits, target, temperature: float = 4.0) -> torch.Tensor:
    """Target-class KD (DKD, Zhao et al. CVPR 2022, Eq. 3): T^2 KL(b_t || b_s) with
    b = [p_target, 1 - p_target], the binary split of softmax(z / T)."""
    check_temperature(temperature)
    T = temperature
    return T * T * kl(_binary_log_probs(teacher_logits, target, T), _binary_log_probs(student_logits, target, T))


def nckd_loss(student_logits, teacher_logits, target, temperature: float = 4.0) -> torch.Tensor:
    """Non-target-class KD (DKD Eq. 3): T^2 KL(p^_t || p^_s), p^ the softmax of z / T over the
    non-target classes only."""
    check_temperature(temperature)
    T = temperature
    _, s_other = split_target(student_logits / T, target)
    _, t_other = split_target(teacher_logits / T, target)
    return T * T * kl(F.log_softmax(t_other, dim=1), F.log_softmax(s_other, dim=1))


def dkd_loss(student_logits, teacher_logits, target, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0) -> torch.Tensor:
    """DKD (Eq. 6): alpha * TCKD + beta * NCKD. KD itself is TCKD + (1 - p_t,target) NCKD (Eq. 5)."""
    return (alpha * tckd_loss(student_logits, teacher_logits, target, temperature)
            + beta * nckd_loss(student_logits, teacher_logits, target, temperature))


@register("dkd")
class DKD(Method):
    """Decoupled KD (Zhao et al., CVPR 2022, Eq. 6): CE + w(epoch) (alpha TCKD + beta NCKD),
    with the linear warm-up w = min(epoch / warmup, 1), epochs counted from 1."""

    needs_teacher = True
    replays_teacher = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 ce_weight: float = 1.0, warmup: float = 20):
        check_positive(temperature=temperature)
        check_non_negative(alpha=alpha, beta=beta, ce_weight=ce_weight, warmup=warmup)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.ce_weight, self.warmup = ce_weight, warmup
        self.ramp = 1.0

    def on_epoch_start(self, epoch, epochs):
        self.ramp = min((epoch + 1) / self.warmup, 1.0) if self.warmup else 1.0

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = teacher_logits(teacher, batch.x)
        terms = {"ce": self.ce_weight * F.cross_entropy(logits, batch.y)}
        if self.alpha:
            terms["tckd"] = self.ramp * self.alpha * tckd_loss(logits, t_logits, batch.y, self.temperature)
        if self.beta:
            terms["nckd"] = self.ramp * self.beta * nckd_loss(logits, t_logits, batch.y, self.temperature)
        return logits, terms
