#!/usr/bin/env python3
"""gap.sh's table: final test accuracy and NLL of mmix, its twin (mmix's stream and init),
the twin from PyTorch's init, the independent trainer on both recipes,
and (with --pytorch-arm) mmix on the PyTorch recipe, per seed, and the paired differences
that separate the implementation, the recipe and the initialisation.

  gap_summary.py TWINS OUT [--pytorch-arm RUNS] SEED [SEED ...]

RUNS: a folder of seed-S runs of mmix on the independent trainer's recipe
(studies/pytorch-recipe/runs/pytorch).
"""
import argparse
import json
from pathlib import Path

from summarise import interval


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("twins", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("seeds", nargs="+")
    parser.add_argument("--pytorch-arm", type=Path)
    args = parser.parse_args()
    twins, out, seeds = args.twins, args.out, args.seeds
    arms = ["mmix", "twin", "twin-torch-init", "independent-mmix-recipe",
            "mmix-pytorch-recipe", "independent"]
    table = {}
    for seed in seeds:
        run = twins / f"seed-{seed}"
        row = {"mmix": json.loads((run / "summary.json").read_text())["evaluation"]["clean"],
               "twin": json.loads((run / "trace" / "trajectory.json").read_text())["final"]["twin"]}
        torch_init = out / "twin-torch-init" / f"seed-{seed}.json"
        if torch_init.exists():
            row["twin-torch-init"] = json.loads(torch_init.read_text())["final"]["twin"]
        if args.pytorch_arm is not None:
            row["mmix-pytorch-recipe"] = json.loads(
                (args.pytorch_arm / f"seed-{seed}" / "summary.json").read_text())["evaluation"]["clean"]
        for arm in ("independent", "independent-mmix-recipe"):
            path = out / arm / f"seed-{seed}.json"
            if path.exists():
                row[arm] = json.loads(path.read_text())["final"]
        table[seed] = row

    print("| seed | " + " | ".join(arms) + " |")
    print("|---|" + "---|" * len(arms))
    for seed, row in table.items():
        cells = [f"{100 * row[a]['accuracy']:.2f} / {row[a]['nll']:.4f}" if a in row else "–" for a in arms]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print("\n(each cell: final test accuracy % / NLL)\n")
    print("| paired difference | seeds | accuracy (points) | NLL |")
    print("|---|---|---|---|")
    for a, b, why in [("twin", "mmix", "the same stream and init in PyTorch"),
                      ("twin-torch-init", "twin", "PyTorch's init instead of mmix's, on mmix's stream"),
                      ("independent-mmix-recipe", "mmix", "another implementation of mmix's recipe"),
                      ("independent", "mmix-pytorch-recipe", "another implementation of the PyTorch recipe"),
                      ("independent", "independent-mmix-recipe", "the PyTorch recipe in the independent code"),
                      ("mmix-pytorch-recipe", "mmix", "the PyTorch recipe in mmix"),
                      ]:
        pairs = [(r[a], r[b]) for r in table.values() if a in r and b in r]
        if not pairs:
            continue
        acc, acc_half = interval([100 * (x["accuracy"] - y["accuracy"]) for x, y in pairs])
        nll, nll_half = interval([x["nll"] - y["nll"] for x, y in pairs])
        print(f"| {a} − {b} ({why}) | {len(pairs)} | {acc:+.2f} ± {acc_half:.2f} | {nll:+.4f} ± {nll_half:.4f} |")


if __name__ == "__main__":
    main()
