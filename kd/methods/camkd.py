"""Confidence-aware multi-teacher knowledge distillation (CA-MKD; Zhang, Chen & Wang, ICASSP 2022, arXiv
2201.00007; official code Rorozhl/CA-MKD: distiller_zoo/CAMKD.py, helper/loops.py, models/util.py).

Several teachers, each sample weighted per teacher by how well that teacher predicts its label: a
teacher with a low cross-entropy on the sample gets a high weight. The same weighting applies to a
feature term, where the student's last-stage maps, adapted per teacher, are pushed through that
teacher's own head. The averaged-loss baseline of the paper (AVER) is the same method with equal weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import (Method, check_non_negative, check_positive, check_temperature, feature_shapes, kl_rows,
                             register)

# the loss functions of this file, importable from kd.losses
LOSSES = ("camkd_weights", "camkd_kd_loss", "camkd_feature_loss", "average_kd_loss")


def camkd_weights(teacher_logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """K x B weights w_ki = (1 - softmax_k(CE(z_i^k, y_i))) / (K - 1) (the paper's Eq. 2; official
    loops.py): the teachers' per-sample cross-entropies, softmaxed over the K teachers, reversed;
    each sample's weights sum to 1."""
    K = len(teacher_logits)
    if K < 2:
        raise ValueError(f"CA-MKD weighs at least 2 teachers, got {K}")
    ce = torch.stack([F.cross_entropy(z, target, reduction="none") for z in teacher_logits])
    return (1 - F.softmax(ce, dim=0)) / (K - 1)


def _per_sample_kl(student_logits, teacher_logits, T: float) -> torch.Tensor:
    """T^2 KL(softmax(t / T) || softmax(s / T)) per sample (B)."""
    return T * T * kl_rows(F.log_softmax(teacher_logits / T, dim=1), F.log_softmax(student_logits / T, dim=1))


def camkd_kd_loss(student_logits, teacher_logits: list[torch.Tensor], target, temperature: float = 4.0) -> torch.Tensor:
    """sum_{k,i} w_ki T^2 KL_i(p_t^k || p_s) / (B K) (Eq. 3; official loops.py, `CAMKD` branch), the
    weights from the teachers' logits (constants). Since each sample's weights sum to 1, the term is
    1/K of a weighted mean of the teachers' KD losses: the official scale, kept."""
    check_temperature(temperature)
    w = camkd_weights(teacher_logits, target)
    kl = torch.stack([_per_sample_kl(student_logits, z, temperature) for z in teacher_logits])
    K, B = kl.shape
    return (w * kl).sum() / (B * K)


def camkd_feature_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor],
                       head_logits: list[torch.Tensor], target) -> torch.Tensor:
    """sum_{k,i} w_ki MSE_i(adapted student maps k, teacher k's maps) / (B K) (Eq. 4; official
    CAMKD.py): MSE_i the mean over sample i's elements; the weights from the logits of each teacher's
    head applied to the adapted student maps (`head_logits`), NOT detached, as in the official code."""
    w = camkd_weights(head_logits, target)
    mse = torch.stack([((s - t) ** 2).flatten(1).mean(1) for s, t in zip(student_maps, teacher_maps)])
    K, B = mse.shape
    return (w * mse).sum() / (B * K)


def average_kd_loss(student_logits, teacher_logits: list[torch.Tensor], temperature: float = 4.0) -> torch.Tensor:
    """AVER: the mean over the teachers of T^2 KL(p_t^k || p_s) (batch mean; official loops.py,
    `AVERAGE_LOSS`)."""
    check_temperature(temperature)
    return torch.stack([_per_sample_kl(student_logits, z, temperature).mean() for z in teacher_logits]).mean()


def head_logits(model: torch.nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """A zoo network's head (pool, hidden, classifier) applied to maps shaped as its last stage's."""
    return model.classifier(model.hidden(model.pool(maps)))


def _members(teacher) -> list[torch.nn.Module]:
    members = list(getattr(teacher, "members", []))
    if len(members) < 2:
        raise ValueError("camkd distils from several teachers: give a list of at least 2 teacher runs "
                         "(an ensemble, kd.models.Ensemble)")
    return members


@register("camkd")
class CAMKD(Method):
    """CA-MKD (Zhang, Chen & Wang 2022): CE + kd_weight * KD term + feature_weight * feature term,
    the feature term off for the first `feature_warmup` epochs (official loops.py: off in epoch 1). weighting
    "confidence" is CA-MKD's per-sample weights; "average" is AVER (the mean of the teachers' KD
    losses; no feature term). Official CIFAR-100 run: -r 1 -a 1 -b 50, T 4. The adapters (one per
    teacher: 1x1 convolution, BatchNorm, ReLU from the student's last-stage channels to the
    teacher's; models/util.py `Embed`) train with the student."""

    needs_teacher = True

    def __init__(self, weighting: str = "confidence", temperature: float = 4.0, kd_weight: float = 1.0,
                 feature_weight: float = 50.0, feature_warmup: int = 1):
        if weighting not in ("confidence", "average"):
            raise ValueError(f"weighting must be 'confidence' (CA-MKD) or 'average' (AVER), got {weighting!r}")
        check_positive(temperature=temperature)
        check_non_negative(kd_weight=kd_weight, feature_weight=feature_weight, feature_warmup=feature_warmup)
        if weighting == "average" and feature_weight:
            raise ValueError("weighting='average' (AVER) has no feature term: set feature_weight=0")
        self.weighting, self.temperature = weighting, temperature
        self.kd_weight, self.feature_weight, self.feature_warmup = kd_weight, feature_weight, feature_warmup
        self.features_on = feature_warmup == 0

    def build(self, student, teacher, example):
        members = _members(teacher)
        if not self.feature_weight:
            return None
        c_s = feature_shapes(student, example)["maps"][-1][0]
        channels = [feature_shapes(t, example)["maps"][-1][0] for t in members]
        nn = torch.nn
        return nn.ModuleList([nn.Sequential(nn.Conv2d(c_s, c_t, kernel_size=1), nn.BatchNorm2d(c_t), nn.ReLU())
                              for c_t in channels])

    def on_epoch_start(self, epoch, epochs):
        self.features_on = epoch >= self.feature_warmup

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        members = _members(teacher)
        with torch.no_grad():
            outs = [t(batch.x, return_features=True) for t in members]
        t_logits = [z for z, _ in outs]
        terms = {"ce": F.cross_entropy(logits, batch.y)}
        if self.weighting == "average":
            terms["kd"] = self.kd_weight * average_kd_loss(logits, t_logits, self.temperature)
        else:
            terms["kd"] = self.kd_weight * camkd_kd_loss(logits, t_logits, batch.y, self.temperature)
        if self.feature_weight and self.features_on:
            s_map = feats["maps"][-1]
            adapted, t_maps, heads = [], [], []
            for t, (_, t_feats), adapter in zip(members, outs, self.owned):
                t_map = t_feats["maps"][-1]
                size = t_map.shape[-2:]
                s = (F.adaptive_avg_pool2d(s_map, size) if s_map.shape[-2] >= size[0]
                     else F.interpolate(s_map, size=size, mode="bilinear"))
                a = adapter(s)
                adapted.append(a)
                t_maps.append(t_map)
                heads.append(head_logits(t, a))
            terms["feature"] = self.feature_weight * camkd_feature_loss(adapted, t_maps, heads, batch.y)
        return logits, terms
