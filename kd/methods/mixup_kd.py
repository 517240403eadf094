"""MixUp-KD (Choi et al., WACV 2023): KD on mixed inputs with per-sample std-scaled logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_positive, kl, register, soft_cross_entropy, teacher_logits
from kd.methods.kd import kd_loss
from kd.methods.mixup import MixupSampling


# the loss functions of this file, importable from kd.losses
LOSSES = ("std_scale", "mixkd_loss")


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
            "kd": kd_weight * kl(F.log_softmax(t, dim=1), F.log_softmax(s, dim=1))}


@register("mixup_kd")
class MixupKD(MixupSampling, Method):
    """MixUp and KD (Choi et al., WACV 2023): KD on mixed inputs (full mixup, or partial with
    `unmixed_fraction` of the batch left unmixed; 0 mixes all, `mixup=False` none), with the
    logits scaled per sample by their standard deviation (`std_scaling=True`) or divided by a
    fixed temperature: ce_weight softCE(student, mixed y) + kd_weight KL(p_t || p_s).
    `sampler`: "exact" (kd.mixup: exactly `unmixed_fraction` of the batch unmixed, one
    lambda per batch) or "official" (kd.mixup_official: the MIX-KD code's sampling)."""

    needs_teacher = True
    replays_teacher = True  # the teacher sees the mixed batch, the same for every run of a seed and mixup setting

    def __init__(self, mixup: bool = True, mixup_alpha: float = 1.0, unmixed_fraction: float = 0.0,
                 std_scaling: bool = True, temperature: float = 4.0, ce_weight: float = 0.1,
                 kd_weight: float = 0.9, sampler: str = "exact"):
        check_positive(mixup_alpha=mixup_alpha, temperature=temperature)
        if not 0 <= unmixed_fraction <= 1:
            raise ValueError(f"unmixed_fraction must be in [0, 1], got {unmixed_fraction}")
        if sampler not in ("exact", "official"):
            raise ValueError(f"sampler must be 'exact' or 'official', got {sampler!r}")
        self.sampler = sampler
        self.mixup, self.mixup_alpha, self.unmixed_fraction = mixup, mixup_alpha, unmixed_fraction
        self.std_scaling, self.temperature = std_scaling, temperature
        self.ce_weight, self.kd_weight = ce_weight, kd_weight

    def teacher_inputs(self) -> dict | None:
        """The mixup draws (their own generator, seeded by the run's seed): fixed T and std scaling see the same."""
        if not self.mixup:
            return None
        return {"mixup": self.sampler, "mixup_alpha": self.mixup_alpha, "unmixed_fraction": self.unmixed_fraction}

    def forward_train(self, student, teacher, batch):
        if self.mixup:
            x, y_soft = self.mix(batch)
        else:
            x, y_soft = batch.x, F.one_hot(batch.y, self.num_classes).float()
        logits = student(x)
        t_logits = teacher_logits(teacher, x)
        if self.std_scaling:
            terms = mixkd_loss(logits, t_logits, y_soft, self.ce_weight, self.kd_weight)
            return logits, terms
        return logits, {"ce": self.ce_weight * soft_cross_entropy(logits, y_soft),
                        "kd": self.kd_weight * kd_loss(logits, t_logits, self.temperature)}
