#!/usr/bin/env python3
"""Builds a miniature of the SMoE reference's m15.zip layout from the LibreOffice
fixture, so jobs/run_m4.sh and jobs/evaluate.sh can be run end to end in tests:

  OUT/data_bin/shard000/dict.txt                      fairseq dictionary (SentencePiece pieces)
  OUT/data_bin/shard000/{train,valid,test}.XX-eng.{XX,eng}.{idx,bin}
                                                      fairseq mmap datasets (uint16 ids + </s>)
  OUT/vocab_bin/sentencepiece.source.32000.model      the SentencePiece model
  OUT/retrieved_data/test.eng-XX.{eng,XX}             raw test text

The fixture's languages stand in for M4's (de=nso, fr=msa, it=tgl, nl=cat), so the
language codes, file names and the reference's --langs order are M4's; the text is
not. The .idx/.bin files follow fairseq's MMapIndexedDataset writer byte for byte
(header "MMIDIDX\\0\\0", version 1, dtype code, count, int32 sizes, int64 byte
offsets). Pieces come from Debian's spm_encode.

usage: make_fake_m15.py --fixture DIR --spm MODEL --out DIR [--map de:nso,fr:msa,it:tgl,nl:cat]
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys

SPLITS = {"train": "train", "dev": "valid", "test": "test"}
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def spm_pieces(model, lines):
    out = subprocess.run(["spm_encode", f"--model={model}", "--output_format=piece"],
                         input="\n".join(lines) + "\n", capture_output=True, text=True, check=True).stdout
    pieces = [l.split() for l in out.split("\n")[: len(lines)]]
    if len(pieces) != len(lines):
        raise SystemExit("spm_encode returned a different number of lines")
    return pieces


def write_mmap(prefix, seqs):
    """fairseq's MMapIndexedDataset with dtype uint16 (code 8)."""
    with open(prefix + ".bin", "wb") as b:
        for s in seqs:
            b.write(struct.pack(f"<{len(s)}H", *s))
    sizes = [len(s) for s in seqs]
    pointers, at = [], 0
    for n in sizes:
        pointers.append(at)
        at += 2 * n
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", 8))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack(f"<{len(sizes)}i", *sizes))
        f.write(struct.pack(f"<{len(pointers)}q", *pointers))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--spm", required=True, help="SentencePiece model trained on the fixture")
    ap.add_argument("--out", required=True)
    ap.add_argument("--map", default="de:nso,fr:msa,it:tgl,nl:cat")
    a = ap.parse_args()
    mapping = dict(x.split(":") for x in a.map.split(","))
    binp = os.path.join(a.out, "data_bin", "shard000")
    for d in (binp, os.path.join(a.out, "vocab_bin"), os.path.join(a.out, "retrieved_data")):
        os.makedirs(d, exist_ok=True)
    spm_copy = os.path.join(a.out, "vocab_bin", "sentencepiece.source.32000.model")
    shutil.copyfile(a.spm, spm_copy)

    # Dictionary: every piece of the model except the specials and language tokens
    # (fairseq's multilingual task appends __xx__ for --langs itself).
    vocab = a.spm[: -len(".model")] + ".vocab"
    pieces = [l.split("\t")[0] for l in open(vocab, encoding="utf-8")]
    symbols = [p for p in pieces if p not in SPECIALS and not (p.startswith("__") and p.endswith("__"))]
    with open(os.path.join(binp, "dict.txt"), "w", encoding="utf-8") as f:
        for i, p in enumerate(symbols):
            f.write(f"{p} {len(symbols) - i}\n")
    ids = {p: i + len(SPECIALS) for i, p in enumerate(symbols)}

    for src_lang, code in mapping.items():
        for split, fsplit in SPLITS.items():
            path = os.path.join(a.fixture, f"{split}.en-{src_lang}.tsv")
            rows = [l.rstrip("\n").split("\t") for l in open(path, encoding="utf-8")]
            eng, xx = [r[0] for r in rows], [r[1] for r in rows]
            for lang, text in (("eng", eng), (code, xx)):
                seqs = [[ids.get(p, 3) for p in ps] + [2] for ps in spm_pieces(a.spm, text)]
                write_mmap(os.path.join(binp, f"{fsplit}.{code}-eng.{lang}"), seqs)
                if fsplit == "test":
                    with open(os.path.join(a.out, "retrieved_data", f"test.eng-{code}.{lang}"), "w",
                              encoding="utf-8") as f:
                        f.writelines(t + "\n" for t in text)
    print(f"fake m15 layout in {a.out}: {len(symbols)} dictionary symbols, languages {sorted(mapping.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
