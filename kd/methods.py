"""Training methods: what one step computes, what state it keeps, what it needs from the loader.

Every method is a small class with the same `forward_train(student, teacher, batch)` that
returns the student's logits and a dict of weighted loss terms whose sum is minimised
(the shape of mdistiller's `Distiller`). The losses themselves are the pure functions of
`kd.losses`. `create(name, **hyperparameters)` looks a method up in the registry, so that
params.yaml can select it by name.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from kd import losses
from kd.data import Batch

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
    return {k: p for k, p in inspect.signature(REGISTRY[name].__init__).parameters.items() if k != "self"}


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


def _check_positive(**values):
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{key} must be positive, got {value}")


def _check_non_negative(**values):
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

    def setup(self, train_labels: torch.Tensor, num_classes: int, device: torch.device, seed: int) -> None:
        """Called once before training with the training split's labels (on `device`)."""
        self.num_classes = num_classes

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based) for schedule-dependent weights."""

    def forward_train(self, student, teacher, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@register("ce")
class CrossEntropy(Method):
    """Cross-entropy on the labels, no teacher. `same_class` > 0 draws the batches with
    that many extra samples of each anchor's class, as BAKE's do (the control that keeps
    BAKE's sampler and removes its loss); `every_anchor` as in BAKE."""

    def __init__(self, same_class: int = 0, every_anchor: bool = False):
        _check_non_negative(same_class=same_class)
        self.same_class, self.every_anchor = int(same_class), bool(every_anchor)

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y)}


@register("label_smoothing")
class LabelSmoothing(Method):
    """Cross-entropy against (1 - eps) * onehot + eps / C (Szegedy et al. 2016)."""

    def __init__(self, smoothing: float = 0.1):
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        target = losses.label_smoothing_targets(batch.y, logits.shape[1], self.smoothing)
        return logits, {"ce": losses.soft_cross_entropy(logits, target)}


def _teacher_logits(teacher, x):
    with torch.no_grad():
        return teacher(x)


@register("kd")
class KD(Method):
    """Hinton et al. 2015: ce_weight * CE + kd_weight * T^2 KL(p_t || p_s).

    Defaults are the CIFAR-100 recipe of CRD / mdistiller (0.1 CE + 0.9 KD, T = 4).
    """

    needs_teacher = True

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9):
        _check_positive(temperature=temperature)
        _check_non_negative(ce_weight=ce_weight, kd_weight=kd_weight)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = _teacher_logits(teacher, batch.x)
        return logits, {"ce": self.ce_weight * F.cross_entropy(logits, batch.y),
                        "kd": self.kd_weight * losses.kd_loss(logits, t_logits, self.temperature)}


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


@register("self_distillation")
class SelfDistillation(KD):
    """Born-again networks (Furlanello et al. 2018) / self-distillation (Pham et al. 2022):
    plain KD whose teacher has the student's architecture; generations chain in the config."""

    same_architecture = True

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.5, kd_weight: float = 0.5):
        super().__init__(temperature, ce_weight, kd_weight)


@register("dkd")
class DKD(Method):
    """Decoupled KD (Zhao et al., CVPR 2022, Eq. 6): CE + w(epoch) (alpha TCKD + beta NCKD),
    with the linear warm-up w = min(epoch / warmup, 1), epochs counted from 1."""

    needs_teacher = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 ce_weight: float = 1.0, warmup: float = 20):
        _check_positive(temperature=temperature)
        _check_non_negative(alpha=alpha, beta=beta, ce_weight=ce_weight, warmup=warmup)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.ce_weight, self.warmup = ce_weight, warmup
        self.ramp = 1.0

    def on_epoch_start(self, epoch, epochs):
        self.ramp = min((epoch + 1) / self.warmup, 1.0) if self.warmup else 1.0

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = _teacher_logits(teacher, batch.x)
        terms = {"ce": self.ce_weight * F.cross_entropy(logits, batch.y)}
        if self.alpha:
            terms["tckd"] = self.ramp * self.alpha * losses.tckd_loss(logits, t_logits, batch.y, self.temperature)
        if self.beta:
            terms["nckd"] = self.ramp * self.beta * losses.nckd_loss(logits, t_logits, batch.y, self.temperature)
        return logits, terms


@register("dist")
class DIST(Method):
    """DIST (Huang et al., NeurIPS 2022): ce_weight CE + kd_weight tau^2 (beta inter + gamma intra).
    CIFAR defaults: tau 4, beta = gamma = 1, CE weight 1, KD weight 2."""

    needs_teacher = True

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 4.0,
                 ce_weight: float = 1.0, kd_weight: float = 2.0):
        _check_positive(temperature=temperature)
        _check_non_negative(beta=beta, gamma=gamma, ce_weight=ce_weight, kd_weight=kd_weight)
        self.beta, self.gamma, self.temperature = beta, gamma, temperature
        self.ce_weight, self.kd_weight = ce_weight, kd_weight

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        t_logits = _teacher_logits(teacher, batch.x)
        return logits, {"ce": self.ce_weight * F.cross_entropy(logits, batch.y),
                        "dist": self.kd_weight * losses.dist_loss(logits, t_logits, self.beta,
                                                                  self.gamma, self.temperature)}


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
        self.alpha = losses.pskd_alpha(epoch, epochs, self.alpha_T)

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        target = losses.pskd_targets(batch.y, self.memory[batch.index], self.alpha, self.num_classes)
        self.memory[batch.index] = logits.detach().float().softmax(1)
        return logits, {"ce": losses.soft_cross_entropy(logits, target)}

    def state_dict(self):
        return {"memory": self.memory}

    def load_state_dict(self, state):
        self.memory.copy_(state["memory"])


