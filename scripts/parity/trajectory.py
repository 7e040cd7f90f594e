#!/usr/bin/env python
"""PyTorch twin of a whole mmix run, replayed step for step from its trace.

`mmix train ... --trace` writes RUN/trace/: the run's data as it saw it (data.safetensors:
its training subset and test set as 8-bit pixels, the normalisation), its initial weights
under PyTorch names (initial.safetensors), one JSON line per optimizer step (steps.jsonl:
the examples, their crop offsets and flips, the mix plan, the learning rate and mmix's
loss) and mmix's weights after steps 1, 2, 5, 10, 20, 50, ... (after-step-<k>.safetensors).

This script trains the same network in PyTorch on exactly those batches and plans, with
torch.optim.SGD under the run's hyper-parameters, twice: from the same initial weights, and
from weights nudged by one ulp (PyTorch against itself, the yardstick of benign float
divergence). It writes trajectory.json into the trace folder (or --out): the loss per step
of mmix, the twin and the nudged twin, the relative weight distance mmix-twin and
twin-nudged twin at every step mmix saved weights, the parameter norm per epoch, and both
twins' final test accuracy and NLL.

  trajectory.py RUN/trace [--out FILE] [--no-nudge] [--torch-init] [--golden FILE [--golden-step K]]

--torch-init starts the twin from PyTorch's own initial weights (its default initialisation
under torch.manual_seed(the run's seed)) instead of mmix's, on mmix's stream: what the
initialisation alone changes.

--golden writes what tests/trajectory.rs compares against (the twin's loss per step and its
weights and running statistics after step K, 10 by default, as `after-step-K.<name>`) as a
safetensors file.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from twin import build, mixer  # noqa: E402


def normalisation_table(mean, std):
    """mmix's lookup: (v / 255 − mean) / std in f32, per channel and 8-bit value."""
    values = torch.arange(256, dtype=torch.float32) / 255.0
    return torch.stack([(values - m) / s for m, s in zip(mean.tolist(), std.tolist())])


def assemble(pixels, table, indices, placements, pad):
    """The batch of `indices`: each image cropped at its offset (zero pixels outside), then
    mirrored where flipped, then normalised."""
    images = pixels[indices].long()
    n, c, size, _ = images.shape
    if pad > 0:
        images = F.pad(images, (pad, pad, pad, pad))
    out = torch.empty((n, c, size, size), dtype=torch.long)
    for row, (dy, dx, flip) in enumerate(placements):
        crop = images[row, :, pad + dy: pad + dy + size, pad + dx: pad + dx + size]
        out[row] = crop.flip(-1) if flip else crop
    return torch.stack([table[ch][out[:, ch]] for ch in range(c)], dim=1)


def soft_targets(labels, plan, classes, smoothing):
    onehot = F.one_hot(labels, classes).float()
    if plan is not None:
        _, lam, perm = plan
        onehot = lam * onehot + (1.0 - lam) * onehot[perm]
    return onehot * (1.0 - smoothing) + smoothing / classes


def plan_of(step):
    """(point, λ, permutation) of an interpolation at one point with one λ, or None."""
    plan = step.get("plan")
    if plan is None:
        return None
    mixes = plan["mixes"]
    if len(mixes) != 1 or mixes[0]["op"] != "Interpolate" or "Shared" not in mixes[0]["draws"]:
        raise SystemExit("the twin replays mixing at one point with one λ (none, input, manifold)")
    return (mixes[0]["point"], mixes[0]["draws"]["Shared"]["lambda"],
            torch.tensor(plan["permutation"], dtype=torch.long))


def float_state(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items()
            if t.is_floating_point()}


def relative_distance(a, b):
    """‖a − b‖ / ‖b‖ over every float tensor of the state (weights and running statistics)."""
    diff = sum(((a[n] - b[n]).double() ** 2).sum().item() for n in b)
    norm = sum((b[n].double() ** 2).sum().item() for n in b)
    return math.sqrt(diff / norm)


def parameter_norm(model):
    return math.sqrt(sum((p.detach().double() ** 2).sum().item() for p in model.parameters()))


