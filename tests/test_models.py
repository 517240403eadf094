import itertools

import pytest
import torch

from kd import models

# Reference parameter counts. int: exact; float: millions, rounded to 3 decimals.
PARAMS_CIFAR100 = {
    "resnet8": 0.084, "resnet14": 0.181, "resnet20": 278_324, "resnet32": 472_756, "resnet44": 0.667,
    "resnet56": 861_620, "resnet110": 1_736_564, "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "resnet50": 23_705_252, "resnet18": 11.220, "resnet34": 21.328,
    "wrn_16_1": 0.181, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg13": 9_462_180,
    "mobilenetv2": 812_836, "shufflenetv1": 949_258, "shufflenetv2": 1_355_528,
    "plane2": 0.215, "plane4": 0.476, "plane6": 1.107, "plane8": 1.246, "plane10": 2.931,
}
PARAMS_CIFAR10 = {"plane2": 0.013, "plane4": 0.037, "plane6": 0.083, "plane8": 0.328, "plane10": 2.488}
CASES = [(n, 100, c) for n, c in PARAMS_CIFAR100.items()] + [(n, 10, c) for n, c in PARAMS_CIFAR10.items()]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,num_classes,expected", CASES)
def test_param_count(name, num_classes, expected):
    n = n_params(models.create(name, num_classes))
    if isinstance(expected, int):
        assert n == expected
    else:
        assert round(n / 1e6, 3) == expected, n


def test_available_is_sorted_and_complete():
    names = models.available()
    assert names == sorted(names)
    assert set(PARAMS_CIFAR100) | {"vgg11", "vgg16", "vgg19"} == set(names)


@pytest.mark.parametrize("name", models.available())
def test_forward_and_features(name):
    torch.manual_seed(0)
    for (in_channels, size), num_classes in itertools.product([(3, 32), (1, 28)], [10, 100]):
        model = models.create(name, num_classes, in_channels).eval()
        x = torch.randn(2, in_channels, size, size)
        with torch.no_grad():
            logits = model(x)
            logits2, feats = model(x, return_features=True)
        assert logits.shape == (2, num_classes)
        torch.testing.assert_close(logits, logits2)
        assert isinstance(model.classifier, torch.nn.Linear)
        assert feats["pooled"].shape == (2, model.classifier.in_features)
        assert len(feats["maps"]) > 0 and all(m.dim() == 4 and m.shape[0] == 2 for m in feats["maps"])
        assert model.gap_head == (not name.startswith("plane"))


@pytest.mark.parametrize("name", [n for n in models.available() if not n.startswith("plane")])
def test_gap_head_dense_logits(name):
    torch.manual_seed(0)
    model = models.create(name, 7).eval().double()
    # non-trivial BN statistics so the check does not pass by accident
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        logits, feats = model(torch.randn(2, 3, 32, 32, dtype=torch.float64), return_features=True)
        dense = model.classifier(feats["maps"][-1].permute(0, 2, 3, 1))  # [B, H, W, classes]
    torch.testing.assert_close(dense.mean(dim=(1, 2)), logits)


@pytest.mark.parametrize("name", models.available())
def test_channels_last_autocast_and_backward(name):
    torch.manual_seed(0)
    model = models.create(name, 10).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = model(x, return_features=True)
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 10)
    logits.float().sum().backward()  # train mode: catches in-place ops breaking autograd
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.contiguous()), rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="available models: .*resnet8.*wrn_40_2"):
        models.create("resnet9000", 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("resnet8", 1)
    with pytest.raises(ValueError, match="in_channels"):
        models.create("resnet8", 10, in_channels=0)
    for channels in ([], [2], [0, 5]):
        with pytest.raises(ValueError, match="channels must be some of the input's channels 0..1"):
            models.create("resnet8", 10, in_channels=2, channels=channels)


def test_a_model_sees_only_the_channels_it_is_given():
    """`channels` (a sample's views, kd.data.add_views): the network reads those input channels only; they
    are not part of its state dict, so its weights load into a network built the same way."""
    torch.manual_seed(0)
    model = models.create("resnet8", 10, in_channels=3, channels=[2]).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model(torch.cat([torch.randn(2, 2, 28, 28), x[:, 2:]], 1)))
        plain = models.create("resnet8", 10, in_channels=1).eval()
        plain.load_state_dict(model.state_dict())
        assert torch.equal(plain(x[:, 2:]), out)
