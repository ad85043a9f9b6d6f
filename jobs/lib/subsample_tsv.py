#!/usr/bin/env python3
"""Copies a directory of <split>.en-xx.tsv files, keeping only N training pairs
for some languages (the very-low tier of jobs/run_lohelp.sh CORPUS=lo15).

usage: subsample_tsv.py --in DIR --out DIR --pairs N --langs hi,vi,...

The kept pairs are those whose English side has the smallest SHA-1, written in
their original order: deterministic, and largely the same English sentences for
every language cut (the corpus is multi-way parallel). dev and test are copied whole.
"""
import argparse
import hashlib
import os
import shutil
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, required=True)
    ap.add_argument("--langs", required=True)
    a = ap.parse_args()
    cut = set(filter(None, a.langs.split(",")))
    os.makedirs(a.out, exist_ok=True)
    seen = set()
    for name in sorted(os.listdir(a.src)):
        if not name.endswith(".tsv"):
            continue
        src, dst = os.path.join(a.src, name), os.path.join(a.out, name)
        split, pair = name[:-4].split(".", 1)
        lang = pair.split("-", 1)[1]
        if split != "train" or lang not in cut:
            shutil.copyfile(src, dst)
            continue
        lines = open(src, encoding="utf-8").read().splitlines()
        key = lambda i: hashlib.sha1(lines[i].split("\t", 1)[0].encode("utf-8")).digest()
        keep = sorted(sorted(range(len(lines)), key=key)[: a.pairs])
        with open(dst + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(lines[i] + "\n" for i in keep)
        os.replace(dst + ".tmp", dst)
        print(f"{name}: {len(keep)} of {len(lines)} pairs")
        seen.add(lang)
    missing = cut - seen
    if missing:
        print(f"subsample_tsv: error: no train file for {', '.join(sorted(missing))} in {a.src}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
