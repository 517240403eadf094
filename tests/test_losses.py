"""kd.losses: golden values from the official implementations, invariants, gradients.

`golden_losses.json` holds numbers computed ONCE, outside this repository, by running the
official code of each paper (mdistiller's KD and DKD, DIST's image_classification_sota,
BAKE, Zipf LS, PS-KD, MIX-KD, TAKD, MFH's synthetic student, RepDistiller's CRD; each entry names
its repository, file and commit) on the inputs stored beside them (their recipe: seed 0, float64,
8 x 10 logits scaled by 3; CRD's: the waves of `crd_case`).
Where our convention knowingly differs from an official one (TAKD's element-wise mean,
DIST's epsilon, float32 internals of BAKE and Zipf), the entry's `convention` says so and
the test checks the stated relation instead of equality.
"""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

import kd.methods.bake
import kd.methods.crd
from kd import losses as L
from kd.experiments.mfh import student_loss

GOLDEN = json.loads((Path(__file__).parent / "golden_losses.json").read_text())
RTOL = 1e-5  # our losses stay in float64; some official codes compute in float32 (rel. error ~1e-7)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is as fast, and two OpenMP threads stall badly (gradcheck
    30x slower) when other processes share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs():
    d = GOLDEN["inputs"]
    out = {k: torch.tensor(v, dtype=torch.float64) for k, v in d.items() if k != "target"}
    out["target"] = torch.tensor(d["target"], dtype=torch.long)
    return out


INP = _inputs()
S, TEA, Y, FEAT, DENSE, TIED = (INP[k] for k in ("student", "teacher", "target", "features", "dense", "tied"))
C = S.shape[1]


def golden(name) -> torch.Tensor:
    return torch.tensor(GOLDEN["entries"][name]["value"], dtype=torch.float64)


def assert_close(ours, name, rtol=RTOL, atol=0.0, factor=1.0):
    ref = golden(name) * factor
    ours = torch.as_tensor(ours, dtype=torch.float64)
    assert ours.shape == ref.shape, name
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_golden_inputs_follow_their_recipe():
    """The stored inputs are what the recipe makes (so the references can be regenerated)."""
    torch.manual_seed(GOLDEN["recipe"]["seed"])
    student = 3 * torch.randn(8, 10, dtype=torch.float64)
    teacher = 3 * torch.randn(8, 10, dtype=torch.float64)
    target = torch.randint(0, 10, (8,))
    features = torch.randn(8, 16, dtype=torch.float64)
    dense = torch.randn(8, 10, 4, 4, dtype=torch.float64)
    for name, value in dict(student=student, teacher=teacher, target=target, features=features,
                            dense=dense, tied=torch.round(student / 2)).items():
        assert torch.equal(value, INP[name]), f"recipe no longer gives the stored {name}"


def test_every_golden_entry_names_its_source():
    for name, e in GOLDEN["entries"].items():
        assert {"repo", "file"} <= set(e["source"]) or e["source"].get("function"), name
        if e["source"]["repo"] != "pytorch/pytorch":
            assert len(e["source"]["commit"]) == 40, name


# ------------------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("T", [4.0, 1.0])
def test_kd_matches_mdistiller(T):
    assert_close(L.kd_loss(S, TEA, T), f"kd_T{T:g}")


@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (1.0, 0.0, 4.0), (0.0, 1.0, 4.0), (2.0, 3.0, 2.0)])
def test_dkd_matches_mdistiller(alpha, beta, T):
    name = f"dkd_a{alpha:g}_b{beta:g}_T{T:g}"
    assert_close(L.dkd_loss(S, TEA, Y, alpha, beta, T), name)
    if beta == 0:
        assert_close(L.tckd_loss(S, TEA, Y, T), name)
    if alpha == 0:
        assert_close(L.nckd_loss(S, TEA, Y, T), name)


@pytest.mark.parametrize("beta,gamma,T", [(1.0, 1.0, 1.0), (1.0, 1.0, 4.0), (2.0, 0.5, 4.0)])
def test_dist_matches_official(beta, gamma, T):
    # convention: the official Pearson divides by (|a||b| + 1e-8), ours by max(|a||b|, 1e-8):
    # a relative difference ~1e-8 / (|a||b|), far below RTOL here
    assert_close(L.dist_loss(S, TEA, beta, gamma, T), f"dist_b{beta:g}_g{gamma:g}_T{T:g}")


@pytest.mark.parametrize("T,omega", [(4.0, 0.5), (2.0, 0.8)])
def test_bake_matches_official(T, omega):
    assert_close(L.bake_targets(FEAT, S, T, omega), f"bake_targets_T{T:g}_w{omega:g}")
    assert_close(L.bake_loss(FEAT, S, T, omega), f"bake_loss_T{T:g}_w{omega:g}")


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("which", ["zipf", "zipf_tied"])
def test_zipf_matches_official(which, power):
    logits = TIED if which == "zipf_tied" else S
    assert_close(L.zipf_targets(logits, Y, power), f"{which}_targets_p{power:g}")
    assert_close(L.zipf_loss(logits, Y, power), f"{which}_loss_p{power:g}")


def test_zipf_dense_matches_official():
    """The official code takes the dense argmax indices (B x HW); ours the dense logits."""
    assert_close(L.zipf_targets(S, Y, 1.0, dense_logits=DENSE), "zipf_dense_targets_p1")
    assert_close(L.zipf_loss(S, Y, 1.0, dense_logits=DENSE), "zipf_dense_loss_p1")


def test_sp_matches_repdistiller():
    """RepDistiller's Similarity (SP, "verified by original author"): maps of different shapes,
    and a smaller batch (the loss depends on B by construction)."""
    assert_close(L.sp_loss(DENSE, FEAT), "sp_dense_vs_features")
    assert_close(L.sp_loss(S, TEA), "sp_student_vs_teacher_logits")
    assert_close(L.sp_loss(DENSE[:4], FEAT[:4]), "sp_dense_first4")


