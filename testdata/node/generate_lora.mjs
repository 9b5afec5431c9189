// Loads a GGUF model with a GGUF LoRA adapter in node-llama-cpp (llama.cpp's prebuilt
// CPU binary) and prints the greedy continuation of the fixed prompt of generate.mjs
// as one JSON line, so that gomerge's tests can compare it with the model that
// `gomerge lora apply` wrote.
// Usage: node generate_lora.mjs N_TOKENS MODEL.gguf ADAPTER.gguf [SCALE]
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [n, modelPath, adapter, scale] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 128,
    lora: {adapters: [{filePath: adapter, scale: Number(scale ?? 1)}]}});
const sequence = context.getSequence();
const prompt = model.tokenize("Merging models\nis fun", true);
const generated = [];
for await (const token of sequence.evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
    generated.push(token);
    if (generated.length >= Number(n)) break;
}
console.log(JSON.stringify({model: modelPath, adapter, prompt, generated}));
await context.dispose();
await model.dispose();
await llama.dispose();
