"""Knowledge distillation (Hinton, Vinyals & Dean, 2015): the loss every paper builds on."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, check_positive, check_temperature, kl, register, teacher_logits


# the loss functions of this file, importable from kd.losses
LOSSES = ("kd_loss",)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)) (Hinton et al. 2015, Eq. 2 of DKD)."""
    check_temperature(temperature)
    T = temperature
    return T * T * kl(F.log_softmax(teacher_logits / T, dim=1), F.log_softmax(student_logits / T, dim=1))


@register("kd")
class KD(Method):
    """Hinton et al. 2015: ce_weight * CE + kd_weight * T^2 KL(p_t || p_s).

    Defaults are the CIFAR-100 recipe of CRD / mdistiller (0.1 CE + 0.9 KD, T = 4).
    """

    needs_teacher = True
    replays_teacher = True

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9):
        check_positive(temperature=temperature)
        check_non_negative(ce_weight=ce_weight, kd_weight=kd_weight)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = teacher_logits(teacher, batch.x)
        return logits, {"ce": self.ce_weight * F.cross_entropy(logits, batch.y),
                        "kd": self.kd_weight * kd_loss(logits, t_logits, self.temperature)}
