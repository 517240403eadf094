"""kd.methods: every registered method trains on scikit-learn's 8x8 digits and its loss goes
down; the methods' state (PS-KD's memory, DKD's warm-up); the registry's error messages.

Students and teachers are resnet8 (1 input channel): self-distillation needs the teacher's
architecture and dense Zipf LS a global-average-pool head. The teacher is trained with
cross-entropy for a few dozen steps, once per module. Each training run is 30 SGD steps at
the start of a nominal 100-epoch schedule (as in a real run's first steps: DKD's warm-up
and PS-KD's alpha_t are small there). The whole file runs in about 30 s on 2 shared cores
(loading digits and training the teacher take about 8 s of it).
"""
import pytest
import torch
import torch.nn.functional as F

import kd.data
import kd.methods
import kd.models
import kd.metrics
import kd.runs
from kd import losses
from kd import train as kd_train
from kd.data import Loader

STEPS = 30
EPOCHS = 100      # the nominal schedule length passed to on_epoch_start
BATCH = 60        # a multiple of 1 + same_class (BAKE's 3)
DEVICE = torch.device("cpu")

# per method: the hyperparameter variants trained (defaults first)
VARIANTS = {
    "ce": [{}, {"same_class": 3}],  # BAKE's sampler without its loss
    "label_smoothing": [{}],
    "kd": [{}],
    "takd": [{}],
    "self_distillation": [{}],
    "dkd": [{}],
    "dist": [{}],
    "pskd": [{}],
    "bake": [{}],
    "zipf_ls": [{}, {"dense": True}],
    "mixup": [{}],
    "mixup_kd": [{}, {"unmixed_fraction": 0.5}, {"unmixed_fraction": 0.9, "sampler": "official"},
                 {"std_scaling": False}, {"mixup": False}],
    "sp": [{}, {"kd_weight": 0.9, "ce_weight": 0.1}],  # SP, SP + KD
    "nkd": [{}, {"temperature": 3.0, "gamma": 3.5}],      # ImageNet's and CIFAR-100's settings
    "uskd": [{}, {"rank_log_probs": False}],               # the official ranking and the paper's text's
    # CA-MKD (its feature term from the first step: with the official warm-up the term, weight 50, starts in the
    # second epoch and the loss jumps there; test_camkd_feature_term_starts_after_its_warmup), logits only, AVER
    "camkd": [{"feature_warmup": 0}, {"feature_weight": 0.0}, {"weighting": "average", "feature_weight": 0.0}],
    "dml": [{"teacher_model": "resnet14"}],               # the loss is both networks': it goes down too
    "switokd": [{"teacher_model": "resnet14"}, {"teacher_model": "resnet14", "teacher_lr_scale": 5.0}],
    "bdkd": [{"teacher_model": "resnet14"}, {"teacher_model": "resnet14", "balance": "reverse"}],
    "crd": [{"nce_k": 256}, {"nce_k": 256, "kd_weight": 1.0}],  # CRD, CRD + KD (K within the test's images)
    "sokd": [{}, {"branch_init": "random"}],               # the branch as the paper says, as the official code does
    # LSSKD, without its rotations, HSAKD-style (no previous-epoch targets, no cross-layer terms)
    "lsskd": [{}, {"rotations": 1}, {"alpha_T": 0.0, "kl_weight": 0.0, "feature_weight": 0.0}],
}
# methods whose total loss is measured against a moving reference: the student's CE must go down instead.
# CRD's NCE term scores against memory banks that start random and fill with learned embeddings during the
# first epoch, so it rises when the second epoch starts (its values: tests/test_losses.py, golden)
TERM_THAT_GOES_DOWN = {"crd": "ce"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train as fast on one thread, and two OpenMP threads stall badly when
    other processes share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return kd.data.load("digits")


def loader(ds, seed=0, same_class=0):
    return Loader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size=BATCH, train=True, device=DEVICE,
                  seed=seed, crop_pad=1, same_class=same_class)


def train(method, ds, teacher=None, model="resnet8", steps=STEPS, lr=0.05, seed=0, term=None):
    """The training loop of kd.train.fit, reduced: returns the per-step total losses (or the loss term
    `term`)."""
    torch.manual_seed(seed)
    student = kd.models.create(model, ds.num_classes, in_channels=ds.in_channels).train()
    data = loader(ds, seed, method.same_class)
    method.setup(data.y, ds.num_classes, DEVICE, seed)
    owned = method.build(student, teacher, torch.zeros(2, *ds.x_train.shape[1:]))
    if owned is not None:  # the method's own modules train with the student
        method.owned = owned
    opt = kd_train.make_optimizer(kd_train.TrainConfig(lr=lr), student, method)  # momentum 0.9, weight decay 5e-4
    history, epoch = [], 0
    while len(history) < steps:
        data.set_epoch(epoch)
        method.on_epoch_start(epoch, EPOCHS)
        for batch in data:
            logits, terms = method.forward_train(student, teacher, batch)
            assert logits.shape == (len(batch.y), ds.num_classes)
            assert terms and all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
            loss = sum(v for k, v in terms.items() if k not in method.monitored)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append((terms[term] if term else loss).item())
            if len(history) == steps:
                break
        epoch += 1
    return history


