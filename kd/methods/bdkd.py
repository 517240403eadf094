"""BD-KD (Amara, Sepahvand, Meyer, Gross & Clark, "BD-KD: Balancing the Divergences for Online
Knowledge Distillation", arXiv 2212.12965): OUR RECONSTRUCTION. No official code is public and the
paper's weighting rule could not be read here (docs/papers.md, BD-KD). What is known: online KD (a
teacher network trained together with the student, as DML, kd/methods/switokd.py); the student's
distillation term mixes forward KL(p_t || p_s) and reverse KL(p_s || p_t) with sample-wise weights
guided by the entropy gap between the two predictions, to balance the student's confidence; the
teacher's objective uses a reverse KL as a regulariser.

Our rule, per sample i at T = 1 (DML's), the partner's prediction detached in each network's loss:

    student: CE + w_i KL(p_t,i || p_s,i) + (1 - w_i) KL(p_s,i || p_t,i),  w_i = H(p_t,i) / (H(p_t,i) + H(p_s,i))
    teacher: CE + KL(p_t,i || p_s,i)

A student more confident than its teacher (H(p_s) < H(p_t)) gets mostly the forward KL, which covers
the teacher's whole distribution and so softens the student; a less confident one mostly the
reverse KL, which seeks the teacher's mode and so sharpens it; w = 1/2 at equal entropies. The
teacher's term is the reverse of DML's KL(p_s || p_t) from its side (its own distribution first).
`balance` replaces w_i by 1 ("forward": DML's student term), 0 ("reverse") or 1/2 ("even").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import kl_rows, register
from kd.metrics import entropy_rows
from kd.methods.switokd import DML

# the loss functions of this file, importable from kd.losses
LOSSES = ("bdkd_forward_weights", "bdkd_terms")

BALANCES = ("adaptive", "forward", "reverse", "even")


@torch.no_grad()
def bdkd_forward_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         balance: str = "adaptive") -> torch.Tensor:
    """The weight w_i of the forward KL in the student's term, per sample (no gradient): adaptive
    H(p_t) / (H(p_t) + H(p_s)) at T = 1 (1/2 where both entropies vanish), or 1, 0, 1/2 for
    `balance` "forward", "reverse", "even" (module docstring: our reconstruction)."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    fixed = {"forward": 1.0, "reverse": 0.0, "even": 0.5}
    if balance in fixed:
        return torch.full(student_logits.shape[:1], fixed[balance], device=student_logits.device)
    h_s = entropy_rows(F.log_softmax(student_logits.float(), 1))
    h_t = entropy_rows(F.log_softmax(teacher_logits.float(), 1))
    total = h_s + h_t
    return torch.where(total > 0, h_t / total.clamp_min(1e-12), torch.full_like(total, 0.5))


def bdkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
               balance: str = "adaptive") -> dict[str, torch.Tensor]:
    """One step's loss terms of the two networks (module docstring, T = 1, batch means): the student's
    CE and balanced KL ("ce", "kl"), the teacher's CE and reverse KL ("peer_ce", "peer_kl"); and,
    logged only, the mean forward weight ("forward_weight") and entropy gap H(p_s) - H(p_t) ("entropy_gap")."""
    log_s, log_t = F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1)
    w = bdkd_forward_weights(student_logits, teacher_logits, balance)
    t_fixed, s_fixed = log_t.detach(), log_s.detach()
    student_kl = w * kl_rows(t_fixed, log_s) + (1 - w) * kl_rows(log_s, t_fixed)
    with torch.no_grad():
        gap = (entropy_rows(s_fixed) - entropy_rows(t_fixed)).mean()
    return {"ce": F.cross_entropy(student_logits, target), "kl": student_kl.mean(),
            "peer_ce": F.cross_entropy(teacher_logits, target), "peer_kl": kl_rows(log_t, s_fixed).mean(),
            "forward_weight": w.mean(), "entropy_gap": gap}


@register("bdkd")
class BDKD(DML):
    """BD-KD as we reconstruct it (module docstring): DML's two networks, loop, teacher learning rate,
    evaluation and checkpoints; the student's KL balanced per sample between forward and reverse, the
    teacher's KL reversed (`bdkd_terms`). `balance`: "adaptive" (BD-KD), or the fixed mixtures
    "forward", "reverse", "even" it is judged against."""

    monitored = ("forward_weight", "entropy_gap")

    def __init__(self, teacher_model: str = "wrn_16_2", teacher_lr_scale: float = 1.0, balance: str = "adaptive"):
        super().__init__(teacher_model=teacher_model, teacher_lr_scale=teacher_lr_scale)
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
        self.balance = balance

    def forward_train(self, student, teacher, batch):
        logits, t_logits = student(batch.x), self.owned(batch.x)
        return logits, bdkd_terms(logits, t_logits, batch.y, self.balance)
