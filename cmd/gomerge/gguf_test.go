package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
