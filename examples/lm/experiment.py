"""The paper's LLM experiment in miniature: a byte-level transformer pretrained on
package documentation, then trained on Math, Law and Code in sequence, with every
continual-learning method of Kleiman et al. (2025) that the issue names. Every merge
(SFA during training, Fisher-weighted SFA, task arithmetic and TIES after it) runs in
the gomerge binary through integrations/python/gomerge.py.

    python3 examples/lm/experiment.py --out examples/lm            # full run
    python3 examples/lm/experiment.py --reduced --out /tmp/lm      # the CI run
    python3 examples/lm/experiment.py --replot examples/lm/results.csv --out examples/lm

See README.md beside this file for the set-up and the results.
"""

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integrations", "python"))

import gomerge as gm  # noqa: E402  (after the path is set)
import torch  # noqa: E402

import data  # noqa: E402
import model as lm  # noqa: E402
import report  # noqa: E402

TASKS = ["math", "law", "code"]
DOMAINS = ["english", "math", "law", "code"]


@dataclasses.dataclass
class Config:
    d: int = 64
    layers: int = 2
    heads: int = 4
    ctx: int = 32
    batch: int = 16
    lr: float = 3e-3
    pretrain_steps: int = 1000
    math_steps: int = 2500
    steps: int = 300             # T: steps on Law and on Code, for every row
    english_bytes: int = 1 << 20
    code_bytes: int = 1 << 20
    math_train: int = 20000      # training problems in the Math stream
    eval_windows: int = 256      # held-out windows of ctx bytes per domain
    math_eval: int = 500         # held-out problems for accuracy
    math_prompt: int = 16        # bytes of context before each "="
    fisher_windows: int = 64
    buffer: float = 0.1          # rehearsal: fraction of each old task's training data
    sfa_p: tuple = (1.0, 0.5, 0.25, 0.1)
    beta: float = 0.5
    beta_sweep_p: float = 0.25
    betas: tuple = (0.25, 0.75)  # besides beta, at beta_sweep_p
    fisher_p: float = 0.25
    fisher_scales: tuple = (1.0, 10.0)   # eta = scale / mean(F)
    l2: tuple = (0.01, 0.1, 1.0)
    ewc: tuple = (0.1, 1.0)              # lambda on F / mean(F)
    ta_lambdas: tuple = (1 / 3, 2 / 3)
    ties_densities: tuple = (0.2, 0.5)
    cost_steps: int = 40


FULL = Config()
REDUCED = Config(d=48, layers=2, heads=4, ctx=32, batch=16, lr=2e-3, pretrain_steps=150, math_steps=400,
                 steps=120, english_bytes=1 << 18, code_bytes=1 << 18, math_train=8000, eval_windows=48,
                 math_eval=200, math_prompt=16, fisher_windows=16, sfa_p=(1.0, 0.25), betas=(), fisher_scales=(),
                 l2=(0.1,), ewc=(), ta_lambdas=(1 / 3,), ties_densities=(), cost_steps=10)


def describe(cfg, n):
    return ("Byte-level transformer: d=%d, %d layers, %d heads, context %d, %d parameters; AdamW lr %g, "
            "batch %d; %d steps pretraining on English, %d on Math, T = %d steps on Law and on Code."
            % (cfg.d, cfg.layers, cfg.heads, cfg.ctx, n, cfg.lr, cfg.batch, cfg.pretrain_steps, cfg.math_steps,
               cfg.steps))


# --- data ---------------------------------------------------------------------------

class Data:
    """The corpora as uint8 tensors, the held-out windows and the Math prompts."""

    def __init__(self, cfg):
        doms = data.load(cfg.english_bytes, cfg.code_bytes, cfg.math_train)
        self.train = {k: torch.frombuffer(bytearray(d.train), dtype=torch.uint8) for k, d in doms.items()}
        self.heldout = {k: lm.windows(d.heldout, cfg.ctx, cfg.eval_windows) for k, d in doms.items()}
        p, a = lm.math_prompts(doms["math"].heldout, cfg.math_prompt)
        self.prompts, self.answers = p[:cfg.math_eval], a[:cfg.math_eval]
        # The rehearsal buffer: every 1/buffer-th block of each task's training data.
        self.buffer = {}
        for k in TASKS:
            t = self.train[k]
            every = max(1, round(1 / cfg.buffer))
            blocks = [t[i:i + data.BLOCK] for i in range(0, len(t), data.BLOCK)]
            self.buffer[k] = torch.cat(blocks[::every])