@pytest.mark.parametrize("T,gamma", [(1.0, 1.5), (3.0, 3.5), (4.0, 1.0)])
def test_nkd_matches_official(T, gamma):
    assert_close(L.nkd_loss(S, TEA, Y, T, gamma), f"nkd_T{T:g}_g{gamma:g}")


@pytest.mark.parametrize("alpha,beta,mu", [(0.1, 0.1, 0.1), (1.0, 0.1, 0.005), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                           (0.0, 0.0, 1.0)])
def test_uskd_matches_official(alpha, beta, mu):
    """The official weak head replaced by the identity: its logits are the stored teacher logits."""
    assert_close(L.uskd_loss(TEA, S, Y, alpha, beta, mu), f"uskd_a{alpha:g}_b{beta:g}_mu{mu:g}")
    if (alpha, beta, mu) == (0.0, 1.0, 0.0):
        assert_close(L.uskd_loss(TEA, TIED, Y, alpha, beta, mu), f"uskd_tied_a{alpha:g}_b{beta:g}_mu{mu:g}")
        # the ranking quirk matters on these inputs: ranking by both heads' probabilities gives another value
        assert not torch.isclose(L.uskd_loss(TEA, S, Y, alpha, beta, mu, rank_log_probs=False), golden(
            f"uskd_a{alpha:g}_b{beta:g}_mu{mu:g}"), rtol=1e-3)


SWITOKD_CASES = {  # golden case: (teacher, student) logits, as golden_losses.json's `call` says
    "st": lambda: (TEA, S), "ts": lambda: (S, TEA), "confident": lambda: (TEA + 6 * F.one_hot(Y, C), S),
    "confident_swapped": lambda: (S, TEA + 6 * F.one_hot(Y, C)), "near": lambda: (S + F.one_hot(Y, C), S)}


@pytest.mark.parametrize("case", SWITOKD_CASES)
def test_switokd_matches_official(case):
    """One step of the official train(): G, delta, the switch and both networks' losses. The cases
    cover expert mode (ts, confident), learning mode because G <= delta (near) and learning mode
    because of the code's extra condition, the teacher farther from the labels than the student
    although G > delta (st, confident_swapped)."""
    teacher, student = SWITOKD_CASES[case]()
    name = f"switokd_{case}"
    assert_close(L.switokd_gap(student, teacher), f"{name}_gap")
    assert_close(L.switokd_threshold(student, teacher, Y), f"{name}_threshold")
    expert = L.switokd_expert_mode(student, teacher, Y)
    assert expert.dtype == torch.bool and float(expert) == golden(f"{name}_expert").item()
    terms = L.mutual_learning_terms(student, teacher, Y, teacher_learns=not expert)
    assert_close(terms["ce"] + terms["kl"], f"{name}_student_loss")
    if expert:  # the official code computes no teacher loss in expert mode; ours is zero
        assert terms["peer_ce"] == 0 and terms["peer_kl"] == 0
    else:
        assert_close(terms["peer_ce"] + terms["peer_kl"], f"{name}_teacher_loss")
    if case == "st":  # G > delta here: only the extra condition keeps the teacher learning
        assert L.switokd_gap(student, teacher) > L.switokd_threshold(student, teacher, Y)
        assert L.switokd_label_distance(teacher, Y) > L.switokd_label_distance(student, Y)


def test_switokd_distances_and_gradients():
    """||p - y||_1 = 2 (1 - p_y) for a one-hot y; G is symmetric and at most d_s + d_t; each
    network's KL has the other's prediction as a constant, and in expert mode nothing reaches the
    teacher."""
    p_y = F.softmax(S, 1).gather(1, Y[:, None]).squeeze(1)
    torch.testing.assert_close(L.switokd_label_distance(S, Y), (2 * (1 - p_y)).mean())
    torch.testing.assert_close(L.switokd_gap(S, TEA), L.switokd_gap(TEA, S))
    assert L.switokd_gap(S, TEA) <= L.switokd_label_distance(S, Y) + L.switokd_label_distance(TEA, Y)
    for teacher_learns in (True, False):
        s, t = S.clone().requires_grad_(), TEA.clone().requires_grad_()
        terms = L.mutual_learning_terms(s, t, Y, teacher_learns=teacher_learns)
        (terms["ce"] + terms["kl"]).backward(retain_graph=True)
        assert t.grad is None and s.grad is not None
        s.grad = None
        peer = terms["peer_ce"] + terms["peer_kl"]
        assert peer.requires_grad == teacher_learns
        if teacher_learns:
            peer.backward()
            assert s.grad is None and t.grad is not None


def crd_case():
    """The inputs of the crd_* golden entries (golden_losses.json `call`): float64 waves."""
    def wave(n, a, b, scale, f=torch.sin):
        return f(torch.arange(n, dtype=torch.float64) * a + b) * scale

    B, SD, TD, FD, N = 4, 6, 8, 5, 12
    head = kd.methods.crd.CRDHead(SD, TD, FD, N).double()
    with torch.no_grad():
        head.embed_s.weight.copy_(wave(FD * SD, 0.11, 0.0, 0.5).view(FD, SD))
        head.embed_s.bias.copy_(wave(FD, 0.7, 0.0, 0.1, torch.cos))
        head.embed_t.weight.copy_(wave(FD * TD, 0.13, 0.4, 0.5, torch.cos).view(FD, TD))
        head.embed_t.bias.copy_(wave(FD, 0.5, 0.3, 0.1))
        head.bank_s.copy_(wave(N * FD, 0.05, 0.3, 0.3).view(N, FD))
        head.bank_t.copy_(wave(N * FD, 0.07, 0.1, 0.3, torch.cos).view(N, FD))
    steps = [(wave(B * SD, 0.37, 0.1, 2.0).view(B, SD), wave(B * TD, 0.23, 0.5, 1.5, torch.cos).view(B, TD),
              torch.tensor([3, 7, 0, 10]),
              torch.tensor([[3, 1, 5, 8, 9, 11], [7, 0, 2, 4, 6, 10], [0, 2, 3, 6, 7, 9], [10, 1, 2, 3, 4, 5]])),
             (wave(B * SD, 0.29, 0.9, 1.7).view(B, SD), wave(B * TD, 0.41, 0.2, 1.2, torch.cos).view(B, TD),
              torch.tensor([1, 7, 11, 4]),
              torch.tensor([[1, 0, 2, 3, 5, 6], [7, 2, 3, 8, 9, 10], [11, 0, 1, 2, 3, 4], [4, 5, 6, 7, 8, 9]]))]
    return head, steps


