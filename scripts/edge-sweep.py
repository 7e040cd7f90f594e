#!/usr/bin/env python3
"""Every flag of `mmix train`, `eval`, `study`, `compare` and `predict` given its edge values.

Each flag (read from the command's --help) and each positional argument is given, one at a
time, each of: 0, -1, ±1e308, u64::MAX and one past it, NaN, inf, the empty string, and a
path to a file, a folder, a symbolic link, a FIFO, a link to /dev/zero, a symbolic link to
itself, a name that is not UTF-8 and a name with a newline. Training flags ride on a tiny run,
so a value that is accepted trains for a second or two. Then every key of a finished run's
saved configuration (`config.json`'s "train") is given each of 0, -1, 1e308, -1e308, u64::MAX,
a string and null, and the run is resumed, evaluated and asked to predict. Last, the
reproductions no single value reaches (values inside a flag's syntax such as
`--deform rotate:1e308`, a folder of oddly named and special files for `predict`,
`--unlabeled-dir` and `parity --cases`, `bench`'s step count, a saved image shape of a
million pixels a side); these train nothing, so each must end within the limit. What must
hold for every invocation:

  - the exit status is 0, 1 (an error in one line), 2 (a usage error) or 130 (interrupted);
    a run that is still going after --limit seconds is sent SIGINT and must then exit 130,
    so a hang (a FIFO read, a loop) fails;
  - no file outside the invocation's output folder changed, appeared or disappeared (the
    files, folder, link and FIFO offered as values included);
  - stderr holds no Rust panic;
  - no process's peak resident memory exceeds --max-rss-mb.

Usage: scripts/edge-sweep.py [--mmix target/release/mmix] [--limit 8]
Prints one line per failure and a count; exits 1 if anything failed.
"""

import argparse
import hashlib
import json
import os
import resource
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

TINY_RUN = [
    "--model", "small-cnn", "--width", "4", "--epochs", "1", "--train-subset", "100",
    "--batch-size", "50", "--seed", "1",
]
NUMBERS = ["0", "-1", "1e308", "-1e308", "18446744073709551615", "18446744073709551616", "NaN",
           "inf", ""]
NON_UTF8 = os.fsdecode(b"name-\xff")
PATHS = ["file.txt", "folder", "link", "fifo", "zero-link", "loop", NON_UTF8, "new\nline"]
CONFIG_VALUES = [0, -1, 1e308, -1e308, 18446744073709551615, "x", None]
# Values inside a flag's own syntax, where a plain number is refused before it is read.
COMPOSITE = {
    "deform": ["rotate:1e308", "shear:1e308", "zoom-out:1e308", "zoom-in:1e-308"],
    "layer-weights": ["1e308,1e308,1e308", "0,0,1e-320"],
    "attack": ["pgd:0.1:18446744073709551615", "pgd:1:1000000", "fgsm:1e308"],
    "mix-layers": ["0,1,18446744073709551615", "0,0,0"],
    "spectrum-at": ["18446744073709551615"],
}
PATH_FLAGS = {"out", "resume", "config", "data-dir", "unlabeled-dir", "plot", "cases"}
ALLOWED = {0, 1, 2, 130}
# The label of the cases that train nothing, so must end within the limit, not by SIGINT.
MUST_FINISH = "must finish"


def flags(mmix, command):
    """The long flags of `mmix COMMAND --help`, each with whether it takes a value."""
    text = subprocess.run([mmix, command, "--help"], capture_output=True, text=True).stdout
    found = []
    for match in re.finditer(r"^\s+(?:-\w, )?--([\w-]+)(?: (\[?)<[A-Z_]+>)?", text, re.M):
        name, value = match.group(1), match.group(0).rstrip().endswith(">")
        if name not in ("help", "version"):
            found.append((name, value))
    return found


def snapshot(root, skip):
    """Every entry under `root` but those under `skip`: its type and, for files, a digest."""
    state = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not any((here / d) == s for s in skip)]
        for name in dirs + files:
            path = here / name
            if any(path == s for s in skip):
                continue
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                state[str(path)] = "link:" + os.readlink(path)
            else:
                state[str(path)] = stat.S_IFMT(mode)
    return state


def invoke(mmix, args, cwd, limit):
    process = subprocess.Popen(
        [mmix] + args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        errors="backslashreplace",
    )
    try:
        _, stderr = process.communicate(timeout=limit)
        return process.returncode, stderr, False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
            return process.returncode, stderr, True
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            return None, stderr, True