def _ce_teacher(digits, seed: int):
    """resnet8 trained with cross-entropy for 60 steps (about 70% accuracy on a training batch)."""
    torch.manual_seed(seed)
    model = kd.models.create("resnet8", digits.num_classes, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = loader(digits, seed=seed)
    steps = 0
    for epoch in range(10):
        data.set_epoch(epoch)
        for batch in data:
            loss = F.cross_entropy(model(batch.x), batch.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps == 60:
                return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def teacher(digits):
    return _ce_teacher(digits, seed=123)


@pytest.fixture(scope="module")
def ensemble(digits, teacher):
    """Two teachers for the methods that weigh several (CA-MKD): the module's teacher and another seed's."""
    return kd.models.Ensemble([teacher, _ce_teacher(digits, seed=124)])


def test_every_registered_method_is_tested():
    assert sorted(VARIANTS) == kd.methods.available()


def _variant_id(v) -> str:
    return v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()) or "default"


@pytest.mark.parametrize("name,hp", [(n, hp) for n, variants in VARIANTS.items() for hp in variants], ids=_variant_id)
def test_method_trains_and_loss_goes_down(name, hp, digits, teacher, ensemble):
    method = kd.methods.create(name, **hp)
    term = TERM_THAT_GOES_DOWN.get(name)
    history = train(method, digits, (ensemble if name == "camkd" else teacher) if method.needs_teacher else None,
                    term=term)
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.9 * first, f"{name} {hp}: {term or 'loss'} {first:.3f} -> {last:.3f}: {history}"


def test_method_flags():
    teacher_methods = {"kd", "takd", "self_distillation", "dkd", "dist", "mixup_kd", "sp", "nkd", "camkd", "crd",
                       "sokd"}
    for name in kd.methods.available():
        method = kd.methods.create(name)
        assert method.needs_teacher == (name in teacher_methods), name
        assert method.same_architecture == (name == "self_distillation"), name
        assert method.same_class == (3 if name == "bake" else 0), name
        assert method.every_sample == (name in ("pskd", "lsskd")), name  # memories indexed by sample
        assert method.replays_teacher == (name in ("kd", "takd", "self_distillation", "dkd", "dist", "nkd",
                                                   "mixup_kd")), name
    assert kd.methods.create("bake", same_class=1).same_class == 1


def test_methods_that_replay_the_teacher_use_it_once_on_the_batch(digits):
    """kd.replay hands these methods recorded logits in place of the teacher, so their one use of the
    teacher in a step must be teacher_logits(teacher, batch.x), or, where the method declares
    `teacher_inputs` (MixUp-KD's mixing), on images that the seed alone fixes: anything else fails here."""
    batch = next(iter(loader(digits)))
    teacher = kd.models.create("plane2", 10, in_channels=1).eval()

    def teacher_sees(method, seed=0):
        seen = []
        student = kd.models.create("plane2", 10, in_channels=1)
        method.setup(digits.y_train, 10, DEVICE, seed)
        assert method.build(student, teacher, batch.x[:2]) is None
        method.on_epoch_start(0, 10)
        method.forward_train(student, lambda x: seen.append(x) or teacher(x), batch)
        assert len(seen) == 1
        return seen[0]

    for name in kd.methods.available():
        method = kd.methods.create(name)
        if not method.replays_teacher:
            continue
        if method.teacher_inputs() is None:
            assert teacher_sees(method) is batch.x, name
    mixing = {"mixup_alpha": 1.0, "unmixed_fraction": 0.5, "sampler": "official"}
    fixed_t = kd.methods.create("mixup_kd", std_scaling=False, **mixing)
    std = kd.methods.create("mixup_kd", std_scaling=True, **mixing)
    assert fixed_t.teacher_inputs() == std.teacher_inputs() != kd.methods.create("mixup_kd").teacher_inputs()
    assert kd.methods.create("mixup_kd", mixup=False).teacher_inputs() is None, "no mixing: the batch itself"
    x = teacher_sees(fixed_t)
    assert not torch.equal(x, batch.x), "the teacher sees the mixed batch"
    assert torch.equal(teacher_sees(std), x), "the same seed and mixing, whatever the loss: the same images"
    assert not torch.equal(teacher_sees(std, seed=1), x), "another seed, other draws"


def test_bake_batches_hold_same_class_groups(digits):
    method = kd.methods.create("bake")
    batch = next(iter(loader(digits, same_class=method.same_class)))
    groups = batch.y.view(-1, 1 + method.same_class)
    assert torch.all(groups == groups[:, :1]), "each anchor is followed by 3 samples of its class"
    index = batch.index.view(-1, 1 + method.same_class)
    assert torch.all(index[:, 1:] != index[:, :1]), "the extra samples are not the anchor itself"


def test_bake_term_is_the_bake_loss_of_the_pooled_features(digits):
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).eval()
    method = kd.methods.create("bake", temperature=3.0, omega=0.7, weight=2.0)
    method.setup(digits.y_train, 10, DEVICE, 0)
    batch = next(iter(loader(digits, same_class=3)))
    logits, terms = method.forward_train(student, None, batch)
    _, feats = student(batch.x, return_features=True)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, batch.y))
    torch.testing.assert_close(terms["bake"], 2.0 * losses.bake_loss(feats["pooled"], logits, 3.0, 0.7))