def test_crd_matches_repdistiller_over_two_batches():
    """CRD (kd.losses.crd_loss) against the official CRDLoss run on the same weights, banks and indices for
    two batches in a row: the losses, Z (set at the first batch, then frozen), the gradient with respect to
    the student's features, and both banks after the momentum updates."""
    head, steps = crd_case()
    losses, grads = [], []
    for i, (f_s, f_t, index, contrast) in enumerate(steps):
        f_s = f_s.clone().requires_grad_()
        loss = L.crd_loss(head, f_s, f_t, index, contrast, nce_t=0.07, nce_m=0.5, set_z=i == 0)
        loss.backward()
        losses.append(loss.detach())
        grads.append(f_s.grad)
    assert_close(torch.stack(losses), "crd_losses")
    assert_close(head.z, "crd_z")
    assert_close(torch.stack(grads), "crd_grad_f_s")
    assert_close(head.bank_s, "crd_bank_s")
    assert_close(head.bank_t, "crd_bank_t")


def test_crd_negatives_come_from_other_classes_and_the_positive_first():
    """kd.methods.CRD's contrast indices: the sample's own index first, then K indices of images of other
    classes, without replacement when K fits (else with), reproducible from the seed."""
    labels = torch.arange(40) % 4
    for k, distinct in ((20, True), (50, False)):
        m = kd.methods.create("crd", nce_k=k)
        m.setup(labels, 4, torch.device("cpu"), seed=3)
        index = torch.tensor([0, 5, 10, 39])
        idx = m.contrast_indices(labels[index], index)
        assert idx.shape == (4, k + 1) and torch.equal(idx[:, 0], index)
        assert (labels[idx[:, 1:]] != labels[index][:, None]).all()
        assert all((len(set(row.tolist())) == k) == distinct for row in idx[:, 1:])
        again = kd.methods.create("crd", nce_k=k)
        again.setup(labels, 4, torch.device("cpu"), seed=3)
        assert torch.equal(again.contrast_indices(labels[index], index), idx)


def test_bdkd_terms_against_the_reconstruction_written_out():
    """BD-KD (our reconstruction, kd/methods/bdkd.py; no official code): per sample the forward KL's weight is
    H(p_t) / (H(p_t) + H(p_s)), computed here from probabilities with explicit loops over samples; the
    student's KL mixes KL(p_t || p_s) and KL(p_s || p_t) with it, the teacher's is KL(p_t || p_s); the fixed
    balances give 1, 0, 1/2; w carries no gradient, and each network's terms reach only that network."""
    p_s, p_t = F.softmax(S.double(), 1), F.softmax(TEA.double(), 1)
    w, mixed, teacher = [], [], []
    for i in range(len(Y)):
        h_s, h_t = -(p_s[i] * p_s[i].log()).sum(), -(p_t[i] * p_t[i].log()).sum()
        fwd, rev = (p_t[i] * (p_t[i] / p_s[i]).log()).sum(), (p_s[i] * (p_s[i] / p_t[i]).log()).sum()
        w.append(h_t / (h_t + h_s))
        mixed.append(w[-1] * fwd + (1 - w[-1]) * rev)
        teacher.append(fwd)
    terms = L.bdkd_terms(S.double(), TEA.double(), Y)
    torch.testing.assert_close(L.bdkd_forward_weights(S.double(), TEA.double()), torch.stack(w).float())
    torch.testing.assert_close(terms["kl"], torch.stack(mixed).mean())
    torch.testing.assert_close(terms["peer_kl"], torch.stack(teacher).mean())
    torch.testing.assert_close(terms["ce"], F.cross_entropy(S.double(), Y))
    torch.testing.assert_close(terms["entropy_gap"], (-(p_s * p_s.log()).sum(1) + (p_t * p_t.log()).sum(1)).mean())
    forward = L.bdkd_terms(S, TEA, Y, "forward")
    torch.testing.assert_close(forward["kl"], L.mutual_learning_terms(S, TEA, Y)["kl"])  # DML's student term
    for balance, value in (("forward", 1.0), ("reverse", 0.0), ("even", 0.5)):
        assert torch.equal(L.bdkd_forward_weights(S, TEA, balance), torch.full((len(Y),), value))
    same = L.bdkd_forward_weights(S, S)
    torch.testing.assert_close(same, torch.full_like(same, 0.5))
    with pytest.raises(ValueError, match="balance must be one of"):
        L.bdkd_forward_weights(S, TEA, "backward")
    s, t = S.clone().requires_grad_(), TEA.clone().requires_grad_()
    terms = L.bdkd_terms(s, t, Y)
    (terms["ce"] + terms["kl"]).backward(retain_graph=True)
    assert t.grad is None and s.grad is not None
    s.grad = None
    (terms["peer_ce"] + terms["peer_kl"]).backward()
    assert s.grad is None and t.grad is not None
    assert not terms["forward_weight"].requires_grad and not terms["entropy_gap"].requires_grad


def test_lsskd_rotations_and_joint_labels():
    """LSSKD (our reconstruction, kd/methods/lsskd.py; no official code): image i's k-th quarter turn at row m i + k
    with the joint label m y_i + k (HSAKD's layout); one rotation is the batch itself."""
    x, y = torch.randn(3, 2, 5, 5), torch.tensor([2, 0, 1])
    for m in (1, 2, 4):
        r, j = L.rotations(x, m), L.joint_labels(y, m)
        assert r.shape == (3 * m, 2, 5, 5) and j.tolist() == [m * int(y[i]) + k for i in range(3) for k in range(m)]
        for i in range(3):
            for k in range(m):
                assert torch.equal(r[m * i + k], torch.rot90(x[i], k, (1, 2)))
    with pytest.raises(ValueError, match="square"):
        L.rotations(torch.randn(2, 1, 4, 5), 4)


