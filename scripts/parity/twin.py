#!/usr/bin/env python
"""PyTorch twin of mmix's models: one train-mode step per parity case.

For every tests/parity/<case>.case.safetensors (written by mmix's ignored test
`write_parity_cases`), builds the same network in PyTorch under the same parameter names,
loads <case>.weights.safetensors (mmix's initial weights), runs the forward pass in training
mode with the case's mix plan (h = λ·h + (1−λ)·h[perm] at the plan's point), the soft-target
cross-entropy, and the backward pass, and writes <case>.golden.safetensors:

  logits, loss, grad.<name> for every parameter, and sensitivity.<name> (and
  sensitivity.logits): the largest change (one number) of that gradient (of the logits) over three runs with
  the input scaled by 1 ± 1e-6 and 1 + 3e-6 (PyTorch disagreeing with itself where a ReLU input
  sits within rounding of zero or a batch norm divides by a small deviation).

Usage: twin.py tests/parity
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def conv(cin, cout, k, stride=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


def mixer(plan):
    """The mix at a point, or the identity."""
    layer, lam, perm = plan

    def at(h, point):
        return lam * h + (1.0 - lam) * h[perm] if point == layer else h

    return at


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = conv(cin, cout, 3)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)


class SmallCnn(nn.Module):
    def __init__(self, cin, classes, w):
        super().__init__()
        self.block1 = ConvBlock(cin, w)
        self.block2 = ConvBlock(w, 2 * w)
        self.block3 = ConvBlock(2 * w, 4 * w)
        self.linear = nn.Linear(4 * w, classes)

    def forward(self, x, mix):
        h = mix(x, 0)
        h = mix(self.block1(h), 1)
        h = mix(self.block2(h), 2)
        h = mix(self.block3(h), 3)
        return self.linear(h.mean(dim=(2, 3)))


class Mlp(nn.Module):
    def __init__(self, inputs, classes, w):
        super().__init__()
        self.fc1 = nn.Linear(inputs, w)
        self.fc2 = nn.Linear(w, w)
        self.head = nn.Linear(w, classes)

    def forward(self, x, mix):
        h = mix(x.flatten(1), 0)
        h = mix(F.relu(self.fc1(h)), 1)
        h = mix(F.relu(self.fc2(h)), 2)
        return self.head(h)


class PreActBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3)
        self.shortcut = conv(cin, planes, 1, stride) if stride != 1 or cin != planes else None
        self.out_planes = planes

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + sc


class PreActBottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        out = 4 * planes
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, out, 1)
        self.shortcut = conv(cin, out, 1, stride) if stride != 1 or cin != out else None
        self.out_planes = out

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return self.conv3(F.relu(self.bn3(out))) + sc


PREACT = {18: ([2, 2, 2, 2], False), 34: ([3, 4, 6, 3], False), 50: ([3, 4, 6, 3], True),
          101: ([3, 4, 23, 3], True), 152: ([3, 8, 36, 3], True)}


class PreActResNet(nn.Module):
    """mmix's PreActResNet: CIFAR stem, no batch norm before the pool (as the paper's code)."""

    def __init__(self, depth, cin, classes, w):
        super().__init__()
        blocks, bottleneck = PREACT[depth]
        unit = PreActBottleneck if bottleneck else PreActBlock
        self.conv1 = conv(cin, w, 3)
        planes_in = w
        stages = []
        for planes, count, stride in zip([w, 2 * w, 4 * w, 8 * w], blocks, [1, 2, 2, 2]):
            layers = []
            for i in range(count):
                block = unit(planes_in, planes, stride if i == 0 else 1)
                planes_in = block.out_planes
                layers.append(block)
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(planes_in, classes)

    def forward(self, x, mix):
        h = mix(x, 0)
        h = mix(self.layer1(self.conv1(h)), 1)
        h = mix(self.layer2(h), 2)
        h = mix(self.layer3(h), 3)
        h = mix(self.layer4(h), 4)
        return self.linear(h.mean(dim=(2, 3)))


class WideBasic(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, planes, 3, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride, bias=True)
        self.shortcut = (conv(cin, planes, 1, stride, bias=True)
                         if stride != 1 or cin != planes else None)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (self.shortcut(x) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, cin, classes, base):
        super().__init__()
        per_group = (depth - 4) // 6
        self.conv1 = conv(cin, base, 3, bias=True)
        planes_in = base
        groups = []
        for planes, stride in zip([base * widen, 2 * base * widen, 4 * base * widen], [1, 2, 2]):
            layers = []
            for i in range(per_group):
                layers.append(WideBasic(planes_in, planes, stride if i == 0 else 1))
                planes_in = planes
            groups.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = groups
        self.bn = nn.BatchNorm2d(planes_in)
        self.linear = nn.Linear(planes_in, classes)

    def forward(self, x, mix):
        h = mix(x, 0)
        h = mix(self.layer1(self.conv1(h)), 1)
        h = mix(self.layer2(h), 2)
        h = mix(self.layer3(h), 3)
        return self.linear(F.relu(self.bn(h)).mean(dim=(2, 3)))


class Downsample(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = conv(cin, cout, 1, stride)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Bottleneck(nn.Module):
    """The origin's post-activation bottleneck: the stride sits on the first 1×1 convolution."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = 4 * planes
        self.conv1 = conv(cin, planes, 1, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, out, 1)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = Downsample(cin, out, stride) if stride != 1 or cin != out else None

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (self.downsample(x) if self.downsample is not None else x))


