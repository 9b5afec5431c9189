package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// writeTinyGGUF writes a GGUF v3 file by hand (the format is simple enough): one
// string and one uint32 metadata key, one F32 tensor of shape [2, 3] (ne = {3, 2}).
func writeTinyGGUF(t *testing.T, path string) {
	t.Helper()
	le := binary.LittleEndian
	var b []byte
	str := func(s string) { b = le.AppendUint64(b, uint64(len(s))); b = append(b, s...) }
	b = append(b, "GGUF"...)
	b = le.AppendUint32(b, 3)
	b = le.AppendUint64(b, 1) // tensors
	b = le.AppendUint64(b, 2) // metadata
	str("general.architecture")
	b = le.AppendUint32(b, 8) // string
	str("llama")
	str("general.alignment")
	b = le.AppendUint32(b, 4) // uint32
	b = le.AppendUint32(b, 32)
	str("w")
	b = le.AppendUint32(b, 2) // n_dims
	b = le.AppendUint64(b, 3)
	b = le.AppendUint64(b, 2)
	b = le.AppendUint32(b, 0) // F32
	b = le.AppendUint64(b, 0) // offset
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	for i := range 6 {
		b = le.AppendUint32(b, math.Float32bits(float32(i)))
	}
	for len(b)%32 != 0 {
		b = append(b, 0)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestInspectGGUF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeTinyGGUF(t, path)
	code, stdout, stderr := gomerge(t, "inspect", path, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Format != "gguf v3" || len(rep.Tensors) != 1 || rep.Tensors[0].DType != "F32" || rep.Metadata["general.architecture"] != "llama" {
		t.Errorf("report %+v", rep)
	}
	if s := rep.Tensors[0].Shape; len(s) != 2 || s[0] != 2 || s[1] != 3 || rep.TotalBytes != 24 {
		t.Errorf("shape %v, %d bytes", s, rep.TotalBytes)
	}
	// A truncated GGUF is bad input naming the file.
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:40], 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = gomerge(t, "inspect", path)
	if code != exitBadInput || !strings.Contains(stderr, path) {
		t.Errorf("truncated: exit %d, %q", code, stderr)
	}
}

// TestGGUFDistanceAndTypeChanges: distance reads GGUF; a K-quant merge keeps its types
// (no type_changes) and --dtype lists the tensors it changed in --json; an unreadable
// type names the tensor and type.
func TestGGUFDistanceAndTypeChanges(t *testing.T) {
	dir := t.TempDir()
	a, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "c.gguf")
	anchor := gguftest.Random(gguftest.KTiny, dtype.Q4_K, 1)
	for _, w := range []struct {
		path string
		ts   []gguftest.Tensor
	}{{a, anchor}, {c, gguftest.Perturb(anchor, 1, 2)}} {
		if err := gguftest.WriteFile(w.path, gguftest.Metadata(gguftest.KTiny, "k"), w.ts); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := gomerge(t, "distance", a, c, "--json")
	if code != 0 {
		t.Fatalf("distance: exit %d: %s", code, stderr)
	}
	var d struct {
		Total struct {
			L2 *float64 `json:"l2"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil || d.Total.L2 == nil || *d.Total.L2 <= 0 {
		t.Errorf("distance report %s (%v)", stdout, err)
	}
	for _, tc := range []struct {
		dtype   []string
		changes int
		to      string
	}{{nil, 0, ""}, {[]string{"--dtype", "q6_k"}, 9, "Q6_K"}} {
		out := filepath.Join(dir, fmt.Sprintf("m%d.gguf", tc.changes))
		args := append([]string{"sfa", "--anchor", a, "--current", c, "--out", out, "--json"}, tc.dtype...)
		code, stdout, stderr = gomerge(t, args...)
		if code != 0 {
			t.Fatalf("sfa %v: exit %d: %s", tc.dtype, code, stderr)
		}
		var rep struct {
			TypeChanges []struct{ Tensor, From, To string } `json:"type_changes"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		if len(rep.TypeChanges) != tc.changes || tc.changes > 0 && (rep.TypeChanges[0].From != "Q4_K" || rep.TypeChanges[0].To != tc.to) {
			t.Errorf("sfa %v: type_changes %+v, want %d Q4_K weights as %s", tc.dtype, rep.TypeChanges, tc.changes, tc.to)
		}
	}
	// A tensor type gomerge cannot dequantize (Q8_1: readable layout, no converter):
	// exit 3 naming the file, tensor and type.
	bad := filepath.Join(dir, "q81.gguf")
	l, err := gguf.Plan(gguftest.Metadata(gguftest.Tiny, "q81"), []gguf.TensorSpec{{Name: "blk.0.attn_q.weight", Type: gguf.TypeQ8_1, Shape: []int64{2, 32}}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.Write(&buf, func(int) ([]byte, error) { return make([]byte, l.Tensors[0].Size), nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = gomerge(t, "sfa", "--anchor", bad, "--current", bad, "--out", filepath.Join(dir, "x.gguf"))
	if code != exitBadInput || !strings.Contains(stderr, bad) || !strings.Contains(stderr, "blk.0.attn_q.weight") || !strings.Contains(stderr, "Q8_1") {
		t.Errorf("Q8_1 input: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.gguf")); !os.IsNotExist(err) {
		t.Error("a failed merge left output")
	}
}
