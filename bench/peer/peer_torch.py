#!/usr/bin/python3
"""The PyTorch side of gomerge's benchmarks: the same merges, done the way a PyTorch
user would write them, so that bench/*.sh can time both on the same files.

    peer_torch.py sfa  OUT ANCHOR CURRENT BETA      out = BETA*anchor + (1-BETA)*current
    peer_torch.py ta   OUT BASE LAMBDA MODEL...     out = base + LAMBDA * sum(model - base)
    peer_torch.py ties OUT BASE DENSITY MODEL...    TIES, every weight 1, lambda 1

How it works, and why:
- Each input's safetensors header is parsed here (8-byte length, JSON); every tensor is
  read with one readinto() straight into a torch tensor's memory (one copy out of the
  page cache, as the safetensors package's loader makes), one tensor at a time, so
  memory stays at a few tensors, not whole models.
- The arithmetic is float32, each product rounded on its own (torch runs one op at a
  time), and the result is cast back to the dtype of the last input named (CURRENT for
  sfa; the BASE otherwise) with torch's round-to-nearest-even. For sfa this is exactly
  gomerge's arithmetic, so bench/run.sh expects identical bits.
- TIES keeps the floor(DENSITY * n) largest |model - base| of each model (ties broken
  by the lower flat index, with a stable sort), elects the sign of the sum of the kept
  deltas per element (a zero sum counts as positive) and averages the kept deltas that
  agree with it.
- The output is written as one safetensors file, tensors in the reference's order,
  each straight from the tensor's memory; it is NOT fsynced, as torch.save is not, so
  the benchmark times the writeback it leaves behind separately.

Needs torch (Debian: apt-get install python3-torch) and numpy; nothing is pickled.
"""
import json
import struct
import sys

import numpy as np
import torch

# safetensors dtype -> (torch dtype, a numpy dtype of the same width for raw I/O)
DTYPES = {
    "F32": (torch.float32, np.float32),
    "F16": (torch.float16, np.float16),
    "BF16": (torch.bfloat16, np.int16),
}


class Checkpoint:
    """One safetensors file, read tensor by tensor."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "rb")
        (n,) = struct.unpack("<Q", self.file.read(8))
        if n > 100 << 20:
            raise ValueError(f"{path}: header of {n} bytes")
        header = json.loads(self.file.read(n))
        header.pop("__metadata__", None)
        self.entries = header
        self.data_start = 8 + n

    def names(self):
        return list(self.entries)

    def dtype(self, name):
        return self.entries[name]["dtype"]

    def read(self, name):
        e = self.entries[name]
        if e["dtype"] not in DTYPES:
            raise ValueError(f"{self.path}: tensor {name}: dtype {e['dtype']} not handled")
        tdt, ndt = DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        t = torch.empty(e["shape"], dtype=tdt)
        raw = t.view(torch.int16) if tdt == torch.bfloat16 else t
        buf = memoryview(raw.numpy().reshape(-1).view(np.uint8))
        if len(buf) != end - begin:
            raise ValueError(f"{self.path}: tensor {name}: {end - begin} bytes for shape {e['shape']}")
        self.file.seek(self.data_start + begin)
        if self.file.readinto(buf) != len(buf):
            raise ValueError(f"{self.path}: tensor {name}: file ends early")
        return t


def ties(base, models, density):
    kept = []
    for m in models:
        delta = (m - base).reshape(-1)
        k = int(density * delta.numel())
        order = torch.sort(delta.abs(), descending=True, stable=True).indices
        mask = torch.zeros_like(delta, dtype=torch.bool)
        mask[order[:k]] = True
        kept.append(torch.where(mask, delta, torch.zeros_like(delta)))
    d = torch.stack(kept)
    sign = torch.where(d.sum(0) >= 0, 1.0, -1.0)
    agree = (d != 0) & (torch.sign(d) == sign)
    count = agree.sum(0).clamp(min=1).to(torch.float32)
    merged = torch.where(agree, d, torch.zeros_like(d)).sum(0) / count
    return base + merged.reshape(base.shape)


def main(argv):
    if len(argv) < 5 or argv[0] not in ("sfa", "ta", "ties"):
        sys.exit(__doc__)
    op, out = argv[0], argv[1]
    if op == "sfa":
        anchor, ref = Checkpoint(argv[2]), Checkpoint(argv[3])
        beta = float(argv[4])
    else:
        ref, param = Checkpoint(argv[2]), float(argv[3])
        models = [Checkpoint(p) for p in argv[4:]]
    header, offset, order = {}, 0, ref.names()
    for name in order:
        e = ref.entries[name]
        size = e["data_offsets"][1] - e["data_offsets"][0]
        header[name] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in order:
            r = ref.read(name)
            x = r.float()
            if op == "sfa":
                y = beta * anchor.read(name).float() + (1 - beta) * x
            elif op == "ta":
                y = x + param * sum(m.read(name).float() - x for m in models)
            else:
                y = ties(x, [m.read(name).float() for m in models], param)
            y = y.to(r.dtype)
            raw = y.view(torch.int16) if r.dtype == torch.bfloat16 else y
            f.write(memoryview(raw.contiguous().numpy().reshape(-1).view(np.uint8)))


if __name__ == "__main__":
    main(sys.argv[1:])
