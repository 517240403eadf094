"""CRD (Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020, arXiv 1910.10699;
official code HobbitLong/RepDistiller, crd/criterion.py and crd/memory.py). Facts and sources:
docs/papers.md, CRD.

The student's and the teacher's pooled penultimate features are embedded (a linear map each, to
`feat_dim`, then L2-normalised: the embedding heads are the method's, trained with the student; the
teacher stays frozen). Two memory banks hold an embedding per training image, one of the student's
(bank_s) and one of the teacher's (bank_t). Each sample's student embedding is scored against bank_t
at its own index (the positive) and at K other images' indices (negatives from other classes: the
official dataset's "exact" mode), and the teacher's embedding against bank_s at the same indices:

    P = exp(v . m / tau) / Z,  with Z = mean(exp(v . m / tau)) * N frozen at the first batch,

and each direction's NCE loss (Eq. 18) with the noise distribution P_n = 1 / N:

    L = -(1 / B) sum_b [ log(P_pos / (P_pos + K / N + eps)) + sum_k log((K / N) / (P_neg,k + K / N + eps)) ].

After scoring, the banks move towards the batch's embeddings: m <- normalise(mu m + (1 - mu) v),
mu = 0.5. The loss is ce_weight * CE + crd_weight * (L_s + L_t) (+ kd_weight * T^2 KL for CRD + KD).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, check_positive, feature_shapes, register
from kd.methods.kd import kd_loss

# the loss functions of this file, importable from kd.losses
LOSSES = ("crd_nce_loss", "crd_scores", "crd_loss")

EPS = 1e-7  # the official criterion's


def crd_nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """The NCE loss of one direction (CRD Eq. 18; official ContrastLoss): `scores` [B, K + 1] are the
    normalised exponentiated scores P, the positive first; the noise distribution is uniform, P_n = 1 / N."""
    k = scores.shape[1] - 1
    noise = k / float(n_data)
    pos, neg = scores[:, 0], scores[:, 1:]
    log_pos, log_neg = torch.log(pos / (pos + noise + EPS)), torch.log(noise / (neg + noise + EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


def crd_scores(anchor: torch.Tensor, bank: torch.Tensor, indices: torch.Tensor, temperature: float,
               z: torch.Tensor | float) -> torch.Tensor:
    """exp(v_b . m_j / tau) / Z for each anchor embedding v_b [B, D] and the bank rows m_j [N, D] at
    `indices` [B, K + 1] (the bank a constant): the official ContrastMemory's out_v1 / out_v2."""
    rows = bank[indices.reshape(-1)].detach().view(*indices.shape, bank.shape[1])
    return torch.exp(torch.bmm(rows, anchor.unsqueeze(2)).squeeze(2) / temperature) / z


class CRDHead(torch.nn.Module):
    """The method's own modules and state: the two embedding heads (trained) and, as buffers (saved with
    checkpoints, never trained), the two memory banks and the two normalisation constants Z (-1 until set)."""

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int, n_data: int):
        super().__init__()
        self.embed_s, self.embed_t = torch.nn.Linear(s_dim, feat_dim), torch.nn.Linear(t_dim, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)  # the official initialisation, U(-stdv, stdv)
        self.register_buffer("bank_s", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("bank_t", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))


@torch.no_grad()
def _update(bank: torch.Tensor, index: torch.Tensor, v: torch.Tensor, momentum: float) -> None:
    bank.index_copy_(0, index, F.normalize(momentum * bank[index] + (1 - momentum) * v.detach().to(bank.dtype), dim=1))


def crd_loss(head: CRDHead, f_s: torch.Tensor, f_t: torch.Tensor, index: torch.Tensor, contrast_idx: torch.Tensor,
             nce_t: float = 0.07, nce_m: float = 0.5, set_z: bool = False) -> torch.Tensor:
    """L_s + L_t for one batch (the official CRDLoss.forward): the pooled features f_s, f_t [B, d] embedded
    and normalised, each scored against the other network's bank at `contrast_idx` [B, K + 1] (the
    positive first), Z set from these scores when `set_z` (the first batch), then the banks updated at
    the batch's dataset `index` [B] with momentum `nce_m`."""
    dtype = head.embed_s.weight.dtype
    with torch.autocast(f_s.device.type, enabled=False):  # exp(score / 0.07) needs more than bf16 (official: fp32)
        v_s = F.normalize(head.embed_s(f_s.flatten(1).to(dtype)), dim=1)
        v_t = F.normalize(head.embed_t(f_t.flatten(1).to(dtype)), dim=1)
        n_data = head.bank_s.shape[0]
        if set_z:
            with torch.no_grad():
                head.z[0] = crd_scores(v_s, head.bank_t, contrast_idx, nce_t, 1.0).mean() * n_data
                head.z[1] = crd_scores(v_t, head.bank_s, contrast_idx, nce_t, 1.0).mean() * n_data
        out_s = crd_scores(v_s, head.bank_t, contrast_idx, nce_t, head.z[0])
        out_t = crd_scores(v_t, head.bank_s, contrast_idx, nce_t, head.z[1])
        _update(head.bank_s, index, v_s, nce_m)
        _update(head.bank_t, index, v_t, nce_m)
        return crd_nce_loss(out_s, n_data) + crd_nce_loss(out_t, n_data)


