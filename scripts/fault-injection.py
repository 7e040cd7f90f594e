#!/usr/bin/env python3
"""Fault injection for `mmix train`: kills, full disks, unwritable folders, damaged files.

Every fault is injected into a short run (small-cnn, width 8, 600 embedded Fashion-MNIST
images, 3 epochs) whose uninterrupted twin is the reference. What must hold:

  kill      SIGKILL at a random moment (or just inside a checkpoint write), then
            `--resume` until done: metrics.csv and model.safetensors equal the reference's.
  disk      a tmpfs too small for the run (root only), or RLIMIT_FSIZE: a one-line error
            naming a path, `latest` names a complete checkpoint, and the run then resumes
            elsewhere to the reference's result.
  readonly  a resumable run folder made read-only: a one-line error naming a path, and
            nothing in the folder changes.
  damage    a truncated, emptied or garbled `latest`, checkpoint file, config.json or
            metrics.csv: `--resume`, `eval` and `compare` each either succeed or answer in
            one line without a panic, and a command that fails changes nothing.

Usage: scripts/fault-injection.py [--mmix target/release/mmix] [--kills 32] [--seed 0]
                                  [--work DIR] [--report FILE]
Prints one line per fault and a Markdown summary; exits 1 if any check failed.
"""

import argparse
import hashlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = [
    "train", "--model", "small-cnn", "--width", "8", "--epochs", "3",
    "--train-subset", "600", "--valid-split", "100", "--batch-size", "50", "--seed", "5",
]
TIMING_COLUMNS = 10  # metrics.csv columns before the timing ones


class Checks:
    def __init__(self):
        self.rows = []  # (fault, detail, ok, note)

    def record(self, fault, detail, ok, note=""):
        self.rows.append((fault, detail, ok, note))
        print(f"{'ok  ' if ok else 'FAIL'} {fault:9} {detail}: {note}", flush=True)

    def failed(self):
        return [r for r in self.rows if not r[2]]


