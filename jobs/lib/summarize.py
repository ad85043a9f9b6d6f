#!/usr/bin/env python3
"""Averages of the per-direction scores jobs/evaluate.sh wrote, laid out as the
paper's tables: Table 1 (M4: every direction, then the average) and Table 2 (M15:
eng->xx and xx->eng, each over all / high / low / very-low languages, then the
average of the two "all" columns), as the reference's get_m15_mean.py does.

usage: summarize.py BLEU_TSV --en eng --xx nso,msa,... [--groups "high:a,b;low:c"]
                    [--tsv OUT_TSV]
Prints the tables; --tsv also writes "side group metric value n" rows.
Standard library only.
"""
import argparse
import csv
import sys

METRICS = [("bleu", "BLEU"), ("sacrebleu", "sacreBLEU"), ("chrf", "chrF2")]


def mean(values):
    return sum(values) / len(values) if values else None


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bleu_tsv")
    ap.add_argument("--en", required=True)
    ap.add_argument("--xx", required=True, help="non-English languages in table order")
    ap.add_argument("--groups", default="", help='"name:lang,lang;name:..."')
    ap.add_argument("--tsv", help="also write the averages here")
    a = ap.parse_args()

    rows = list(csv.DictReader(open(a.bleu_tsv, encoding="utf-8"), delimiter="\t"))
    score = {}  # (src, tgt) -> row
    for r in rows:
        score[(r["src"], r["tgt"])] = r
    xx = [x for x in a.xx.split(",") if x]
    groups = []
    for g in filter(None, a.groups.split(";")):
        name, members = g.split(":", 1)
        groups.append((name, [m for m in members.split(",") if m]))
    missing = [f"{s}-{t}" for x in xx for (s, t) in ((x, a.en), (a.en, x)) if (s, t) not in score]

    sides = [("xx->" + a.en, lambda x: (x, a.en)), (a.en + "->xx", lambda x: (a.en, x))]
    out_rows = []

    def values(side_key, langs, metric):
        return [float(score[side_key(x)][metric]) for x in langs if side_key(x) in score]

    # Per direction (Table 1 reads along these rows: xx->en, then en->xx).
    print(f"{'direction':<12}{'group':<10}" + "".join(f"{label:>11}" for _, label in METRICS))
    for name, key in sides:
        for x in xx:
            k = key(x)
            if k not in score:
                continue
            r = score[k]
            print(f"{k[0] + '-' + k[1]:<12}{(r.get('group') or '-'):<10}"
                  + "".join(f"{fmt(float(r[m])):>11}" for m, _ in METRICS))
    all_cells = []
    for m, _ in METRICS:
        vals = [float(score[key(x)][m]) for _, key in sides for x in xx if key(x) in score]
        all_cells.append(mean(vals))
        out_rows.append(("all", "all", m, mean(vals), len(vals)))
    print(f"{'average':<22}" + "".join(f"{fmt(v):>11}" for v in all_cells))

    # By side and language group (Table 2's layout), one block per metric.
    cols = [("all", xx)] + groups
    for metric, label in METRICS:
        print()
        print(f"{label:<12}" + "".join(f"{c:>10}" for c, _ in cols))
        side_all = []
        for name, key in sides:
            cells = []
            for cname, langs in cols:
                vals = values(key, langs, metric)
                cells.append(fmt(mean(vals)))
                out_rows.append((name, cname, metric, mean(vals), len(vals)))
                if cname == "all" and vals:
                    side_all.append(mean(vals))
            print(f"{name:<12}" + "".join(f"{c:>10}" for c in cells))
        avg = mean(side_all) if len(side_all) == 2 else None
        print(f"{'Avg':<12}{fmt(avg):>10}   (mean of the two 'all' cells: the paper's Avg)")
        out_rows.append(("avg", "all", metric, avg, len(side_all)))
    if missing:
        print(f"missing directions ({len(missing)}): {' '.join(missing)}")
    if a.tsv:
        with open(a.tsv, "w", encoding="utf-8") as f:
            f.write("side\tgroup\tmetric\tvalue\tn\n")
            for side, g, m, v, n in out_rows:
                f.write(f"{side}\t{g}\t{m}\t{'' if v is None else f'{v:.4f}'}\t{n}\n")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
