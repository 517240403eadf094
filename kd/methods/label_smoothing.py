"""Label smoothing (Szegedy et al., CVPR 2016): the uniform soft-target baseline."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, register, soft_cross_entropy


# the loss functions of this file, importable from kd.losses
LOSSES = ("label_smoothing_targets",)


def label_smoothing_targets(target: torch.Tensor, num_classes: int, smoothing: float = 0.1) -> torch.Tensor:
    """(1 - eps) * onehot(y) + eps / C (Szegedy et al., CVPR 2016, Sec. 7)."""
    onehot = F.one_hot(target, num_classes).float()
    return (1 - smoothing) * onehot + smoothing / num_classes


@register("label_smoothing")
class LabelSmoothing(Method):
    """Cross-entropy against (1 - eps) * onehot + eps / C (Szegedy et al. 2016)."""

    def __init__(self, smoothing: float = 0.1):
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        target = label_smoothing_targets(batch.y, logits.shape[1], self.smoothing)
        return logits, {"ce": soft_cross_entropy(logits, target)}
