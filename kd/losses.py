"""Every loss function, as pure functions of logits, features and labels: one import for all.

Each function lives in its method's file of `kd.methods` (named in that file's `LOSSES`) and
is gathered here, so `kd.losses.dkd_loss` works for every method, a new paper's included.

Conventions (stated once, used everywhere): a KL divergence is summed over classes and
averaged over the batch; temperature-scaled terms are multiplied by T^2 so that their
gradients keep the scale of the unscaled loss (Hinton et al. 2015). Each function cites
the paper and equation it implements; `tests/test_losses.py` checks them against values
computed with the official implementations.
"""
from __future__ import annotations

from kd.methods import MODULES

__all__ = [name for module in MODULES.values() for name in getattr(module, "LOSSES", ())]
globals().update({name: getattr(module, name) for module in MODULES.values() for name in getattr(module, "LOSSES", ())})
