// Loads GGUF models with node-llama-cpp (llama.cpp's prebuilt CPU binary) and prints,
// one JSON line per model, the tokens of a fixed prompt and the greedy continuation.
// A model may be given with a GGUF LoRA adapter loaded beside it, as
// MODEL.gguf,lora=ADAPTER.gguf[,scale=S] (scale 1 unless given).
// Usage: node generate.mjs N_TOKENS MODEL.gguf[,lora=ADAPTER.gguf[,scale=S]]...
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [n, ...models] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
for (const arg of models) {
    const [modelPath, ...opts] = arg.split(",");
    const o = Object.fromEntries(opts.map((kv) => kv.split("=", 2)));
    for (const k of Object.keys(o)) {
        if (k !== "lora" && k !== "scale") throw new Error(`${arg}: unknown option ${k}`);
    }
    const model = await llama.loadModel({modelPath});
    const context = await model.createContext({contextSize: 128,
        ...(o.lora ? {lora: {adapters: [{filePath: o.lora, scale: Number(o.scale ?? 1)}]}} : {})});
    const sequence = context.getSequence();
    const prompt = model.tokenize("Merging models\nis fun", true);
    // Random weights may well pick </s>, which would end generation with nothing to
    // compare (and greedy sampling ignores token biases): end-of-generation tokens
    // are yielded like any other.
    const generated = [];
    for await (const token of sequence.evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
        generated.push(token);
        if (generated.length >= Number(n)) break;
    }
    console.log(JSON.stringify({model: modelPath, adapter: o.lora, prompt, generated}));
    await context.dispose();
    await model.dispose();
}
await llama.dispose();
