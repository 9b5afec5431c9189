package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// A compressed folder that does not agree with its index is refused as bad input,
// naming the folder and what is wrong.
func TestCompressedFolderMalformed(t *testing.T) {
	ctx := context.Background()
	ts := stt.Random(stt.TinyLlama, dtype.BF16, 1)
	for _, c := range []struct {
		name string
		edit func(t *testing.T, dir string, shards []string)
		want string
	}{
		{"shard missing", func(t *testing.T, dir string, shards []string) {
			if err := os.Remove(filepath.Join(dir, shards[1])); err != nil {
				t.Fatal(err)
			}
		}, "is not there"},
		{"shards swapped", func(t *testing.T, dir string, shards []string) {
			a, b := filepath.Join(dir, shards[0]), filepath.Join(dir, shards[1])
			for _, r := range [][2]string{{a, a + ".x"}, {b, a}, {a + ".x", b}} {
				if err := os.Rename(r[0], r[1]); err != nil {
					t.Fatal(err)
				}
			}
		}, "the index puts it in"},
		{"index lists more", func(t *testing.T, dir string, _ []string) {
			p := filepath.Join(dir, "model.safetensors.index.json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.Replace(string(b), `"weight_map": {`, `"weight_map": {"ghost.weight": "model-00001-of-00003.safetensors", `, 1))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "ghost.weight"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			plain, gz := filepath.Join(dir, "plain"), filepath.Join(dir, "gz")
			if err := stt.WriteFolder(plain, ts, 3, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := CompressFolder(ctx, plain, gz, CompressOptions{}); err != nil {
				t.Fatal(err)
			}
			shards, err := listFolder(gz, ".gmz")
			if err != nil || len(shards) != 3 {
				t.Fatalf("shards %v, %v", shards, err)
			}
			src, err := Open(gz)
			if err != nil {
				t.Fatalf("the intact folder: %v", err)
			}
			src.Close()
			c.edit(t, gz, shards)
			_, err = Open(gz)
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), gz) {
				t.Errorf("Open: %v, want a bad-input error naming %s with %q", err, gz, c.want)
			}
		})
	}
}
