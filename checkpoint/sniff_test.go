package checkpoint

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/gmz"
)

// TestSniff: a file without a telling extension is recognised by its first bytes, and
// only by a whole magic; what is missing, short or not a regular file is not.
func TestSniff(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o644))
		return p
	}
	tail := []byte("rest of the file")
	cases := []struct {
		name             string
		path             string
		gguf, gmz, torch bool
	}{
		{"gguf magic", file("a", append([]byte("GGUF"), tail...)), true, false, false},
		{"gmz magic", file("b", append([]byte(gmz.Magic), tail...)), false, true, false},
		{"zip magic", file("c", append([]byte("PK\x03\x04"), tail...)), false, false, true},
		{"legacy torch magic", file("d", append([]byte{0x80, 0x02, 0x8a, 0x0a}, tail...)), false, false, true},
		{"exactly a magic", file("e", []byte("GGUF")), true, false, false},
		{"part of a magic", file("f", []byte(gmz.Magic[:7])), false, false, false},
		{"part of the legacy magic", file("g", []byte{0x80, 0x02, 0x8a}), false, false, false},
		{"empty", file("h", nil), false, false, false},
		{"other bytes", file("i", []byte("\x10\x00\x00\x00\x00\x00\x00\x00{}")), false, false, false},
		{"missing", filepath.Join(dir, "missing"), false, false, false},
		{"named .gguf", filepath.Join(dir, "missing.GGUF"), true, false, false},
		{"named .gmz", file("j.gmz", nil), false, true, false},
		{"named .pt", file("k.pt", nil), false, false, true},
		{"missing, named .pt", filepath.Join(dir, "missing.pt"), false, false, false},
		{"a device", os.DevNull, false, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := isGGUF(c.path); got != c.gguf {
				t.Errorf("isGGUF = %v, want %v", got, c.gguf)
			}
			if got := isGMZ(c.path); got != c.gmz {
				t.Errorf("isGMZ = %v, want %v", got, c.gmz)
			}
			if got := isTorchBin(c.path); got != c.torch {
				t.Errorf("isTorchBin = %v, want %v", got, c.torch)
			}
		})
	}
}
