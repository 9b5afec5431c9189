"""The trainer's SFA round trip (save the weights, gomerge sfa --in-place, load the
merge back into the live parameters) against `gomerge sfa --out` alone, on a
llama-shaped BF16 state dict. Run by bench/roundtrip/run.sh; see its README.

    roundtrip.py prepare DIR LAYERS         anchor.safetensors and current.safetensors
    roundtrip.py trainer DIR sync|nosync|staged check|nocheck [GOMERGE_PY]
                                            one round trip in this process; prints JSON
    roundtrip.py check DIR                  a tiny run, correctness only (CI)
    roundtrip.py table RESULTS.jsonl        the markdown table of run.sh's results

The trainer mode reads current.safetensors into memory (the model being trained), runs
the steps of SFA.average_state_dict once (save, merge, load; sync_current=False with
nosync; with staged, SFA.average_state_dict itself with staging="auto", the weights
saved to /dev/shm and merged with --out into DIR), prints their times and the peak RSS, and with check then compares the live
weights bit for bit with torch's own (beta*a.float() + (1-beta)*c.float()).to(bfloat16).
"""

import importlib.util
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
BETA = 0.5
HIDDEN, INTER, VOCAB = 2048, 5504, 32000


def shapes(layers, hidden=HIDDEN, inter=INTER, vocab=VOCAB):
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = "model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (hidden,))]
        out += [(p + "self_attn.%s_proj.weight" % n, (hidden, hidden)) for n in "qkvo"]
        out += [(p + "post_attention_layernorm.weight", (hidden,))]
        out += [(p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                (p + "mlp.down_proj.weight", (hidden, inter))]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


_BASE = {}


def tensor(seed, i, shape):
    """A deterministic BF16 tensor: a slice of a seeded random block at a per-tensor
    offset (drawing every element would take minutes on two cores)."""
    if seed not in _BASE:
        g = torch.Generator().manual_seed(seed)
        _BASE[seed] = torch.empty((1 << 22) + 7919, dtype=torch.bfloat16).normal_(generator=g)
    base = _BASE[seed]
    n = 1
    for d in shape:
        n *= d
    off = (i * 104729) % base.numel()
    reps = -(-(n + off) // base.numel())
    return base.repeat(reps)[off:off + n].view(shape).clone()


def state_dict(seed, layers, **kw):
    return {name: tensor(seed, i, s) for i, (name, s) in enumerate(shapes(layers, **kw))}


def load_gomerge(path=None):
    path = path or os.path.join(HERE, "..", "..", "integrations", "python", "gomerge.py")
    spec = importlib.util.spec_from_file_location("gomerge_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SETUP = load_gomerge()


def maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_s():
    """CPU seconds (user + system) of this process and its waited-for children (gomerge)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def prepare(d, layers, gm, **kw):
    os.makedirs(d, exist_ok=True)
    for seed, name in [(1, "anchor.safetensors"), (2, "current.safetensors")]:
        sd = state_dict(seed, layers, **kw)
        gm.save_weights(sd, os.path.join(d, name))
        del sd
        _BASE.clear()


def verify(d, live):
    """Every live tensor against torch's formula on the two input files; returns the
    number of tensors that differ in any bit."""
    bad = 0
    with SETUP._Mapped(os.path.join(d, "anchor.safetensors")) as a, \
            SETUP._Mapped(os.path.join(d, "current.safetensors")) as c:
        if set(a.entries) != set(live) or set(c.entries) != set(live):
            return len(live)
        for name, t in live.items():
            want = (BETA * a.torch(name).float() + (1 - BETA) * c.torch(name).float()).to(torch.bfloat16)
            if not torch.equal(t.cpu().view(torch.int16), want.view(torch.int16)):
                bad += 1
                print("MISMATCH %s" % name, file=sys.stderr)
    return bad


def timed_phases(gm, names):
    """Wrap gm's functions names[i] (module globals, which SFA calls by name) to add
    their wall time to phases[i]; returns (phases, undo)."""
    phases = {n: 0.0 for n in names}
    saved = {n: getattr(gm, n) for n in names}

    def wrap(n, f):
        def g(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                phases[n] += time.perf_counter() - t
        return g

    for n in names:
        setattr(gm, n, wrap(n, saved[n]))
    return phases, lambda: [setattr(gm, n, f) for n, f in saved.items()]


def trainer(d, gm, sync=True, check=True, scratch="rt.safetensors", staged=False):
    rss0 = maxrss()
    # The model, as a trainer holds it: read once from current.safetensors (with this
    # tree's reader, whichever gomerge.py is timed).
    live = SETUP.load_state_dict(os.path.join(d, "current.safetensors"))
    # ROUNDTRIP_DEVICE=cuda: the live weights on the GPU, as a trainer's are (gpu/devcheck.sh e2e).
    device = os.environ.get("ROUNDTRIP_DEVICE", "cpu")
    if device != "cpu":
        live = {k: v.to(device) for k, v in live.items()}
        torch.cuda.synchronize()
    model_bytes = sum(t.numel() * t.element_size() for t in live.values())
    rss1 = maxrss()
    sfa = gm.SFA(os.path.join(d, "anchor.safetensors"), os.path.join(d, scratch), steps=1, p=1, beta=BETA)
    cpu0 = cpu_s()
    if staged:
        # SFA.average_state_dict as a trainer calls it; the phases are the time spent
        # in its save, gomerge and load calls (the rest: staging checks, mkdtemp, rmtree).
        sfa = gm.SFA(sfa.anchor, sfa.current, steps=1, p=1, beta=BETA,
                     staging=os.environ.get("ROUNDTRIP_STAGING", "auto"))
        phases, undo = timed_phases(gm, ["save_state_dict", "run", "load_into"])
        t0 = time.perf_counter()
        rep = sfa.average_state_dict(live)
        t3 = time.perf_counter()
        undo()
        t1, t2 = t0 + phases["save_state_dict"], t0 + phases["save_state_dict"] + phases["run"]
        extra = {"staging": rep.get("staging"), "staging_skipped": sfa.staging_skipped}
        if rep.get("staging") is None:
            sys.exit("not staged: %s" % sfa.staging_skipped)
    else:
        t0, t1, t2, t3, rep, extra = phased(gm, sfa, live, sync)
    cpu = cpu_s() - cpu0
    rss2 = maxrss()
    out = {"device": device, "model_bytes": model_bytes, "cpu_s": cpu, "save_s": t1 - t0, "merge_s": t2 - t1, "load_s": t3 - t2,
           "round_trip_s": t3 - t0, "gomerge_reported_s": rep.get("seconds"),
           "rss_after_import": rss0, "rss_after_model": rss1, "peak_rss": rss2}
    out.update(extra)
    if check:
        out["mismatched_tensors"] = verify(d, live)
    os.unlink(sfa.current)
    return out


def phased(gm, sfa, live, sync):
    """The phases of SFA.average_state_dict without staging, timed one by one (the sum
    is the round trip)."""
    t0 = time.perf_counter()
    if sync:
        gm.save_weights(live, sfa.current)
    else:
        gm.save_state_dict(live, sfa.current, fsync=False)
    t1 = time.perf_counter()
    rep = sfa.merge()
    t2 = time.perf_counter()
    if hasattr(gm, "load_into"):
        gm.load_into(live, sfa.current)
    else:  # the version before load_into: what average_state_dict did then
        merged = gm.load_state_dict(sfa.current)
        with torch.no_grad():
            for k, t in live.items():
                t.copy_(merged[k])
        del merged
    if any(t.is_cuda for t in live.values()):
        torch.cuda.synchronize()  # the copies to the device are done when the step may go on
    t3 = time.perf_counter()
    return t0, t1, t2, t3, rep, {}


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def table(path):
    """Medians per (folder, tool) of run.sh's JSON lines, as markdown. The ratio is the
    round trip over `gomerge sfa --out` alone in the same folder and run."""
    rows = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault((r["dir"], r["tool"]), []).append(r)
    gb = 1e9
    print("| folder | what | runs | s (median) | save s | merge s | load s | × gomerge alone | × gomerge alone, paired | CPU s (median) | CPU × gomerge alone | peak RSS | RSS / model | peak RSS − RSS after import | bit-exact |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for d in sorted(set(k[0] for k in rows)):
        alone = rows.get((d, "gomerge sfa --out"))
        base = median([r["wall_s"] for r in alone]) if alone else None
        base_cpu = median([r["cpu_s"] for r in alone]) if alone and all("cpu_s" in r for r in alone) else None
        for tool in ["gomerge sfa --out", "round trip, staged in /dev/shm", "round trip", "round trip, sync_current=False",
                     "round trip (gomerge.py before)"]:
            rs = rows.get((d, tool))
            if not rs:
                continue
            # a trainer's wall is its round trip (the process also builds and checks the model)
            wall = median([r.get("round_trip_s", r["wall_s"]) for r in rs])
            rss = max(r["peak_rss"] for r in rs)
            model = rs[0].get("model_bytes") or rows[(d, "round trip")][0]["model_bytes"]
            def ph(k):
                return "%.2f" % median([r[k] for r in rs]) if k in rs[0] else "-"
            # CPU: user + system of the round trip and the gomerge it ran (the trainer
            # rows), of the process (gomerge alone)
            cpu = median([r["cpu_s"] for r in rs]) if all("cpu_s" in r for r in rs) else None
            cpu_col = "%.2f" % cpu if cpu is not None else "-"
            cpu_ratio = "%.2f×" % (cpu / base_cpu) if cpu is not None and base_cpu else "-"
            extra = "%.2f GB" % ((rss - max(r["rss_after_import"] for r in rs)) / gb) if "rss_after_import" in rs[0] else "-"
            checked = [r["mismatched_tensors"] for r in rs if "mismatched_tensors" in r]
            exact = "-" if not checked else ("yes (%d checked)" % len(checked) if not any(checked) else "NO")
            # paired: each run over the `gomerge sfa --out` run of its own round (the
            # i-th of each), whose load it shared; the median of those ratios and
            # their range
            paired = "-"
            if alone and tool != "gomerge sfa --out" and len(rs) <= len(alone):
                rat = sorted(r.get("round_trip_s", r["wall_s"]) / a["wall_s"] for r, a in zip(rs, alone))
                paired = "%.2f× (%.2f–%.2f)" % (median(rat), rat[0], rat[-1])
            print("| %s | %s | %d | %.2f | %s | %s | %s | %s | %s | %s | %s | %.2f GB | %.2f× | %s | %s |" % (
                d, tool, len(rs), wall, ph("save_s"), ph("merge_s"), ph("load_s"),
                "%.2f×" % (wall / base) if base else "-", paired, cpu_col, cpu_ratio, rss / gb, rss / model, extra, exact))


def main(argv):
    if argv[1] == "prepare":
        prepare(argv[2], int(argv[3]), load_gomerge())
    elif argv[1] == "trainer":
        # trainer DIR sync|nosync check|nocheck [GOMERGE_PY]
        gm = load_gomerge(argv[5]) if len(argv) > 5 else SETUP
        rep = trainer(argv[2], gm, sync=argv[3] == "sync", check=argv[4] == "check", staged=argv[3] == "staged")
        print(json.dumps(rep))
        if rep.get("mismatched_tensors"):
            sys.exit("round trip differs from torch's formula in %d tensors" % rep["mismatched_tensors"])
    elif argv[1] == "check":
        # CI: a few hundred KB with the same code path; correctness only.
        gm = load_gomerge()
        kw = dict(hidden=64, inter=96, vocab=300)
        prepare(argv[2], 2, gm, **kw)
        # staged in a folder of DIR, so that the check runs on any machine
        stage = os.path.join(argv[2], "stage")
        os.makedirs(stage, exist_ok=True)
        os.environ["ROUNDTRIP_STAGING"] = stage
        for sync, staged in ((True, False), (False, False), (True, True)):
            rep = trainer(argv[2], gm, sync=sync, staged=staged)
            print(json.dumps(rep))
            if staged and os.listdir(stage):
                sys.exit("staged copy left in %s: %s" % (stage, os.listdir(stage)))
            if rep["mismatched_tensors"]:
                sys.exit("round trip differs from torch's formula in %d tensors" % rep["mismatched_tensors"])
    elif argv[1] == "table":
        table(argv[2])
    else:
        sys.exit("usage: roundtrip.py prepare|trainer|check ...")


if __name__ == "__main__":
    main(sys.argv)
