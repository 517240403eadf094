"""The method registry, the `Method` base class and what the methods share.

Each method lives in its own file of `kd.methods` (its loss functions and its class, registered
with `@register("<name>")`); `kd.methods.create(name, **hyperparameters)` finds it by name.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from kd.data import Batch

# the loss functions of this file, importable from kd.losses
LOSSES = ("soft_cross_entropy",)

REGISTRY: dict[str, type["Method"]] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return add


def available() -> list[str]:
    return sorted(REGISTRY)


def _signature(name: str) -> dict[str, inspect.Parameter]:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    return {k: p for k, p in inspect.signature(REGISTRY[name].__init__).parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}  # a method without __init__: none


def _check_arguments(name: str, hyperparameters: dict) -> dict[str, inspect.Parameter]:
    accepted = _signature(name)
    unknown = set(hyperparameters) - set(accepted)
    if unknown:
        raise ValueError(f"method {name!r} got unknown hyperparameters {sorted(unknown)}; "
                         f"it accepts {sorted(accepted)}")
    return accepted


def _check_types(name: str, hyperparameters: dict, accepted: dict[str, inspect.Parameter]) -> None:
    """Each value has its default's type (an int where a float is expected is fine)."""
    for key, value in hyperparameters.items():
        default = accepted[key].default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = default is None or isinstance(value, type(default))
        if not ok:
            raise ValueError(f"method {name!r}: {key} must be a {type(default).__name__} like its default "
                             f"{default!r}, got {value!r}")


def create(name: str, **hyperparameters) -> "Method":
    """The method `name` with its hyperparameters; unknown names, arguments or types fail clearly."""
    _check_types(name, hyperparameters, _check_arguments(name, hyperparameters))
    return REGISTRY[name](**hyperparameters)


def resolved_args(name: str, hyperparameters: dict) -> dict:
    """`hyperparameters` with the method's defaults filled in for the ones not given."""
    accepted = _check_arguments(name, hyperparameters)
    return {k: hyperparameters.get(k, p.default) for k, p in accepted.items()}


def check_positive(**values):
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{key} must be positive, got {value}")


def check_non_negative(**values):
    for key, value in values.items():
        if not value >= 0:
            raise ValueError(f"{key} must be >= 0, got {value}")


class Method:
    """Base class. Subclasses set the class attributes they need and override the hooks."""

    name = "base"
    version = 1                # part of each run's identity: bump when what the method or a loss
                               # function it calls computes changes, so old runs are not reused
    needs_teacher = False
    same_architecture = False  # the teacher must have the student's architecture
    same_class = 0             # loader: extra same-class samples per anchor (BAKE)
    every_anchor = False       # loader: every image an anchor once per epoch (BAKE's official sampler)
    every_sample = False       # loader keeps the last, smaller batch: every sample every epoch (PS-KD)
    # the method's one use of the teacher in a step is teacher_logits(teacher, x), x = batch.x or
    # what `teacher_inputs` says the method makes of it: its logits on a seed's batches can be
    # recorded once and replayed by other runs (kd.replay)
    replays_teacher = False
    # the method's own trainable modules (CRD's embedding heads, auxiliary classifiers, ...), from
    # `build`: optimised with the student, checkpointed and resumed, never part of the deployed model
    owned: torch.nn.Module | None = None
    owned_lr_scale = 1.0       # the owned modules' learning rate over the student's (same schedule)
    monitored: tuple[str, ...] = ()  # terms of forward_train that are logged only (per-epoch means), not minimised

    def teacher_inputs(self) -> dict | None:
        """What the method makes of batch.x before the teacher sees it, drawn from the run's seed alone
        (None: batch.x itself). Part of kd.replay's key: runs whose teacher sees other images record their own."""
        return None

    def setup(self, train_labels: torch.Tensor, num_classes: int, device: torch.device, seed: int) -> None:
        """Called once before training with the training split's labels (on `device`)."""
        self.num_classes = num_classes

    def build(self, student: torch.nn.Module, teacher: torch.nn.Module | None,
              example: torch.Tensor) -> torch.nn.Module | None:
        """Called once after `setup`: the method's own trainable modules, or None (most methods).
        `example` is a batch of zeros of the data's shape, for `feature_shapes`."""
        return None

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based) for schedule-dependent weights."""

    def forward_train(self, student, teacher, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def evaluate(self, eval_loader) -> dict[str, float]:
        """Metrics of the method's own networks at each evaluation, logged beside the student's
        (e.g. an online-distillation peer's {"peer_top1": ...}); none by default."""
        return {}

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the method (subclasses add their state to this)."""
        return {"owned": self.owned.state_dict()} if self.owned is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.owned is not None:
            self.owned.load_state_dict(state["owned"])


@torch.no_grad()
def feature_shapes(model: torch.nn.Module, example: torch.Tensor) -> dict:
    """{"pooled": shape, "maps": [shape per stage]} of a zoo model's features on `example`,
    without touching its BatchNorm statistics (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    try:
        _, feats = model(example, return_features=True)
    finally:
        model.train(was_training)
    return {"pooled": tuple(feats["pooled"].shape[1:]), "maps": [tuple(m.shape[1:]) for m in feats["maps"]]}


def teacher_logits(teacher, x):
    with torch.no_grad():
        return teacher(x)


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def kl_rows(log_p_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per sample from log-probabilities, summed over the last dim."""
    return (log_p_target.exp() * (log_p_target - log_q)).sum(-1)


def kl(log_p_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from log-probabilities, summed over the last dim, mean over the batch."""
    return kl_rows(log_p_target, log_q).mean()


def split_target(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the target logit, shape B; the C - 1 non-target logits in class order, shape B x (C-1)).
    Gathers by index (no boolean masking), so that the GPU never waits for the host."""
    t = target.view(-1, 1)
    others = torch.arange(logits.shape[1] - 1, device=logits.device).expand(logits.shape[0], -1)
    others = others + (others >= t).long()
    return logits.gather(1, t).squeeze(1), logits.gather(1, others)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_c target_c log softmax(logits)_c, mean over the batch (target rows sum to one)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
