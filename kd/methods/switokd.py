"""SwitOKD (Qian, Wang, Yin, Hong & Wang, "Switchable Online Knowledge Distillation", ECCV 2022, arXiv
2209.04996; official code hfutqian/SwitOKD, SwitOKD_code/CIFAR-100/WRN16-2_0.5mobilenetv2/main.py) and
its baseline, deep mutual learning (Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018,
arXiv 1706.00384). Facts and sources: docs/papers.md, SwitOKD.

Two networks train together from scratch in one loop: the student (the run's model) and a teacher
network the method owns. DML updates both at every step, each with its cross-entropy plus KL(the
other's prediction || its own) at T = 1. SwitOKD switches per batch between that (learning mode) and
expert mode, where the teacher is paused and only the student learns, by comparing the distillation
gap G = ||p_s - p_t||_1 with an adaptive threshold delta.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd import models as kd_models
from kd.methods.base import Method, check_positive, register
from kd.methods.kd import kd_loss
from kd.metrics import classification_metrics, predict

# the loss functions of this file, importable from kd.losses
LOSSES = ("mutual_learning_terms", "switokd_gap", "switokd_label_distance", "switokd_threshold",
          "switokd_expert_mode")


def mutual_learning_terms(student_logits, teacher_logits, target, teacher_learns: bool = True) -> dict:
    """One step's loss terms of the two networks (DML; SwitOKD's official main.py, weights 1, T = 1,
    no T^2): the student's CE + KL(p_t || p_s) ("ce", "kl") and the teacher's CE + KL(p_s || p_t)
    ("peer_ce", "peer_kl"), each network's partner detached. With `teacher_learns=False` (SwitOKD's
    expert mode) the teacher's terms are zeros that depend on no parameter: the teacher gets no
    gradient at all, so the optimiser leaves it, its momentum and its weight decay alone."""
    terms = {"ce": F.cross_entropy(student_logits, target), "kl": kd_loss(student_logits, teacher_logits.detach(), 1.0)}
    if teacher_learns:
        terms.update(peer_ce=F.cross_entropy(teacher_logits, target),
                     peer_kl=kd_loss(teacher_logits, student_logits.detach(), 1.0))
    else:
        zero = torch.zeros((), device=student_logits.device)
        terms.update(peer_ce=zero, peer_kl=zero)
    return terms


@torch.no_grad()
def switokd_gap(student_logits, teacher_logits) -> torch.Tensor:
    """The distillation gap G = mean_i ||p_s,i - p_t,i||_1, softmax at T = 1, a batch mean (SwitOKD's
    G = ||p_s^tau - p_t^tau||_1; official main.py `dist_s_t(output, output_ks2, 1)`)."""
    return (F.softmax(student_logits, 1) - F.softmax(teacher_logits, 1)).abs().sum(1).mean()


@torch.no_grad()
def switokd_label_distance(logits, target) -> torch.Tensor:
    """mean_i ||p_i - y_i||_1 with y one-hot, softmax at T = 1 (official main.py `dist_s_label`)."""
    p = F.softmax(logits, 1)
    return (p - F.one_hot(target, p.shape[1]).to(p.dtype)).abs().sum(1).mean()


@torch.no_grad()
def switokd_threshold(student_logits, teacher_logits, target) -> torch.Tensor:
    """The adaptive switching threshold delta = d_s - exp(-d_t / (d_s + d_t)) d_t, with d_s and d_t
    the student's and the teacher's `switokd_label_distance` (batch means; official main.py)."""
    d_s, d_t = switokd_label_distance(student_logits, target), switokd_label_distance(teacher_logits, target)
    return d_s - torch.exp(-d_t / (d_s + d_t)) * d_t


@torch.no_grad()
def switokd_expert_mode(student_logits, teacher_logits, target) -> torch.Tensor:
    """SwitOKD's switch for one batch (a bool tensor): expert mode, the teacher paused, when
    G > delta (`switokd_gap`, `switokd_threshold`) AND the teacher is closer to the labels than the
    student (d_t < d_s), the official code's extra condition; learning mode otherwise."""
    s, t, y = student_logits, teacher_logits, target
    closer = switokd_label_distance(t, y) < switokd_label_distance(s, y)
    return (switokd_gap(s, t) > switokd_threshold(s, t, y)) & closer


@register("dml")
class DML(Method):
    """DML between the student and a co-trained teacher of architecture `teacher_model` (a kd.models
    name), both updated at every step (`mutual_learning_terms`). The teacher trains at
    `teacher_lr_scale` times the student's learning rate on the same schedule (SwitOKD's official
    CIFAR-100 code: teacher 0.1, student 0.01), starts from the initialisation a run of
    `teacher_model` with the same seed has, is evaluated beside the student (the `peer_*` columns of
    metrics.csv) and checkpointed with the run. The distillation gap and SwitOKD's threshold are
    logged per step (`gap`, `threshold`), not optimised."""

    monitored = ("gap", "threshold")

    def __init__(self, teacher_model: str = "wrn_16_2", teacher_lr_scale: float = 1.0):
        if teacher_model not in kd_models.available():
            raise ValueError(f"teacher_model {teacher_model!r} is not a kd.models name; "
                             f"available: {', '.join(kd_models.available())}")
        check_positive(teacher_lr_scale=teacher_lr_scale)
        self.teacher_model = teacher_model
        self.owned_lr_scale = teacher_lr_scale

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.seed = seed

    def build(self, student, teacher, example):
        """The teacher network, initialised as `kd.train.fit` initialises a run of it with this seed
        (the CPU generator seeded, then the model built), the global random state left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            return kd_models.create(self.teacher_model, self.num_classes, in_channels=example.shape[1])

    def forward_train(self, student, teacher, batch):
        logits, t_logits = student(batch.x), self.owned(batch.x)
        return logits, {**mutual_learning_terms(logits, t_logits, batch.y),
                        "gap": switokd_gap(logits, t_logits), "threshold": switokd_threshold(logits, t_logits, batch.y)}

    def evaluate(self, eval_loader):
        logits, targets = predict(self.owned, eval_loader)
        return {f"peer_{k}": v for k, v in classification_metrics(logits, targets).items()}


@register("switokd")
class SwitOKD(DML):
    """SwitOKD (Qian et al., ECCV 2022): per batch, expert mode (`switokd_expert_mode`: only the
    student is updated, the teacher paused) or learning mode (both updated, as DML); the losses are
    DML's (`mutual_learning_terms`). Logged per step, not optimised: `expert` (1 in expert mode, so
    its epoch mean is the fraction of batches in expert mode), `gap` and `threshold`. The decision
    is read on the host at every step (one synchronisation per step on a GPU), as in the official
    code. As there, the paused teacher still runs forward in training mode, so its BatchNorm running
    statistics keep moving in expert mode; its weights and optimiser state do not."""

    monitored = ("expert", "gap", "threshold")

    def forward_train(self, student, teacher, batch):
        logits, t_logits = student(batch.x), self.owned(batch.x)
        expert = switokd_expert_mode(logits, t_logits, batch.y)
        return logits, {**mutual_learning_terms(logits, t_logits, batch.y, teacher_learns=not bool(expert)),
                        "expert": expert.float(), "gap": switokd_gap(logits, t_logits),
                        "threshold": switokd_threshold(logits, t_logits, batch.y)}
