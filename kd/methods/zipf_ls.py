"""Zipf's label smoothing (Liang et al., ECCV 2022): soft targets ranked by the model's own outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, kl, register, split_target


# the loss functions of this file, importable from kd.losses
LOSSES = ("_competition_ranks", "zipf_targets", "zipf_loss")


def _competition_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1 + the number of classes with a strictly larger score: ties share the lowest rank."""
    return 1 + (scores.unsqueeze(2) < scores.unsqueeze(1)).sum(2)


def zipf_targets(logits: torch.Tensor, target: torch.Tensor, power: float = 1.0,
                 dense_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Zipf's soft targets over the C - 1 non-target classes (Liang et al., ECCV 2022, Eq. 4):
    rank^-power normalised, the rank from the logits (image-level) or, given dense logits
    B x C x H x W, from the number of locations whose argmax votes for each class."""
    with torch.no_grad():
        if dense_logits is None:
            scores = logits
        else:
            votes = dense_logits.argmax(1).flatten(1)
            scores = torch.zeros_like(logits, dtype=torch.float).scatter_add_(
                1, votes, torch.ones_like(votes, dtype=torch.float))
        weights = _competition_ranks(scores).to(logits.dtype).pow(-power)
        _, other = split_target(weights, target)
        return other / other.sum(1, keepdim=True)


def zipf_loss(logits: torch.Tensor, target: torch.Tensor, power: float = 1.0,
              dense_logits: torch.Tensor | None = None) -> torch.Tensor:
    """KL(zipf || softmax of the non-target logits), mean over the batch (Eq. 5)."""
    zipf = zipf_targets(logits, target, power, dense_logits)
    _, other = split_target(logits, target)
    return kl(torch.log(zipf), F.log_softmax(other, dim=1))


@register("zipf_ls")
class ZipfLS(Method):
    """Zipf's label smoothing (Liang et al., ECCV 2022): CE + weight KL(zipf || softmax over
    the non-target logits); classes ranked by the logits (image-level) or, with dense=True,
    by per-location argmax votes on the 2x-upsampled last feature map."""

    def __init__(self, power: float = 1.0, weight: float = 0.1, dense: bool = False):
        check_non_negative(power=power, weight=weight)
        self.power, self.weight, self.dense = power, weight, dense

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        dense_logits = None
        if self.dense:
            model = getattr(student, "module", student)
            if not getattr(model, "gap_head", False):
                raise ValueError("zipf_ls with dense=True needs a model with a global-average-pool "
                                 "head (gap_head=True); plane CNNs have none: use dense=False")
            fmap = F.interpolate(feats["maps"][-1], scale_factor=2, mode="bilinear", align_corners=False)
            dense_logits = model.classifier(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "zipf": self.weight * zipf_loss(logits.float(), batch.y, self.power,
                                                               dense_logits=dense_logits)}
