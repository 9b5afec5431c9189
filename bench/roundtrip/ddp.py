"""One SFA averaging step under torch.distributed (2 CPU ranks, gloo), three ways, on a
llama-shaped BF16 state dict (roundtrip.py's shapes):

  file       rank 0 saves and merges; every rank reads the merged file  (SFA, load="file")
  broadcast  rank 0 saves, merges and reads; it broadcasts the tensors  (SFA, load="broadcast")
  split      each rank saves half the tensors and merges its half against its half of
             the anchor; every rank reads both halves                   (not in gomerge.py)

    ddp.py DIR [LAYERS] [REPS]      (defaults 0 layers: 0.26 GB, 2 reps)

Prints, per way, the median over REPS of the slowest rank's time for the step, and
checks that both ranks end with the same bits as torch's formula.
"""

import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roundtrip  # noqa: E402

gm = roundtrip.SETUP


def owners(sizes, world):
    """{name: rank}: the tensors dealt to the ranks by size, largest first to the least
    loaded, so each rank saves and merges about 1/world of the bytes."""
    load, own = [0] * world, {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        r = load.index(min(load))
        own[name] = r
        load[r] += sizes[name]
    return own


def split_step(rank, world, d, live):
    own = owners({k: v.numel() * v.element_size() for k, v in live.items()}, world)
    mine = {k: v for k, v in live.items() if own[k] == rank}
    cur = os.path.join(d, "split-%d.safetensors" % rank)
    gm.save_state_dict(mine, cur)
    gm.run(["sfa", "--anchor", os.path.join(d, "anchor-%d.safetensors" % rank), "--current", cur,
            "--in-place", "--beta", repr(roundtrip.BETA)])
    dist.barrier()
    for r in range(world):
        gm.load_into(live, os.path.join(d, "split-%d.safetensors" % r), strict=False)
    dist.barrier()


def worker(rank, world, d, port, reps, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    anchor = os.path.join(d, "anchor.safetensors")
    res = {}
    for way in ("file", "broadcast", "split"):
        times = []
        for _ in range(reps):
            live = gm.load_state_dict(os.path.join(d, "current.safetensors"))
            dist.barrier()
            t0 = time.perf_counter()
            if way == "split":
                split_step(rank, world, d, live)
            else:
                sfa = gm.SFA(anchor, os.path.join(d, "cur-%s.safetensors" % way), steps=1, p=1,
                             beta=roundtrip.BETA, load=way)
                sfa.average_state_dict(live)
            t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            times.append(t.item())
        bad = torch.tensor([roundtrip.verify(d, live)], dtype=torch.int64)
        dist.all_reduce(bad)  # both ranks' mismatches
        res[way] = {"times": times, "mismatched_tensors": bad.item()}
        del live
    if rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)
    dist.destroy_process_group()


def main():
    d = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    roundtrip.prepare(d, layers, gm)
    a = gm.load_state_dict(os.path.join(d, "anchor.safetensors"))
    own = owners({k: v.numel() * v.element_size() for k, v in a.items()}, 2)
    for r in range(2):
        gm.save_state_dict({k: v for k, v in a.items() if own[k] == r}, os.path.join(d, "anchor-%d.safetensors" % r))
    del a
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(d, "ddp.json")
    mp.spawn(worker, args=(2, d, port, reps, out), nprocs=2)
    with open(out) as f:
        res = json.load(f)
    size = os.path.getsize(os.path.join(d, "current.safetensors")) / 1e9
    print("| way (2 ranks, gloo, %.2f GB BF16) | slowest rank's step, s (median of %d) | runs | bit-exact on both ranks |" % (size, reps))
    print("|---|---:|---|---|")
    for way, r in res.items():
        ts = sorted(r["times"])
        print("| %s | %.2f | %s | %s |" % (way, ts[len(ts) // 2], ", ".join("%.2f" % t for t in r["times"]),
                                          "yes" if r["mismatched_tensors"] == 0 else "NO"))


if __name__ == "__main__":
    main()
