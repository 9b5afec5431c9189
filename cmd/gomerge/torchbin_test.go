package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	tbt "github.com/gomerge/gomerge/formats/torchbin/torchbintest"
	"github.com/gomerge/gomerge/internal/testexec"
)

// torchModels writes the same three models as torch.save files and folders and as
// safetensors (formats/torchbin/testdata/models.py) and returns the folder.
func torchModels(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	py := testexec.Python(ctx, t, "torch", "python3-torch")
	if err := testexec.Inputs("../../formats/torchbin/testdata"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := exec.CommandContext(ctx, py, "../../formats/torchbin/testdata/models.py", dir).CombinedOutput(); err != nil {
		t.Fatalf("models.py: %v\n%s", err, out)
	}
	return dir
}

// TestTorchBinInputs: a merge of PyTorch .bin inputs (single files and sharded
// folders with their index; tied weights, fused storages, strided views, bf16, f16,
// f64) writes the tensors the same merge of the same weights as safetensors writes.
func TestTorchBinInputs(t *testing.T) {
	dir := torchModels(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	cases := []struct {
		name         string
		bin, st      []string
		binOut, stOu string
	}{
		{"files/linear", []string{"linear", p("m0.bin"), p("m1.bin") + ":weight=0.3"}, []string{"linear", p("m0.safetensors"), p("m1.safetensors") + ":weight=0.3"}, "a.safetensors", "b.safetensors"},
		{"files/ties", []string{"ties", "--base", p("m0.bin"), p("m1.bin"), p("m2.bin"), "--density", "0.5"}, []string{"ties", "--base", p("m0.safetensors"), p("m1.safetensors"), p("m2.safetensors"), "--density", "0.5"}, "a.safetensors", "b.safetensors"},
		{"folders/sfa", []string{"sfa", "--anchor", p("m0_bin"), "--current", p("m1_bin"), "--beta", "0.25"}, []string{"sfa", "--anchor", p("m0_st"), "--current", p("m1_st"), "--beta", "0.25"}, "a", "b"},
		{"mixed/slerp", []string{"slerp", "--base", p("m0_bin"), p("m1.safetensors"), "--t", "0.4"}, []string{"slerp", "--base", p("m0_st"), p("m1.bin"), "--t", "0.4"}, "a.safetensors", "b.safetensors"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			a, b := filepath.Join(out, c.binOut), filepath.Join(out, c.stOu)
			for _, run := range []struct {
				args []string
				out  string
			}{{c.bin, a}, {c.st, b}} {
				if code, _, stderr := gomerge(t, append(run.args, "--out", run.out)...); code != 0 {
					t.Fatalf("%v: exit %d: %s", run.args, code, stderr)
				}
			}
			sameCheckpointTensors(t, a, b)
		})
	}
	t.Run("inspect", func(t *testing.T) {
		code, stdout, stderr := gomerge(t, "inspect", p("m0_bin"), "--json")
		var rep inspectReport
		if code != 0 || json.Unmarshal([]byte(stdout), &rep) != nil {
			t.Fatalf("exit %d: %s%s", code, stderr, stdout)
		}
		if !strings.HasPrefix(rep.Format, "pytorch") || len(rep.Files) != 2 || len(rep.Tensors) != 8 || rep.DTypes["BF16"] != 1 || rep.TotalBytes != 536 {
			t.Errorf("report %+v", rep)
		}
	})
}

// TestTorchBinHostile: hostile or malformed .bin inputs are refused with exit status
// 3 and a message naming the file, nothing is run, and no output is written.
func TestTorchBinHostile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.bin")
	w := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 4, Shape: []int64{4}, Stride: []int64{1}}}
	if err := os.WriteFile(good, tbt.StateDictArchive(w, map[string][]byte{"0": make([]byte, 16)}), 0o644); err != nil {
		t.Fatal(err)
	}
	pwned := filepath.Join(dir, "pwned")
	system := tbt.NewPickle().Global("os", "system").Str("touch "+pwned).Op(0x85, 'R').Stop()
	eval := tbt.NewPickle().Global("builtins", "eval").Str("__import__('os').system('touch "+pwned+"')").Op(0x85, 'R').Stop()
	huge := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 1 << 40, Shape: []int64{4}, Stride: []int64{1}}}
	past := []tbt.Tensor{{Name: "w", StorageType: "FloatStorage", Key: "0", Numel: 4, Offset: 3, Shape: []int64{4}, Stride: []int64{1}}}
	cases := map[string]struct {
		data []byte
		msg  string
	}{
		"system.bin": {tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: system}), `global "os.system" is not allowed`},
		"eval.pt":    {tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: eval}), `global "builtins.eval" is not allowed`},
		"opcode.bin": {tbt.Archive("archive", tbt.Member{Name: "data.pkl", Data: []byte{0x80, 2, 'i', 'o', 's', '\n', 's', 'y', 's', 't', 'e', 'm', '\n', '.'}}), "opcode 0x69 is not allowed"},
		"huge.bin":   {tbt.StateDictArchive(huge, map[string][]byte{"0": make([]byte, 16)}), "but the pickle says"},
		"past.bin":   {tbt.StateDictArchive(past, map[string][]byte{"0": make([]byte, 16)}), "reaches element 6"},
		"legacy.bin": {[]byte{0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}, "legacy torch.save format"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			in := filepath.Join(dir, name)
			if err := os.WriteFile(in, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			outDir := t.TempDir()
			out := filepath.Join(outDir, "out.safetensors")
			code, _, stderr := gomerge(t, "linear", good, in, "--out", out)
			if code != exitBadInput || !strings.Contains(stderr, c.msg) || !strings.Contains(stderr, in) {
				t.Fatalf("exit %d, stderr %q; want %d saying %q and naming %s", code, stderr, exitBadInput, c.msg, in)
			}
			if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
				t.Errorf("output folder holds %v after a refused input", ents)
			}
		})
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a pickle ran code: " + pwned + " exists")
	}
}
