package recipe

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// renderScript renders each template as transformers does (a sandboxed Jinja
// environment with trim_blocks and lstrip_blocks, raise_exception defined).
const renderScript = `
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
def raise_exception(m): raise ValueError(m)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
env.globals["raise_exception"] = raise_exception
tpls, conv = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
out = {n: env.from_string(t).render(messages=conv, add_generation_prompt=True, bos_token="<s>", eos_token="</s>") for n, t in tpls.items()}
json.dump(out, sys.stdout)
`

// TestChatTemplatesRender renders the named templates with Python's jinja2 and
// compares the prompts with those mergekit's templates of the same names give for
// the same conversation under the same settings (exaone: without the indentation
// mergekit's file leaks into its prompt).
func TestChatTemplatesRender(t *testing.T) {
	if err := exec.Command("python3", "-c", "import jinja2").Run(); err != nil {
		if os.Getenv("GOMERGE_REQUIRE_JINJA") != "" {
			t.Fatalf("python3 with jinja2: %v", err)
		}
		t.Skip("python3 with jinja2 is not installed (GOMERGE_REQUIRE_JINJA unset)")
	}
	want := map[string]string{
		"alpaca":  "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello.\n\n### Instruction:\n2+2?### Response:\n",
		"chatml":  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
		"exaone":  "[|system|]Be brief.[|endofturn|]\n[|user|]Hi \n[|assistant|]Hello.[|endofturn|]\n[|user|]2+2?\n[|assistant|]",
		"llama3":  "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>\n\n",
		"mistral": "<s> [INST] Be brief.\n\nHi  [/INST] Hello.</s> [INST] 2+2? [/INST]",
	}
	dir := t.TempDir()
	tpls, _ := json.Marshal(namedTemplates)
	conv := `[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi "},{"role":"assistant","content":"Hello."},{"role":"user","content":"2+2?"}]`
	for name, data := range map[string][]byte{"t.json": tpls, "c.json": []byte(conv), "r.py": []byte(renderScript)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("python3", filepath.Join(dir, "r.py"), filepath.Join(dir, "t.json"), filepath.Join(dir, "c.json")).Output()
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d templates rendered, want %d", len(got), len(want))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s:\n got %q\nwant %q", name, got[name], w)
		}
	}
}