def grey_png(side):
    """A black `side`×`side` 8-bit grey PNG, for `predict`."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" * (side + 1) for _ in range(side))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def make_sandbox(root, mmix):
    (root / "file.txt").write_text("the user's file\n")
    (root / "folder").mkdir()
    (root / "folder" / "inside.txt").write_text("the user's folder\n")
    os.symlink(root / "folder", root / "link")
    os.mkfifo(root / "fifo")
    os.symlink("/dev/zero", root / "zero-link")
    os.symlink(root / "loop", root / "loop")
    (root / NON_UTF8).write_text("a file whose name is not UTF-8\n")
    (root / "new\nline").write_text("a file whose name holds a newline\n")
    (root / "study.toml").write_text(
        'seeds = [1]\n[train]\nmodel = "small-cnn"\nwidth = 4\nepochs = 1\n'
        'train-subset = 100\nbatch-size = 50\n[[arm]]\nname = "none"\nmix = "none"\n'
    )
    (root / "image.png").write_bytes(grey_png(2))
    done = subprocess.run(
        [mmix, "train", *TINY_RUN, "--out", str(root / "run")], cwd=root, capture_output=True
    )
    if done.returncode != 0:
        sys.exit(f"the reference run failed: {done.stderr.decode()}")


def cases(mmix, root):
    """(args, output paths) for every invocation: what it may write is its own output folder,
    or a folder named by a plain number given as a path, which is a valid new folder."""
    values = NUMBERS + [str(root / p) for p in PATHS]
    # Flags that name files get every path; the others the numbers and one file.
    value_flags = NUMBERS + [str(root / PATHS[0])]
    named = lambda value: [root / value] if value in NUMBERS and value != "" else []
    made = []
    image = root / "image.png"
    for command in ["train", "eval", "study", "compare", "predict"]:
        for name, takes_value in flags(mmix, command):
            offered = values if name in PATH_FLAGS else value_flags + COMPOSITE.get(name, [])
            for value in offered if takes_value else [None]:
                out = root / f"out-{len(made)}"
                flag = [f"--{name}"] + ([value] if value is not None else [])
                path_value = named(value) if name in ("out", "plot", "config", "resume") else []
                if command == "train":
                    args = ["train", *TINY_RUN, "--out", str(out), *flag]
                    if name == "resume":
                        args = ["train", *flag]
                    outputs = [out, root / "runs"] + path_value
                elif command == "eval":
                    outputs = [root / "run"]
                    args = ["eval", str(root / "run"), *flag]
                elif command == "study":
                    args = ["study", str(root / "study.toml"), *flag]
                    outputs = [root / "study"] + path_value
                elif command == "predict":
                    # Writes nothing anywhere.
                    args = ["predict", str(root / "run"), str(image), *flag]
                    outputs = []
                else:
                    plot = root / "compare.png"
                    args = ["compare", str(root / "run"), *flag]
                    if name != "plot":
                        args += ["--plot", str(plot)]
                    extra = [Path(str(p) + "-reliability.png") for p in path_value]
                    outputs = [plot, root / "compare-reliability.png"] + path_value + extra
                made.append((args, outputs))
        # The positional arguments, where the command has them.
        for value in values:
            out = root / f"out-{len(made)}"
            if command == "eval":
                made.append((["eval", value], [root / "run"]))
            elif command == "study":
                made.append((["study", value], []))
            elif command == "compare":
                made.append((["compare", value, "--plot", str(out / "c.png")], [out]))
            elif command == "predict":
                made.append((["predict", value, str(image)], []))
                made.append((["predict", str(root / "run"), value], []))
    return made


def odd_folder(root):
    """A folder of images whose every other entry is odd: a name that is not UTF-8, a name
    with a newline, a FIFO, a link to /dev/zero and a symbolic link to itself, each named as
    an image."""
    folder = root / "odd-images"
    folder.mkdir()
    (folder / "plain.png").write_bytes(grey_png(2))
    (folder / os.fsdecode(b"name-\xff.png")).write_bytes(grey_png(2))
    (folder / "new\nline.png").write_bytes(grey_png(2))
    os.mkfifo(folder / "fifo.png")
    os.symlink("/dev/zero", folder / "zero.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    cases = root / "odd-cases"
    cases.mkdir()
    os.mkfifo(cases / "mlp-input.case.safetensors")
    return folder, cases


def specific_cases(root):
    """The reproductions of earlier failures that no single flag's edge value reaches."""
    images, cases = odd_folder(root)
    made = []
    for format in ["text", "json", "csv"]:
        made.append((["predict", str(root / "run"), str(images), "--format", format], []))
    made.append((["train", *TINY_RUN, "--unlabeled-dir", str(images), "--semi", "ict",
                  "--out", str(root / "odd-semi")], [root / "odd-semi", root / "runs"]))
    made.append((["parity", "--cases", str(cases)], []))
    made.append((["bench", "--model", "mlp", "--width", "4", "--channels", "1", "--image-size",
                  "4", "--steps", "18446744073709551615", "--warmup", "0"], []))
    made.append((["bench", "--model", "wrn-28-10", "--batch-size", "8", "--image-size", "4096",
                  "--steps", "1"], []))
    for shape in ([1, 1000000, 1000000], [1, 5000, 5000], [3, 29, 29]):
        made.append((["predict", str(root / "run"), str(root / "image.png")], [], shape))
    return made


