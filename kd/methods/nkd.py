"""NKD and USKD (Yang, Zeng, Yuan & Li, "From Knowledge Distillation to Self-Knowledge
Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels", ICCV 2023, arXiv
2303.13005; official code yzd-v/cls_KD, mmcls/models/dis_losses/nkd.py and uskd.py).

NKD distils from a teacher: the teacher's target probability weights the student's target
log-probability, and the non-target classes are matched after renormalising them (softmax over the
C - 1 non-target logits). USKD is its teacher-free form: the target weight comes from the student's
own target probability and the non-target soft labels are Zipf weights ranked by the student's
outputs and a weak head on a middle stage. Both losses are added to the usual CE by the methods.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import (Method, check_non_negative, check_positive, check_temperature, feature_shapes, register,
                             split_target, teacher_logits)

# the loss functions of this file, importable from kd.losses
LOSSES = ("nkd_parts", "nkd_loss", "uskd_nontarget_targets", "uskd_loss")


def nkd_parts(student_logits, teacher_logits, target, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """NKD's two unweighted terms (Yang et al. 2023, Eq. 8; official nkd.py): the target term
    -mean_i t_y log s_y at T = 1 (t_y the teacher's target probability, a constant), and the
    normalised non-target term -mean_i sum_{j != y} t^_j log s^_j, with t^, s^ the softmax of the
    C - 1 non-target logits at `temperature` (a cross-entropy: KL(t^ || s^) plus the teacher's
    entropy over its non-target classes)."""
    check_temperature(temperature)
    T = temperature
    log_s_y, _ = split_target(F.log_softmax(student_logits, dim=1), target)
    t_y, _ = split_target(F.softmax(teacher_logits, dim=1), target)
    target_term = -(t_y.detach() * log_s_y).mean()
    _, s_other = split_target(student_logits / T, target)
    _, t_other = split_target(teacher_logits / T, target)
    non_target = -(F.softmax(t_other, dim=1) * F.log_softmax(s_other, dim=1)).sum(1).mean()
    return target_term, non_target


def nkd_loss(student_logits, teacher_logits, target, temperature: float = 1.0, gamma: float = 1.5) -> torch.Tensor:
    """L_NKD = target term + gamma T^2 normalised non-target term (`nkd_parts`; official defaults
    T 1, gamma 1.5 on ImageNet, T 3, gamma 3.5 on CIFAR-100). Plain CE is added by the method."""
    target_term, non_target = nkd_parts(student_logits, teacher_logits, target, temperature)
    return target_term + gamma * temperature * temperature * non_target


def uskd_nontarget_targets(weak_logits, logits, target, rank_log_probs: bool = True) -> torch.Tensor:
    """USKD's soft labels over the C - 1 non-target classes (B x (C-1)): Zipf weights 1 / rank,
    renormalised, the rank of each class (among all C, descending) by the sum of the weak head's
    and the final head's non-target-normalised outputs p_j / (1 - p_y). The official code adds the
    weak head's probabilities to the final head's LOG-probabilities (log p_j / (1 - log p_y)):
    `rank_log_probs=True` reproduces it; False ranks by the probabilities of both heads, as the
    paper's text describes."""
    with torch.no_grad():
        w = F.softmax(weak_logits, dim=1)
        s = F.log_softmax(logits, dim=1) if rank_log_probs else F.softmax(logits, dim=1)
        w_y, _ = split_target(w, target)
        s_y, _ = split_target(s, target)
        score = w / (1 - w_y.unsqueeze(1) + 1e-6) + s / (1 - s_y.unsqueeze(1) + 1e-6)
        position = torch.argsort(torch.argsort(score, dim=1, descending=True, stable=True), dim=1, stable=True)
        _, zipf = split_target(1.0 / (position + 1).to(logits.dtype), target)
        return zipf / zipf.sum(1, keepdim=True)


def uskd_loss(weak_logits, logits, target, alpha: float = 0.1, beta: float = 0.1, mu: float = 0.1,
              rank_log_probs: bool = True) -> torch.Tensor:
    """L_USKD = alpha L_t + beta L_non + mu L_weak (official uskd.py; CIFAR-100 weights 0.1 each):
    L_t = -mean_i w_i log p_y with the soft target weight w = p_y^2 + 1 - mean_batch(p_y^2) (the
    student's own target probability, a constant); L_non = the cross-entropy between
    `uskd_nontarget_targets` and the softmax of the non-target logits; L_weak = the weak head's
    cross-entropy with 0.9 one-hot + 0.1 / C. Plain CE is added by the method."""
    log_p = F.log_softmax(logits, dim=1)
    log_p_y, _ = split_target(log_p, target)
    with torch.no_grad():
        p2 = log_p_y.exp() ** 2
        weight = p2 + 1 - p2.mean()
    target_term = -(weight * log_p_y).mean()
    zipf = uskd_nontarget_targets(weak_logits, logits, target, rank_log_probs)
    _, other = split_target(logits, target)
    non_target = -(zipf * F.log_softmax(other, dim=1)).sum(1).mean()
    C = logits.shape[1]
    smoothed = 0.9 * F.one_hot(target, C).to(weak_logits.dtype) + 0.1 / C
    weak = -(smoothed * F.log_softmax(weak_logits, dim=1)).sum(1).mean()
    return alpha * target_term + beta * non_target + mu * weak


@register("nkd")
class NKD(Method):
    """NKD (Yang et al., ICCV 2023): CE + L_NKD (`nkd_loss`), the official cls_KD distiller's sum."""

    needs_teacher = True
    replays_teacher = True

    def __init__(self, temperature: float = 1.0, gamma: float = 1.5):
        check_positive(temperature=temperature)
        check_non_negative(gamma=gamma)
        self.temperature, self.gamma = temperature, gamma

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = teacher_logits(teacher, batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "nkd": nkd_loss(logits, t_logits, batch.y, self.temperature, self.gamma)}


@register("uskd")
class USKD(Method):
    """USKD (Yang et al., ICCV 2023), teacher-free: CE + L_USKD (`uskd_loss`), the weak head a linear
    classifier on the globally pooled output of the student's second-to-last stage (official: the
    ResNet's stage 3 of 4), trained with the student and dropped after training."""

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, mu: float = 0.1, rank_log_probs: bool = True):
        check_non_negative(alpha=alpha, beta=beta, mu=mu)
        self.alpha, self.beta, self.mu, self.rank_log_probs = alpha, beta, mu, rank_log_probs

    def build(self, student, teacher, example):
        maps = feature_shapes(student, example)["maps"]
        if len(maps) < 2:
            raise ValueError("USKD's weak head needs a model with at least two stages")
        return torch.nn.Linear(maps[-2][0], self.num_classes)

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        weak_logits = self.owned(feats["maps"][-2].float().mean((2, 3)))
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "uskd": uskd_loss(weak_logits, logits.float(), batch.y, self.alpha, self.beta, self.mu,
                                          self.rank_log_probs)}