def _fixed_batch(ds):
    data = loader(ds)
    return next(iter(data))


def test_pskd_memory_updates_at_the_sample_indices(digits):
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).eval()
    method = kd.methods.create("pskd", alpha_T=0.8)
    method.setup(digits.y_train, 10, DEVICE, 0)
    onehot = F.one_hot(digits.y_train, 10).float()
    assert torch.equal(method.memory, onehot), "memory starts one-hot"
    method.on_epoch_start(49, 100)
    assert method.alpha == pytest.approx(0.4)
    # make the memory of the batch's samples something known
    batch = _fixed_batch(digits)
    previous = torch.softmax(torch.randn(len(batch.index), 10), 1)
    method.memory[batch.index] = previous
    before = method.memory.clone()
    logits, terms = method.forward_train(student, None, batch)
    # the loss used the previous epoch's predictions of exactly these samples
    target = 0.6 * F.one_hot(batch.y, 10).float() + 0.4 * previous
    torch.testing.assert_close(terms["ce"], losses.soft_cross_entropy(logits, target))
    # then the memory holds this step's predictions there, and nothing else changed
    torch.testing.assert_close(method.memory[batch.index], logits.detach().softmax(1))
    untouched = torch.ones(len(digits.y_train), dtype=torch.bool)
    untouched[batch.index] = False
    assert torch.equal(method.memory[untouched], before[untouched])
    # saved and restored with the training state
    state = {k: v.clone() for k, v in method.state_dict().items()}
    other = kd.methods.create("pskd")
    other.setup(digits.y_train, 10, DEVICE, 0)
    other.load_state_dict(state)
    assert torch.equal(other.memory, method.memory)


def test_pskd_first_epoch_is_cross_entropy(digits):
    """Memory initialised one-hot: in the first epoch the target is the label, whatever alpha_t."""
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).eval()
    method = kd.methods.create("pskd", alpha_T=1.0)
    method.setup(digits.y_train, 10, DEVICE, 0)
    method.on_epoch_start(0, 1)
    assert method.alpha == 1.0
    batch = _fixed_batch(digits)
    logits, terms = method.forward_train(student, None, batch)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, batch.y))


@pytest.mark.parametrize("warmup,expected", [
    (20, {0: 1 / 20, 1: 2 / 20, 9: 0.5, 18: 19 / 20, 19: 1.0, 20: 1.0, 239: 1.0}),
    (5, {0: 0.2, 3: 0.8, 4: 1.0, 10: 1.0}),
    (0, {0: 1.0, 5: 1.0}),
])
def test_dkd_warmup_ramp(warmup, expected):
    """mdistiller: min(epoch / warmup, 1) with epochs counted from 1; ours counts from 0."""
    method = kd.methods.create("dkd", warmup=warmup)
    for epoch, ramp in expected.items():
        method.on_epoch_start(epoch, 240)
        assert method.ramp == pytest.approx(ramp), (epoch, method.ramp)


