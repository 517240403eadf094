"""CIFAR-style teacher/student networks for knowledge distillation.

Architectures follow the reference codebases the KD literature reports numbers with:
- RepDistiller (HobbitLong/RepDistiller): CIFAR ResNets (resnet8..110, 8x4, 32x4), resnetv2 (resnet18/34/50),
  WRN, VGG-BN, MobileNetV2 (width 0.5, "mobile_half"), ShuffleNetV1/V2.
- TAKD (imirzadeh/Teacher-Assistant-Knowledge-Distillation): the plain CNNs plane2..plane10.

Every model is a `Net`: a list of stages (each stage output is a feature map), a pooling head and one
final `nn.Linear` called `classifier`.

    model = create("resnet32x4", num_classes=100)
    logits = model(x)                                   # [B, num_classes]
    logits, feats = model(x, return_features=True)      # feats = {"pooled": [B, D], "maps": [4D, ...]}

For `gap_head` models (global average pool + Linear) `model.classifier(feats["maps"][-1].permute(0, 2, 3, 1))`
gives per-location logits whose spatial mean equals the logits.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# building blocks


def conv_bn(cin, cout, k=3, stride=1, groups=1, relu=True, bias=False):
    """Conv(k x k, 'same' padding) -> BatchNorm -> optional ReLU."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


class Residual(nn.Module):
    """merge(body(x), shortcut(x)) followed by an optional ReLU; merge is a sum or a channel concat."""

    def __init__(self, body, shortcut=None, concat=False, relu=True):
        super().__init__()
        self.body = body
        self.shortcut = nn.Identity() if shortcut is None else shortcut
        self.concat, self.relu = concat, relu

    def forward(self, x):
        out, skip = self.body(x), self.shortcut(x)
        out = torch.cat([out, skip], 1) if self.concat else out + skip
        return F.relu(out) if self.relu else out


def projection(cin, cout, stride):
    """ResNet shortcut: identity, or 1x1 conv + BN when the shape changes."""
    return None if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, relu=False)


def basic_block(cin, cout, stride):
    body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, relu=False))
    return Residual(body, projection(cin, cout, stride))


def bottleneck_block(cin, cout, stride):
    mid = cout // 4
    body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride), conv_bn(mid, cout, 1, relu=False))
    return Residual(body, projection(cin, cout, stride))


class WideBlock(nn.Module):
    """Pre-activation WRN block; with a shape change the 1x1 shortcut conv sees the activated input."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        a = self.pre(x)
        return self.body(a) + (x if self.shortcut is None else self.shortcut(a))


def inverted_residual(cin, cout, stride, expand):
    hid = cin * expand  # RepDistiller keeps the 1x1 expansion conv even when expand == 1
    body = nn.Sequential(conv_bn(cin, hid, 1), conv_bn(hid, hid, 3, stride, groups=hid),
                         conv_bn(hid, cout, 1, relu=False))
    return Residual(body, relu=False) if stride == 1 and cin == cout else body


def shufflev1_block(cin, cout, stride, groups):
    """Stride 2 concatenates an avg-pooled input, so the body only produces cout - cin channels."""
    if stride == 2:
        cout -= cin
    mid = cout // 4
    g1 = 1 if cin == 24 else groups  # the first block's input (the 24-channel stem) is not grouped
    body = nn.Sequential(conv_bn(cin, mid, 1, groups=g1), ChannelShuffle(g1),
                         conv_bn(mid, mid, 3, stride, groups=mid), conv_bn(mid, cout, 1, groups=groups, relu=False))
    shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
    return Residual(body, shortcut, concat=stride == 2)


class ShuffleV2Block(nn.Module):
    """Stride 1: split channels, transform one half. Stride 2: both branches see x. Then concat + shuffle."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        mid = cout // 2
        rin = cin if stride == 2 else cin // 2
        self.left = nn.Identity() if stride == 1 else nn.Sequential(
            conv_bn(cin, cin, 3, 2, groups=cin, relu=False), conv_bn(cin, mid, 1))
        self.right = nn.Sequential(conv_bn(rin, mid, 1), conv_bn(mid, mid, 3, stride, groups=mid, relu=False),
                                   conv_bn(mid, mid, 1))

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1) if self.stride == 1 else (x, x)
        return channel_shuffle(torch.cat([self.left(x1), self.right(x2)], 1), 2)


