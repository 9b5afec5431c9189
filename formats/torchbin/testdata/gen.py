"""Writes torch.save fixtures for formats/torchbin's tests into the folder argv[1],
with manifest.json giving each tensor's dtype, shape and contiguous bytes (hex) as
torch itself sees them. Run by the tests with Debian's python3-torch."""
import collections
import json
import os
import sys

import torch

out = sys.argv[1]
torch.manual_seed(1)
manifest = {}


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex()


def save(sd, name, **kw):
    path = os.path.join(out, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(sd, path, **kw)
    manifest[name] = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "hex": raw(v)} for k, v in sd.items()}


w = torch.randn(5, 6)
save(collections.OrderedDict([
    ("f32", torch.randn(3, 4)),
    ("f16", torch.randn(7).half()),
    ("bf16", torch.randn(2, 3).bfloat16()),
    ("f64", torch.randn(4, 2).double()),
    ("i64", torch.arange(-3, 3)),
    ("i32", torch.arange(5, dtype=torch.int32)),
    ("i16", torch.arange(-2, 2, dtype=torch.int16)),
    ("i8", torch.arange(-4, 4, dtype=torch.int8)),
    ("u8", torch.arange(250, 256, dtype=torch.uint8)),
    ("bool", torch.tensor([True, False, True])),
    ("scalar", torch.tensor(2.5)),
    ("empty", torch.zeros(0, 3)),
]), "dtypes.bin")
save(collections.OrderedDict([
    ("w", w),
    ("tied", w),                      # the same storage twice (tied weights)
    ("rows", w[2:]),                  # a contiguous view with an offset
    ("t", w.t()),                     # a transpose: strided
    ("cols", w[1:4, ::2]),            # offset and strides
    ("col", w[:, 3]),                 # one column
    ("p", torch.nn.Parameter(torch.randn(3))),
    ("h", torch.randn(4, 4).half()[1:, 1:]),
]), "views.bin")
m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
save(m.state_dict(), "module.pt")      # an OrderedDict with _metadata (BUILD)
shards = {
    "pytorch_model-00001-of-00002.bin": {"model.a.weight": torch.randn(3, 2), "model.b.weight": torch.randn(2).bfloat16()},
    "pytorch_model-00002-of-00002.bin": {"model.c.weight": torch.randn(2, 2).t(), "lm_head.weight": torch.randn(4)},
}
wm = {}
for f, sd in shards.items():
    save(sd, "sharded/" + f)
    wm.update({k: f for k in sd})
with open(os.path.join(out, "sharded", "pytorch_model.bin.index.json"), "w") as fh:
    json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, fh)
save({"x": torch.ones(1, 3).expand(4, 3)}, "expanded.bin")
save({"x": torch.ones(2)}, "legacy.bin", _use_new_zipfile_serialization=False)
with open(os.path.join(out, "manifest.json"), "w") as fh:
    json.dump(manifest, fh)
