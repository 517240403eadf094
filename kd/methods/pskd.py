"""PS-KD (Kim et al., ICCV 2021): progressive self-knowledge distillation from the past epoch's predictions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, register, soft_cross_entropy


# the loss functions of this file, importable from kd.losses
LOSSES = ("pskd_alpha", "pskd_targets")


def pskd_alpha(epoch: int, epochs: int, alpha_T: float = 0.8) -> float:
    """PS-KD's schedule alpha_t = alpha_T * (epoch + 1) / epochs, epochs counted from 0 (Eq. 7)."""
    return alpha_T * (epoch + 1) / epochs


def pskd_targets(target: torch.Tensor, previous: torch.Tensor, alpha: float, num_classes: int) -> torch.Tensor:
    """PS-KD (Kim et al., ICCV 2021, Eq. 6): (1 - alpha_t) onehot(y) + alpha_t p_prev(x)."""
    return (1 - alpha) * F.one_hot(target, num_classes).to(previous.dtype) + alpha * previous


@register("pskd")
class PSKD(Method):
    """PS-KD (Kim et al., ICCV 2021): soft CE against (1 - a_t) onehot + a_t p_prev(x), with
    a_t = alpha_T (epoch + 1) / epochs and p_prev the sample's prediction in the previous
    epoch, kept in an N x C memory indexed by sample (initialised one-hot). Every sample is
    seen every epoch (the official loader drops no batch), so no memory entry goes stale."""

    every_sample = True

    def __init__(self, alpha_T: float = 0.8):
        if not 0 <= alpha_T <= 1:
            raise ValueError(f"alpha_T must be in [0, 1], got {alpha_T}")
        self.alpha_T, self.alpha = alpha_T, 0.0
        self.memory = None

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.memory = F.one_hot(train_labels, num_classes).float().to(device)

    def on_epoch_start(self, epoch, epochs):
        self.alpha = pskd_alpha(epoch, epochs, self.alpha_T)

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        target = pskd_targets(batch.y, self.memory[batch.index], self.alpha, self.num_classes)
        self.memory[batch.index] = logits.detach().float().softmax(1)
        return logits, {"ce": soft_cross_entropy(logits, target)}

    def state_dict(self):
        return {**super().state_dict(), "memory": self.memory}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.memory.copy_(state["memory"])