def config_cases(root):
    """(args, output paths, setup) for every key of the reference run's saved configuration
    given each edge value: a copy of the run with that config.json, resumed, evaluated, and
    asked to predict."""
    saved = json.loads((root / "run" / "config.json").read_text())
    made = []
    for key in sorted(saved["train"]):
        for value in CONFIG_VALUES:
            copy = root / "edited"
            def setup(key=key, value=value, copy=copy):
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(root / "run", copy, symlinks=True)
                edited = json.loads(json.dumps(saved))
                edited["train"][key] = value
                (copy / "config.json").write_text(json.dumps(edited))
            for command in (["train", "--resume", str(copy)], ["eval", str(copy)],
                            ["predict", str(copy), str(root / "image.png")]):
                made.append((command, [copy], setup, f"{key}={value!r}"))
    return made


def shown(text):
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmix", default="target/release/mmix")
    parser.add_argument("--limit", type=float, default=8.0)
    parser.add_argument("--max-rss-mb", type=float, default=4096.0)
    options = parser.parse_args()
    mmix = str(Path(options.mmix).resolve())
    work = Path(tempfile.mkdtemp(prefix="mmix-edge-sweep-"))
    root = work / "sandbox"
    root.mkdir()
    make_sandbox(root, mmix)
    all_cases = [(args, outputs, None, "") for args, outputs in cases(mmix, root)]
    all_cases += config_cases(root)
    for case in specific_cases(root):
        if len(case) == 3:
            args, outputs, shape = case
            copy = root / "edited"
            def setup(shape=shape, copy=copy):
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(root / "run", copy, symlinks=True)
                record = json.loads((copy / "config.json").read_text())
                record["dataset"]["image_shape"] = shape
                (copy / "config.json").write_text(json.dumps(record))
            args = [copy if a == str(root / "run") else a for a in args]
            all_cases.append(([str(a) for a in args], [copy], setup, f"image_shape={shape}"))
        else:
            all_cases.append((*case, None, MUST_FINISH))
    failures = []
    codes = {}
    started = time.time()
    for args, outputs, setup, label in all_cases:
        if setup is not None:
            setup()
        before = snapshot(root, outputs)
        peak_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        code, stderr, timed_out = invoke(mmix, args, root, options.limit)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        codes[code] = codes.get(code, 0) + 1
        problems = []
        if code not in ALLOWED:
            problems.append(f"exit {code}" + (" after SIGINT" if timed_out else ""))
        elif timed_out and label == MUST_FINISH:
            problems.append(f"still running after {options.limit} s")
        if "panicked" in stderr:
            problems.append("panicked")
        if peak > peak_before and peak / 1024 > options.max_rss_mb:
            problems.append(f"peak memory {peak / 1024:.0f} MB")
        after = snapshot(root, outputs)
        changed = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
        if changed:
            problems.append("changed outside its output: " + ", ".join(changed[:3]))
        if problems:
            last = stderr.strip().splitlines()[-1:] if stderr.strip() else []
            edited = label and label != MUST_FINISH
            what = f"mmix {' '.join(args)}" + (f" with config.json {label}" if edited else "")
            failures.append(shown(f"{what}: {'; '.join(problems)} {last}"))
            print("FAIL", failures[-1], flush=True)
    print(
        f"{len(all_cases)} invocations in {time.time() - started:.0f} s, "
        f"{len(failures)} failures; exit statuses: "
        + ", ".join(f"{code}: {count}" for code, count in sorted(codes.items(), key=str))
    )
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
