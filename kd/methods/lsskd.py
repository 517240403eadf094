"""LSSKD, layered self-supervised knowledge distillation (Dahri et al., arXiv 2506.07055, 2025). No official
code is public: this is our reconstruction from the paper's abstract and third-party summaries, with HSAKD
(Yang et al., IJCAI 2021; winycg/HSAKD) as the closest public design. Facts and sources: docs/papers.md, LSSKD.

Teacher-free. Every training image is shown in its M = 4 rotations (0, 90, 180, 270 degrees; the batch grows
four-fold, as HSAKD's). An auxiliary head after each stage of the network predicts the joint label
(class, rotation), N x M classes; the final classifier predicts the class of the upright image. Every head
learns from targets softened by its own prediction of the previous epoch (PS-KD's label softening, layered);
each auxiliary head also learns from the next deeper one (KL) and pulls its pooled feature toward the
network's (L2). The heads are dropped after training: the deployed network is the base model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kd import models as kd_models
from kd.methods.base import (Method, check_non_negative, check_temperature, feature_shapes, kl, register,
                             soft_cross_entropy)
from kd.methods.pskd import pskd_alpha, pskd_targets

# the loss functions of this file, importable from kd.losses
LOSSES = ("rotations", "joint_labels", "lsskd_terms")


def rotations(x: torch.Tensor, m: int) -> torch.Tensor:
    """The batch in its first `m` quarter-turn rotations, interleaved (image i's k-th rotation at row
    m i + k; HSAKD's layout): shape (m B, C, H, W). Square images only."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square images, got {tuple(x.shape[-2:])}")
    return torch.stack([torch.rot90(x, k, (2, 3)) for k in range(m)], 1).flatten(0, 1)


def joint_labels(y: torch.Tensor, m: int) -> torch.Tensor:
    """The joint (class, rotation) label m y + k of each row of `rotations(x, m)`."""
    return (m * y.view(-1, 1) + torch.arange(m, device=y.device)).flatten()


def lsskd_terms(logits, aux_logits: list[torch.Tensor], aux_features: list[torch.Tensor], pooled,
                target: torch.Tensor, aux_target: list[torch.Tensor], temperature: float = 3.0,
                kl_weight: float = 1.0, feature_weight: float = 1.0) -> dict:
    """One step's terms (our reconstruction of LSSKD's losses):
    "ce": soft CE of the final head on the upright images against `target` (B x N: PS-KD's
    (1 - a) onehot(y) + a p_prev(x)); "aux_ce": the sum over heads of their soft CE against `aux_target`
    (m B x N M, softened the same way with each head's own previous prediction: a list, one per head);
    "aux_kl": sum over l < L of T^2 KL(q_{l+1} || q_l) at T = `temperature`, the deeper head detached
    (knowledge flows from deep to shallow); "aux_feature": sum over heads of the mean squared difference
    between the head's pooled feature and the network's on the same (rotated) image, detached."""
    check_temperature(temperature)
    T = temperature
    terms = {"ce": soft_cross_entropy(logits, target),
             "aux_ce": sum(soft_cross_entropy(z, t) for z, t in zip(aux_logits, aux_target))}
    if kl_weight:
        terms["aux_kl"] = kl_weight * T * T * sum(
            kl(F.log_softmax(deep.detach() / T, 1), F.log_softmax(shallow / T, 1))
            for shallow, deep in zip(aux_logits[:-1], aux_logits[1:]))
    if feature_weight:
        p = pooled.detach()
        terms["aux_feature"] = feature_weight * sum(F.mse_loss(f, p) for f in aux_features)
    return terms


class AuxiliaryHead(nn.Module):
    """One stage's auxiliary classifier: a 3x3 conv-BN-ReLU to the network's last width, strided to its
    last resolution (the "feature extraction module"; ours, lighter than HSAKD's copies of the later
    stages), global average pooling and a linear layer over the N x M joint labels."""

    def __init__(self, c_in: int, c_out: int, stride: int, outputs: int):
        super().__init__()
        self.features = nn.Sequential(kd_models.conv_bn(c_in, c_out, 3, stride), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_out, outputs)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(maps)
        return self.classifier(f), f


@register("lsskd")
class LSSKD(Method):
    """LSSKD (Dahri et al. 2025; our reconstruction, `lsskd_terms`): the final head's CE and each auxiliary
    head's joint-label CE against targets softened by the previous epoch's predictions (PS-KD's
    a_t = alpha_T (epoch + 1) / epochs, Eq. 7 of PS-KD; alpha_T 0 gives hard labels), cross-layer KL and
    L2 feature terms. `rotations` 4 (0/90/180/270) or 1 (no self-supervised task: class labels only).
    kl_weight = feature_weight = 0 and alpha_T = 0 is HSAKD's teacher-free training of its auxiliary heads
    (CE on the upright final head + joint CE per head, weights 1; train_teacher_cifar.py)."""

    every_sample = True  # the memories are indexed by sample: every sample every epoch (as PS-KD)
    version = 1

    def __init__(self, alpha_T: float = 0.8, rotations: int = 4, temperature: float = 3.0,
                 kl_weight: float = 1.0, feature_weight: float = 1.0):
        if not 0 <= alpha_T <= 1:
            raise ValueError(f"alpha_T must be in [0, 1], got {alpha_T}")
        if rotations not in (1, 2, 4):
            raise ValueError(f"rotations must be 1, 2 or 4 (quarter turns 0..rotations-1), got {rotations}")
        check_temperature(temperature)
        check_non_negative(kl_weight=kl_weight, feature_weight=feature_weight)
        self.alpha_T, self.m, self.temperature = alpha_T, rotations, temperature
        self.kl_weight, self.feature_weight = kl_weight, feature_weight
        self.alpha = 0.0

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.labels = train_labels.to(device)

    def build(self, student, teacher, example):
        if not hasattr(student, "stages") or len(student.stages) < 2:
            raise ValueError("lsskd needs a kd.models student with stages (an auxiliary head after each)")
        shapes = feature_shapes(student, example)
        maps = shapes["maps"][1:]  # after each stage but the stem
        if self.feature_weight and shapes["pooled"] != maps[-1][:1]:
            raise ValueError("lsskd's feature term needs a global-average-pooled network (its pooled feature "
                             f"{shapes['pooled']} is not the last stage's width {maps[-1][0]}); set feature_weight 0")
        c_last, size = maps[-1][0], maps[-1][-1]
        heads = nn.ModuleList(AuxiliaryHead(c, c_last, max(1, s // size), self.num_classes * self.m)
                              for c, _, s in maps)
        # the previous epoch's predictions, one-hot before the first: final head N x C, each auxiliary head
        # N x m x (C m), indexed by sample and rotation
        joint = F.one_hot(joint_labels(self.labels, self.m), self.num_classes * self.m).float()
        self.memory = {"final": F.one_hot(self.labels, self.num_classes).float(),
                       "aux": torch.stack([joint.view(len(self.labels), self.m, -1)] * len(heads))}
        return heads

    def on_epoch_start(self, epoch, epochs):
        self.alpha = pskd_alpha(epoch, epochs, self.alpha_T)

    def forward_train(self, student, teacher, batch):
        x = rotations(batch.x, self.m)
        logits, feats = student(x, return_features=True)
        outs = [head(maps) for head, maps in zip(self.owned, feats["maps"][1:])]
        aux_logits, aux_features = [z for z, _ in outs], [f for _, f in outs]
        upright = logits[::self.m]
        target = pskd_targets(batch.y, self.memory["final"][batch.index], self.alpha, self.num_classes)
        y_joint, M = joint_labels(batch.y, self.m), self.num_classes * self.m
        previous = self.memory["aux"][:, batch.index].flatten(1, 2)  # heads x (m B) x (C m), rows as x's
        aux_target = [pskd_targets(y_joint, p, self.alpha, M) for p in previous]
        terms = lsskd_terms(upright, aux_logits, aux_features, feats["pooled"], target, aux_target,
                            self.temperature, self.kl_weight, self.feature_weight)
        self.memory["final"][batch.index] = upright.detach().float().softmax(1)
        self.memory["aux"][:, batch.index] = torch.stack(
            [z.detach().float().softmax(1).view(len(batch.index), self.m, M) for z in aux_logits])
        return upright, terms

    def state_dict(self):
        return {**super().state_dict(), "memory": self.memory}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for k in self.memory:
            self.memory[k].copy_(state["memory"][k])