@register("crd")
class CRD(Method):
    """CRD (module docstring): ce_weight * CE + crd_weight * (L_s + L_t) + kd_weight * T^2 KL. Defaults:
    RepDistiller's CIFAR-100 settings (CE 1, CRD 0.8, no KD; feat_dim 128, K 16384, tau 0.07, momentum
    0.5). K larger than the images of the other classes: drawn with replacement (the official dataset's
    rule); otherwise without. The negatives come from the method's own generator (saved for resume)."""

    needs_teacher = True

    def __init__(self, ce_weight: float = 1.0, crd_weight: float = 0.8, kd_weight: float = 0.0,
                 temperature: float = 4.0, feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07,
                 nce_m: float = 0.5):
        check_non_negative(ce_weight=ce_weight, crd_weight=crd_weight, kd_weight=kd_weight)
        check_positive(temperature=temperature, feat_dim=feat_dim, nce_k=nce_k, nce_t=nce_t)
        if not 0 <= nce_m < 1:
            raise ValueError(f"nce_m must be in [0, 1), got {nce_m}")
        self.ce_weight, self.crd_weight, self.kd_weight = ce_weight, crd_weight, kd_weight
        self.temperature = temperature
        self.feat_dim, self.nce_k, self.nce_t, self.nce_m = feat_dim, nce_k, nce_t, nce_m

    def setup(self, train_labels, num_classes, device, seed):
        super().setup(train_labels, num_classes, device, seed)
        self.seed, self.n_data = seed, len(train_labels)
        # per class, the indices of the images of the other classes, padded to one length
        others = [torch.nonzero(train_labels != c).squeeze(1) for c in range(num_classes)]
        self.n_others = torch.tensor([len(o) for o in others], device=device)
        width = max(len(o) for o in others)
        self.others = torch.stack([F.pad(o, (0, width - len(o))) for o in others]).to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed + 104729)

    def build(self, student, teacher, example):
        """The heads at the feature sizes of the two networks' pooled features; their initialisation and
        the banks' drawn from this seed, the global random state left as it was."""
        s_dim, t_dim = feature_shapes(student, example)["pooled"][0], feature_shapes(teacher, example)["pooled"][0]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed + 104723)
            head = CRDHead(s_dim, t_dim, self.feat_dim, self.n_data)
        self._z_set = False
        return head.to(example.device)

    def contrast_indices(self, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """[B, K + 1]: each sample's own index (the positive), then K indices of images of other classes."""
        n = self.n_others[target]
        if self.nce_k <= int(self.n_others.min()):  # without replacement: the first K of a random order
            keys = torch.rand(len(target), self.others.shape[1], device=target.device, generator=self.generator)
            keys = keys.masked_fill(torch.arange(self.others.shape[1], device=target.device) >= n[:, None], 2.0)
            picks = keys.argsort(1)[:, :self.nce_k]
        else:
            u = torch.rand(len(target), self.nce_k, device=target.device, generator=self.generator)
            picks = (u * n[:, None]).long()
        return torch.cat([index[:, None], self.others[target].gather(1, picks)], 1)

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        with torch.no_grad():
            t_logits, t_feats = teacher(batch.x, return_features=True)
        idx = self.contrast_indices(batch.y, batch.index)
        crd = crd_loss(self.owned, feats["pooled"], t_feats["pooled"], batch.index, idx, self.nce_t, self.nce_m,
                       set_z=not self._z_set)  # Z from the first batch, then frozen (the official code)
        self._z_set = True
        terms = {"ce": self.ce_weight * F.cross_entropy(logits, batch.y), "crd": self.crd_weight * crd}
        if self.kd_weight:
            terms["kd"] = self.kd_weight * kd_loss(logits, t_logits, self.temperature)
        return logits, terms

    def state_dict(self):
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
        self._z_set = bool((self.owned.z > 0).all())
