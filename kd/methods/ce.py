"""Cross-entropy on the labels: the baseline every method is compared with."""
from __future__ import annotations

import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, register


@register("ce")
class CrossEntropy(Method):
    """Cross-entropy on the labels, no teacher. `same_class` > 0 draws the batches with
    that many extra samples of each anchor's class, as BAKE's do (the control that keeps
    BAKE's sampler and removes its loss); `every_anchor` as in BAKE."""

    def __init__(self, same_class: int = 0, every_anchor: bool = False):
        check_non_negative(same_class=same_class)
        self.same_class, self.every_anchor = int(same_class), bool(every_anchor)

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y)}
