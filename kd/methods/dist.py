"""DIST (Huang et al., NeurIPS 2022): distillation from a stronger teacher by Pearson correlation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, check_positive, check_temperature, register, teacher_logits


# the loss functions of this file, importable from kd.losses
LOSSES = ("_pearson", "dist_loss")


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
    check_temperature(temperature)
    T = temperature
    y_s, y_t = F.softmax(student_logits / T, dim=1), F.softmax(teacher_logits / T, dim=1)
    inter = 1 - _pearson(y_s, y_t).mean()
    intra = 1 - _pearson(y_s.t(), y_t.t()).mean()
    return T * T * (beta * inter + gamma * intra)


@register("dist")
class DIST(Method):
    """DIST (Huang et al., NeurIPS 2022): ce_weight CE + kd_weight tau^2 (beta inter + gamma intra).
    CIFAR defaults: tau 4, beta = gamma = 1, CE weight 1, KD weight 2."""

    needs_teacher = True
    replays_teacher = True

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 4.0,
                 ce_weight: float = 1.0, kd_weight: float = 2.0):
        check_positive(temperature=temperature)
        check_non_negative(beta=beta, gamma=gamma, ce_weight=ce_weight, kd_weight=kd_weight)
        self.beta, self.gamma, self.temperature = beta, gamma, temperature
        self.ce_weight, self.kd_weight = ce_weight, kd_weight

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = teacher_logits(teacher, batch.x)
        return logits, {"ce": self.ce_weight * F.cross_entropy(logits, batch.y),
                        "dist": self.kd_weight * dist_loss(logits, t_logits, self.beta,
                                                                  self.gamma, self.temperature)}
