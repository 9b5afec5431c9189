"""results.md (the forgetting table) and the plots, from the rows of results.csv."""

import os

FAMILY = {"sequential": "k", "multitask": "tab:purple", "rehearsal": "tab:brown", "sfa": "tab:blue",
          "sfa_beta": "tab:cyan", "sfa_fisher": "tab:olive", "l2": "tab:red", "ewc": "tab:orange",
          "task_arithmetic": "tab:green", "ties": "tab:pink"}
LABELS = {"english": "English", "math": "Math", "law": "Law", "code": "Code"}


def _f(r, k):
    v = r.get(k, "")
    return float(v) if v not in ("", None) else None


def label(r):
    return (r["method"] + (" " + r["param"] if r["param"] else "")).strip()


def final_rows(rows):
    """One row per method and parameter: its state after Code (post-hoc merges have
    only that), plus the two shared reference models."""
    ref = [r for r in rows if r["method"] in ("pretrained", "math")]
    return ref + [r for r in rows if r["stage"] == "code"]


def _bytes(n):
    n = int(float(n))
    if n == 0:
        return "0"
    for unit, s in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= s:
            return "%.2f %s" % (n / s, unit)
    return "%d B" % n


def table(rows, stage):
    """The markdown table of every row after `stage` (law or code)."""
    by = {(r["method"], r["param"]): r for r in rows if r["stage"] == "law"}
    math = next(r for r in rows if r["method"] == "math")
    lines = ["| row | Math acc | Math bpc | Law bpc | Code bpc | English bpc | Math forgetting (Δbpc) | "
             "Law forgetting (Δbpc) | L2 to θ_Math | gomerge merges | ms/step | extra RAM | extra disk |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    sel = [r for r in rows if r["method"] in ("pretrained", "math")] + [r for r in rows if r["stage"] == stage]
    for r in sel:
        fm = _f(r, "bpc_math") - _f(math, "bpc_math")
        after_law = by.get((r["method"], r["param"]))
        if stage == "code" and after_law is not None:
            fl = "%+.3f" % (_f(r, "bpc_law") - _f(after_law, "bpc_law"))
        else:
            fl = ""
        l2 = _f(r, "l2_to_math")
        lines.append("| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %s | %s | %s | %s | %s | %s |" % (
            label(r), _f(r, "acc_math"), _f(r, "bpc_math"), _f(r, "bpc_law"), _f(r, "bpc_code"),
            _f(r, "bpc_english"), "%+.3f" % fm if r["method"] != "pretrained" else "", fl,
            "%.2f" % l2 if l2 is not None else "", r["merges"],
            "%.0f" % _f(r, "step_ms") if _f(r, "step_ms") else "", _bytes(r["extra_ram_bytes"]),
            _bytes(r["extra_disk_bytes"])))
    return "\n".join(lines)


def cost_table(cost):
    s = cost["step_ms"]
    rt = cost["sfa_round_trip_ms"]
    lines = ["| method | ms per step | extra per step from merges (p = 0.1, T = %d) | extra RAM |" % cost.get("steps", 0),
             "|---|---:|---:|---:|"]
    T = cost.get("steps", 0)
    every = max(1, int(0.1 * T)) if T else 0
    lines.append("| sequential | %.1f | 0 | 0 |" % s["sequential"])
    lines.append("| SFA p=0.1 | %.1f | %.2f ms (one %.1f ms round trip every %d steps) | 0 (anchor on disk: %s) |" % (
        s["sequential"], rt / every if every else 0, rt, every, _bytes(cost["model_bytes"])))
    lines.append("| L2 | %.1f | 0 | %s (the anchor) |" % (s["l2"], _bytes(cost["model_bytes"])))
    lines.append("| EWC | %.1f | 0 | %s (anchor + Fisher) |" % (s["ewc"], _bytes(2 * cost["model_bytes"])))
    return "\n".join(lines)


def write(rows, cost, out):
    md = ["# Results", "", cost.get("description", ""), "",
          "Held-out bits per character (lower is better) and Math exact-match accuracy after the last task "
          "(Code). Forgetting is the rise in a task's held-out bpc since the end of its own stage.", "",
          table(rows, "code"), "", "After the second task (Law):", "", table(rows, "law"), "",
          "Cost per step, measured back to back in one process:", "", cost_table(cost), ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    plots(rows, out)


def plots(rows, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fin = [r for r in rows if r["stage"] == "code"]
    seq = next((r for r in fin if r["method"] == "sequential"), None)
    math = next(r for r in rows if r["method"] == "math")
    colors = {"math": "tab:blue", "law": "tab:orange", "code": "tab:green", "english": "tab:gray"}

    def sweep(points, xlabel, fname, title, logx):
        if len(points) < 2:
            return
        points.sort()
        xs = [x for x, _ in points]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for dom in ("math", "law", "code", "english"):
            a1.plot(xs, [_f(r, "bpc_" + dom) for _, r in points], "o-", color=colors[dom], label=LABELS[dom])
            if seq:
                a1.axhline(_f(seq, "bpc_" + dom), color=colors[dom], ls="--", lw=0.8)
        a1.set_xlabel(xlabel)
        a1.set_ylabel("held-out bits per character after Code")
        a1.set_title("loss (dashed: sequential)")
        a1.legend(fontsize=8)
        a2.plot(xs, [_f(r, "acc_math") for _, r in points], "o-", color=colors["math"], label="SFA")
        if seq:
            a2.axhline(_f(seq, "acc_math"), color="k", ls="--", lw=0.8, label="sequential")
        a2.axhline(_f(math, "acc_math"), color=colors["math"], ls=":", lw=0.8, label="θ_Math (before Law)")
        a2.set_xlabel(xlabel)
        a2.set_ylabel("Math exact-match accuracy after Code")
        a2.set_ylim(0, 1)
        a2.legend(fontsize=8)
        for a in (a1, a2):
            if logx:
                a.set_xscale("log")
                a.set_xticks(xs)
                a.set_xticklabels(["%g" % x for x in xs])
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=100)
        plt.close(fig)

    sfa = [r for r in fin if r["method"] == "sfa"]
    sweep([(float(_param(r, "p")), r) for r in sfa], "p (averaging every p·T steps)", "sfa_p.png",
          "SFA, β = 0.5: loss and accuracy against p", True)
    bp = [r for r in fin if r["method"] == "sfa_beta"]
    if bp:
        p0 = _param(bp[0], "p")
        pts = [(float(_param(r, "beta")), r) for r in bp]
        pts += [(float(_param(r, "beta")), r) for r in sfa if _param(r, "p") == p0]
        sweep(pts, "β (weight of the anchor)", "sfa_beta.png", "SFA at p = %s: loss and accuracy against β" % p0, False)

    # The trade-off: old tasks against the new one.
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {"sequential": "s", "multitask": "*", "rehearsal": "P", "sfa": "o", "sfa_beta": "o",
               "sfa_fisher": "D", "l2": "^", "ewc": "v", "task_arithmetic": "x", "ties": "X"}
    for r in fin:
        old = (_f(r, "bpc_math") + _f(r, "bpc_law")) / 2
        ax.scatter(_f(r, "bpc_code"), old, marker=markers.get(r["method"], "."), s=50,
                   color=FAMILY.get(r["method"], "k"))
        ax.annotate(label(r), (_f(r, "bpc_code"), old), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("Code held-out bpc (new task)")
    ax.set_ylabel("mean of Math and Law held-out bpc (old tasks)")
    ax.set_title("After Math → Law → Code: lower left is better")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "front.png"), dpi=100)
    plt.close(fig)


def _param(r, key):
    for kv in r["param"].split():
        k, _, v = kv.partition("=")
        if k == key:
            return v
    return None
