package merge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stageManifest writes a one-worker staging folder holding a shard with content data,
// and the manifest m (nil: a valid one) or, if raw is set, those bytes.
func stageManifest(t testing.TB, out string, data []byte, edit func(*ShardManifest), raw []byte) {
	t.Helper()
	dir := WorkerDir(out, 0)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	m := ShardManifest{Format: ManifestFormat, PlanHash: "h", Worker: 0, Workers: 1, Complete: true,
		Files:  []PlannedFile{{Name: "model.safetensors", Size: int64(len(data)), Worker: 0}},
		Shards: []WrittenFile{{Name: "model.safetensors", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}}}
	if edit != nil {
		edit(&m)
	}
	if raw == nil {
		var err error
		if raw, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, manifestName), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFinalizeMalformed: manifests that are not what a worker writes are refused,
// naming the worker, and nothing moves.
func TestFinalizeMalformed(t *testing.T) {
	data := []byte("weights")
	for _, c := range []struct {
		name string
		edit func(*ShardManifest)
		raw  []byte
		msg  string
	}{
		{"valid", nil, nil, ""},
		{"not JSON", nil, []byte("{"), "worker 0: "},
		{"empty", nil, []byte{}, "worker 0: "},
		{"other format", func(m *ShardManifest) { m.Format = "x" }, nil, "is not a " + ManifestFormat},
		{"other worker", func(m *ShardManifest) { m.Worker = 1 }, nil, "its manifest says worker 1 of 1"},
		{"owner out of range", func(m *ShardManifest) { m.Files[0].Worker = 3 }, nil, "planned for worker 3 of 1"},
		{"unfinished", func(m *ShardManifest) { m.Complete = false }, nil, "worker 0 of 1 has not finished"},
		{"more workers", func(m *ShardManifest) { m.Workers = 2 }, nil, "worker 1 of 2 has not run"},
		{"zero workers", func(m *ShardManifest) { m.Workers = 0 }, nil, "its manifest says worker 0 of 0"},
		{"escaping name", func(m *ShardManifest) { m.Files[0].Name = "../x"; m.Shards[0].Name = "../x" }, nil, "not a plain file name"},
		{"staging name", func(m *ShardManifest) { m.SmallFiles = []WrittenFile{{Name: StagingDir}} }, nil, "not a plain file name"},
		{"unrecorded", func(m *ShardManifest) { m.Shards = nil }, nil, "did not record it"},
		{"size", func(m *ShardManifest) { m.Files[0].Size++; m.Shards[0].Size++ }, nil, "truncated"},
		{"checksum", func(m *ShardManifest) { m.Shards[0].SHA256 = strings.Repeat("0", 64) }, nil, "corrupted"},
		{"missing small file", func(m *ShardManifest) { m.SmallFiles = []WrittenFile{{Name: "config.json", Size: 2}} }, nil, "file config.json of worker 0 is missing"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		stageManifest(t, out, data, c.edit, c.raw)
		_, err := Finalize(context.Background(), out, nil)
		if c.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want a bad-input error containing %q", c.name, err, c.msg)
		}
		if _, serr := os.Stat(filepath.Join(out, StagingDir)); serr != nil {
			t.Errorf("%s: the staging folder went: %v", c.name, serr)
		}
		if _, serr := os.Stat(filepath.Join(out, "model.safetensors")); serr == nil {
			t.Errorf("%s: finalize moved a file before refusing", c.name)
		}
	}
}

// FuzzFinalizeManifest: whatever a worker's manifest holds, finalize neither panics
// nor writes outside the output folder, and refuses unless every file it moves was
// recorded with its checksum.
func FuzzFinalizeManifest(f *testing.F) {
	data := []byte("weights")
	sum := sha256.Sum256(data)
	f.Add([]byte(`{"format":"` + ManifestFormat + `","plan_hash":"h","worker":0,"workers":1,"complete":true,` +
		`"files":[{"name":"model.safetensors","size":7,"worker":0}],` +
		`"shards":[{"name":"model.safetensors","size":7,"sha256":"` + hex.EncodeToString(sum[:]) + `"}]}`))
	f.Add([]byte(`{"format":"` + ManifestFormat + `","workers":3,"complete":true,"files":[{"name":"../../x","size":7,"worker":2}]}`))
	f.Add([]byte(`{"format":"` + ManifestFormat + `","workers":1,"complete":true,"small_files":[{"name":"/etc/passwd","size":1}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		root := t.TempDir()
		out := filepath.Join(root, "out")
		stageManifest(t, out, data, nil, raw)
		_, err := Finalize(context.Background(), out, nil)
		entries, rerr := os.ReadDir(root)
		if rerr != nil || len(entries) != 1 || entries[0].Name() != "out" {
			t.Fatalf("finalize wrote beside the output: %v %v", entries, rerr)
		}
		if err != nil {
			return
		}
		moved, _ := os.ReadDir(out)
		for _, e := range moved {
			if e.Name() == "model.safetensors" {
				if got, _ := os.ReadFile(filepath.Join(out, e.Name())); string(got) != string(data) {
					t.Fatalf("moved a shard that is not the one recorded")
				}
			}
		}
	})
}
