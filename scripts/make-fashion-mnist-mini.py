#!/usr/bin/env python3
"""Regenerates assets/fashion-mnist-mini from Debian's dataset-fashion-mnist package.

Deterministic: the first 600 training and 100 test images of each class, in file order,
written as gzip IDX files with a zero timestamp, so the output is byte-identical each run.
"""
import gzip
import pathlib
import struct
import sys

SOURCE = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
TARGET = pathlib.Path(__file__).resolve().parent.parent / "assets" / "fashion-mnist-mini"
PER_CLASS = {"train": 600, "t10k": 100}


def read_idx(path):
    data = gzip.open(path).read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return dims, data[4 + 4 * ndim :]


def write_idx(path, dims, payload):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
            out.write(header + payload)


for split, per_class in PER_CLASS.items():
    (count, rows, cols), pixels = read_idx(SOURCE / f"{split}-images-idx3-ubyte.gz")
    _, labels = read_idx(SOURCE / f"{split}-labels-idx1-ubyte.gz")
    size = rows * cols
    taken = {c: 0 for c in range(10)}
    chosen = []
    for i, label in enumerate(labels):
        if taken[label] < per_class:
            taken[label] += 1
            chosen.append(i)
    images = b"".join(pixels[i * size : (i + 1) * size] for i in chosen)
    write_idx(TARGET / f"{split}-images-idx3-ubyte.gz", (len(chosen), rows, cols), images)
    write_idx(TARGET / f"{split}-labels-idx1-ubyte.gz", (len(chosen),), bytes(labels[i] for i in chosen))
    print(f"{split}: {len(chosen)} images")