def test_dkd_terms_are_ramped_tckd_and_nckd(digits, teacher):
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).eval()
    batch = _fixed_batch(digits)
    method = kd.methods.create("dkd", alpha=2.0, beta=6.0, temperature=3.0, ce_weight=0.5, warmup=10)
    method.on_epoch_start(4, 100)
    logits, terms = method.forward_train(student, teacher, batch)
    t_logits = teacher(batch.x)
    torch.testing.assert_close(terms["ce"], 0.5 * F.cross_entropy(logits, batch.y))
    torch.testing.assert_close(terms["tckd"], 0.5 * 2.0 * losses.tckd_loss(logits, t_logits, batch.y, 3.0))
    torch.testing.assert_close(terms["nckd"], 0.5 * 6.0 * losses.nckd_loss(logits, t_logits, batch.y, 3.0))
    # the ablations: TCKD alone, NCKD alone
    assert set(kd.methods.create("dkd", beta=0.0).forward_train(student, teacher, batch)[1]) == {"ce", "tckd"}
    assert set(kd.methods.create("dkd", alpha=0.0).forward_train(student, teacher, batch)[1]) == {"ce", "nckd"}


def test_kd_family_weights(digits, teacher):
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).eval()
    batch = _fixed_batch(digits)
    t_logits = teacher(batch.x)
    for name, hp, ce_w, kd_w in (("kd", {}, 0.1, 0.9), ("takd", {"lambda_": 0.7}, 0.3, 0.7),
                                 ("self_distillation", {}, 0.5, 0.5)):
        logits, terms = kd.methods.create(name, temperature=2.0, **hp).forward_train(student, teacher, batch)
        torch.testing.assert_close(terms["ce"], ce_w * F.cross_entropy(logits, batch.y))
        torch.testing.assert_close(terms["kd"], kd_w * losses.kd_loss(logits, t_logits, 2.0))
    logits, terms = kd.methods.create("dist").forward_train(student, teacher, batch)
    torch.testing.assert_close(terms["dist"], 2.0 * losses.dist_loss(logits, t_logits, 1.0, 1.0, 4.0))


def test_mixup_kd_without_mixup_is_std_scaled_kd(digits, teacher):
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).eval()
    batch = _fixed_batch(digits)
    method = kd.methods.create("mixup_kd", mixup=False)
    method.setup(digits.y_train, 10, DEVICE, 0)
    logits, terms = method.forward_train(student, teacher, batch)
    expected = losses.mixkd_loss(logits, teacher(batch.x), F.one_hot(batch.y, 10).float())
    for k in ("ce", "kd"):
        torch.testing.assert_close(terms[k], expected[k])


def test_zipf_ls_dense_needs_a_gap_head(digits):
    student = kd.models.create("plane2", 10, in_channels=1)
    method = kd.methods.create("zipf_ls", dense=True)
    method.setup(digits.y_train, 10, DEVICE, 0)
    with pytest.raises(ValueError, match="gap_head"):
        method.forward_train(student, None, _fixed_batch(digits))
    # image-level ranking works with any model
    kd.methods.create("zipf_ls").forward_train(student, None, _fixed_batch(digits))


def test_mixup_generator_is_seeded_and_restored(digits):
    batch = _fixed_batch(digits)
    a, b = kd.methods.create("mixup"), kd.methods.create("mixup")
    a.setup(digits.y_train, 10, DEVICE, 0)
    b.setup(digits.y_train, 10, DEVICE, 0)
    assert torch.equal(a.mix(batch)[0], b.mix(batch)[0])
    state = {k: v.clone() for k, v in a.state_dict().items()}
    first = a.mix(batch)[0]
    b.load_state_dict(state)
    assert torch.equal(b.mix(batch)[0], first)


# ------------------------------------------------------------------------------------- registry errors


def test_create_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown method 'hinton'; available: .*\bdkd\b.*\bkd\b"):
        kd.methods.create("hinton")


def test_create_rejects_unknown_hyperparameters():
    with pytest.raises(ValueError, match=r"method 'kd' got unknown hyperparameters \['tau'\]; "
                                         r"it accepts \['ce_weight', 'kd_weight', 'temperature'\]"):
        kd.methods.create("kd", tau=4.0)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        kd.methods.create("ce", temperature=4.0)


@pytest.mark.parametrize("name", ["kd", "takd", "self_distillation", "dkd", "dist", "bake", "mixup_kd", "nkd", "sokd",
                                  "lsskd"])
@pytest.mark.parametrize("T", [0.0, -4.0])
def test_bad_temperature_raises(name, T):
    with pytest.raises(ValueError, match="temperature"):
        kd.methods.create(name, temperature=T)


