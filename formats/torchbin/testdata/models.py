"""Writes the same small models twice into the folder argv[1]: as torch.save files
(NAME.bin, and a sharded Hugging Face folder NAME_bin/) and as safetensors written
by hand from torch's own bytes (NAME.safetensors, NAME_st/), so that a merge of the
one can be compared with a merge of the other. The .bin files hold what real ones
do: tied weights, a transposed view, bf16 and f16. Run by cmd/gomerge's tests."""
import collections
import json
import os
import struct
import sys

import torch

out = sys.argv[1]
ST = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_safetensors(path, sd):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for k, v in sd.items():
        b = raw(v)
        header[k] = {"dtype": ST[v.dtype], "shape": list(v.shape), "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def model(seed):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(8, 4, generator=g)
    qkv = torch.randn(12, 4, generator=g)
    sd = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = emb
    sd["model.layers.0.q_proj.weight"] = qkv[0:4]       # views of one fused storage
    sd["model.layers.0.k_proj.weight"] = qkv[4:8]
    sd["model.layers.0.o_proj.weight"] = torch.randn(4, 4, generator=g).t()  # strided
    sd["model.layers.0.norm.weight"] = torch.randn(4, generator=g).bfloat16()
    sd["model.layers.0.mlp.weight"] = torch.randn(6, 4, generator=g).half()
    sd["model.norm.weight"] = torch.randn(4, generator=g, dtype=torch.float64)
    sd["lm_head.weight"] = emb                             # tied to the embedding
    return sd


for i in range(3):
    sd = model(100 + i)
    name = os.path.join(out, "m%d" % i)
    torch.save(sd, name + ".bin")
    write_safetensors(name + ".safetensors", sd)
    keys = list(sd)
    shards = [keys[:4], keys[4:]]
    os.makedirs(name + "_bin")
    os.makedirs(name + "_st")
    wm_bin, wm_st = {}, {}
    for j, ks in enumerate(shards):
        fb = "pytorch_model-%05d-of-00002.bin" % (j + 1)
        fs = "model-%05d-of-00002.safetensors" % (j + 1)
        part = collections.OrderedDict((k, sd[k]) for k in ks)
        torch.save(part, os.path.join(name + "_bin", fb))
        write_safetensors(os.path.join(name + "_st", fs), part)
        wm_bin.update({k: fb for k in ks})
        wm_st.update({k: fs for k in ks})
    with open(os.path.join(name + "_bin", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm_bin}, f)
    with open(os.path.join(name + "_st", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm_st}, f)
