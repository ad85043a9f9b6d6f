#!/usr/bin/python3
"""Compares two safetensors files tensor by tensor (numpy only).

usage: compare_safetensors.py A B [--rtol R] [--atol A] [--expect-differ]

Prints the largest absolute difference and the tensor it is in. Exit 0 when
every tensor has the same name set, shape and dtype and all values satisfy
|a - b| <= atol + rtol * |b|; with --expect-differ, exit 0 only when the
names and shapes match but some value breaks that tolerance (a negative
control: the comparison can fail). Exit 1 otherwise, 2 on unreadable input.
"""
import argparse
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: {name} has unsupported dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        a = np.frombuffer(blob[base + lo : base + hi], dtype=DTYPES[info["dtype"]])
        out[name] = a.reshape(info["shape"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-6)
    ap.add_argument("--expect-differ", action="store_true")
    args = ap.parse_args()
    try:
        ta, tb = load(args.a), load(args.b)
    except (OSError, ValueError, KeyError) as e:
        print(f"compare_safetensors: {e}")
        return 2
    if sorted(ta) != sorted(tb):
        print(f"compare_safetensors: tensor names differ: {sorted(set(ta) ^ set(tb))[:5]}")
        return 1
    worst, worst_name, violations = 0.0, "", 0
    for name in sorted(ta):
        a, b = ta[name], tb[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"compare_safetensors: {name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
            return 1
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        d = np.abs(a64 - b64)
        if d.size and d.max() > worst:
            worst, worst_name = float(d.max()), name
        violations += int(np.count_nonzero(d > args.atol + args.rtol * np.abs(b64)))
    print(f"  {len(ta)} tensors, max |diff| {worst:.3g} (in {worst_name or '-'}), "
          f"{violations} values outside atol {args.atol:g} + rtol {args.rtol:g}")
    if args.expect_differ:
        return 0 if violations > 0 else 1
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