@pytest.mark.parametrize("name,hp,word", [
    ("bake", {"omega": 1.0}, "omega"), ("bake", {"omega": 1.5}, "omega"), ("bake", {"omega": -0.1}, "omega"),
    ("takd", {"lambda_": 1.2}, "lambda_"), ("label_smoothing", {"smoothing": 1.0}, "smoothing"),
    ("pskd", {"alpha_T": 1.5}, "alpha_T"), ("mixup_kd", {"unmixed_fraction": 1.5}, "unmixed_fraction"),
    ("mixup", {"mixup_alpha": 0.0}, "mixup_alpha"), ("dkd", {"beta": -1.0}, "beta"),
    ("dist", {"gamma": -1.0}, "gamma"), ("kd", {"kd_weight": -0.5}, "kd_weight"),
    ("bake", {"same_class": -1}, "same_class"), ("zipf_ls", {"power": -1.0}, "power"),
    ("mixup_kd", {"sampler": "random"}, "sampler"), ("nkd", {"gamma": -1.0}, "gamma"), ("uskd", {"mu": -0.1}, "mu"),
    ("camkd", {"weighting": "entropy"}, "weighting"), ("camkd", {"weighting": "average"}, "feature term"),
    ("dml", {"teacher_model": "resnet9"}, "teacher_model"), ("switokd", {"teacher_lr_scale": 0.0}, "teacher_lr_scale"),
    ("sokd", {"branch_init": "copy"}, "branch_init"), ("lsskd", {"rotations": 3}, "rotations"),
    ("lsskd", {"alpha_T": 1.5}, "alpha_T"), ("lsskd", {"kl_weight": -1.0}, "kl_weight"),
])
def test_bad_hyperparameters_raise(name, hp, word):
    with pytest.raises(ValueError, match=word):
        kd.methods.create(name, **hp)


class _AuxHead(kd.methods.Method):
    """A method that owns a module: CE plus an auxiliary linear classifier on the pooled features."""

    def build(self, student, teacher, example):
        dim = kd.methods.base.feature_shapes(student, example)["pooled"][0]
        return torch.nn.Linear(dim, self.num_classes)

    def forward_train(self, student, teacher, batch):
        logits, feats = student(batch.x, return_features=True)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "aux": F.cross_entropy(self.owned(feats["pooled"]), batch.y)}


def test_a_method_owns_modules_trained_checkpointed_resumed_and_kept_out_of_the_model(tmp_path, monkeypatch,
                                                                                      killed_at_epoch):
    from kd import train as kd_train

    monkeypatch.setitem(kd.methods.REGISTRY, "aux_head", _AuxHead)
    cfg = kd_train.TrainConfig(model="resnet8", dataset="digits", method="aux_head", train_subset=300,
                               eval_subset=100, epochs=2, batch_size=50, lr=0.05, crop_pad=1, seed=0)
    one = kd_train.fit(cfg, tmp_path / "one", device="cpu", progress=False)
    state = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    head = state["method"]["owned"]
    assert set(head) == {"weight", "bias"}, "the method's module is checkpointed"
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1)
    assert one["params"] == sum(p.numel() for p in student.parameters()), "the head is not in the deployed model"
    assert set(torch.load(tmp_path / "one" / "model.pt", weights_only=True)) == set(student.state_dict())
    assert "train_aux" in kd.runs.Run(tmp_path / "one").history

    with killed_at_epoch(2):  # killed after epoch 1, then resumed: the same run
        kd_train.fit(cfg, tmp_path / "two", device="cpu", progress=False)
    kd_train.fit(cfg, tmp_path / "two", device="cpu", progress=False)
    resumed = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["method"]["owned"]
    for k in head:
        torch.testing.assert_close(resumed[k], head[k], rtol=0, atol=0)
    first = torch.nn.Linear(head["weight"].shape[1], 10)
    assert not torch.equal(head["weight"], first.weight), "the head was optimised"


class _MutualPeer(kd.methods.Method):
    """Online distillation in one loop (DML's shape): the student and a peer network it owns learn
    from the labels and from each other; the peer is evaluated beside the student."""

    def build(self, student, teacher, example):
        torch.manual_seed(1)
        return kd.models.create("plane2", self.num_classes, in_channels=example.shape[1])

    def forward_train(self, student, teacher, batch):
        logits, peer = student(batch.x), self.owned(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y), "peer_ce": F.cross_entropy(peer, batch.y),
                        "kl": losses.kd_loss(logits, peer.detach(), 1.0),
                        "peer_kl": losses.kd_loss(peer, logits.detach(), 1.0)}

    def evaluate(self, eval_loader):
        logits, targets = kd.metrics.predict(self.owned, eval_loader)
        self.owned.train()
        return {"peer_top1": 100 * kd.metrics.accuracy(logits, targets)}


