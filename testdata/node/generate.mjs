// Loads GGUF models with node-llama-cpp (llama.cpp's prebuilt CPU binary) and prints,
// one JSON line per model, the tokens of a fixed prompt and the greedy continuation.
// Usage: node generate.mjs N_TOKENS MODEL.gguf...
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [n, ...models] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
for (const modelPath of models) {
    const model = await llama.loadModel({modelPath});
    const context = await model.createContext({contextSize: 128});
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
    console.log(JSON.stringify({model: modelPath, prompt, generated}));
    await context.dispose();
    await model.dispose();
}
await llama.dispose();