def batches(sources, weights, cfg, seed):
    """An endless stream of (batch, ctx+1) windows: each row from a source drawn with
    the given weights, at a uniform offset. The same seed gives the same stream."""
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor(weights, dtype=torch.float64)
    while True:
        which = torch.multinomial(w, cfg.batch, replacement=True, generator=g).tolist()
        rows = []
        for s in which:
            src = sources[s]
            off = torch.randint(0, len(src) - cfg.ctx - 1, (1,), generator=g).item()
            rows.append(src[off:off + cfg.ctx + 1])
        yield torch.stack(rows).long()


def stage_seed(seed, name):
    return zlib.crc32(("%d/%s" % (seed, name)).encode())


# --- training -----------------------------------------------------------------------

def new_model(cfg, seed):
    torch.manual_seed(seed)
    return lm.LM(cfg.d, cfg.layers, cfg.heads, cfg.ctx)


def train(model, cfg, stream, steps, penalty=None, sfa=None, lr=None):
    """steps AdamW steps on the stream; penalty(model) is added to the loss; sfa (a
    gomerge.SFA) averages at its schedule's steps. Returns timings."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr or cfg.lr, weight_decay=0.0)
    merge_s, merges = 0.0, 0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss = model.loss(next(stream))
        if penalty is not None:
            loss = loss + penalty(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sfa is not None and sfa.is_merge_step(step):
            t = time.perf_counter()
            sfa.maybe_average(model, step)
            merge_s += time.perf_counter() - t
            merges += 1
    return {"train_seconds": time.perf_counter() - t0, "merge_seconds": merge_s, "merges": merges}


def l2_penalty(anchor, lam, weights=None):
    """lam/2 * sum_j w_j (theta_j - anchor_j)^2 (w = 1 for L2, F/mean(F) for EWC)."""
    def penalty(model):
        total = 0.0
        for k, p in model.named_parameters():
            d = (p - anchor[k]) ** 2
            total = total + (d * weights[k] if weights is not None else d).sum()
        return 0.5 * lam * total
    return penalty


def evaluate(model, d):
    out = {"bpc_" + k: lm.bits_per_char(model, d.heldout[k]) for k in DOMAINS}
    out["acc_math"] = lm.math_accuracy(model, d.prompts, d.answers)
    return out


def distance(model, ref):
    """L2 distance of the model's weights to ref (float64 sum)."""
    s = 0.0
    for k, p in model.named_parameters():
        s += ((p.detach().double() - ref[k].double()) ** 2).sum().item()
    return s ** 0.5


def fisher_mean(f):
    n = sum(v.numel() for v in f.values())
    return sum(v.double().sum().item() for v in f.values()) / n


def tensor_bytes(ts):
    return sum(t.numel() * t.element_size() for t in ts)


# --- rows ---------------------------------------------------------------------------

def stage_sources(method, d, cfg, k):
    """(sources, weights) for task index k (1 = Law, 2 = Code) under method."""
    task = TASKS[k]
    if method == "multitask":
        # Every task seen so far, in equal shares.
        srcs = [d.train[t] for t in TASKS[:k + 1]]
        return srcs, [1.0] * len(srcs)
    if method == "rehearsal":
        # The new task plus a buffer of each old one, drawn uniformly from the union.
        srcs = [d.train[task]] + [d.buffer[t] for t in TASKS[:k]]
        return srcs, [float(len(s)) for s in srcs]
    return [d.train[task]], [1.0]


