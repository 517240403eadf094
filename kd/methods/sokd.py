"""SOKD, semi-online knowledge distillation (Liu, Liu & Huang, BMVC 2021, arXiv 2111.11747; official code
swlzq/Semi-Online-KD: trainer/sokd.py, models/wrn.py, kd_losses/st.py). Facts and sources: docs/papers.md, SOKD.

The pretrained teacher stays frozen; a branch, a copy of its last stage and head, reads the teacher's
second-to-last stage output (detached) and trains with the student. The branch learns from the labels,
the frozen teacher and the student; the student learns from the labels and the branch (mutual learning
between the student and a teacher-like peer that starts from the teacher's knowledge).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from kd import models as kd_models
from kd.methods.base import Method, check_temperature, register
from kd.methods.kd import kd_loss
from kd.metrics import agreement, classification_metrics, predict, predictive_kl

# the loss functions of this file, importable from kd.losses
LOSSES = ("sokd_terms",)

BRANCH_INITS = ("teacher", "random")


def sokd_terms(student_logits, branch_logits, teacher_logits, target, temperature: float = 4.0) -> dict:
    """One step's terms (official trainer/sokd.py, every weight 1, KL at T = 4, batch mean, x T^2):
    the student's CE + KL(p_A || p_S) ("ce", "kd"); the branch's CE + KL(p_T || p_A) + KL(p_S || p_A)
    ("branch_ce", "branch_kd_teacher", "branch_kd_student"). Each network's partner is detached: the
    student's terms train the student only, the branch's the branch only."""
    check_temperature(temperature)
    T = temperature
    return {"ce": F.cross_entropy(student_logits, target),
            "kd": kd_loss(student_logits, branch_logits.detach(), T),
            "branch_ce": F.cross_entropy(branch_logits, target),
            "branch_kd_teacher": kd_loss(branch_logits, teacher_logits.detach(), T),
            "branch_kd_student": kd_loss(branch_logits, student_logits.detach(), T)}


class Branch(torch.nn.Module):
    """The teacher's last stage and head (pool, hidden, classifier), fed the teacher's previous stage;
    trainable although the teacher it copies is frozen."""

    def __init__(self, teacher: torch.nn.Module):
        super().__init__()
        self.stage = copy.deepcopy(teacher.stages[-1])
        self.pool, self.hidden, self.classifier = (copy.deepcopy(m) for m in (teacher.pool, teacher.hidden,
                                                                               teacher.classifier))
        self.requires_grad_(True)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.pool(self.stage(maps))))


def _reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Fresh weights as the zoo initialises a network (layer defaults, then `kd.models.initialise`) from a
    generator seeded with `seed`, BatchNorm statistics reset; the global random state left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()  # BatchNorm's also resets its running statistics
        kd_models.initialise(module)


@register("sokd")
class SOKD(Method):
    """SOKD (Liu, Liu & Huang 2021): student CE + KD from the branch; branch CE + KD from the teacher and
    from the student (`sokd_terms`). The branch (`Branch`) trains at the student's learning rate (the
    official lr_auxiliary 0.1 = lr) and is evaluated beside the student (`evaluate`: the `branch_*` columns
    of metrics.csv, on the frozen teacher's features). `branch_init` "teacher": the branch starts as a copy of
    the trained teacher's last stage and head, as the paper describes; "random": it starts untrained, what
    the official code does (its branch weights come from the vanilla teacher checkpoint, where the branch
    was never trained). Departure, stated in the notebook: the teacher runs in eval mode (its BatchNorm
    statistics frozen); the official code keeps it in train mode, so its forward uses batch statistics
    and its running statistics drift during distillation."""

    needs_teacher = True

    def __init__(self, temperature: float = 4.0, branch_init: str = "teacher"):
        check_temperature(temperature)
        if branch_init not in BRANCH_INITS:
            raise ValueError(f"branch_init must be one of {BRANCH_INITS}, got {branch_init!r}")
        self.temperature, self.branch_init = temperature, branch_init

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.seed = seed

    def build(self, student, teacher, example):
        if not hasattr(teacher, "stages") or len(teacher.stages) < 2:
            raise ValueError("sokd needs a single kd.models teacher with at least two stages (the branch copies "
                             "the last one and reads the one before)")
        branch = Branch(teacher)
        if self.branch_init == "random":
            _reinitialise(branch, self.seed)
        self.teacher, self.student = teacher, student
        return branch

    def branch_logits(self, teacher, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(the branch's logits, the teacher's logits) on a batch; the teacher's features are constants."""
        with torch.no_grad():
            t_logits, feats = teacher(x, return_features=True)
        return self.owned(feats["maps"][-2]), t_logits

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        a_logits, t_logits = self.branch_logits(teacher, batch.x)
        return logits, sokd_terms(logits, a_logits, t_logits, batch.y, self.temperature)

    @torch.no_grad()
    def evaluate(self, eval_loader):
        """The branch's metrics (`branch_top1`, ...) and the student's fidelity to it: top-1 agreement
        (`branch_agreement`, %) and KL(p_branch || p_student) at T = 1 (`branch_kl`)."""
        was_training = self.owned.training
        self.owned.eval()
        try:
            logits = torch.cat([self.branch_logits(self.teacher, batch.x)[0].float() for batch in eval_loader])
        finally:
            self.owned.train(was_training)
        student_logits, targets = predict(self.student, eval_loader)
        out = {f"branch_{k}": v for k, v in classification_metrics(logits, targets).items()}
        return {**out, "branch_agreement": 100 * agreement(student_logits, logits),
                "branch_kl": predictive_kl(student_logits, logits)}
