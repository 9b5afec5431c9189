"""Summarize full runs of experiment.py over several seeds.

    python3 examples/lm/seeds.py --out examples/lm/seeds.md \\
        examples/lm/results.csv examples/lm/seeds/results_seed2.csv ...

Each argument is one run's results.csv (the seed is read from its file name,
results_seedN.csv, or taken as 1 for results.csv). Writes a markdown page with, for the
rows after the last task, the mean and range over the seeds of Math accuracy, each
domain's held-out bpc, each old task's forgetting and the distance to theta_Math, then
the paper's claims (README, "What matches the paper") checked seed by seed. Standard
library only: it reads what the runs wrote and trains nothing.
"""

import argparse
import csv
import os
import re
import statistics

COLS = [
    ("acc_math", "Math acc", "%.3f"),
    ("bpc_math", "Math bpc", "%.3f"),
    ("bpc_law", "Law bpc", "%.3f"),
    ("bpc_code", "Code bpc", "%.3f"),
    ("bpc_english", "English bpc", "%.3f"),
    ("fgt_math", "Math forgetting (Δbpc)", "%+.3f"),
    ("fgt_law", "Law forgetting (Δbpc)", "%+.3f"),
    ("l2_to_math", "L2 to θ_Math", "%.2f"),
]


def seed_of(path):
    m = re.search(r"seed(\d+)", os.path.basename(path))
    return int(m.group(1)) if m else 1


def read_run(path):
    """{row label: {column: value}} after the last task, with forgetting added."""
    with open(path, newline="") as f:
        recs = list(csv.DictReader(f))

    def label(r):
        return (r["method"] + " " + r["param"]).strip()

    def num(v):
        return float(v) if v not in ("", None) else None

    theta = next(r for r in recs if r["method"] == "math" and r["stage"] == "math")
    law_end = {label(r): r for r in recs if r["stage"] == "law"}
    rows = {}
    for r in recs:
        if r["stage"] != "code":
            continue
        v = {k: num(r.get(k)) for k, _, _ in COLS if k in r}
        v["fgt_math"] = num(r["bpc_math"]) - float(theta["bpc_math"])
        at_law = law_end.get(label(r))
        v["fgt_law"] = num(r["bpc_law"]) - float(at_law["bpc_law"]) if at_law else None
        rows[label(r)] = v
    return rows


def cell(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return ""
    if len(vals) == 1:
        return fmt % vals[0]
    return "%s (%s … %s)" % (fmt % statistics.fmean(vals), fmt % min(vals), fmt % max(vals))


# The claims of README's "What matches the paper", as predicates on one seed's rows.
CLAIMS = [
    ("sequential forgets Math (Δbpc > 1)",
     lambda r: r["sequential"]["fgt_math"] > 1),
    ("SFA p=0.25 forgets less Math than sequential",
     lambda r: r["sfa p=0.25 beta=0.5"]["bpc_math"] < r["sequential"]["bpc_math"]),
    ("SFA p=0.25 forgets less Law than sequential",
     lambda r: r["sfa p=0.25 beta=0.5"]["bpc_law"] < r["sequential"]["bpc_law"]),
    ("SFA at p=0.1 keeps more Math than at p=1",
     lambda r: r["sfa p=0.1 beta=0.5"]["bpc_math"] < r["sfa p=1 beta=0.5"]["bpc_math"]),
    ("SFA's distance to θ_Math falls with p (1 > 0.5 > 0.25 > 0.1)",
     lambda r: r["sfa p=1 beta=0.5"]["l2_to_math"] > r["sfa p=0.5 beta=0.5"]["l2_to_math"]
     > r["sfa p=0.25 beta=0.5"]["l2_to_math"] > r["sfa p=0.1 beta=0.5"]["l2_to_math"]),
    ("larger β keeps more Math (β=0.75 < 0.5 < 0.25 in Math bpc, p=0.25)",
     lambda r: r["sfa_beta p=0.25 beta=0.75"]["bpc_math"] < r["sfa p=0.25 beta=0.5"]["bpc_math"]
     < r["sfa_beta p=0.25 beta=0.25"]["bpc_math"]),
    ("SFA p=0.25 keeps more Math than TIES (either density)",
     lambda r: all(r["sfa p=0.25 beta=0.5"]["bpc_math"] < v["bpc_math"]
                   for k, v in r.items() if k.startswith("ties "))),
    ("SFA p=0.25 keeps more Math than task arithmetic λ=0.333",
     lambda r: r["sfa p=0.25 beta=0.5"]["bpc_math"] < r["task_arithmetic lambda=0.333"]["bpc_math"]),
    ("SFA p=0.25 keeps more Math than L2 λ=0.01",
     lambda r: r["sfa p=0.25 beta=0.5"]["bpc_math"] < r["l2 lambda=0.01"]["bpc_math"]),
    ("rehearsal (10 % buffer) keeps more Math than SFA p=0.25",
     lambda r: r["rehearsal buffer=0.1"]["bpc_math"] < r["sfa p=0.25 beta=0.5"]["bpc_math"]),
    ("EWC λ=1 keeps more Math than SFA p=0.25",
     lambda r: r["ewc lambda=1"]["bpc_math"] < r["sfa p=0.25 beta=0.5"]["bpc_math"]),
    ("sequential is best on Code",
     lambda r: all(r["sequential"]["bpc_code"] <= v["bpc_code"] for k, v in r.items()
                   if k not in ("pretrained", "math", "multitask"))),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the markdown file to write")
    ap.add_argument("runs", nargs="+", help="results.csv of each seed's full run")
    a = ap.parse_args()
    runs = sorted(((seed_of(p), read_run(p)) for p in a.runs), key=lambda sr: sr[0])
    seeds = [s for s, _ in runs]
    labels = [k for k in runs[0][1] if all(k in r for _, r in runs)]
    out = ["# The LM experiment over seeds %s" % ", ".join(map(str, seeds)), "",
           "Written by `seeds.py` from the full runs' results.csv files "
           "(`experiment.py --seed N`, the same configuration as README's seed-1 run). "
           "After the last task (Code); each cell is the mean over the seeds and, in "
           "brackets, the lowest and highest. Forgetting is the rise in held-out bpc "
           "since the end of the task's own stage.", "",
           "| row | " + " | ".join(h for _, h, _ in COLS) + " |",
           "|---|" + "---:|" * len(COLS)]
    for k in labels:
        out.append("| %s | " % k + " | ".join(
            cell([r[k].get(c) for _, r in runs], fmt) for c, _, fmt in COLS) + " |")
    out += ["", "## The findings, seed by seed", "",
            "| claim | " + " | ".join("seed %d" % s for s in seeds) + " | holds in every seed |",
            "|---|" + "---|" * (len(seeds) + 1)]
    for text, pred in CLAIMS:
        got = []
        for _, r in runs:
            try:
                got.append(bool(pred(r)))
            except (KeyError, TypeError):
                got.append(None)
        marks = ["yes" if g else ("no" if g is False else "n/a") for g in got]
        every = "**yes**" if all(g is True for g in got) else "no"
        out.append("| %s | %s | %s |" % (text, " | ".join(marks), every))
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