@register("bake")
class BAKE(Method):
    """BAKE (Ge et al. 2021): CE + weight tau^2 KL(Q || softmax(z / tau)), Q the batch
    knowledge propagated over feature affinities; batches hold `same_class` extra samples
    of each anchor's class. An epoch shows as many images as the split holds, or, with
    `every_anchor`, every image once as an anchor (the official sampler: 1 + same_class
    times the images of a plain epoch)."""

    def __init__(self, temperature: float = 4.0, omega: float = 0.5, weight: float = 1.0,
                 same_class: int = 3, every_anchor: bool = False):
        _check_positive(temperature=temperature)
        if not 0 <= omega < 1:
            raise ValueError(f"omega must be in [0, 1), got {omega}")
        _check_non_negative(weight=weight, same_class=same_class)
        self.temperature, self.omega, self.weight = temperature, omega, weight
        self.same_class, self.every_anchor = int(same_class), bool(every_anchor)

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "bake": self.weight * losses.bake_loss(feats["pooled"].float(), logits.float(),
                                                               self.temperature, self.omega)}


@register("zipf_ls")
class ZipfLS(Method):
    """Zipf's label smoothing (Liang et al., ECCV 2022): CE + weight KL(zipf || softmax over
    the non-target logits); classes ranked by the logits (image-level) or, with dense=True,
    by per-location argmax votes on the 2x-upsampled last feature map."""

    def __init__(self, power: float = 1.0, weight: float = 0.1, dense: bool = False):
        _check_non_negative(power=power, weight=weight)
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
                        "zipf": self.weight * losses.zipf_loss(logits.float(), batch.y, self.power,
                                                               dense_logits=dense_logits)}


class _MixupMixin:
    """Owns the generator that draws mixup's pairs and coefficients (saved for resume)."""

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.generator = torch.Generator().manual_seed(seed + 7919)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])

    sampler = "exact"

    def _mix(self, batch):
        onehot = F.one_hot(batch.y, self.num_classes).float()
        mix = losses.mixup_official if self.sampler == "official" else losses.mixup
        x, y_soft, _, _ = mix(batch.x, onehot, self.mixup_alpha, self.unmixed_fraction, generator=self.generator)
        return x, y_soft


@register("mixup")
class Mixup(_MixupMixin, Method):
    """Mixup (Zhang et al. 2018) without a teacher: soft CE against the mixed labels
    (used to train the smoother teachers of the MixUp-KD study)."""

    def __init__(self, mixup_alpha: float = 1.0, unmixed_fraction: float = 0.0):
        _check_positive(mixup_alpha=mixup_alpha)
        self.mixup_alpha, self.unmixed_fraction = mixup_alpha, unmixed_fraction

    def forward_train(self, student, teacher, batch):
        x, y_soft = self._mix(batch)
        logits = student(x)
        return logits, {"ce": losses.soft_cross_entropy(logits, y_soft)}


@register("mixup_kd")
class MixupKD(_MixupMixin, Method):
    """MixUp and KD (Choi et al., WACV 2023): KD on mixed inputs (full mixup, or partial with
    `unmixed_fraction` of the batch left unmixed; 0 mixes all, `mixup=False` none), with the
    logits scaled per sample by their standard deviation (`std_scaling=True`) or divided by a
    fixed temperature: ce_weight softCE(student, mixed y) + kd_weight KL(p_t || p_s).
    `sampler`: "exact" (kd.losses.mixup: exactly `unmixed_fraction` of the batch unmixed, one
    lambda per batch) or "official" (kd.losses.mixup_official: the MIX-KD code's sampling)."""

    needs_teacher = True

    def __init__(self, mixup: bool = True, mixup_alpha: float = 1.0, unmixed_fraction: float = 0.0,
                 std_scaling: bool = True, temperature: float = 4.0, ce_weight: float = 0.1,
                 kd_weight: float = 0.9, sampler: str = "exact"):
        _check_positive(mixup_alpha=mixup_alpha, temperature=temperature)
        if not 0 <= unmixed_fraction <= 1:
            raise ValueError(f"unmixed_fraction must be in [0, 1], got {unmixed_fraction}")
        if sampler not in ("exact", "official"):
            raise ValueError(f"sampler must be 'exact' or 'official', got {sampler!r}")
        self.sampler = sampler
        self.mixup, self.mixup_alpha, self.unmixed_fraction = mixup, mixup_alpha, unmixed_fraction
        self.std_scaling, self.temperature = std_scaling, temperature
        self.ce_weight, self.kd_weight = ce_weight, kd_weight

    def forward_train(self, student, teacher, batch):
        if self.mixup:
            x, y_soft = self._mix(batch)
        else:
            x, y_soft = batch.x, F.one_hot(batch.y, self.num_classes).float()
        logits = student(x)
        t_logits = _teacher_logits(teacher, x)
        if self.std_scaling:
            terms = losses.mixkd_loss(logits, t_logits, y_soft, self.ce_weight, self.kd_weight)
            return logits, terms
        return logits, {"ce": self.ce_weight * losses.soft_cross_entropy(logits, y_soft),
                        "kd": self.kd_weight * losses.kd_loss(logits, t_logits, self.temperature)}