def run_row(args):
    """Train one row through Law and Code from the shared theta_Math. Runs in a worker
    process; returns the row's results after each stage."""
    cfg, method, param, work, seed, binary = args
    torch.set_num_threads(1)
    wd = row_dir(work, method, param)
    os.makedirs(wd, exist_ok=True)
    done = os.path.join(wd, "result.json")
    if os.path.exists(done):
        # Trained by an earlier run with the same --work: its results stand.
        with open(done) as f:
            return json.load(f)
    d = Data(cfg)
    model = new_model(cfg, seed)
    model.load_state_dict(gm.load_state_dict(os.path.join(work, "math.safetensors")))
    theta_math = {k: v.detach().clone() for k, v in model.named_parameters()}
    anchor_file = os.path.join(wd, "anchor.safetensors")
    shutil.copyfile(os.path.join(work, "math.safetensors"), anchor_file)
    fisher = gm.load_state_dict(os.path.join(work, "math_fisher.safetensors")) if method in ("ewc", "sfa_fisher") else None
    out = []
    for k in (1, 2):
        task = TASKS[k]
        srcs, w = stage_sources(method, d, cfg, k)
        stream = batches(srcs, w, cfg, stage_seed(seed, task))
        penalty, sfa, ram, disk = None, None, 0, 0
        if method == "l2":
            anchor = {k2: v.detach().clone() for k2, v in model.named_parameters()}
            penalty, ram = l2_penalty(anchor, param["lambda"]), tensor_bytes(anchor.values())
        elif method == "ewc":
            anchor = {k2: v.detach().clone() for k2, v in model.named_parameters()}
            m = fisher_mean(fisher)
            wts = {k2: (v / m).float() for k2, v in fisher.items()}
            penalty = l2_penalty(anchor, param["lambda"], wts)
            ram = tensor_bytes(anchor.values()) + tensor_bytes(wts.values())
        elif method in ("sfa", "sfa_beta", "sfa_fisher"):
            current = os.path.join(wd, "current.safetensors")
            kw = {"beta": param.get("beta", cfg.beta)}
            if method == "sfa_fisher":
                ffile = os.path.join(wd, "fisher.safetensors")
                gm.save_weights(fisher, ffile)
                kw = {"fisher": ffile, "eta": param["scale"] / fisher_mean(fisher)}
                disk += os.path.getsize(ffile)
            sfa = gm.SFA(anchor=anchor_file, current=current, steps=cfg.steps, p=param["p"],
                         binary=binary, threads=1, **kw)
            disk += os.path.getsize(anchor_file)
        elif method in ("rehearsal", "multitask"):
            ram = tensor_bytes(srcs[1:]) if method == "rehearsal" else tensor_bytes(srcs[:-1])
        t = train(model, cfg, stream, cfg.steps, penalty=penalty, sfa=sfa)
        if sfa is not None:
            # The merge at step T is the next task's anchor.
            sfa.finish_task()
        if method in ("ewc", "sfa_fisher") and k == 1:
            # Online EWC: add the Fisher of the task just learned, at the model that ends it.
            fl = lm.empirical_fisher(model, next_windows(d.train["law"], cfg, seed))
            fisher = {k2: fisher[k2] + fl[k2] for k2 in fisher}
        if method == "sequential":
            gm.save_weights(model, os.path.join(work, "seq_%s.safetensors" % task))
        row = {"method": method, "param": fmt_param(param), "stage": task, "merges": t["merges"],
               "train_seconds": t["train_seconds"], "merge_seconds": t["merge_seconds"],
               "step_ms": 1000 * t["train_seconds"] / cfg.steps, "extra_ram_bytes": ram, "extra_disk_bytes": disk,
               "l2_to_math": distance(model, theta_math)}
        row.update(evaluate(model, d))
        out.append(row)
        print("%-28s %-5s %s" % (method + " " + row["param"], task, short(row)), flush=True)
    with open(done + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(done + ".tmp", done)
    return out


def row_dir(work, method, param):
    """The row's folder in work: its checkpoints and, once finished, result.json."""
    return os.path.join(work, ("%s_%s" % (method, param)).replace("=", "").replace(" ", "_"))


def next_windows(src, cfg, seed):
    g = torch.Generator().manual_seed(seed + 99)
    offs = torch.randint(0, len(src) - cfg.ctx - 1, (cfg.fisher_windows,), generator=g).tolist()
    return [src[o:o + cfg.ctx + 1].long() for o in offs]


def fmt_param(param):
    if not param:
        return ""
    return " ".join("%s=%s" % (k, ("%.3g" % v) if isinstance(v, float) else v) for k, v in param.items())


def short(row):
    return " ".join("%s %.3f" % (k.replace("bpc_", ""), row[k]) for k in
                    ["bpc_english", "bpc_math", "bpc_law", "bpc_code", "acc_math"])


def row_specs(cfg):
    specs = [("sequential", {}), ("multitask", {}), ("rehearsal", {"buffer": cfg.buffer})]
    specs += [("sfa", {"p": p, "beta": cfg.beta}) for p in cfg.sfa_p]
    specs += [("sfa_beta", {"p": cfg.beta_sweep_p, "beta": b}) for b in cfg.betas]
    specs += [("sfa_fisher", {"p": cfg.fisher_p, "scale": s}) for s in cfg.fisher_scales]
    specs += [("l2", {"lambda": x}) for x in cfg.l2]
    specs += [("ewc", {"lambda": x}) for x in cfg.ewc]
    return specs


# --- post-hoc merges ----------------------------------------------------------------

def post_hoc(cfg, d, work, binary, seed):
    """Task arithmetic and TIES over the sequential run's end-of-task checkpoints, with
    the pretrained model as the base."""
    base = os.path.join(work, "pretrained.safetensors")
    models = [os.path.join(work, "math.safetensors"), os.path.join(work, "seq_law.safetensors"),
              os.path.join(work, "seq_code.safetensors")]
    model = new_model(cfg, seed)
    theta_math = gm.load_state_dict(models[0])
    jobs = [("task_arithmetic", {"lambda": x}, ["task-arithmetic", "--lambda", repr(x)]) for x in cfg.ta_lambdas]
    jobs += [("ties", {"density": x}, ["ties", "--density", repr(x), "--lambda", "1"]) for x in cfg.ties_densities]
    out = []
    for method, param, args in jobs:
        dst = os.path.join(work, "%s_%s.safetensors" % (method, param[list(param)[0]]))
        t = time.perf_counter()
        gm.run(args + ["--base", base] + models + ["--out", dst, "--threads", "1"], binary)
        secs = time.perf_counter() - t
        model.load_state_dict(gm.load_state_dict(dst))
        row = {"method": method, "param": fmt_param(param), "stage": "code", "merges": 1, "train_seconds": 0.0,
               "merge_seconds": secs, "step_ms": 0.0, "extra_ram_bytes": 0,
               "extra_disk_bytes": sum(os.path.getsize(m) for m in [base] + models),
               "l2_to_math": distance(model, theta_math)}
        row.update(evaluate(model, d))
        out.append(row)
        print("%-28s %-5s %s" % (method + " " + row["param"], "post", short(row)), flush=True)
    return out


# --- cost ---------------------------------------------------------------------------

def measure_cost(cfg, d, work, binary, seed):
    """Per-step wall time of a plain step, an L2 step and an EWC step, measured back to
    back in one process (rounds interleaved, median of rounds), and of one SFA round
    trip through gomerge (save, merge, load back). The rows' own timings ran two at a
    time on a shared machine; these are the comparable ones."""
    model = new_model(cfg, seed)
    model.load_state_dict(gm.load_state_dict(os.path.join(work, "math.safetensors")))
    anchor = {k: v.detach().clone() for k, v in model.named_parameters()}
    fisher = gm.load_state_dict(os.path.join(work, "math_fisher.safetensors"))
    m = fisher_mean(fisher)
    wts = {k: (v / m).float() for k, v in fisher.items()}
    stream = batches([d.train["law"]], [1.0], cfg, seed)
    variants = {"sequential": None, "l2": l2_penalty(anchor, 0.1), "ewc": l2_penalty(anchor, 0.1, wts)}
    times = {k: [] for k in variants}
    for _ in range(3):
        for k, pen in variants.items():
            t = train(model, cfg, stream, cfg.cost_steps, penalty=pen)
            times[k].append(1000 * t["train_seconds"] / cfg.cost_steps)
    cur = os.path.join(work, "cost_current.safetensors")
    afile = os.path.join(work, "math.safetensors")
    sfa = gm.SFA(anchor=afile, current=cur, steps=10, p=1.0, binary=binary, threads=1)
    merge = []
    for _ in range(7):
        t = time.perf_counter()
        sfa.average_state_dict(model.state_dict())
        merge.append(1000 * (time.perf_counter() - t))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    n = lm.n_params(model)
    return {
        "params": n, "model_bytes": tensor_bytes(model.parameters()),
        "step_ms": {k: med(v) for k, v in times.items()},
        "sfa_round_trip_ms": med(merge),
    }


# --- main ---------------------------------------------------------------------------

def shared_stages(cfg, d, work, seed):
    """Pretrain on English, then train on Math: theta_0 and theta_Math, the start of
    every row, and the Fisher of Math at theta_Math. With the checkpoints already in
    work (a rerun with --work), they are evaluated instead of trained again."""
    model = new_model(cfg, seed)
    files = [os.path.join(work, f) for f in ("pretrained.safetensors", "math.safetensors", "math_fisher.safetensors")]
    if all(os.path.exists(f) for f in files):
        return resumed_shared(cfg, d, work, model, files)
    rows = []
    t = train(model, cfg, batches([d.train["english"]], [1.0], cfg, stage_seed(seed, "english")), cfg.pretrain_steps)
    gm.save_weights(model, os.path.join(work, "pretrained.safetensors"))
    rows.append(dict(method="pretrained", param="", stage="english", merges=0, train_seconds=t["train_seconds"],
                     merge_seconds=0.0, step_ms=1000 * t["train_seconds"] / cfg.pretrain_steps, extra_ram_bytes=0,
                     extra_disk_bytes=0, **evaluate(model, d)))
    t = train(model, cfg, batches([d.train["math"]], [1.0], cfg, stage_seed(seed, "math")), cfg.math_steps)
    gm.save_weights(model, os.path.join(work, "math.safetensors"))
    f = lm.empirical_fisher(model, next_windows(d.train["math"], cfg, seed))
    gm.save_weights(f, os.path.join(work, "math_fisher.safetensors"))
    rows.append(dict(method="math", param="", stage="math", merges=0, train_seconds=t["train_seconds"],
                     merge_seconds=0.0, step_ms=1000 * t["train_seconds"] / cfg.math_steps, extra_ram_bytes=0,
                     extra_disk_bytes=0, **evaluate(model, d)))
    for r in rows:
        r["l2_to_math"] = distance(model, gm.load_state_dict(os.path.join(work, "math.safetensors"))) if r["method"] == "math" else ""
        print("%-28s %-5s %s" % (r["method"], r["stage"], short(r)), flush=True)
    with open(os.path.join(work, "shared.json"), "w") as f:
        json.dump(rows, f)
    return rows, lm.n_params(model)


def resumed_shared(cfg, d, work, model, files):
    saved = os.path.join(work, "shared.json")
    if os.path.exists(saved):
        with open(saved) as f:
            rows = json.load(f)
    else:
        rows = []
        for name, stage, path in (("pretrained", "english", files[0]), ("math", "math", files[1])):
            model.load_state_dict(gm.load_state_dict(path))
            # The training time of a stage run by an earlier process is not known here.
            rows.append(dict(method=name, param="", stage=stage, merges=0, train_seconds="", merge_seconds=0.0,
                             step_ms="", extra_ram_bytes=0, extra_disk_bytes=0, l2_to_math="" if name == "pretrained" else 0.0,
                             **evaluate(model, d)))
        with open(saved, "w") as f:
            json.dump(rows, f)
    for r in rows:
        print("%-28s %-5s %s (from %s)" % (r["method"], r["stage"], short(r), work), flush=True)
    return rows, lm.n_params(model)


def gomerge_binary(arg, tmp):
    b = arg or os.environ.get("GOMERGE_BIN")
    if b:
        return os.path.abspath(b)
    b = os.path.join(tmp, "gomerge")
    subprocess.run(["go", "build", "-o", b, "./cmd/gomerge"], cwd=os.path.join(HERE, "..", ".."), check=True)
    return b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for results.csv, results.md, cost.json and the plots")
    ap.add_argument("--reduced", action="store_true", help="the CI configuration (about a minute)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="rows trained at a time (one torch thread each)")
    ap.add_argument("--gomerge", help="the gomerge binary (default: $GOMERGE_BIN, else built from this module)")
    ap.add_argument("--work", help="keep the checkpoints in this folder")
    ap.add_argument("--replot", help="redraw results.md and the plots from this results.csv, without training")
    ap.add_argument("--cost-only", action="store_true",
                    help="only measure the cost per step (needs the shared checkpoints in --work); writes cost.json")
    ap.add_argument("--finished-only", action="store_true",
                    help="train nothing: report the rows that an earlier run with this --work finished")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    if a.replot:
        with open(a.replot) as f:
            rows = list(csv.DictReader(f))
        with open(os.path.join(os.path.dirname(a.replot), "cost.json")) as f:
            cost = json.load(f)
        report.write(rows, cost, a.out)
        return 0
    cfg = REDUCED if a.reduced else FULL
    torch.set_num_threads(1)
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="gomerge-lm-")
    try:
        work = a.work or tmp
        os.makedirs(work, exist_ok=True)
        binary = gomerge_binary(a.gomerge, tmp)
        d = Data(cfg)
        cost_file = os.path.join(a.out, "cost.json")
        if a.cost_only:
            cost = measure_cost(cfg, d, work, binary, a.seed)
            with open(cost_file, "w") as f:
                json.dump(cost, f, indent=1, sort_keys=True)
            return 0
        rows, n = shared_stages(cfg, d, work, a.seed)
        specs = row_specs(cfg)
        missing = []
        if a.finished_only:
            for m, p in specs:
                if os.path.exists(os.path.join(row_dir(work, m, p), "result.json")):
                    rows += run_row((cfg, m, p, work, a.seed, binary))
                else:
                    missing.append("%s %s" % (m, fmt_param(p)))
        else:
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=a.jobs, mp_context=ctx) as ex:
                futs = [ex.submit(run_row, (cfg, m, p, work, a.seed, binary)) for m, p in specs]
                for fu in futs:
                    rows += fu.result()
        rows += post_hoc(cfg, d, work, binary, a.seed)
        if a.finished_only and os.path.exists(cost_file):
            with open(cost_file) as f:
                cost = json.load(f)
        else:
            cost = measure_cost(cfg, d, work, binary, a.seed)
        cost["description"] = describe(cfg, n) + " Seed %d." % a.seed
        cost["not_finished"] = missing
        if not a.finished_only:
            cost["wall_seconds"] = time.time() - t0
        cost["reduced"] = a.reduced
        cost["steps"] = cfg.steps
        write_csv(rows, os.path.join(a.out, "results.csv"))
        with open(os.path.join(a.out, "cost.json"), "w") as f:
            json.dump(cost, f, indent=1, sort_keys=True)
            f.write("\n")
        report.write([{k: str(v) for k, v in r.items()} for r in rows], cost, a.out)
        if "wall_seconds" in cost:
            print("wall time %.0f s" % cost["wall_seconds"], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


COLUMNS = ["method", "param", "stage", "bpc_english", "bpc_math", "bpc_law", "bpc_code", "acc_math", "l2_to_math",
           "merges", "train_seconds", "merge_seconds", "step_ms", "extra_ram_bytes", "extra_disk_bytes"]


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (("%.4f" % v) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    sys.exit(main())