class Twin:
    def __init__(self, meta, initial, config, nudge):
        self.model = build(meta)
        weights = dict(initial)
        if nudge:
            weights = {n: (torch.nextafter(t, torch.full_like(t, math.inf))
                           if t.is_floating_point() and "running" not in n else t)
                       for n, t in weights.items()}
        self.model.load_state_dict(weights, strict=False)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config["lr"], momentum=config["momentum"],
            dampening=0.0, weight_decay=config["weight_decay"],
            nesterov=config["nesterov"])
        self.smoothing = config.get("label_smoothing", 0.0)

    def step(self, x, labels, plan, lr, classes):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(x, mixer(plan) if plan is not None else mixer((-1, 1.0, None)))
        targets = soft_targets(labels, plan, classes, self.smoothing)
        loss = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def evaluate(self, pixels, labels, table, batch=1000):
        self.model.eval()
        correct, nll = 0, 0.0
        identity = mixer((-1, 1.0, None))
        for start in range(0, len(labels), batch):
            index = torch.arange(start, min(start + batch, len(labels)))
            x = torch.stack([table[ch][pixels[index, ch].long()]
                             for ch in range(pixels.shape[1])], dim=1)
            logits = self.model(x, identity)
            correct += (logits.argmax(1) == labels[index]).sum().item()
            nll += F.cross_entropy(logits, labels[index], reduction="sum").item()
        return {"accuracy": correct / len(labels), "nll": nll / len(labels)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-nudge", action="store_true")
    parser.add_argument("--torch-init", action="store_true")
    parser.add_argument("--golden", type=Path)
    parser.add_argument("--golden-step", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)

    meta = json.loads((args.trace / "trace.json").read_text())
    config = meta["config"]
    if config.get("loss", "soft-ce") != "soft-ce":
        raise SystemExit("the twin replays the soft-target cross-entropy only")
    data = load_file(str(args.trace / "data.safetensors"))
    table = normalisation_table(data["mean"], data["std"])
    initial = load_file(str(args.trace / "initial.safetensors"))
    if args.torch_init:
        torch.manual_seed(int(config["seed"]))
        initial = build(meta).state_dict()
    twins = {"twin": Twin(meta, initial, config, nudge=False)}
    if not args.no_nudge:
        twins["nudged"] = Twin(meta, initial, config, nudge=True)
    classes, pad = int(meta["classes"]), int(meta["crop_padding"])

    losses = {"mmix": [], **{name: [] for name in twins}}
    distances, norms, epoch, golden_state = [], [], 1, None
    with open(args.trace / "steps.jsonl") as lines:
        for line in lines:
            step = json.loads(line)
            if step["epoch"] != epoch:
                norms.append({"epoch": epoch, **{n: parameter_norm(t.model) for n, t in twins.items()}})
                epoch = step["epoch"]
            indices = torch.tensor(step["indices"], dtype=torch.long)
            x = assemble(data["train_images"], table, indices, step["placements"], pad)
            labels = data["train_labels"][indices]
            plan = plan_of(step)
            losses["mmix"].append(step["loss"])
            for name, twin in twins.items():
                losses[name].append(twin.step(x, labels, plan, step["lr"], classes))
            if step["step"] == args.golden_step:
                golden_state = float_state(twins["twin"].model)
            saved = args.trace / f"after-step-{step['step']}.safetensors"
            if saved.exists():
                ours = {n: t for n, t in load_file(str(saved)).items() if t.is_floating_point()}
                reference = float_state(twins["twin"].model)
                row = {"step": step["step"], "mmix_twin": relative_distance(ours, reference)}
                if "nudged" in twins:
                    row["nudged_twin"] = relative_distance(float_state(twins["nudged"].model), reference)
                distances.append(row)
                print(json.dumps(row), flush=True)
    norms.append({"epoch": epoch, **{n: parameter_norm(t.model) for n, t in twins.items()}})
    final = {name: twin.evaluate(data["test_images"], data["test_labels"], table)
             for name, twin in twins.items()}
    report = {"losses": losses, "distances": distances, "parameter_norms": norms, "final": final}
    out = args.out or args.trace / "trajectory.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({"final": final}))
    if args.golden:
        if golden_state is None:
            raise SystemExit(f"the run has no step {args.golden_step}")
        prefix = f"after-step-{args.golden_step}"
        golden = {f"{prefix}.{n}": t.contiguous() for n, t in golden_state.items()}
        golden["losses"] = torch.tensor(losses["twin"], dtype=torch.float64)
        save_file(golden, str(args.golden))


if __name__ == "__main__":
    main()
