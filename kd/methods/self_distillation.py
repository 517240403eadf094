"""Born-again networks / self-distillation: KD from a teacher of the student's architecture."""
from __future__ import annotations

from kd.methods.base import register
from kd.methods.kd import KD


@register("self_distillation")
class SelfDistillation(KD):
    """Born-again networks (Furlanello et al. 2018) / self-distillation (Pham et al. 2022):
    plain KD whose teacher has the student's architecture; generations chain in the config."""

    same_architecture = True

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.5, kd_weight: float = 0.5):
        super().__init__(temperature, ce_weight, kd_weight)
