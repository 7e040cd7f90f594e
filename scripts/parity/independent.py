#!/usr/bin/env python
"""An independent PyTorch trainer of the PreActResNet-18 recipe, written as a PyTorch user
would write it: its own initialisation (PyTorch's defaults under torch.manual_seed), its own
data pipeline (a fixed 10,000-image subset, zero padding 28 -> 32 px, a random 32-px crop of
the image padded by 4 more, a horizontal flip with probability 1/2, normalisation by the
subset's mean and deviation), its own draws of the mix (λ ~ Beta(α, α), a point uniform over
--mix-layers, torch.randperm), torch.optim.SGD, and a cosine rate per step.

It shares only the network's definition with mmix's twin (twin.py).

With --image-pad 0 --crop-padding 2 --per-epoch --subset-seed S it trains mmix's recipe
instead (28 px, crops of the image padded by 2, a rate per epoch, a subset per seed) with the
same independent code.

With --eval-every-epoch it evaluates the test set after every epoch, as mmix's whole-job
benchmark has both trainers do (scripts/bench-job.sh), and its report splits the wall time into
start-up (reading and padding the data set, building the model), training and evaluation.

  independent.py --seed S [--epochs 12] [--eval-every-epoch] [--out FILE.json]
"""
import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from twin import build, mixer  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")


def read_idx(name):
    with gzip.open(DATA / name) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy())


def padded(images, pad):
    """uint8 [N, 28, 28] -> float [N, 1, 28 + 2 pad, 28 + 2 pad] in [0, 1], zeros around."""
    return F.pad(images.float().div(255.0).unsqueeze(1), (pad, pad, pad, pad))


def augment(batch, generator, crop_padding):
    """RandomCrop(size, padding=crop_padding) and RandomHorizontalFlip, per image."""
    n, _, size, _ = batch.shape
    wide = F.pad(batch, (crop_padding,) * 4)
    offsets = torch.randint(0, 2 * crop_padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(batch)
    for i in range(n):
        dy, dx = offsets[i].tolist()
        crop = wide[i, :, dy: dy + size, dx: dx + size]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


@torch.no_grad()
def evaluate(model, images, labels, mean, std):
    model.eval()
    identity = mixer((-1, 1.0, None))
    correct, nll = 0, 0.0
    for start in range(0, len(labels), 1000):
        x = (images[start: start + 1000] - mean) / std
        y = labels[start: start + 1000]
        logits = model(x, identity)
        correct += (logits.argmax(1) == y).sum().item()
        nll += F.cross_entropy(logits, y, reduction="sum").item()
    return {"accuracy": correct / len(labels), "nll": nll / len(labels)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--subset-seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--mix-layers", default="0,1,2")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--image-pad", type=int, default=2, help="zeros around the 28-px images")
    parser.add_argument("--crop-padding", type=int, default=4)
    parser.add_argument("--per-epoch", action="store_true", help="cosine rate per epoch, not per step")
    parser.add_argument("--eval-every-epoch", action="store_true", help="the test set after every epoch")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    launched = time.time()
    torch.set_num_threads(2)

    train_images, train_labels = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    test_images, test_labels = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    subset = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(args.subset_seed))[: args.subset]
    x_train, y_train = padded(train_images[subset], args.image_pad), train_labels[subset].long()
    x_test, y_test = padded(test_images, args.image_pad), test_labels.long()
    mean, std = x_train.mean().item(), x_train.std().item()

    torch.manual_seed(args.seed)
    size = 28 + 2 * args.image_pad
    model = build({"model": "preactresnet18", "width": args.width, "channels": 1, "size": size, "classes": 10})
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, dampening=0.0,
                                weight_decay=5e-4, nesterov=False)
    generator = torch.Generator().manual_seed(args.seed)
    beta = torch.distributions.Beta(torch.tensor(args.alpha), torch.tensor(args.alpha))
    layers = [int(k) for k in args.mix_layers.split(",")]
    steps_per_epoch = math.ceil(args.subset / args.batch_size)
    total, step, started = args.epochs * steps_per_epoch, 0, time.time()
    timing = {"startup": started - launched, "train": 0.0, "eval": 0.0}
    final = None
    for epoch in range(1, args.epochs + 1):
        epoch_started = time.time()
        model.train()
        order = torch.randperm(args.subset, generator=generator)
        loss_sum = 0.0
        for start in range(0, args.subset, args.batch_size):
            index = order[start: start + args.batch_size]
            x = (augment(x_train[index], generator, args.crop_padding) - mean) / std
            y = F.one_hot(y_train[index], 10).float()
            lam = beta.sample().item()
            point = layers[torch.randint(len(layers), (1,), generator=generator).item()]
            perm = torch.randperm(len(index), generator=generator)
            targets = lam * y + (1.0 - lam) * y[perm]
            for group in optimizer.param_groups:
                progress = (epoch - 1) / args.epochs if args.per_epoch else step / total
                group["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
            optimizer.zero_grad()
            logits = model(x, mixer((point, lam, perm)))
            loss = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            step += 1
        timing["train"] += time.time() - epoch_started
        record = {"epoch": epoch, "train_loss": loss_sum / args.subset}
        if args.eval_every_epoch or epoch == args.epochs:
            evaluated = time.time()
            final = evaluate(model, x_test, y_test, mean, std)
            timing["eval"] += time.time() - evaluated
            record["test"] = final
        record["seconds"] = round(time.time() - started, 1)
        print(json.dumps(record), flush=True)
    report = {"seed": args.seed, "options": {k: str(v) for k, v in vars(args).items()},
              "final": final, "seconds": time.time() - started, "timing": timing}
    print(json.dumps(report), flush=True)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.rename(args.out)


if __name__ == "__main__":
    main()
