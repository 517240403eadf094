"""Pruning, for derived runs: a trained network's weights removed, then the network fine-tuned
with the removed weights held at zero.

    dense = TrainConfig(model="resnet20", epochs=30)
    pruned = dense.replace(init_from=dense, prune={"amount": 0.5})     # half of the conv and linear weights
    round2 = pruned.replace(init_from=pruned, prune={"amount": 0.2})   # iterative: 20% of what remains

A run with `init_from` starts from that run's final weights (a fine-tune with its own schedule);
with `prune` too, the weights are first pruned globally and unstructured: every prunable weight
(the `layers` kind) ranked together by a score, and the `amount` fraction of the weights still
non-zero with the lowest scores set to zero. Weights pruned in an earlier round stay pruned, so n
rounds of 0.2 leave 0.8^n: Prune-then-distill's iterative pruning with learning-rate rewinding
(Park & No, ECCV 2022: each round retrains with the full schedule from the previous round's
weights). A score maps (model, weights, data) to a tensor per weight, `data` being the run's
Dataset: "magnitude" (|w|) and "prue" (PrUE's gradient score on the training images).

A run with `shape_from` (a pruned run of the same plain network) is a student whose convolution
widths come from that run's surviving weights (`shaped_widths`): Prune-then-distill's student.
"""
from __future__ import annotations

import torch
from torch import nn

from kd import data as kd_data

LAYERS = {"conv": (nn.Conv2d,), "linear": (nn.Linear,), "conv+linear": (nn.Conv2d, nn.Linear)}
DEFAULTS = {"score": "magnitude", "layers": "conv+linear"}


def magnitude(model: nn.Module, weights: dict[str, torch.Tensor], data=None) -> dict[str, torch.Tensor]:
    """|w|: the smallest weights go first (global magnitude pruning)."""
    return {name: w.detach().abs() for name, w in weights.items()}


def prue(model: nn.Module, weights: dict[str, torch.Tensor], data: "kd_data.Dataset") -> dict[str, torch.Tensor]:
    """PrUE, prediction uncertainty enlargement (Wang et al., ECML-PKDD 2022; docs/papers.md). With
    p_i = softmax(f(x_i))_{y_i} in eval mode and pbar_c the mean of p_i over class c (a constant), the
    score of weight w is |w * d/dw sum_i |pbar_{y_i} - p_i||, i.e. the gradient with respect to a
    mask multiplying w, summed over the training images: the weights the spread of the true-class
    probabilities around their class means depends on least go first. The official code sees
    augmented images; here the training images as they are (both passes see the same images)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = kd_data.Loader(data.x_train, data.y_train, data.mean, data.std, batch_size=500, train=False, device=device)
    with torch.no_grad():
        p = torch.cat([model(b.x).float().softmax(1).gather(1, b.y.view(-1, 1)).flatten() for b in loader])
    y = data.y_train.to(device)
    pbar = torch.zeros(data.num_classes, device=device).index_add_(0, y, p) / torch.bincount(
        y, minlength=data.num_classes).clamp_min(1)
    grads = {name: torch.zeros_like(w) for name, w in weights.items()}
    for b in loader:
        p_b = model(b.x).float().softmax(1).gather(1, b.y.view(-1, 1)).flatten()
        objective = (pbar[b.y] - p_b).abs().sum()
        for name, g in zip(weights, torch.autograd.grad(objective, list(weights.values()))):
            grads[name] += g
    model.train(was_training)
    return {name: (w.detach() * grads[name]).abs() for name, w in weights.items()}


SCORES = {"magnitude": magnitude, "prue": prue}


def resolved(spec: dict) -> dict:
    """The pruning settings with every default spelled out (part of a run's identity)."""
    return {**DEFAULTS, **spec}


def check(spec: dict) -> None:
    """A clear error for bad pruning settings, before any work starts."""
    if not isinstance(spec, dict):
        raise ValueError(f"prune must be a dict like {{'amount': 0.5}}, got {spec!r}")
    unknown = set(spec) - {"amount", *DEFAULTS}
    if unknown:
        raise ValueError(f"unknown prune setting(s) {sorted(unknown)}; known: amount, {', '.join(DEFAULTS)}")
    amount = spec.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < 1:
        raise ValueError(f"prune amount is the fraction of the remaining weights to remove, in (0, 1); got {amount!r}")
    s = resolved(spec)
    if s["score"] not in SCORES:
        raise ValueError(f"unknown prune score {s['score']!r}; known: {', '.join(SCORES)}")
    if s["layers"] not in LAYERS:
        raise ValueError(f"unknown prune layers {s['layers']!r}; known: {', '.join(LAYERS)}")


def prunable(model: nn.Module, layers: str = DEFAULTS["layers"]) -> dict[str, torch.Tensor]:
    """The weight tensors pruning acts on (biases and BatchNorm are never pruned), by parameter name."""
    kinds = LAYERS[layers]
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, kinds)}


def masks(model: nn.Module, spec: dict, data: "kd_data.Dataset | None" = None) -> dict[str, torch.Tensor]:
    """Boolean keep-masks, by parameter name: the weights still non-zero, less the `amount`
    fraction of them with the lowest scores (ranked globally; ties broken by position). `data`:
    the run's Dataset, for scores computed on its training images (PrUE)."""
    s = resolved(spec)
    weights = prunable(model, s["layers"])
    if data is None and s["score"] != "magnitude":
        raise ValueError(f"prune score {s['score']!r} is computed on the training images: pass data=")
    scores = SCORES[s["score"]](model, weights, data)
    alive = torch.cat([(w.detach() != 0).flatten() for w in weights.values()])
    flat = torch.cat([scores[name].flatten().float() for name in weights])
    alive_idx = alive.nonzero().flatten()
    n_remove = round(s["amount"] * len(alive_idx))
    keep = alive.clone()
    keep[alive_idx[torch.argsort(flat[alive_idx], stable=True)[:n_remove]]] = False
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return out


def hold(model: nn.Module, keep: dict[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(weight, 0/1 mask in the weight's dtype) pairs, resolved once, for `apply` after every step."""
    params = dict(model.named_parameters())
    return [(params[name], mask.to(params[name].dtype)) for name, mask in keep.items()]


@torch.no_grad()
def apply(held: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Zero the pruned weights (after pruning, and after every optimiser step while fine-tuning)."""
    for weight, mask in held:
        weight.mul_(mask)


def sparsity(model: nn.Module, layers: str = DEFAULTS["layers"]) -> float:
    """The fraction of the prunable weights that are zero."""
    weights = prunable(model, layers)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / sum(w.numel() for w in weights.values())


def shaped_widths(model: nn.Module) -> list[int]:
    """The convolution widths of a student shaped from a pruned plain network (Park & No, ECCV 2022,
    docs/papers.md): each convolution keeps as many weights as the pruned one has non-zero,
    c'_l = round(nonzero_l / (k_l^2 c'_{l-1})) (at least 1), c'_0 the input channels. The official
    plan builder divides by 3 c'_{l-1} instead of 9 c'_{l-1} after the first layer; this is the rule
    as the paper states it."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs or any(c.groups != 1 for c in convs):
        raise ValueError("shaped_widths needs a plain network of ungrouped convolutions (VGG, plane)")
    widths, cin = [], convs[0].in_channels
    for conv in convs:
        kernel = conv.kernel_size[0] * conv.kernel_size[1]
        widths.append(max(1, round(int((conv.weight != 0).sum()) / (kernel * cin))))
        cin = widths[-1]
    return widths
