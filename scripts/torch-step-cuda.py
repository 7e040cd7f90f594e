#!/usr/bin/env python3
"""PyTorch's train step on a CUDA GPU, the reference `mmix bench --device cuda` is held to.

The step is the one ../shared/bench/torch_step.py times on the CPU: PreActResNet-18 (CIFAR
layout, that file's model), λ ~ Beta(α, α), mix point k ~ U{0, 1, 2}, a batch permutation,
soft-target cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4). Here it runs on the
GPU, timed between two `torch.cuda.synchronize()` calls, in fp32 (TF32 off, as in mmix) and
under bf16 autocast, in both memory formats. One JSON line per configuration, with the keys of
`mmix bench`'s line that compare.

    python3 scripts/torch-step-cuda.py --bench-dir ../shared/bench --width 16 --steps 20
"""
import argparse
import contextlib
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-dir", required=True, help="folder of preact_resnet.py")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to try the script here")
    args = ap.parse_args()
    sys.path.insert(0, args.bench_dir)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from preact_resnet import PreActResNet18, soft_ce

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()
    for precision in ["fp32", "bf16"]:
        for fmt in ["contiguous", "channels_last"]:
            torch.manual_seed(args.seed)
            rng = np.random.default_rng(args.seed)
            memory_format = (torch.channels_last if fmt == "channels_last"
                             else torch.contiguous_format)
            model = PreActResNet18(width=args.width).train().to(device, memory_format=memory_format)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(
                memory_format=memory_format)
            y = torch.randint(0, 10, (args.batch,), device=device)
            onehot = F.one_hot(y, 10).float()
            times = []
            for step in range(args.warmup + args.steps):
                synchronize()
                start = time.perf_counter()
                lam = float(rng.beta(args.alpha, args.alpha))
                k = int(rng.integers(0, 3))
                perm = torch.from_numpy(rng.permutation(args.batch)).to(device)
                target = lam * onehot + (1.0 - lam) * onehot[perm]
                autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                            if precision == "bf16" else contextlib.nullcontext())
                with autocast:
                    out = model(x, mix=(k, lam, perm))
                    loss = soft_ce(out.float(), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_value = loss.item()
                synchronize()
                if step >= args.warmup:
                    times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(json.dumps({
                "reference": "pytorch",
                "torch": torch.__version__,
                "device": (torch.cuda.get_device_name(0) if device.type == "cuda"
                           else "cpu"),
                "model": "preactresnet18",
                "width": args.width,
                "batch": args.batch,
                "mix": "manifold",
                "precision": precision,
                "format": fmt,
                "median_ms": median * 1e3,
                "min_ms": min(times) * 1e3,
                "max_ms": max(times) * 1e3,
                "images_per_second": args.batch / median,
                "loss": loss_value,
            }), flush=True)


if __name__ == "__main__":
    main()