def test_uskd_weak_head_reads_the_second_to_last_stage(digits):
    """USKD's weak head is a linear classifier on the pooled maps of the student's second-to-last
    stage (resnet8: 32 channels), trained with the student; a one-stage model is a clear error."""
    method = kd.methods.create("uskd")
    method.setup(digits.y_train, 10, DEVICE, 0)
    student = kd.models.create("resnet8", 10, in_channels=1)
    example = torch.zeros(2, *digits.x_train.shape[1:])
    head = method.build(student, None, example)
    assert (head.in_features, head.out_features) == (32, 10)
    method.owned = head
    loader = Loader(digits.x_train, digits.y_train, digits.mean, digits.std, batch_size=BATCH, train=True, seed=0)
    _, terms = method.forward_train(student, None, next(iter(loader)))
    terms["uskd"].backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_camkd_feature_term_starts_after_its_warmup(digits, ensemble):
    """The official code leaves the feature term out of epoch 1 (feature_warmup 1, epochs counted from 0
    here); an ensemble of one teacher is refused before any work."""
    method = kd.methods.create("camkd")
    method.setup(digits.y_train, 10, DEVICE, 0)
    student = kd.models.create("resnet8", 10, in_channels=1)
    method.owned = method.build(student, ensemble, torch.zeros(2, *digits.x_train.shape[1:]))
    assert len(method.owned) == 2, "one adapter per teacher"
    batch = next(iter(loader(digits)))
    method.on_epoch_start(0, EPOCHS)
    assert set(method.forward_train(student, ensemble, batch)[1]) == {"ce", "kd"}
    method.on_epoch_start(1, EPOCHS)
    assert set(method.forward_train(student, ensemble, batch)[1]) == {"ce", "kd", "feature"}
    with pytest.raises(ValueError, match="at least 2 teacher"):
        method.build(student, kd.models.Ensemble(list(ensemble.members)[:1]), torch.zeros(2, *digits.x_train.shape[1:]))


def test_networks_trained_together_in_one_loop_each_evaluated(tmp_path, monkeypatch):
    from kd import train as kd_train

    monkeypatch.setitem(kd.methods.REGISTRY, "mutual_peer", _MutualPeer)
    cfg = kd_train.TrainConfig(model="plane2", dataset="digits", method="mutual_peer", train_subset=300,
                               eval_subset=100, epochs=3, batch_size=50, lr=0.05, crop_pad=1, seed=0)
    kd_train.fit(cfg, tmp_path, device="cpu", progress=False)
    hist = kd.runs.Run(tmp_path).history
    assert {"train_peer_ce", "train_peer_kl", "peer_top1"} <= set(hist.columns)
    assert hist["peer_top1"].notna().all() and hist["train_peer_ce"].iloc[-1] < hist["train_peer_ce"].iloc[0]
    assert "owned" in torch.load(tmp_path / "checkpoint.pt", weights_only=False)["method"]


def test_the_co_trained_teacher_starts_as_a_run_of_it_with_the_same_seed(digits):
    """DML's and SwitOKD's teacher is initialised as kd.train.fit initialises a run of its
    architecture with the run's seed (so the teacher trained alone is its paired control), and
    building it leaves the global random state as it was."""
    method = kd.methods.create("switokd", teacher_model="resnet14")
    method.setup(digits.y_train, digits.num_classes, DEVICE, 3)
    torch.manual_seed(3)
    kd.models.create("resnet8", digits.num_classes, in_channels=1)  # the student, built first as in fit
    state = torch.get_rng_state()
    teacher = method.build(None, None, torch.zeros(2, *digits.x_train.shape[1:]))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(3)
    alone = kd.models.create("resnet14", digits.num_classes, in_channels=1)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), alone.state_dict().values()))