def mmix_run(mmix, args, limit=None, timeout=600):
    def preexec():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([mmix, *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def metrics(run_dir):
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    return [",".join(line.split(",")[:TIMING_COLUMNS]) for line in lines]


def weights(run_dir):
    return (run_dir / "model.safetensors").read_bytes()


def tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def one_line_error(result):
    err = result.stderr.strip()
    return (result.returncode != 0 and "panicked" not in err and len(err.splitlines()) == 1
            and err.startswith("error: "))


def finish(mmix, run_dir, fresh_args):
    """Resumes (or restarts, if the run never wrote its config) until the run is done."""
    for _ in range(5):
        if (run_dir / "config.json").exists():
            result = mmix_run(mmix, ["train", "--resume", str(run_dir)])
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            result = mmix_run(mmix, fresh_args)
        if result.returncode == 0:
            return True, ""
        last = result.stderr.strip()
    return False, last


def checkpoint_write_under_way(checkpoint_dir):
    try:
        return any(name.startswith(".") for name in os.listdir(checkpoint_dir))
    except FileNotFoundError:
        return False


def kill_trials(mmix, work, reference, duration, count, rng, checks):
    for trial in range(count):
        run_dir = work / f"kill-{trial}"
        args = RUN + ["--out", str(run_dir)]
        child = subprocess.Popen([mmix, *args], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        if trial % 2 == 0:
            delay = rng.uniform(0, duration)
            time.sleep(delay)
            moment = f"at {delay:.2f}s"
        else:
            # Just inside a checkpoint write: a staging folder or temporary file exists.
            epoch_wanted = rng.randint(1, 3)
            delay = rng.uniform(0, 0.004)
            seen = 0
            deadline = time.time() + duration * 2
            while time.time() < deadline and child.poll() is None:
                if checkpoint_write_under_way(run_dir / "checkpoint"):
                    seen += 1
                    if seen >= epoch_wanted:
                        break
                    while checkpoint_write_under_way(run_dir / "checkpoint"):
                        time.sleep(0.0002)
                time.sleep(0.0002)
            time.sleep(delay)
            moment = f"in checkpoint write {seen} +{delay * 1000:.1f}ms"
        finished_first = child.poll() is not None
        child.send_signal(signal.SIGKILL)
        child.wait()
        if finished_first:
            moment += " (run had finished)"
        ok, reason = finish(mmix, run_dir, args)
        if not ok:
            checks.record("kill", moment, False, f"did not resume: {reason}")
            continue
        same = metrics(run_dir) == metrics(reference) and weights(run_dir) == weights(reference)
        checks.record("kill", moment, same,
                      "metrics and weights equal" if same else "differs from the reference")
        shutil.rmtree(run_dir, ignore_errors=True)


def latest_is_complete(run_dir):
    pointer = run_dir / "checkpoint" / "latest"
    if not pointer.exists():
        return True
    folder = run_dir / "checkpoint" / pointer.read_text().strip()
    return all((folder / name).is_file() for name in ("model.bpk", "optimizer.bpk", "state.json"))


def check_space_failure(mmix, fault, detail, run_dir, result, reference, work, checks):
    if result.returncode == 0:
        checks.record(fault, detail, True, "the run fitted")
        return
    err = result.stderr.strip()
    good_error = one_line_error(result) and ("/" in err)
    complete = latest_is_complete(run_dir)
    moved = work / f"moved-{fault}-{detail.replace(' ', '-')}"
    shutil.copytree(run_dir, moved, ignore=shutil.ignore_patterns(".*"))
    ok, reason = finish(mmix, moved, RUN + ["--out", str(moved)])
    same = ok and metrics(moved) == metrics(reference) and weights(moved) == weights(reference)
    note = f"{err[:110]}" if good_error else f"bad error: {err[:200]!r}"
    if not complete:
        note += "; latest names an incomplete checkpoint"
    if not same:
        note += f"; did not resume to the reference ({reason[:80]})"
    checks.record(fault, detail, good_error and complete and same, note)
    shutil.rmtree(moved, ignore_errors=True)


def disk_trials(mmix, work, reference, checks):
    for limit in [4_000, 20_000, 60_000, 120_000, 250_000]:
        run_dir = work / f"fsize-{limit}"
        result = mmix_run(mmix, RUN + ["--out", str(run_dir)], limit=limit)
        check_space_failure(mmix, "fsize", f"RLIMIT_FSIZE {limit} B", run_dir, result,
                            reference, work, checks)
    if os.geteuid() != 0:
        checks.record("disk", "tmpfs", True, "skipped: mounting a tmpfs needs root")
        return
    for size_kib in [16, 64, 160, 320, 640]:
        mount = work / f"tmpfs-{size_kib}"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                                  str(mount)], capture_output=True)
        if mounted.returncode != 0:
            checks.record("disk", f"tmpfs {size_kib} KiB", True,
                          "skipped: mount refused here")
            return
        try:
            run_dir = mount / "run"
            result = mmix_run(mmix, RUN + ["--out", str(run_dir)])
            check_space_failure(mmix, "disk", f"tmpfs {size_kib} KiB", run_dir, result,
                                reference, work, checks)
        finally:
            subprocess.run(["umount", str(mount)])


def interrupted_run(mmix, run_dir):
    """A run stopped by SIGKILL after its first epoch's checkpoint."""
    args = RUN + ["--out", str(run_dir)]
    child = subprocess.Popen([mmix, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    pointer = run_dir / "checkpoint" / "latest"
    while child.poll() is None:
        if pointer.exists() and pointer.read_text() == "epoch-0001":
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()


def readonly_trials(mmix, work, checks):
    run_dir = work / "readonly"
    interrupted_run(mmix, run_dir)
    before = tree_digest(run_dir)
    if os.geteuid() == 0:
        bound = subprocess.run(["mount", "--bind", str(run_dir), str(run_dir)],
                               capture_output=True)
        if bound.returncode != 0:
            checks.record("readonly", "bind mount", True, "skipped: mount refused here")
            return
        subprocess.run(["mount", "-o", "remount,bind,ro", str(run_dir)], check=True)
    else:
        for path in [run_dir, *run_dir.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
    try:
        result = mmix_run(mmix, ["train", "--resume", str(run_dir)])
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(run_dir)])
        else:
            for path in [run_dir, *run_dir.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
    unchanged = tree_digest(run_dir) == before
    ok = one_line_error(result) and unchanged
    checks.record("readonly", "resume", ok,
                  f"{result.stderr.strip()[:120]}; folder {'unchanged' if unchanged else 'CHANGED'}")


DAMAGES = {
    "empty": lambda b: b"",
    "truncated": lambda b: b[: len(b) // 2],
    "garbled": lambda b: bytes((x ^ 0x5A) if i % 7 == 3 else x for i, x in enumerate(b)),
    "junk": lambda b: b"\x00\xffnot what was written\n",
}


def damage_trials(mmix, work, reference, checks):
    template = work / "damage-template"
    shutil.copytree(reference, template)
    checkpoint = (template / "checkpoint" / "latest").read_text().strip()
    targets = ["checkpoint/latest", f"checkpoint/{checkpoint}/model.bpk",
               f"checkpoint/{checkpoint}/optimizer.bpk", f"checkpoint/{checkpoint}/state.json",
               "config.json", "metrics.csv"]
    commands = {
        "resume": lambda d: ["train", "--resume", str(d)],
        "eval": lambda d: ["eval", str(d)],
        "compare": lambda d: ["compare", str(d), "--plot", str(work / "damage-compare.png")],
    }
    for target in targets:
        for damage, apply in DAMAGES.items():
            for name, command in commands.items():
                run_dir = work / "damaged"
                shutil.rmtree(run_dir, ignore_errors=True)
                shutil.copytree(template, run_dir)
                path = run_dir / target
                path.write_bytes(apply(path.read_bytes()))
                before = tree_digest(run_dir)
                result = mmix_run(mmix, command(run_dir))
                detail = f"{damage} {target} → {name}"
                if result.returncode == 0:
                    panicked = "panicked" in result.stderr
                    checks.record("damage", detail, not panicked,
                                  "succeeded (the command does not need that file)")
                    continue
                unchanged = tree_digest(run_dir) == before
                ok = one_line_error(result) and unchanged
                checks.record("damage", detail, ok,
                              f"{result.stderr.strip()[:100]}"
                              f"{'' if unchanged else '; the folder CHANGED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mmix", default="target/release/mmix")
    parser.add_argument("--kills", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work")
    parser.add_argument("--report")
    parser.add_argument("--only", choices=["kill", "disk", "readonly", "damage"])
    args = parser.parse_args()
    mmix = str(Path(args.mmix).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="mmix-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    checks = Checks()

    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    started = time.time()
    result = mmix_run(mmix, RUN + ["--out", str(reference)])
    duration = time.time() - started
    if result.returncode != 0:
        sys.exit(f"the reference run failed: {result.stderr}")
    print(f"reference run: {duration:.1f}s in {reference}", flush=True)

    if args.only in (None, "kill"):
        kill_trials(mmix, work, reference, duration, args.kills, rng, checks)
    if args.only in (None, "disk"):
        disk_trials(mmix, work, reference, checks)
    if args.only in (None, "readonly"):
        readonly_trials(mmix, work, checks)
    if args.only in (None, "damage"):
        damage_trials(mmix, work, reference, checks)

    failed = checks.failed()
    lines = ["| fault | trials | passed |", "|---|---|---|"]
    for fault in dict.fromkeys(r[0] for r in checks.rows):
        rows = [r for r in checks.rows if r[0] == fault]
        lines.append(f"| {fault} | {len(rows)} | {sum(r[2] for r in rows)} |")
    summary = "\n".join(lines)
    print("\n" + summary)
    if args.report:
        Path(args.report).write_text(
            summary + "\n\n" + "\n".join(
                f"- {'ok' if ok else 'FAIL'} {fault} {detail}: {note}"
                for fault, detail, ok, note in checks.rows) + "\n")
    if failed:
        print(f"\n{len(failed)} checks failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
