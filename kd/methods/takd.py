"""TAKD (Mirzadeh et al., AAAI 2020): KD along a chain of teacher assistants."""
from __future__ import annotations

from kd.methods.base import register
from kd.methods.kd import KD


@register("takd")
class TAKD(KD):
    """TAKD (Mirzadeh et al., AAAI 2020): (1 - lambda) CE + lambda T^2 KL per step of a chain.

    The chain teacher -> assistant(s) -> student is built in the configuration: the
    student's teacher is the assistant's run, whose teacher is the large teacher's run.
    """

    def __init__(self, temperature: float = 4.0, lambda_: float = 0.9):
        if not 0 <= lambda_ <= 1:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
        super().__init__(temperature, ce_weight=1 - lambda_, kd_weight=lambda_)