def test_switokd_expert_mode_pauses_the_teacher_weights_and_optimiser_state(digits, monkeypatch):
    """In expert mode the teacher's terms depend on no parameter, so train_step's
    zero_grad(set_to_none=True) leaves its gradients None and SGD skips it: no update, no momentum
    step, no weight decay (its momentum buffers, filled by earlier learning-mode steps, stay as they
    were). As in the official code, its BatchNorm running statistics still move (it runs forward in
    training mode). The student learns in both modes; the teacher's group keeps its lr scale."""
    import kd.methods.switokd as switokd

    method = kd.methods.create("switokd", teacher_model="resnet8", teacher_lr_scale=2.0)
    torch.manual_seed(0)
    student = kd.models.create("plane2", digits.num_classes, in_channels=1).train()
    data = loader(digits)
    method.setup(data.y, digits.num_classes, DEVICE, 0)
    method.owned = method.build(student, None, torch.zeros(2, *digits.x_train.shape[1:])).train()
    opt = kd_train.make_optimizer(kd_train.TrainConfig(lr=0.05), student, method)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1]
    modes = [False, False, True, True, False]
    decisions = iter(modes)
    monkeypatch.setattr(switokd, "switokd_expert_mode", lambda *args: torch.tensor(next(decisions)))
    clone = lambda tensors: [t.detach().clone() for t in tensors]  # noqa: E731
    teacher_params = list(method.owned.parameters())
    bn = next(m for m in method.owned.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for expert, batch in zip(modes, data):
        weights, students = clone(teacher_params), clone(student.parameters())
        buffers = clone(opt.state[p]["momentum_buffer"] for p in teacher_params) if opt.state else None
        running = bn.running_mean.clone()
        _, terms = kd_train.train_step(method, student, None, batch, opt, kd_train.autocast_settings(DEVICE))
        assert terms["expert"].item() == float(expert) and {"gap", "threshold"} <= set(terms)
        moved = [not torch.equal(a, b) for a, b in zip(weights, teacher_params)]
        assert all(not torch.equal(a, b) for a, b in zip(students, student.parameters()))
        assert not torch.equal(running, bn.running_mean)
        if expert:
            assert not any(moved) and all(p.grad is None for p in teacher_params)
            assert all(torch.equal(b, opt.state[p]["momentum_buffer"]) for b, p in zip(buffers, teacher_params))
        else:
            assert all(moved)


def _sokd(digits, teacher, **hp):
    method = kd.methods.create("sokd", **hp)
    method.setup(digits.y_train, digits.num_classes, DEVICE, 3)
    student = kd.models.create("resnet8", digits.num_classes, in_channels=1)
    method.owned = method.build(student, teacher, torch.zeros(2, *digits.x_train.shape[1:]))
    return method, student


def test_sokd_branch_starts_as_the_teacher_or_untrained(digits, teacher):
    """branch_init "teacher": the branch is a copy of the teacher's last stage and head reading the
    teacher's second-to-last stage, so before any step it predicts exactly what the teacher does (eval
    mode); "random": the same modules freshly initialised from the run's seed (the official code's
    untrained branch), the global random state left as it was."""
    batch = next(iter(Loader(digits.x_eval, digits.y_eval, digits.mean, digits.std, batch_size=100, train=False)))
    method, _ = _sokd(digits, teacher)
    method.owned.eval()
    branch, t_logits = method.branch_logits(teacher, batch.x)
    torch.testing.assert_close(branch, t_logits, rtol=0, atol=0)
    assert method.evaluate([batch])["branch_top1"] == 100 * kd.metrics.accuracy(t_logits, batch.y)
    random, student = _sokd(digits, teacher, branch_init="random")
    state = torch.get_rng_state()
    random.build(student, teacher, torch.zeros(2, *digits.x_train.shape[1:]))
    assert torch.equal(torch.get_rng_state(), state)
    again, _ = _sokd(digits, teacher, branch_init="random")
    w = [m.owned.classifier.weight for m in (method, random, again)]
    assert not torch.equal(w[0], w[1]) and torch.equal(w[1], w[2]), "seeded, and not the teacher's"
    with pytest.raises(ValueError, match="at least two stages"):
        _sokd(digits, kd.models.Ensemble([teacher, teacher]))


def test_sokd_terms_train_each_network_only_through_its_own_loss(digits, teacher):
    """The student's terms (ce, kd) reach the student only, the branch's (branch_ce, branch_kd_teacher,
    branch_kd_student) the branch only; the frozen teacher gets no gradient (official trainer/sokd.py:
    every partner detached, the teacher's features detached before the branch)."""
    method, student = _sokd(digits, teacher)
    frozen = [None if p.grad is None else p.grad.clone() for p in teacher.parameters()]
    batch = next(iter(loader(digits)))
    _, terms = method.forward_train(student, teacher, batch)
    assert set(terms) == {"ce", "kd", "branch_ce", "branch_kd_teacher", "branch_kd_student"}
    for names, trained, untouched in ((("ce", "kd"), student, method.owned),
                                      (("branch_ce", "branch_kd_teacher", "branch_kd_student"), method.owned, student)):
        for net in (student, method.owned):
            net.zero_grad(set_to_none=True)
        sum(terms[k] for k in names).backward(retain_graph=True)
        assert all(p.grad is not None for p in trained.parameters()), names
        assert all(p.grad is None for p in untouched.parameters()), names
        assert all((g is None and p.grad is None) or torch.equal(g, p.grad)
                   for g, p in zip(frozen, teacher.parameters())), names


def _lsskd(digits, **hp):
    torch.manual_seed(0)
    student = kd.models.create("resnet8", 10, in_channels=1).train()
    method = kd.methods.create("lsskd", **hp)
    method.setup(digits.y_train, 10, DEVICE, 0)
    method.owned = method.build(student, None, torch.zeros(2, *digits.x_train.shape[1:]))
    return method, student


def test_lsskd_heads_memories_and_targets(digits):
    """One auxiliary head after each stage but the stem, over the 10 x 4 joint labels; the memories start one-hot
    (the final head's N x C, each head's N x 4 x 40); a step's targets soften the labels with exactly these
    samples' previous predictions (PS-KD's a_t, the joint label's for each rotation), then the memories hold this
    step's predictions there and nothing else changes; they are saved and restored with the training state;
    the heads stay out of the deployed network."""
    method, student = _lsskd(digits)
    assert len(method.owned) == len(student.stages) - 1
    assert all(h.classifier.out_features == 40 for h in method.owned)
    n = len(digits.y_train)
    assert torch.equal(method.memory["final"], F.one_hot(digits.y_train, 10).float())
    joint = F.one_hot(4 * digits.y_train.view(-1, 1) + torch.arange(4), 40).float()
    assert method.memory["aux"].shape == (3, n, 4, 40) and all(torch.equal(m, joint) for m in method.memory["aux"])
    method.on_epoch_start(49, 100)
    batch = _fixed_batch(digits)
    B = len(batch.index)
    prev_final = torch.softmax(torch.randn(B, 10), 1)
    prev_aux = torch.softmax(torch.randn(3, B, 4, 40), -1)
    method.memory["final"][batch.index], method.memory["aux"][:, batch.index] = prev_final, prev_aux
    before = {k: v.clone() for k, v in method.memory.items()}
    logits, terms = method.forward_train(student, None, batch)
    student.eval()
    method.owned.eval()
    assert set(terms) == {"ce", "aux_ce", "aux_kl", "aux_feature"}
    target = 0.6 * F.one_hot(batch.y, 10).float() + 0.4 * prev_final
    torch.testing.assert_close(terms["ce"], losses.soft_cross_entropy(logits, target), rtol=0, atol=0)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[batch.index] = False
    torch.testing.assert_close(method.memory["final"][batch.index], logits.detach().softmax(1))
    assert torch.equal(method.memory["final"][untouched], before["final"][untouched])
    assert torch.equal(method.memory["aux"][:, untouched], before["aux"][:, untouched])
    for h in range(3):
        rows = method.memory["aux"][h, batch.index]  # B x 4 x 40: this step's predictions on the rotations
        assert torch.allclose(rows.sum(-1), torch.ones(B, 4)) and not torch.equal(rows, prev_aux[h])
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in method.state_dict().items()}
    other, _ = _lsskd(digits)
    other.load_state_dict(state)
    assert all(torch.equal(other.memory[k], method.memory[k]) for k in method.memory)
    assert not any(k.startswith("owned") for k in student.state_dict())