class ResNet50(nn.Module):
    def __init__(self, cin, classes, w):
        super().__init__()
        self.conv1 = conv(cin, w, 7, 2)
        self.bn1 = nn.BatchNorm2d(w)
        planes_in = w
        stages = []
        for planes, count, stride in zip([w, 2 * w, 4 * w, 8 * w], [3, 4, 6, 3], [1, 2, 2, 2]):
            layers = []
            for i in range(count):
                layers.append(Bottleneck(planes_in, planes, stride if i == 0 else 1))
                planes_in = 4 * planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(planes_in, classes)

    def forward(self, x, mix):
        h = mix(x, 0)
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(h))), 3, stride=2, padding=1)
        h = mix(h, 1)
        h = mix(self.layer1(h), 2)
        h = mix(self.layer2(h), 3)
        h = mix(self.layer3(h), 4)
        h = mix(self.layer4(h), 5)
        return self.fc(h.mean(dim=(2, 3)))


def build(meta):
    name, w = meta["model"], int(meta["width"])
    cin, size, classes = int(meta["channels"]), int(meta["size"]), int(meta["classes"])
    if name == "small-cnn":
        return SmallCnn(cin, classes, w)
    if name == "mlp":
        return Mlp(cin * size * size, classes, w)
    if name.startswith("preactresnet"):
        return PreActResNet(int(name[len("preactresnet"):]), cin, classes, w)
    if name.startswith("wrn-"):
        depth, widen = (int(p) for p in name[4:].split("-"))
        return WideResNet(depth, widen, cin, classes, w)
    if name == "resnet50":
        return ResNet50(cin, classes, w)
    raise SystemExit(f"unknown model {name}")


def step(model, weights, x, targets, mix):
    """Logits, loss and gradients of one train-mode step from the given weights."""
    model.load_state_dict(weights, strict=False)
    model.train()
    model.zero_grad()
    logits = model(x, mix)
    loss = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


def twin(case_path):
    stem = case_path.name[: -len(".case.safetensors")]
    folder = case_path.parent
    with safe_open(str(case_path), framework="pt") as f:
        meta = f.metadata()
    case = load_file(str(case_path))
    weights = load_file(str(folder / f"{stem}.weights.safetensors"))
    model = build(meta)
    names = {n for n, _ in model.state_dict().items() if not n.endswith("num_batches_tracked")}
    missing, extra = names - set(weights), set(weights) - names
    if missing or extra:
        raise SystemExit(f"{stem}: names differ: missing {sorted(missing)}, extra {sorted(extra)}")
    perm = case["permutation"].long()
    layer = -1 if meta["layer"] == "none" else int(meta["layer"])
    mix = mixer((layer, float(meta["lambda"]), perm))
    x, targets = case["input"], case["targets"]
    logits, loss, grads = step(model, weights, x, targets, mix)
    sensitivity = {n: torch.zeros_like(g) for n, g in grads.items()}
    logits_sensitivity = torch.zeros_like(logits)
    for factor in (1 + 1e-6, 1 - 1e-6, 1 + 3e-6):
        nudged_logits, _, nudged = step(model, weights, x * factor, targets, mix)
        logits_sensitivity = torch.maximum(logits_sensitivity, (nudged_logits - logits).abs())
        for n in grads:
            sensitivity[n] = torch.maximum(sensitivity[n], (nudged[n] - grads[n]).abs())
    # Sensitivities are kept as their largest element, which is all the tolerance uses.
    out = {"logits": logits, "loss": loss.reshape(1),
           "sensitivity.logits": logits_sensitivity.max().reshape(1)}
    out.update({f"grad.{n}": g.contiguous() for n, g in grads.items()})
    out.update({f"sensitivity.{n}": s.max().reshape(1) for n, s in sensitivity.items()})
    save_file(out, str(folder / f"{stem}.golden.safetensors"))
    worst = max((s.max().item() / (grads[n].abs().max().item() + 1e-12), n)
                for n, s in sensitivity.items())
    print(f"{stem}: loss {loss.item():.6f}, largest relative self-sensitivity "
          f"{worst[0]:.1e} ({worst[1]})")


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/parity")
    cases = sorted(folder.glob("*.case.safetensors"))
    if not cases:
        raise SystemExit(f"no *.case.safetensors in {folder}")
    for case in cases:
        twin(case)


if __name__ == "__main__":
    main()
