#!/usr/bin/env python3
"""Tables of identical-stream comparisons: mmix runs traced with --trace and replayed by
scripts/parity/trajectory.py.

  summarise.py RUN [RUN ...]

For each run folder whose trace/trajectory.json exists: mmix's and the twin's final test
accuracy and NLL, their paired difference over the runs with a 95% t interval, the relative
weight distance mmix-twin (and twin-nudged twin, where the twin ran nudged) at every kept
step, and the loss difference per step, summarised by ranges of steps. Standard library only.
"""
import json
import math
import statistics
import sys
from pathlib import Path

# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def interval(values):
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    half = T95[min(len(values) - 2, len(T95) - 1)] * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def main():
    runs = [Path(p) for p in sys.argv[1:]]
    rows, curves, losses = [], {}, {}
    for run in runs:
        path = run / "trace" / "trajectory.json"
        if not path.exists():
            print(f"(skipped {run}: no {path})", file=sys.stderr)
            continue
        report = json.loads(path.read_text())
        summary = json.loads((run / "summary.json").read_text())
        final = summary["evaluation"]["clean"]
        twin = report["final"]["twin"]
        nudged = report["final"].get("nudged")
        rows.append((run.name, final["accuracy"], final["nll"], twin["accuracy"], twin["nll"], nudged))
        for row in report["distances"]:
            curves.setdefault(row["step"], []).append(row)
        l = report["losses"]
        for step, (m, t) in enumerate(zip(l["mmix"], l["twin"]), start=1):
            band = 10 ** int(math.log10(step))
            entry = losses.setdefault(band, {"mmix": [], "nudged": []})
            entry["mmix"].append(abs(m - t))
            if "nudged" in l:
                entry["nudged"].append(abs(l["nudged"][step - 1] - t))

    print("| run | mmix test acc | twin test acc | mmix NLL | twin NLL | nudged twin acc / NLL |")
    print("|---|---|---|---|---|---|")
    for name, acc, nll, tacc, tnll, nudged in rows:
        extra = f"{100 * nudged['accuracy']:.2f} / {nudged['nll']:.4f}" if nudged else "—"
        print(f"| {name} | {100 * acc:.2f} | {100 * tacc:.2f} | {nll:.4f} | {tnll:.4f} | {extra} |")
    if rows:
        acc_mean, acc_half = interval([100 * (r[1] - r[3]) for r in rows])
        nll_mean, nll_half = interval([r[2] - r[4] for r in rows])
        print(f"\nmmix − twin over {len(rows)} runs: accuracy {acc_mean:+.2f} ± {acc_half:.2f} points, "
              f"NLL {nll_mean:+.4f} ± {nll_half:.4f} (95% t interval)")

    print("\n| after step | mmix–twin weight distance (relative) | twin–nudged twin |")
    print("|---|---|---|")
    for step in sorted(curves):
        mt = ", ".join(f"{r['mmix_twin']:.1e}" for r in curves[step])
        nt = ", ".join(f"{r['nudged_twin']:.1e}" for r in curves[step] if "nudged_twin" in r) or "—"
        print(f"| {step} | {mt} | {nt} |")

    print("\n| steps | median \\|loss mmix − twin\\| | median \\|loss nudged − twin\\| |")
    print("|---|---|---|")
    for band in sorted(losses):
        entry = losses[band]
        nudged = f"{statistics.median(entry['nudged']):.1e}" if entry["nudged"] else "—"
        print(f"| {band}–{10 * band - 1} | {statistics.median(entry['mmix']):.1e} | {nudged} |")


if __name__ == "__main__":
    main()
