// Parses each GGUF file given with @huggingface/gguf (an independent reader) and
// checks what llama.cpp's loader requires: every tensor's offset is the running sum of
// the padded sizes before it, offsets are aligned, and the file ends with the last
// tensor's padding. Prints one JSON line per file; exits 1 on the first problem.
import {gguf} from "@huggingface/gguf";
import {statSync} from "node:fs";

// Block size and bytes per block of the ggml types gomerge writes or reads.
const types = {0: [1, 4], 1: [1, 2], 30: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34],
    10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210]};

for (const path of process.argv.slice(2)) {
    const {metadata, tensorInfos, tensorDataOffset} = await gguf(path, {allowLocalFile: true});
    const align = BigInt(metadata["general.alignment"] ?? 32);
    const pad = (n) => (n + align - 1n) / align * align;
    const fail = (msg) => { console.error(`${path}: ${msg}`); process.exit(1); };
    if (tensorDataOffset % align !== 0n) fail(`data section at ${tensorDataOffset} is not aligned to ${align}`);
    let at = 0n;
    for (const t of tensorInfos) {
        const [bs, bb] = types[t.dtype] ?? fail(`tensor ${t.name}: unexpected type ${t.dtype}`);
        const n = t.shape.reduce((a, b) => a * BigInt(b), 1n);
        if (n % BigInt(bs) !== 0n) fail(`tensor ${t.name}: ${n} elements are not whole blocks`);
        if (t.offset !== at) fail(`tensor ${t.name}: offset ${t.offset}, want running sum ${at}`);
        at += pad(n / BigInt(bs) * BigInt(bb));
    }
    const size = BigInt(statSync(path).size);
    if (tensorDataOffset + at !== size) fail(`file is ${size} bytes, want ${tensorDataOffset + at}`);
    console.log(JSON.stringify({path, version: metadata.version, tensors: tensorInfos.length, architecture: metadata["general.architecture"], ok: true}));
}