# ----------------------------------------------------------------------------------------------------------
# the network container


def initialise(module: nn.Module) -> None:
    """The zoo's initialisation, from the global generator: convolutions Kaiming-normal (fan out),
    BatchNorm to identity, linear layers PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Net(nn.Module):
    """stages -> pool -> hidden -> classifier. Default pool is global average pooling (gap_head=True)."""

    def __init__(self, stages, classifier, pool=None, hidden=None):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.gap_head = pool is None
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if pool is None else pool
        self.hidden = nn.Identity() if hidden is None else hidden
        self.classifier = classifier
        # the input channels the network sees (`create`'s `channels`; None: all); not in the state dict
        self.register_buffer("seen_channels", None, persistent=False)
        initialise(self)

    def forward(self, x, return_features=False):
        if self.seen_channels is not None:
            x = x.index_select(1, self.seen_channels)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        pooled = self.hidden(self.pool(x))
        logits = self.classifier(pooled)
        return (logits, {"pooled": pooled, "maps": maps}) if return_features else logits


# ----------------------------------------------------------------------------------------------------------
# architectures: each builder takes (num_classes, in_channels, **config) and returns a Net


def resnet(num_classes, in_channels, block, stem, widths, depths):
    """Stem conv, then one stage per width (stride 1 for the first, 2 after). Stage outputs are the maps."""
    stages, cin = [conv_bn(in_channels, stem, 3)], stem
    for i, (width, depth) in enumerate(zip(widths, depths)):
        blocks = []
        for j in range(depth):
            blocks.append(block(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width
        stages.append(nn.Sequential(*blocks))
    return Net(stages, nn.Linear(cin, num_classes))


def cifar_resnet(num_classes, in_channels, depth, widths):
    """RepDistiller models/resnet.py: BasicBlocks, depth = 6n + 2, widths = (stem, stage1, stage2, stage3)."""
    n = (depth - 2) // 6
    return resnet(num_classes, in_channels, basic_block, widths[0], widths[1:], (n, n, n))


def wide_resnet(num_classes, in_channels, depth, widen):
    n, widths = (depth - 4) // 6, (16 * widen, 32 * widen, 64 * widen)
    stages, cin = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)], 16
    for i, width in enumerate(widths):
        stages.append(nn.Sequential(*[WideBlock(cin if j == 0 else width, width, 2 if i > 0 and j == 0 else 1)
                                      for j in range(n)]))
        cin = width
    stages[-1].extend([nn.BatchNorm2d(cin), nn.ReLU(inplace=True)])  # final BN-ReLU before pooling
    return Net(stages, nn.Linear(cin, num_classes))


VGG_CONFIGS = {  # conv widths per stage; max-pool between stages 0/1, 1/2, 2/3 (32x32 input -> 4x4)
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _override_widths(stage_widths, widths):
    """The per-stage conv widths with the convolutions' widths replaced, in order, by `widths`
    (None: unchanged); a student shaped from a pruned teacher (kd.prune.shaped_widths)."""
    if widths is None:
        return stage_widths
    n = sum(len(s) for s in stage_widths)
    if len(widths) != n or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be {n} positive integers, one per convolution in order, got {widths!r}")
    it = iter(widths)
    return [[next(it) for _ in s] for s in stage_widths]


def vgg(num_classes, in_channels, config, widths=None):
    stages, cin = [], in_channels
    for i, stage_widths in enumerate(_override_widths(VGG_CONFIGS[config], widths)):
        layers = [nn.MaxPool2d(2)] if 1 <= i <= 3 else []
        for w in stage_widths:
            layers.append(conv_bn(cin, w, 3, bias=True))
            cin = w
        stages.append(nn.Sequential(*layers))
    return Net(stages, nn.Linear(cin, num_classes))


def mobilenetv2(num_classes, in_channels, expand=6, width=0.5):
    # (expand, channels, blocks, stride) per group; the maps are taken after groups 1, 2, 4 and 6 as in RepDistiller
    settings = [(1, 16, 1, 1), (expand, 24, 2, 1), (expand, 32, 3, 2), (expand, 64, 4, 2),
                (expand, 96, 3, 1), (expand, 160, 3, 2), (expand, 320, 1, 1)]
    cin = int(32 * width)
    stages, blocks = [conv_bn(in_channels, cin, 3, 2)], []
    for i, (t, c, n, s) in enumerate(settings):
        for j in range(n):
            blocks.append(inverted_residual(cin, int(c * width), s if j == 0 else 1, t))
            cin = int(c * width)
        if i in (1, 2, 4, 6):
            stages.append(nn.Sequential(*blocks))
            blocks = []
    last = int(1280 * width) if width > 1.0 else 1280
    stages[-1].append(conv_bn(cin, last, 1))
    return Net(stages, nn.Linear(last, num_classes))


def shufflenetv1(num_classes, in_channels, widths=(240, 480, 960), depths=(4, 8, 4), groups=3):
    stages, cin = [conv_bn(in_channels, 24, 1)], 24
    for width, depth in zip(widths, depths):
        stages.append(nn.Sequential(*[shufflev1_block(cin if j == 0 else width, width, 2 if j == 0 else 1, groups)
                                      for j in range(depth)]))
        cin = width
    return Net(stages, nn.Linear(cin, num_classes))


def shufflenetv2(num_classes, in_channels, widths=(116, 232, 464), depths=(3, 7, 3), last=1024):
    """Each stage: a stride-2 block followed by `depth` stride-1 blocks (RepDistiller net_size=1)."""
    stages, cin = [conv_bn(in_channels, 24, 1)], 24
    for width, depth in zip(widths, depths):
        stages.append(nn.Sequential(ShuffleV2Block(cin, width, 2), *[ShuffleV2Block(width, width, 1)
                                                                      for _ in range(depth)]))
        cin = width
    stages[-1].append(conv_bn(cin, last, 1))
    return Net(stages, nn.Linear(last, num_classes))


PLANE_BOOKS = {  # TAKD plain_cnn_cifar.py; the final FC{num_classes} layer is implied
    10: {2: "Conv16 MaxPool Conv16 MaxPool",
         4: "Conv16 Conv16 MaxPool Conv32 Conv32 MaxPool",
         6: "Conv16 Conv16 MaxPool Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool",
         8: "Conv16 Conv16 MaxPool Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool FC64",
         10: "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool "
             "Conv256 Conv256 Conv256 Conv256 MaxPool FC128"},
    100: {2: "Conv32 MaxPool Conv32 MaxPool",
          4: "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool",
          6: "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128",
          8: "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool Conv256 Conv256 MaxPool FC64",
          10: "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool "
              "Conv256 Conv256 Conv256 Conv256 MaxPool FC512"},
}


def plane(num_classes, in_channels, depth, widths=None):
    """TAKD plain CNN: conv-BN-ReLU stages split by 2x2 max-pools, flatten, FC(-ReLU) layers.

    The CIFAR-10 book is used for num_classes <= 10, the CIFAR-100 book otherwise. The pooling before the
    flatten is adaptive to the spatial size a 32x32 input has there, so 32x32 input reproduces TAKD exactly
    (parameter count and function) and other sizes (28x28) still fit the first FC layer.
    """
    tokens = PLANE_BOOKS[10 if num_classes <= 10 else 100][depth].split()
    groups = " ".join(t for t in tokens if not t.startswith("FC")).split("MaxPool")
    stage_widths = _override_widths([[int(t[4:]) for t in g.split()] for g in groups if g.strip()], widths)
    stages, cin = [], in_channels
    for i, group in enumerate(stage_widths):
        layers = [nn.MaxPool2d(2)] if i > 0 else []
        for w in group:
            layers.append(conv_bn(cin, w, 3, bias=True))
            cin = w
        stages.append(nn.Sequential(*layers))
    size = 32 >> (len(groups) - 1)  # spatial size at the flatten for a 32x32 input
    hidden, fin = [], cin * size * size
    for t in tokens:
        if t.startswith("FC"):
            hidden += [nn.Linear(fin, int(t[2:])), nn.ReLU(inplace=True)]
            fin = int(t[2:])
    pool = nn.Sequential(nn.AdaptiveMaxPool2d(size), nn.Flatten())
    return Net(stages, nn.Linear(fin, num_classes), pool=pool, hidden=nn.Sequential(*hidden))


# ----------------------------------------------------------------------------------------------------------
# registry

_MODELS = {
    **{f"resnet{d}": partial(cifar_resnet, depth=d, widths=(16, 16, 32, 64)) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": partial(cifar_resnet, depth=8, widths=(32, 64, 128, 256)),
    "resnet32x4": partial(cifar_resnet, depth=32, widths=(32, 64, 128, 256)),
    "resnet18": partial(resnet, block=basic_block, stem=64, widths=(64, 128, 256, 512), depths=(2, 2, 2, 2)),
    "resnet34": partial(resnet, block=basic_block, stem=64, widths=(64, 128, 256, 512), depths=(3, 4, 6, 3)),
    "resnet50": partial(resnet, block=bottleneck_block, stem=64, widths=(256, 512, 1024, 2048), depths=(3, 4, 6, 3)),
    **{f"wrn_{d}_{w}": partial(wide_resnet, depth=d, widen=w) for d in (16, 40) for w in (1, 2)},
    **{name: partial(vgg, config=name) for name in VGG_CONFIGS},
    "mobilenetv2": mobilenetv2,
    "shufflenetv1": shufflenetv1,
    "shufflenetv2": shufflenetv2,
    **{f"plane{d}": partial(plane, depth=d) for d in (2, 4, 6, 8, 10)},
}


class Ensemble(nn.Module):
    """Trained networks as one teacher: its output is the log of the members' mean softmax, so
    softmax(output) is the ensemble's average prediction (Stanton et al. 2021) and every method
    that distils from `teacher(x)` distils from the ensemble. `members` gives each network
    (methods that weigh several teachers, e.g. CA-MKD, use them one by one)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def classifier(self):  # the class count, for the training loop's checks
        return self.members[0].classifier

    def forward(self, x):
        return ensemble_log_probs([m(x) for m in self.members])


