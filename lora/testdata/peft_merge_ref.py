"""Reference for lora's torch test: PEFT's merge_and_unload done in float64.

Reads BASE.safetensors and a PEFT adapter folder (no peft or safetensors package: the
header is JSON, the data little-endian), computes W + weight * scaling * (B @ A) in
float64 for every LoRA module, as PEFT's LoraLayer.get_delta_weight does (transposed
for fan_in_fan_out and embeddings), rounds to float32 and then to the base's type,
and compares with gomerge's OUT.safetensors. Prints JSON: tensor -> the largest
difference in units in the last place of the output type.
"""
import json, math, re, struct, sys
import numpy as np
import torch

NP = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "F64": np.float64}
TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        arr = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=NP[v["dtype"]]).copy()
        t = torch.from_numpy(arr)
        if v["dtype"] == "BF16":
            t = t.view(torch.bfloat16)
        out[k] = (t.reshape(v["shape"]), v["dtype"])
    return out


def pattern(patterns, key, default):
    for p in sorted(patterns):
        if re.match(r"(?:.*\.)?(?:%s)$" % p, key):
            return patterns[p]
    return default


def bits(t):
    if t.dtype == torch.float32:
        return t.view(torch.int32).to(torch.int64)
    return t.view(torch.int16).to(torch.int64)


base_path, adapter_dir, weight, out_path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
base = read(base_path)
cfg = json.load(open(adapter_dir + "/adapter_config.json"))
ad = read(adapter_dir + "/adapter_model.safetensors")
got = read(out_path)
merged = {k: v[0].to(torch.float64) for k, v in base.items()}
for key, (a, _) in ad.items():
    m = re.match(r"base_model\.model\.(.*)\.(lora_A\.weight|lora_embedding_A)$", key)
    if not m:
        continue
    mod, kind = m.group(1), m.group(2)
    b = ad[key.replace("lora_A", "lora_B").replace("lora_embedding_A", "lora_embedding_B")][0]
    r = pattern(cfg.get("rank_pattern") or {}, mod, cfg["r"])
    alpha = pattern(cfg.get("alpha_pattern") or {}, mod, cfg["lora_alpha"])
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    delta = b.to(torch.float64) @ a.to(torch.float64)
    if cfg.get("fan_in_fan_out") or kind == "lora_embedding_A":
        delta = delta.T
    merged[mod + ".weight"] = merged[mod + ".weight"] + weight * scaling * delta
report = {}
for k, (w, dt) in base.items():
    want = merged[k].to(torch.float32).to(TORCH[dt])
    g = got[k][0]
    report[k] = int((bits(want) - bits(g)).abs().max().item())
print(json.dumps(report))
