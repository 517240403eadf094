"""BAKE (Ge et al., 2021): self-distillation from knowledge propagated across the batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, check_positive, check_temperature, register


# the loss functions of this file, importable from kd.losses
LOSSES = ("bake_affinity", "bake_targets", "bake_loss")


@torch.no_grad()
def bake_affinity(features: torch.Tensor) -> torch.Tensor:
    """BAKE's A: row-softmax of the cosine similarities of the batch, self-pairs masked out."""
    f = F.normalize(features, dim=1)  # in the features' dtype (the method passes float32)
    sim = f @ f.t()
    sim.fill_diagonal_(float("-inf"))
    return sim.softmax(dim=1)


@torch.no_grad()
def bake_targets(features: torch.Tensor, logits: torch.Tensor, temperature: float = 4.0,
                 omega: float = 0.5) -> torch.Tensor:
    """BAKE (Ge et al. 2021, Eq. 8): Q = (1 - omega) (I - omega A)^-1 softmax(z / T), the
    closed form of propagating batch knowledge until convergence. Rows sum to one."""
    check_temperature(temperature)
    if not 0 <= omega < 1:
        raise ValueError(f"omega must be in [0, 1), got {omega}")
    A = bake_affinity(features)
    P = F.softmax(logits / temperature, dim=1).to(A.dtype)
    eye = torch.eye(A.shape[0], device=A.device, dtype=A.dtype)
    return (1 - omega) * torch.linalg.solve(eye - omega * A, P)


def bake_loss(features, logits, temperature: float = 4.0, omega: float = 0.5) -> torch.Tensor:
    """BAKE's distillation term: T^2 KL(Q || softmax(z / T)), Q from `bake_targets` (no gradient)."""
    Q = bake_targets(features, logits, temperature, omega)
    T = temperature
    log_q = torch.log(Q.clamp_min(1e-12))
    return T * T * (Q * (log_q - F.log_softmax(logits / T, dim=1))).sum(1).mean()


@register("bake")
class BAKE(Method):
    """BAKE (Ge et al. 2021): CE + weight tau^2 KL(Q || softmax(z / tau)), Q the batch
    knowledge propagated over feature affinities; batches hold `same_class` extra samples
    of each anchor's class. An epoch shows as many images as the split holds, or, with
    `every_anchor`, every image once as an anchor (the official sampler: 1 + same_class
    times the images of a plain epoch)."""

    def __init__(self, temperature: float = 4.0, omega: float = 0.5, weight: float = 1.0,
                 same_class: int = 3, every_anchor: bool = False):
        check_positive(temperature=temperature)
        if not 0 <= omega < 1:
            raise ValueError(f"omega must be in [0, 1), got {omega}")
        check_non_negative(weight=weight, same_class=same_class)
        self.temperature, self.omega, self.weight = temperature, omega, weight
        self.same_class, self.every_anchor = int(same_class), bool(every_anchor)

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "bake": self.weight * bake_loss(feats["pooled"].float(), logits.float(),
                                                               self.temperature, self.omega)}