def test_lsskd_aux_targets_are_joint_labels_softened_per_rotation(digits):
    """The heads' targets: (1 - a) onehot(4 y + k) + a q_prev(rotation k of x), per head (written out here
    with a loop over samples and rotations); one rotation means class labels and the batch itself."""
    method, student = _lsskd(digits, kl_weight=0.0, feature_weight=0.0)
    method.on_epoch_start(99, 100)  # a = 0.8
    batch = _fixed_batch(digits)
    B = len(batch.index)
    prev = torch.softmax(torch.randn(3, B, 4, 40), -1)
    method.memory["aux"][:, batch.index] = prev
    x4 = torch.stack([torch.rot90(batch.x, k, (2, 3)) for k in range(4)], 1).flatten(0, 1)
    torch.manual_seed(1)
    _, feats = student(x4, return_features=True)  # BatchNorm in train mode: the same batch statistics as the method's
    expected = 0.0
    for h, head in enumerate(method.owned):
        z, _ = head(feats["maps"][h + 1])
        t = torch.zeros(4 * B, 40)
        for i in range(B):
            for k in range(4):
                t[4 * i + k] = 0.2 * F.one_hot(4 * batch.y[i] + k, 40).float() + 0.8 * prev[h, i, k]
        expected = expected + losses.soft_cross_entropy(z, t)
    _, terms = method.forward_train(student, None, batch)
    torch.testing.assert_close(terms["aux_ce"], expected)
    one, net = _lsskd(digits, rotations=1)
    logits, _ = one.forward_train(net, None, batch)
    assert logits.shape == (B, 10) and one.memory["aux"].shape[-2:] == (1, 10)
