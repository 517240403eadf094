"""Similarity-preserving knowledge distillation (Tung & Mori, ICCV 2019, arXiv 1907.09682)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, check_positive, register
from kd.methods.kd import kd_loss

LOSSES = ("sp_loss", "batch_similarity")


def batch_similarity(features: torch.Tensor) -> torch.Tensor:
    """G~ = row-normalised Q Q^T, Q the B x (C*H*W) flattened activations (Tung & Mori 2019, Eqs. 1-2)."""
    q = features.reshape(features.shape[0], -1)
    return F.normalize(q @ q.T, dim=1)


def sp_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """||G~_t - G~_s||_F^2 / B^2 for one layer pair (Eq. 3, without gamma): the student's and the
    teacher's B x B similarities of the same batch; the channel counts and map sizes may differ."""
    B = student_features.shape[0]
    if teacher_features.shape[0] != B:
        raise ValueError(f"student and teacher features need the same batch, got {B} and {teacher_features.shape[0]}")
    diff = batch_similarity(teacher_features) - batch_similarity(student_features)
    return (diff * diff).sum() / (B * B)


@register("sp")
class SP(Method):
    """SP (Tung & Mori 2019, Eq. 4): ce_weight * CE + gamma * L_SP on the last stage's maps
    (before pooling, as RepDistiller's feat[-2]) + kd_weight * T^2 KL (0 by default: SP alone;
    > 0: SP + KD). gamma 3000 is RepDistiller's CIFAR-100 setting (batch 64)."""

    needs_teacher = True

    def __init__(self, gamma: float = 3000.0, ce_weight: float = 1.0, kd_weight: float = 0.0,
                 temperature: float = 4.0):
        check_positive(temperature=temperature)
        check_non_negative(gamma=gamma, ce_weight=ce_weight, kd_weight=kd_weight)
        self.gamma, self.ce_weight, self.kd_weight, self.temperature = gamma, ce_weight, kd_weight, temperature

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        with torch.no_grad():
            t_logits, t_feats = teacher(batch.x, return_features=True)
        terms = {"ce": self.ce_weight * F.cross_entropy(logits, batch.y),
                 "sp": self.gamma * sp_loss(feats["maps"][-1].float(), t_feats["maps"][-1].float())}
        if self.kd_weight:
            terms["kd"] = self.kd_weight * kd_loss(logits, t_logits, self.temperature)
        return logits, terms