def ensemble_log_probs(member_logits) -> torch.Tensor:
    """The log of the members' mean softmax: an ensemble's prediction as logits (Stanton et al. 2021)."""
    probs = torch.stack([z.float().softmax(1) for z in member_logits]).mean(0)
    return probs.clamp_min(1e-12).log()


def available():
    return sorted(_MODELS)


def shapeable(name) -> bool:
    """Whether `name` takes per-convolution `widths` (the plain networks: VGG and TAKD's plane CNNs)."""
    return getattr(_MODELS.get(name), "func", None) in (vgg, plane)


def create(name, num_classes, in_channels=3, widths=None, channels=None):
    """Build model `name` for inputs with `in_channels` channels (32x32 CIFAR or 28x28 grayscale);
    `widths`: the plain networks' convolution widths in order, replacing the architecture's own;
    `channels`: the input channels it sees (a sample's views, kd.data.add_views), None: all."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(available())}")
    if widths is not None and not shapeable(name):
        raise ValueError(f"{name!r} takes no widths; only the plain networks do "
                         f"({', '.join(n for n in available() if shapeable(n))})")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if channels is not None and (not channels or not set(channels) <= set(range(in_channels))):
        raise ValueError(f"channels must be some of the input's channels 0..{in_channels - 1}, got {channels!r}")
    model = _MODELS[name](num_classes, in_channels if channels is None else len(channels),
                          **({} if widths is None else {"widths": list(widths)}))
    if channels is not None:
        model.seen_channels = torch.tensor(list(channels))
    return model