def test_lsskd_terms_against_the_reconstruction_written_out():
    """LSSKD's terms (our reconstruction; docs/papers.md, LSSKD), each written out per sample: the soft CE of the
    final head and of every auxiliary head, T^2 KL(q_{l+1} || q_l) from each deeper head to the next shallower
    (the deeper one a constant), the mean squared feature difference to the network's (detached) feature."""
    g = torch.Generator().manual_seed(0)
    B, N, T = 4, 3, 3.0
    logits = torch.randn(B, N, generator=g, dtype=torch.float64)
    aux = [torch.randn(B, N * 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    feats = [torch.randn(B, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    pooled = torch.randn(B, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.softmax(torch.randn(B, N, generator=g, dtype=torch.float64), 1)
    aux_target = [torch.softmax(torch.randn(B, N * 2, generator=g, dtype=torch.float64), 1) for _ in range(3)]
    terms = L.lsskd_terms(logits, aux, feats, pooled, target, aux_target, T, kl_weight=0.5, feature_weight=2.0)

    def ce(z, t):
        return sum(-(t[i] * torch.log(torch.exp(z[i]) / torch.exp(z[i]).sum())).sum() for i in range(B)) / B

    def kl(p_logits, q_logits):
        p, q = torch.softmax(p_logits / T, 1), torch.softmax(q_logits / T, 1)
        return sum((p[i] * (p[i] / q[i]).log()).sum() for i in range(B)) / B

    torch.testing.assert_close(terms["ce"], ce(logits, target))
    torch.testing.assert_close(terms["aux_ce"], sum(ce(z, t) for z, t in zip(aux, aux_target)))
    torch.testing.assert_close(terms["aux_kl"], 0.5 * T * T * (kl(aux[1], aux[0]) + kl(aux[2], aux[1])))
    torch.testing.assert_close(terms["aux_feature"],
                               2.0 * sum(((f - pooled) ** 2).sum() / f.numel() for f in feats))
    terms["aux_kl"].backward(retain_graph=True)
    assert aux[0].grad is not None and aux[1].grad is not None and aux[2].grad is None, "the deeper head is a constant"
    terms["aux_feature"].backward()
    assert pooled.grad is None and all(f.grad is not None for f in feats), "the network's feature is a constant"
    plain = L.lsskd_terms(logits, aux, feats, pooled, target, aux_target, T, kl_weight=0.0, feature_weight=0.0)
    assert set(plain) == {"ce", "aux_ce"}, "HSAKD-style: the cross-layer terms are absent, not zero-weighted"


@pytest.mark.parametrize("weights, name", [((1.0, 1.0), "mfh_student_loss_w1_1"),
                                           ((0.5, 2.0), "mfh_student_loss_w0.5_2")])
def test_mfh_synthetic_student_loss_matches_official(weights, name):
    """MFH's synthetic student (gauss/main.py train_kd): CE + nn.KLDivLoss() at T = 1, an element-wise mean:
    its KL term is kd_loss at T = 1 divided by the class count."""
    assert_close(student_loss(S, TEA, Y, weights), name)
    kl = student_loss(S, TEA, Y, (0.0, 1.0))
    torch.testing.assert_close(kl, L.kd_loss(S, TEA, 1.0) / C, rtol=1e-12, atol=0.0)


def test_nkd_non_target_term_is_nckd_plus_the_teachers_non_target_entropy():
    """NKD keeps KD's non-target part on renormalised probabilities (DKD's NCKD, Eq. 3) without
    the (1 - p_t) weight KD puts on it: T^2 x NKD's non-target term = NCKD + T^2 H(t^)."""
    for T in (1.0, 3.0):
        target_term, non_target = L.nkd_parts(S, TEA, Y, T)
        t_other = F.softmax(_non_target(TEA, Y) / T, dim=1)
        entropy = -(t_other * t_other.log()).sum(1).mean()
        torch.testing.assert_close(T * T * non_target, L.nckd_loss(S, TEA, Y, T) + T * T * entropy)
        p_t = F.softmax(TEA, 1).gather(1, Y[:, None]).squeeze(1)
        log_s = F.log_softmax(S, 1).gather(1, Y[:, None]).squeeze(1)
        torch.testing.assert_close(target_term, -(p_t * log_s).mean())


def test_uskd_soft_labels_are_zipf_over_the_ranked_non_target_classes():
    """Weights 1 / rank (ranks among all C classes, the target's dropped), renormalised; with
    the final head alone deciding (a constant weak head), the ranks are the logits' order."""
    q = L.uskd_nontarget_targets(torch.zeros_like(S), S, Y, rank_log_probs=False)
    ranks = torch.from_numpy(rankdata(-S.numpy(), axis=1, method="ordinal")).double()
    expected = _non_target(1 / ranks, Y)
    torch.testing.assert_close(q, expected / expected.sum(1, keepdim=True))
    # the log-probability form orders the final head's classes the same way
    torch.testing.assert_close(L.uskd_nontarget_targets(torch.zeros_like(S), S, Y), q)


def test_uskd_target_weight_and_gradients():
    """L_t's weight p_y^2 + 1 - mean(p_y^2) is a constant; the weak head gets gradient only from L_weak."""
    s, w = S.clone().requires_grad_(), TEA.clone().requires_grad_()
    L.uskd_loss(w, s, Y, 1.0, 1.0, 0.0).backward()
    assert w.grad is None or torch.all(w.grad == 0)
    p_y = F.softmax(S, 1).gather(1, Y[:, None]).squeeze(1)
    weight = p_y ** 2 + 1 - (p_y ** 2).mean()
    log_s = F.log_softmax(S, 1).gather(1, Y[:, None]).squeeze(1)
    torch.testing.assert_close(L.uskd_loss(TEA, S, Y, 1.0, 0.0, 0.0), -(weight * log_s).mean())


def _camkd_inputs():
    """The fixed inputs of the camkd_* golden entries (their `call` says the same)."""
    teachers = [TEA, TIED, DENSE[:, :, 0, 0] * 3]
    maps_s = [DENSE, DENSE.flip(0), 0.5 * DENSE]
    maps_t = [DENSE.roll(1, dims=1), DENSE.flip(0).roll(2, dims=1), DENSE.transpose(2, 3)]
    heads = [S, S.flip(0), TEA.flip(1)]
    return teachers, maps_s, maps_t, heads


@pytest.mark.parametrize("K", [3, 2])
@pytest.mark.parametrize("T", [4.0, 2.0])
def test_camkd_and_aver_match_official(T, K):
    teachers, maps_s, maps_t, heads = _camkd_inputs()
    assert_close(L.camkd_kd_loss(S, teachers[:K], Y, T), f"camkd_kd_T{T:g}_K{K}")
    assert_close(L.average_kd_loss(S, teachers[:K], T), f"aver_kd_T{T:g}_K{K}")
    assert_close(L.camkd_feature_loss(maps_s[:K], maps_t[:K], heads[:K], Y), f"camkd_feature_K{K}")
    assert_close(L.camkd_weights(heads[:K], Y), f"camkd_feature_weights_K{K}")


def test_camkd_weights_favour_the_teacher_right_on_the_sample_and_sum_to_one():
    teachers = _camkd_inputs()[0]
    w = L.camkd_weights(teachers, Y)
    torch.testing.assert_close(w.sum(0), torch.ones(8, dtype=torch.float64))
    ce = torch.stack([F.cross_entropy(z, Y, reduction="none") for z in teachers])
    assert torch.equal(w.argmax(0), ce.argmin(0)), "the lowest cross-entropy gets the largest weight"
    with pytest.raises(ValueError, match="at least 2"):
        L.camkd_weights(teachers[:1], Y)
    # equal teachers: equal weights, and the KD term is 1/K of the single teacher's KD (the official scale)
    same = [TEA, TEA, TEA]
    torch.testing.assert_close(L.camkd_weights(same, Y), torch.full((3, 8), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(L.camkd_kd_loss(S, same, Y, 4.0), L.kd_loss(S, TEA, 4.0) / 3)
    torch.testing.assert_close(L.average_kd_loss(S, same, 4.0), L.kd_loss(S, TEA, 4.0))


def test_camkd_feature_weights_carry_gradient_as_in_the_official_code():
    """The feature term's weights come from the teachers' heads on the adapted student maps and
    are not detached: the head logits get a gradient even where the maps already match."""
    _, maps_s, _, heads = _camkd_inputs()
    heads = [h.clone().requires_grad_() for h in heads]
    L.camkd_feature_loss(maps_s, [m + 1 for m in maps_s], heads, Y).backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in heads)


def test_sp_properties():
    """Zero for the same similarities (any positive scale of the activations: rows are
    normalised), at most 4 (two unit rows differ by at most 2 in norm, B rows over B^2), and a
    batch mismatch is a clear error."""
    assert L.sp_loss(DENSE, 3.0 * DENSE).item() == pytest.approx(0.0, abs=1e-12)
    assert 0 < L.sp_loss(DENSE, FEAT).item() <= 4.0 / DENSE.shape[0]
    G = L.batch_similarity(DENSE)
    torch.testing.assert_close(G.norm(dim=1), torch.ones(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="same batch"):
        L.sp_loss(DENSE, FEAT[:4])
    _gradcheck(lambda s: L.sp_loss(s, FEAT[:4]), DENSE[:4, :2])


@pytest.mark.parametrize("epoch", [0, 149, 299])
def test_pskd_matches_official(epoch):
    alpha = L.pskd_alpha(epoch, 300, 0.8)
    assert alpha == pytest.approx(golden(f"pskd_alpha_e{epoch}_of300").item(), rel=1e-12)
    # the official loop overwrites the memory with one-hot at epoch 0; ours starts one-hot
    previous = F.one_hot(Y, C).float() if epoch == 0 else F.softmax(TEA, dim=1).float()
    target = L.pskd_targets(Y, previous, alpha, C)
    assert_close(target, f"pskd_targets_e{epoch}_of300")
    assert_close(L.soft_cross_entropy(S, target.double()), f"pskd_loss_e{epoch}_of300")


def test_mixkd_matches_official():
    soft = 0.7 * F.one_hot(Y, C).double() + 0.3 * F.one_hot(Y.roll(1), C).double()
    terms = L.mixkd_loss(S, TEA, soft, ce_weight=0.1, kd_weight=0.9)
    assert set(terms) == {"ce", "kd"}
    assert_close(terms["ce"], "mixkd_ce")
    assert_close(terms["kd"], "mixkd_kd")


@pytest.mark.parametrize("T", [4.0, 5.0])
def test_takd_relation_to_official(T):
    """TAKD's nn.KLDivLoss() averages over all B*C elements: ours = official * C."""
    assert_close(L.kd_loss(S, TEA, T), f"takd_T{T:g}", factor=C)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_matches_pytorch(eps):
    target = L.label_smoothing_targets(Y, C, eps).double()
    assert_close(L.soft_cross_entropy(S, target), f"label_smoothing_ce_e{eps:g}")


def test_official_partial_mixup_leaves_fewer_unmixed_than_its_fraction():
    """Documented difference: MIX-KD's PMU with 0.9 'unmixed' keeps about 1 - e^-0.9 of the
    batch unmixed (indices drawn with replacement); ours keeps exactly the fraction."""
    official = golden("mixkd_pmu_unmixed_fraction_for_0.9").item()
    assert official == pytest.approx(1 - math.exp(-0.9), abs=0.01)


# ------------------------------------------------------------------------------------- invariants


def test_zero_when_student_equals_teacher():
    z = TEA
    for T in (1.0, 4.0):
        assert L.kd_loss(z, z, T).abs() < 1e-12
        assert L.tckd_loss(z, z, Y, T).abs() < 1e-12
        assert L.nckd_loss(z, z, Y, T).abs() < 1e-12
        assert L.dkd_loss(z, z, Y, 1.0, 8.0, T).abs() < 1e-12
        assert L.dist_loss(z, z, 1.0, 1.0, T).abs() < 1e-12
    assert L.kd_loss(S, TEA) > 0 and L.dkd_loss(S, TEA, Y) > 0 and L.dist_loss(S, TEA) > 0


def _per_sample(fn, *args, **kw):
    """fn evaluated on each sample alone (a batch of one), shape B."""
    return torch.stack([fn(*(a[i:i + 1] for a in args), **kw) for i in range(args[0].shape[0])])


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_identity_kd_equals_tckd_plus_coupled_nckd(T):
    """DKD Eq. 5: KD = TCKD + (1 - p_t,target) NCKD, per sample; in the batch mean the NCKD
    term is weighted by each sample's own coupling."""
    kd = _per_sample(L.kd_loss, S, TEA, temperature=T)
    tckd = _per_sample(L.tckd_loss, S, TEA, Y, temperature=T)
    nckd = _per_sample(L.nckd_loss, S, TEA, Y, temperature=T)
    p_target = F.softmax(TEA / T, dim=1).gather(1, Y[:, None]).squeeze(1)
    torch.testing.assert_close(kd, tckd + (1 - p_target) * nckd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(L.kd_loss(S, TEA, T), L.tckd_loss(S, TEA, Y, T) + ((1 - p_target) * nckd).mean(),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(L.tckd_loss(S, TEA, Y, T), tckd.mean())
    torch.testing.assert_close(L.nckd_loss(S, TEA, Y, T), nckd.mean())
    torch.testing.assert_close(L.dkd_loss(S, TEA, Y, 2.0, 3.0, T), 2 * tckd.mean() + 3 * nckd.mean())


def _gradcheck(fn, *inputs):
    inputs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_kd_dkd_dist():
    t = TEA
    _gradcheck(lambda s: L.kd_loss(s, t, 4.0), S)
    _gradcheck(lambda s: L.kd_loss(s, t, 1.0), S)
    _gradcheck(lambda s: L.tckd_loss(s, t, Y, 4.0), S)
    _gradcheck(lambda s: L.nckd_loss(s, t, Y, 4.0), S)
    _gradcheck(lambda s: L.dkd_loss(s, t, Y, 1.0, 8.0, 4.0), S)
    _gradcheck(lambda s: L.dist_loss(s, t, 1.0, 1.0, 4.0), S)
    _gradcheck(lambda s: L.dist_loss(s, t, 2.0, 0.5, 1.0), S)
    # the teacher side is differentiable too (e.g. online distillation)
    _gradcheck(lambda s, tt: L.dkd_loss(s, tt, Y), S, t)
    _gradcheck(lambda s, tt: L.dist_loss(s, tt, temperature=4.0), S, t)


def test_gradcheck_soft_ce_mixkd():
    soft = L.label_smoothing_targets(Y, C, 0.1).double()
    _gradcheck(lambda s: L.soft_cross_entropy(s, soft), S)
    mixed = 0.6 * F.one_hot(Y, C).double() + 0.4 * F.one_hot(Y.roll(1), C).double()
    _gradcheck(lambda s: tuple(L.mixkd_loss(s, TEA, mixed).values()), S)
    _gradcheck(lambda s: L.std_scale(s), S)


def test_gradcheck_zipf():
    # the Zipf targets are piecewise constant in the logits (ranks), so the loss is smooth
    # between rank changes; the inputs have no near-ties at the gradcheck step size
    _gradcheck(lambda s: L.zipf_loss(s, Y, 1.0), S)
    _gradcheck(lambda s: L.zipf_loss(s, Y, 2.0, dense_logits=DENSE), S)


def test_bake_gradient_treats_targets_as_constant(monkeypatch):
    """BAKE's targets carry no gradient (as in the official code, computed under no_grad):
    d loss / d z = T (softmax(z / T) - Q) / B. gradcheck is run with Q frozen at its value
    (finite differences would otherwise also move Q, which the method does not differentiate)."""
    T = 4.0
    z = S.clone().requires_grad_(True)
    Q = L.bake_targets(FEAT, S, T, 0.5)
    (grad,) = torch.autograd.grad(L.bake_loss(FEAT, z, T, 0.5), z)
    torch.testing.assert_close(grad, T * (F.softmax(S / T, dim=1) - Q) / S.shape[0], rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(kd.methods.bake, "bake_targets", lambda *a, **k: Q)  # what bake_loss calls
    _gradcheck(lambda s: L.bake_loss(FEAT, s, T, 0.5), S)
    # and no gradient reaches the features
    f = FEAT.clone().requires_grad_(True)
    monkeypatch.undo()
    assert not L.bake_loss(f, S, T, 0.5).requires_grad


def test_float64_inputs_stay_float64():
    """The losses compute in their inputs' precision (the methods pass float32 under bf16 autocast)."""
    assert L.bake_affinity(FEAT).dtype == L.bake_targets(FEAT, S).dtype == torch.float64
    assert L.zipf_targets(S, Y).dtype == L.zipf_loss(S, Y).dtype == torch.float64


def test_bake_targets_are_distributions():
    for omega in (0.0, 0.5, 0.9, 0.99):
        Q = L.bake_targets(FEAT, S, 4.0, omega)
        assert (Q >= 0).all()
        torch.testing.assert_close(Q.sum(1), torch.ones(8, dtype=Q.dtype), rtol=0, atol=1e-12)
    # omega = 0: no propagation, the sample's own softened prediction
    torch.testing.assert_close(L.bake_targets(FEAT, S, 4.0, 0.0), F.softmax(S / 4, 1))
    # the affinity is a row-stochastic matrix with an empty diagonal
    A = L.bake_affinity(FEAT)
    assert torch.all(A.diagonal() == 0) and (A >= 0).all()
    torch.testing.assert_close(A.sum(1), torch.ones(8, dtype=A.dtype), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="omega"):
        L.bake_targets(FEAT, S, 4.0, 1.0)
    with pytest.raises(ValueError, match="omega"):
        L.bake_loss(FEAT, S, 4.0, -0.1)


def test_pskd_alpha_zero_is_cross_entropy():
    previous = F.softmax(TEA, dim=1)
    target = L.pskd_targets(Y, previous, 0.0, C)
    torch.testing.assert_close(L.soft_cross_entropy(S, target), F.cross_entropy(S, Y))
    # alpha = 1: distillation from the previous predictions alone
    torch.testing.assert_close(L.pskd_targets(Y, previous, 1.0, C), previous)
    assert L.pskd_alpha(299, 300, 0.8) == pytest.approx(0.8)
    assert L.pskd_alpha(0, 300, 0.8) == pytest.approx(0.8 / 300)


def _non_target(x, target):
    mask = F.one_hot(target, x.shape[1]).bool()
    return x[~mask].view(x.shape[0], -1)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("logits", ["student", "tied"])
def test_zipf_targets_are_a_distribution_decreasing_with_rank(logits, power):
    z = INP[logits]
    q = L.zipf_targets(z, Y, power)
    assert q.shape == (8, C - 1)
    assert (q > 0).all()
    torch.testing.assert_close(q.sum(1), torch.ones(8, dtype=q.dtype), rtol=0, atol=1e-6)
    other = _non_target(z, Y)
    for i in range(8):
        order = torch.argsort(other[i], descending=True)
        assert torch.all(torch.diff(q[i, order]) <= 0), "targets must not increase down the ranking"
        for a in range(C - 1):  # strictly larger logit <=> strictly larger target; ties share
            for b in range(C - 1):
                if other[i, a] > other[i, b]:
                    assert q[i, a] > q[i, b]
                elif other[i, a] == other[i, b]:
                    assert q[i, a] == q[i, b]
    # the ranks are competition ranks over ALL classes ('min': ties share the lowest), as scipy
    ranks = torch.from_numpy(rankdata(-z.numpy(), axis=1, method="min")).double()
    expected = _non_target(ranks.pow(-power), Y)
    torch.testing.assert_close(q.double(), expected / expected.sum(1, keepdim=True), rtol=1e-6, atol=0)


def test_zipf_ties_share_the_lowest_rank():
    z = torch.tensor([[5.0, 3.0, 3.0, 1.0, 3.0]])
    q = L.zipf_targets(z, torch.tensor([0]), power=1.0)  # target is the top class
    w = torch.tensor([1 / 2, 1 / 2, 1 / 5, 1 / 2])  # ranks 2, 2, 5, 2 (class 0 holds rank 1)
    torch.testing.assert_close(q, (w / w.sum())[None])


def test_zipf_dense_ranks_by_votes():
    """dense_logits B x C x H x W: each location votes for its argmax class; classes are ranked
    by their vote counts (ties share the lowest rank); the image-level logits are ignored."""
    B, H, W = 8, 4, 4
    votes = DENSE.argmax(1).flatten(1)
    counts = torch.stack([torch.bincount(v, minlength=C) for v in votes]).double()
    assert torch.all(counts.sum(1) == H * W)
    ranks = torch.from_numpy(rankdata(-counts.numpy(), axis=1, method="min")).double()
    expected = _non_target(1 / ranks, Y)
    q = L.zipf_targets(S, Y, 1.0, dense_logits=DENSE)
    torch.testing.assert_close(q.double(), expected / expected.sum(1, keepdim=True), rtol=1e-6, atol=0)
    torch.testing.assert_close(L.zipf_targets(torch.zeros_like(S), Y, 1.0, dense_logits=DENSE), q)
    # any spatial size, float32 dense logits
    dense = torch.randn(B, C, 3, 5, generator=torch.Generator().manual_seed(1))
    q = L.zipf_targets(S.float(), Y, 1.0, dense_logits=dense)
    assert q.shape == (B, C - 1) and torch.allclose(q.sum(1), torch.ones(B))
    loss = L.zipf_loss(S.float().requires_grad_(), Y, dense_logits=dense)
    assert loss.ndim == 0 and loss >= 0 and loss.requires_grad


def test_zipf_loss_is_kl_to_the_non_target_softmax():
    q = L.zipf_targets(S, Y).double()
    log_p = F.log_softmax(_non_target(S, Y), dim=1)
    torch.testing.assert_close(L.zipf_loss(S, Y), (q * (q.log() - log_p)).sum(1).mean(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_label_smoothing_targets(eps):
    q = L.label_smoothing_targets(Y, C, eps)
    torch.testing.assert_close(q.sum(1), torch.ones(8))
    assert torch.allclose(q.gather(1, Y[:, None]).squeeze(1), torch.full((8,), 1 - eps + eps / C))
    assert (q >= 0).all()


def test_soft_cross_entropy_with_one_hot_is_cross_entropy():
    torch.testing.assert_close(L.soft_cross_entropy(S, F.one_hot(Y, C).double()), F.cross_entropy(S, Y))


# ------------------------------------------------------------------------------------- mixup, std scaling


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = F.one_hot(torch.randint(0, C, (n,), generator=g), C).float()
    return x, y


def test_mixup_lambda_in_unit_interval_and_outputs_consistent():
    x, y = _batch()
    g = torch.Generator().manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        for frac in (0.0, 0.5):
            xm, ym, lam, perm = L.mixup(x, y, alpha, frac, generator=g)
            assert 0 <= lam <= 1
            assert xm.shape == x.shape and ym.shape == y.shape
            torch.testing.assert_close(ym.sum(1), torch.ones(len(y)))
            assert sorted(perm.tolist()) == list(range(len(x))), "perm is a permutation"
            unmixed = perm == torch.arange(len(x))
            torch.testing.assert_close(xm[unmixed], x[unmixed])
            torch.testing.assert_close(xm[~unmixed], lam * x[~unmixed] + (1 - lam) * x[perm[~unmixed]])
            torch.testing.assert_close(ym[~unmixed], lam * y[~unmixed] + (1 - lam) * y[perm[~unmixed]])


def test_mixup_fully_unmixed_leaves_the_batch_unchanged():
    x, y = _batch()
    xm, ym, lam, perm = L.mixup(x, y, 1.0, unmixed_fraction=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xm, x) and torch.equal(ym, y)
    assert torch.equal(perm, torch.arange(len(x)))


@pytest.mark.parametrize("n,frac", [(32, 0.0), (32, 0.5), (32, 0.9), (128, 0.9), (10, 0.25), (7, 0.5), (2, 0.5)])
def test_mixup_unmixed_count_is_exact(n, frac):
    """Exactly round(frac * n) samples stay unchanged, every call (no sample is 'mixed' with itself)."""
    x, y = _batch(n)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        xm, ym, lam, perm = L.mixup(x, y, 1.0, frac, generator=g)
        assert int((perm == torch.arange(n)).sum()) == round(frac * n)
        if 0 < lam < 1:
            unchanged = (xm == x).flatten(1).all(1)
            assert int(unchanged.sum()) == round(frac * n)


def test_mixup_is_reproducible_with_a_seeded_generator():
    x, y = _batch()
    a = [L.mixup(x, y, 1.0, 0.5, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(a[0][0], a[1][0]) and torch.equal(a[0][1], a[1][1])
    assert a[0][2] == a[1][2] and torch.equal(a[0][3], a[1][3])
    g = torch.Generator().manual_seed(3)
    first, second = L.mixup(x, y, 1.0, 0.5, generator=g), L.mixup(x, y, 1.0, 0.5, generator=g)
    assert first[2] != second[2], "successive calls draw new coefficients"
    with pytest.raises(ValueError, match="unmixed_fraction"):
        L.mixup(x, y, 1.0, 1.5)



def test_mixup_official_mixes_per_sample_and_leaves_the_official_share_unmixed():
    """MIX-KD's PMU: per-sample lambda, partners from two permutations, int(0.9 B) indices drawn
    with replacement left unmixed: 1 - (1 - 1/B)^int(0.9 B) of the batch on average (59% at B 64)."""
    n = 64
    x, y = _batch(n)
    g = torch.Generator().manual_seed(0)
    shares = []
    for _ in range(2000):
        xm, ym, lam, perm = L.mixup_official(x, y, 1.0, 0.9, generator=g)
        assert sorted(perm.tolist()) == list(range(n)), "perm is a permutation"
        wx, wy = lam.view(-1, *([1] * (x.dim() - 1))), lam.view(-1, 1)
        torch.testing.assert_close(xm, wx * x + (1 - wx) * x[perm])
        torch.testing.assert_close(ym, wy * y + (1 - wy) * y[perm])
        shares.append((lam == 1).float().mean().item())
    expected = 1 - (1 - 1 / n) ** int(0.9 * n)
    assert abs(sum(shares) / len(shares) - expected) < 0.005 and abs(expected - 0.592) < 0.001
    _, _, lam, _ = L.mixup_official(x, y, 1.0, 0.0, generator=g)
    assert len(lam.unique()) > n // 2, "full mixup (FMU): one lambda per sample"
    with pytest.raises(ValueError, match="unmixed_fraction"):
        L.mixup_official(x, y, 1.0, -0.1)

def test_std_scale_gives_unit_std_rows():
    z = L.std_scale(S)
    torch.testing.assert_close(z.std(dim=1), torch.ones(8, dtype=z.dtype))
    torch.testing.assert_close(L.std_scale(5 * S + 2), L.std_scale(S) + 2 / (5 * S).std(1, keepdim=True))
    # constant rows do not divide by zero
    assert torch.isfinite(L.std_scale(torch.ones(2, 5))).all()


def test_mixkd_is_kd_on_std_scaled_logits_without_T2():
    soft = F.one_hot(Y, C).double()
    terms = L.mixkd_loss(S, TEA, soft, ce_weight=0.1, kd_weight=0.9)
    s, t = L.std_scale(S), L.std_scale(TEA)
    torch.testing.assert_close(terms["kd"], 0.9 * L.kd_loss(s, t, temperature=1.0))
    torch.testing.assert_close(terms["ce"], 0.1 * F.cross_entropy(s, Y))


# ------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_raises(T):
    t = TEA
    calls = [lambda: L.kd_loss(S, t, T), lambda: L.tckd_loss(S, t, Y, T), lambda: L.nckd_loss(S, t, Y, T),
             lambda: L.dkd_loss(S, t, Y, temperature=T), lambda: L.dist_loss(S, t, temperature=T),
             lambda: L.bake_targets(FEAT, S, T), lambda: L.bake_loss(FEAT, S, T)]
    for call in calls:
        with pytest.raises(ValueError, match="temperature"):
            call()


def test_losses_are_finite_for_extreme_logits():
    big = torch.tensor([[1000.0, -1000.0, 0.0], [0.0, 0.0, 1e4]], dtype=torch.float64)
    other = torch.tensor([[-1000.0, 1000.0, 0.0], [1e4, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    mixkd = L.mixkd_loss(big, other, F.one_hot(y, 3).double())["kd"]
    for value in (L.kd_loss(big, other), L.tckd_loss(big, other, y), L.nckd_loss(big, other, y),
                  L.dist_loss(big, other), L.zipf_loss(big, y), mixkd):
        assert torch.isfinite(value)


def test_sokd_matches_official():
    """SOKD's five terms and the two networks' losses (official trainer/sokd.py with configs/sokd.yaml's
    weights, every one 1, and kd_losses/st.py's SoftTarget at T = 4), branch logits = student + teacher."""
    terms = L.sokd_terms(S, S + TEA, TEA, Y, 4.0)
    for ours, name in (("ce", "student_ce"), ("kd", "student_kd"), ("branch_ce", "branch_ce"),
                       ("branch_kd_teacher", "branch_kd_teacher"), ("branch_kd_student", "branch_kd_student")):
        assert_close(terms[ours], f"sokd_{name}")
    assert_close(terms["ce"] + terms["kd"], "sokd_student_loss")
    assert_close(terms["branch_ce"] + terms["branch_kd_teacher"] + terms["branch_kd_student"], "sokd_branch_loss")
