package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// tensorBytes returns every tensor's bytes of a checkpoint, by name.
func tensorsByName(t *testing.T, path string) map[string][]byte {
	t.Helper()
	src, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	m := map[string][]byte{}
	for _, tm := range src.Tensors() {
		b, err := src.Data(tm.Name)
		if err != nil {
			t.Fatal(err)
		}
		m[tm.Name] = bytes.Clone(b)
	}
	return m
}

func sameTensors(t *testing.T, what, got, want string) {
	t.Helper()
	g, w := tensorsByName(t, got), tensorsByName(t, want)
	if len(g) != len(w) {
		t.Fatalf("%s: %d tensors, want %d", what, len(g), len(w))
	}
	for name, b := range w {
		if !bytes.Equal(g[name], b) {
			t.Fatalf("%s: tensor %q differs", what, name)
		}
	}
}

// Compressed checkpoints, full and delta, are inputs like any other, and --out x.gmz
// writes the merge compressed: the tensors are those of the uncompressed merge.
func TestMergeCompressedInputs(t *testing.T) {
	f := newCLIFixture(t)
	anchorGz := filepath.Join(f.dir, "anchor.gmz")
	deltaGz := filepath.Join(f.dir, "current.delta.gmz")
	for _, args := range [][]string{
		{"compress", f.anchor, anchorGz},
		{"compress", f.current, deltaGz, "--against", f.anchor},
	} {
		if code, _, stderr := gomerge(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	want := filepath.Join(f.dir, "want.safetensors")
	if code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.current, "--beta", "0.3", "--out", want); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, c := range []struct{ name, anchor, current, out string }{
		{"compressed anchor", anchorGz, f.current, "a.safetensors"},
		{"delta current", f.anchor, deltaGz, "b.safetensors"},
		{"both, compressed output", anchorGz, deltaGz, "c.gmz"},
	} {
		out := filepath.Join(f.dir, c.out)
		if code, _, stderr := gomerge(t, "sfa", "--anchor", c.anchor, "--current", c.current, "--beta", "0.3", "--out", out, "--threads", "2"); code != 0 {
			t.Fatalf("%s: exit %d: %s", c.name, code, stderr)
		}
		sameTensors(t, c.name, out, want)
	}
	// Other methods and commands read them too.
	lin := filepath.Join(f.dir, "lin.safetensors")
	linWant := filepath.Join(f.dir, "linwant.safetensors")
	if code, _, stderr := gomerge(t, "linear", anchorGz, deltaGz, "--out", lin); code != 0 {
		t.Fatalf("linear: exit %d: %s", code, stderr)
	}
	if code, _, stderr := gomerge(t, "linear", f.anchor, f.current, "--out", linWant); code != 0 {
		t.Fatalf("linear: exit %d: %s", code, stderr)
	}
	sameTensors(t, "linear", lin, linWant)
	if code, stdout, stderr := gomerge(t, "distance", anchorGz, deltaGz); code != 0 || stdout == "" {
		t.Fatalf("distance: exit %d: %s", code, stderr)
	}
	// No temporary merge is left beside a compressed output.
	ents, _ := os.ReadDir(f.dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "merging") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// A delta whose reference is gone or changed is refused, naming the file, and
// nothing is written.
func TestMergeCompressedBadReference(t *testing.T) {
	f := newCLIFixture(t)
	deltaGz := filepath.Join(f.dir, "current.delta.gmz")
	if code, _, stderr := gomerge(t, "compress", f.current, deltaGz, "--against", f.anchor); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	out := filepath.Join(f.dir, "m.safetensors")
	// The reference changed: its tensors' checksums no longer match the delta's.
	if err := os.WriteFile(f.anchor, readFile(t, f.current), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := gomerge(t, "sfa", "--anchor", f.current, "--current", deltaGz, "--out", out)
	if code != exitBadInput || !strings.Contains(stderr, "current.delta.gmz") || !strings.Contains(stderr, "reference") {
		t.Errorf("changed reference: exit %d: %s", code, stderr)
	}
	if err := os.Remove(f.anchor); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = gomerge(t, "sfa", "--anchor", f.current, "--current", deltaGz, "--out", out)
	if code != exitBadInput || !strings.Contains(stderr, "anchor.safetensors") {
		t.Errorf("missing reference: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("an output was written")
	}
}

// sfa --keep-history stores each in-place result as a numbered delta against the
// anchor (a safetensors or GGUF file's as NNNNNN.gmz, a folder's as a compressed
// folder), and each restores the checkpoint as it was after its step; results it
// cannot store whole are refused before the merge.
func TestSFAKeepHistory(t *testing.T) {
	f := newCLIFixture(t)
	hist := filepath.Join(f.dir, "history")
	var steps [][]byte
	for i := range 3 {
		code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.current, "--beta", "0.5", "--in-place", "--keep-history", hist)
		if code != 0 {
			t.Fatalf("step %d: exit %d: %s", i, code, stderr)
		}
		want := filepath.Join(hist, []string{"000001.gmz", "000002.gmz", "000003.gmz"}[i])
		if !strings.Contains(stdout, want) {
			t.Fatalf("step %d: output does not name %s: %s", i, want, stdout)
		}
		steps = append(steps, readFile(t, f.current))
	}
	for i, want := range steps {
		back := filepath.Join(f.dir, "back.safetensors")
		gz := filepath.Join(hist, []string{"000001.gmz", "000002.gmz", "000003.gmz"}[i])
		if code, _, stderr := gomerge(t, "decompress", gz, back, "--against", f.anchor); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !bytes.Equal(readFile(t, back), want) {
			t.Errorf("history %d does not restore its step", i+1)
		}
		// A merge reads the history directly, its anchor found beside it by path.
		if code, _, stderr := gomerge(t, "distance", f.anchor, gz); code != 0 {
			t.Errorf("distance from %s: exit %d: %s", gz, code, stderr)
		}
	}
	// A folder result (a Hugging Face checkpoint, as trainers save them) is stored as
	// a compressed folder, numbered after the files, and restores the folder.
	code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.folder, "--in-place", "--keep-history", hist)
	if want := filepath.Join(hist, "000004"); code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("folder result: exit %d, want 0 naming %s: %s%s", code, want, stdout, stderr)
	}
	back := filepath.Join(f.dir, "back")
	if code, _, stderr := gomerge(t, "decompress", filepath.Join(hist, "000004"), back, "--against", f.anchor); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ents, err := os.ReadDir(f.folder)
	if err != nil || len(ents) == 0 {
		t.Fatal(ents, err)
	}
	for _, e := range ents {
		if !bytes.Equal(readFile(t, filepath.Join(back, e.Name())), readFile(t, filepath.Join(f.folder, e.Name()))) {
			t.Errorf("the folder's history does not restore %s", e.Name())
		}
	}
	code, stdout, stderr = gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.current, "--in-place", "--keep-history", hist)
	if want := filepath.Join(hist, "000005.gmz"); code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("after a folder: exit %d, want 0 naming %s: %s%s", code, want, stdout, stderr)
	}
	// A GGUF result is stored as NNNNNN.gmz, a delta against the GGUF anchor.
	ga, gc := filepath.Join(f.dir, "a.gguf"), filepath.Join(f.dir, "c.gguf")
	gbase := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	if err := gguftest.WriteFile(ga, gguftest.Metadata(gguftest.Tiny, "a"), gbase); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(gc, gguftest.Metadata(gguftest.Tiny, "a"), gguftest.Perturb(gbase, 0.1, 2)); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = gomerge(t, "sfa", "--anchor", ga, "--current", gc, "--in-place", "--keep-history", hist)
	if want := filepath.Join(hist, "000006.gmz"); code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("GGUF result: exit %d, want 0 naming %s: %s%s", code, want, stdout, stderr)
	}
	if code, _, stderr := gomerge(t, "decompress", filepath.Join(hist, "000006.gmz"), filepath.Join(f.dir, "back.gguf"), "--against", ga); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, filepath.Join(f.dir, "back.gguf")), readFile(t, gc)) {
		t.Error("the GGUF history does not restore its step")
	}
	// Results it cannot store as one delta are refused before the merge.
	for _, args := range [][]string{
		{"--out", filepath.Join(f.dir, "m.gmz")},
		{"--out", filepath.Join(f.dir, "m"), "--shard-index", "0", "--shard-count", "2"},
		{"--out", filepath.Join(f.dir, "m.safetensors"), "--split-max-tensors", "3"},
	} {
		code, _, stderr := gomerge(t, append([]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--keep-history", hist}, args...)...)
		if code != exitUsage || !strings.Contains(stderr, "--keep-history") {
			t.Errorf("%v: exit %d, want %d: %s", args, code, exitUsage, stderr)
		}
		if _, err := os.Stat(args[1]); err == nil {
			t.Errorf("%v: wrote %s", args, args[1])
		}
	}
}

// A Hugging Face folder (shards, index, config) compresses into a folder of .gmz
// shards beside the other files, full or as a delta; decompress gives every file back
// byte for byte; merges read the compressed folder as the folder it was made from,
// and a folder output from it keeps its other files.
func TestCompressFolder(t *testing.T) {
	f := newCLIFixture(t)
	// Sub-folders, one holding a weight file, which is carried as it is (it is no
	// shard of the model).
	for name, data := range map[string]string{
		"config.json":                            `{"model_type": "llama"}`,
		"original/params.json":                   `{"dim": 64}`,
		"original/deep/consolidated.safetensors": "not a shard: any bytes",
		"original/deep/empty/.keep":              "",
		"metal/model.safetensors.index.json":     "{}",
	} {
		p := filepath.Join(f.folder, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gz := filepath.Join(f.dir, "current-gz")
	dgz := filepath.Join(f.dir, "current-delta")
	for _, args := range [][]string{
		{"compress", f.folder, gz},
		{"compress", f.folder, dgz, "--against", f.anchor},
	} {
		if code, _, stderr := gomerge(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	ents, err := os.ReadDir(gz)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Contains(names, "config.json") || !slices.Contains(names, "model.safetensors.index.json") ||
		slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".safetensors") }) ||
		!slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".gmz") }) {
		t.Fatalf("compressed folder holds %v", names)
	}
	// tree lists a folder's files and folders, sub-folders included.
	tree := func(dir string) []string {
		t.Helper()
		var names []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if d.IsDir() {
				rel += "/"
			}
			names = append(names, filepath.ToSlash(rel))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := tree(gz); !slices.Contains(got, "original/deep/consolidated.safetensors") || !slices.Contains(got, "original/deep/empty/.keep") ||
		!bytes.Equal(readFile(t, filepath.Join(gz, "original", "params.json")), readFile(t, filepath.Join(f.folder, "original", "params.json"))) {
		t.Errorf("the compressed folder does not carry the sub-folders as they are: %v", got)
	}
	sameFolder := func(what, got, want string) {
		t.Helper()
		we, ge := tree(want), tree(got)
		if !slices.Equal(ge, we) {
			t.Fatalf("%s: holds %v, want %v", what, ge, we)
		}
		for _, n := range we {
			if !strings.HasSuffix(n, "/") && !bytes.Equal(readFile(t, filepath.Join(got, n)), readFile(t, filepath.Join(want, n))) {
				t.Errorf("%s: %s differs", what, n)
			}
		}
	}
	back := filepath.Join(f.dir, "back")
	if code, _, stderr := gomerge(t, "decompress", gz, back); code != 0 {
		t.Fatalf("decompress: exit %d: %s", code, stderr)
	}
	sameFolder("full", back, f.folder)
	if code, _, stderr := gomerge(t, "decompress", dgz, back); code != exitUsage {
		t.Errorf("a delta folder without --against: exit %d: %s", code, stderr)
	}
	if code, _, stderr := gomerge(t, "decompress", dgz, back, "--against", f.current); code != exitBadInput || !strings.Contains(stderr, "reference") {
		t.Errorf("a delta folder against the wrong reference: exit %d: %s", code, stderr)
	}
	sameFolder("untouched after a refused decompress", back, f.folder)
	if code, _, stderr := gomerge(t, "decompress", dgz, back, "--against", f.anchor); code != 0 {
		t.Fatalf("decompress delta: exit %d: %s", code, stderr)
	}
	sameFolder("delta", back, f.folder)

	want := filepath.Join(f.dir, "want")
	if code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.folder, "--beta", "0.3", "--out", want); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, in := range []string{gz, dgz} {
		got := filepath.Join(f.dir, "got")
		if code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", in, "--beta", "0.3", "--out", got, "--threads", "2"); code != 0 {
			t.Fatalf("%s: exit %d: %s", in, code, stderr)
		}
		sameTensors(t, in, got, want)
		if !bytes.Equal(readFile(t, filepath.Join(got, "config.json")), readFile(t, filepath.Join(f.folder, "config.json"))) {
			t.Errorf("%s: the merged folder lacks the input's config.json", in)
		}
		os.RemoveAll(got)
	}
	if code, _, stderr := gomerge(t, "compress", f.folder, filepath.Join(f.dir, "x.gmz")); code != exitUsage {
		t.Errorf("folder into x.gmz: exit %d: %s", code, stderr)
	}
	before := readFile(t, filepath.Join(gz, "model.safetensors.index.json"))
	if code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", gz, "--in-place"); code != exitUsage || !strings.Contains(stderr, "compressed folder") {
		t.Errorf("--in-place on a compressed folder: exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, filepath.Join(gz, "model.safetensors.index.json")), before) {
		t.Error("a refused in-place merge changed the compressed folder")
	}
}

// A GGUF file (quantized and float tensors, alignment padding) compresses, full or
// as a delta against another, and decompresses byte for byte; merges refuse it with
// a clear error rather than misreading it.
func TestCompressGGUF(t *testing.T) {
	dir := t.TempDir()
	base := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
	// An F16 tensor too, coded in byte planes.
	base = append(base, gguftest.Tensor{Name: "extra.f16", DType: dtype.F16, Shape: []int64{3, 33}, Data: make([]byte, 2*99)})
	for i := range base[len(base)-1].Data {
		base[len(base)-1].Data[i] = byte(i * 7)
	}
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	if err := gguftest.WriteFile(a, gguftest.Metadata(gguftest.Tiny, "a"), base); err != nil {
		t.Fatal(err)
	}
	if err := gguftest.WriteFile(b, gguftest.Metadata(gguftest.Tiny, "a"), gguftest.Perturb(base, 0.1, 2)); err != nil {
		t.Fatal(err)
	}
	az, bz := filepath.Join(dir, "a.gmz"), filepath.Join(dir, "b.gmz")
	for _, args := range [][]string{
		{"compress", a, az},
		{"compress", b, bz, "--against", a},
	} {
		if code, _, stderr := gomerge(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	if v := readFile(t, az)[8]; v != 2 {
		t.Errorf("a GGUF file with padding compresses to a version %d .gmz, want 2 (gaps)", v)
	}
	for _, c := range []struct {
		in, want string
		args     []string
	}{{az, a, nil}, {bz, b, []string{"--against", a}}} {
		back := filepath.Join(dir, "back.gguf")
		if code, _, stderr := gomerge(t, append([]string{"decompress", c.in, back}, c.args...)...); code != 0 {
			t.Fatalf("decompress %s: exit %d: %s", c.in, code, stderr)
		}
		if !bytes.Equal(readFile(t, back), readFile(t, c.want)) {
			t.Errorf("%s does not decompress to %s byte for byte", c.in, c.want)
		}
	}
	if code, _, stderr := gomerge(t, "decompress", bz, filepath.Join(dir, "x.gguf"), "--against", b); code != exitBadInput {
		t.Errorf("delta against the wrong reference: exit %d: %s", code, stderr)
	}
}

// Compressed GGUF files, full and delta (against a GGUF file or a compressed one),
// are merge inputs like the GGUF files they were made from: every merge, distance
// and inspect give what they give on the plain files. Frames of 3000 bytes cut
// through the types' blocks and the engine's spans (the weights are two spans long).
func TestMergeCompressedGGUF(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.Q8_0, dtype.F16, dtype.Q4_K} {
		t.Run(dt.String(), func(t *testing.T) {
			dir := t.TempDir()
			a, b, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf"), filepath.Join(dir, "c.gguf")
			for i, p := range []string{a, b, c} {
				if err := gguftest.WriteFile(p, gguftest.Metadata(gguftest.KTiny, "a"), gguftest.Random(gguftest.KTiny, dt, uint64(i+1))); err != nil {
					t.Fatal(err)
				}
			}
			az, bz, bza, cz := filepath.Join(dir, "a.gmz"), filepath.Join(dir, "b.delta.gmz"), filepath.Join(dir, "b.deltaz.gmz"), filepath.Join(dir, "c.gmz")
			for _, args := range [][]string{
				{"compress", a, az, "--frame-size", "3000"},
				{"compress", b, bz, "--against", a, "--frame-size", "3000"},
				{"compress", b, bza, "--against", az, "--frame-size", "3000"},
				{"compress", c, cz},
			} {
				if code, _, stderr := gomerge(t, args...); code != 0 {
					t.Fatalf("%v: exit %d: %s", args, code, stderr)
				}
			}
			// Each merge from the plain files, then from compressed inputs: the
			// tensors, and the metadata but for the input paths, are the same.
			merges := []struct {
				name  string
				plain []string
				gz    [][]string
			}{
				{"sfa", []string{"sfa", "--anchor", a, "--current", b, "--beta", "0.3"},
					[][]string{{"sfa", "--anchor", az, "--current", bz, "--beta", "0.3"}, {"sfa", "--anchor", a, "--current", bza, "--beta", "0.3"}}},
				{"linear", []string{"linear", a, b, c},
					[][]string{{"linear", az, bz, cz}}},
				{"ties", []string{"ties", b, c, "--base", a, "--density", "0.5"},
					[][]string{{"ties", bza, cz, "--base", az, "--density", "0.5"}}},
			}
			for _, m := range merges {
				want := filepath.Join(dir, m.name+".want.gguf")
				if code, _, stderr := gomerge(t, append(m.plain, "--out", want)...); code != 0 {
					t.Fatalf("%s: exit %d: %s", m.name, code, stderr)
				}
				for i, args := range m.gz {
					for _, ext := range []string{".gguf", ".gmz"} {
						got := filepath.Join(dir, fmt.Sprintf("%s.%d%s", m.name, i, ext))
						if code, _, stderr := gomerge(t, append(args, "--out", got, "--threads", "2")...); code != 0 {
							t.Fatalf("%v: exit %d: %s", args, code, stderr)
						}
						if ext == ".gmz" { // written as a compressed GGUF file
							back := filepath.Join(dir, "back.gguf")
							if code, _, stderr := gomerge(t, "decompress", got, back); code != 0 {
								t.Fatalf("decompress %s: exit %d: %s", got, code, stderr)
							}
							got = back
						}
						sameTensors(t, fmt.Sprint(args, ext), got, want)
						sameGGUFMetadata(t, got, want)
					}
				}
			}
			// In place on a compressed GGUF file: it stays a compressed GGUF file,
			// holding the merge.
			inPlace := filepath.Join(dir, "inplace.gmz")
			if err := os.WriteFile(inPlace, readFile(t, cz), 0o644); err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(dir, "inplace.want.gguf")
			if code, _, stderr := gomerge(t, "sfa", "--anchor", a, "--current", c, "--beta", "0.3", "--out", want); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if code, _, stderr := gomerge(t, "sfa", "--anchor", a, "--current", inPlace, "--beta", "0.3", "--in-place"); code != 0 {
				t.Fatalf("in place on a compressed GGUF: exit %d: %s", code, stderr)
			}
			back := filepath.Join(dir, "inplace.back.gguf")
			if code, _, stderr := gomerge(t, "decompress", inPlace, back); code != 0 {
				t.Fatalf("decompress: exit %d: %s", code, stderr)
			}
			sameTensors(t, "in place", back, want)
			// A dry run of a merge into a .gmz plans a GGUF output, as the run does.
			if code, _, stderr := gomerge(t, "sfa", "--anchor", az, "--current", bz, "--beta", "0.3", "--out", filepath.Join(dir, "dry.gmz"), "--dry-run"); code != 0 {
				t.Errorf("dry run into a .gmz from GGUF inputs: exit %d: %s", code, stderr)
			}
			// distance gives the same numbers.
			dist := func(x, y string) string {
				t.Helper()
				code, stdout, stderr := gomerge(t, "distance", x, y, "--json")
				if code != 0 {
					t.Fatalf("distance %s %s: exit %d: %s", x, y, code, stderr)
				}
				var r map[string]any
				if err := json.Unmarshal([]byte(stdout), &r); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprint(r["total"])
			}
			if got, want := dist(az, bz), dist(a, b); got != want {
				t.Errorf("distance from compressed inputs %s, from the files %s", got, want)
			}
			// inspect lists the GGUF file's tensors and metadata.
			inspect := func(p string) inspectReport {
				t.Helper()
				code, stdout, stderr := gomerge(t, "inspect", p, "--json")
				if code != 0 {
					t.Fatalf("inspect %s: exit %d: %s", p, code, stderr)
				}
				var rep inspectReport
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatal(err)
				}
				return rep
			}
			ri, rf := inspect(az), inspect(a)
			if len(ri.Tensors) != len(rf.Tensors) || len(ri.Metadata) != len(rf.Metadata) || !strings.HasPrefix(ri.Format, "gmz of gguf v3") {
				t.Fatalf("inspect: %s with %d tensors and %d keys, want gmz of %s with %d and %d", ri.Format, len(ri.Tensors), len(ri.Metadata), rf.Format, len(rf.Tensors), len(rf.Metadata))
			}
			for i := range rf.Tensors {
				g, w := ri.Tensors[i], rf.Tensors[i]
				if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || g.Offset != w.Offset {
					t.Errorf("inspect: tensor %d is %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// sameGGUFMetadata checks that two GGUF files have the same metadata but for
// gomerge's provenance keys (which name the inputs).
func sameGGUFMetadata(t *testing.T, got, want string) {
	t.Helper()
	g, _, err := gguftest.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := gguftest.Read(want)
	if err != nil {
		t.Fatal(err)
	}
	strip := func(kvs []gguf.KV) []string {
		var out []string
		for _, kv := range kvs {
			if !strings.HasPrefix(kv.Key, "gomerge.") {
				out = append(out, fmt.Sprint(kv.Key, kv.Value))
			}
		}
		return out
	}
	if gs, ws := strip(g), strip(w); !slices.Equal(gs, ws) {
		t.Errorf("%s: metadata %v, want %v", got, gs, ws)
	}
}

// A compressed GGUF file whose frames, GGUF header or tensor list is damaged is
// refused with exit 3, naming the file (and the tensor where there is one), and
// nothing is written.
func TestMergeCompressedGGUFBadInput(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.gguf")
	if err := gguftest.WriteFile(a, gguftest.Metadata(gguftest.Tiny, "a"), gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)); err != nil {
		t.Fatal(err)
	}
	az := filepath.Join(dir, "a.gmz")
	if code, _, stderr := gomerge(t, "compress", a, az); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	good := readFile(t, az)
	const name = "token_embd.weight"
	flipped := flipFrame(t, good, name)
	editTensor := func(edit func(m map[string]any)) []byte {
		return gmzEdit(t, good, func(h map[string]any) {
			for _, tn := range h["tensors"].([]any) {
				if m := tn.(map[string]any); m["name"] == name {
					edit(m)
				}
			}
		})
	}
	var src map[string]any
	gmzEdit(t, good, func(h map[string]any) { src = h["source"].(map[string]any) })
	hdr, err := base64.StdEncoding.DecodeString(src["header"].(string))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		file []byte
		want []string
	}{
		{"frame checksum", flipped, []string{name, "frame 0"}},
		{"tensor renamed", editTensor(func(m map[string]any) { m["name"] = "other.weight" }), []string{name, "does not hold it"}},
		{"header truncated", gmzEdit(t, good, func(h map[string]any) {
			s := h["source"].(map[string]any)
			s["header"] = base64.StdEncoding.EncodeToString(hdr[:len(hdr)/2])
			s["size"] = json.Number(fmt.Sprint(readSize(t, a) - int64(len(hdr)-len(hdr)/2)))
		}), []string{"GGUF file's header"}},
		{"container of another type", editTensor(func(m map[string]any) {
			m["dtype"], m["shape"] = "U8", []any{json.Number(fmt.Sprint(int64(gguftest.VocabSize) * 64 / 32 * 34))}
		}), []string{name, "header says Q8_0, the container U8"}},
	}
	// A part of a split model, compressed.
	split := filepath.Join(dir, "s.gguf")
	if code, _, stderr := gomerge(t, "linear", a, a, "--out", split, "--split-max-tensors", "8"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	partGz := filepath.Join(dir, "s-00001-of-00003.gmz")
	if code, _, stderr := gomerge(t, "compress", filepath.Join(dir, gguf.SplitName("s", 0, 3)), partGz); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cases = append(cases, struct {
		name string
		file []byte
		want []string
	}{"part of a split model, renamed", readFile(t, partGz), []string{"part 1 of a model split in 3", "not named"}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub := t.TempDir()
			in, out := filepath.Join(sub, "in.gmz"), filepath.Join(sub, "out.gguf")
			if err := os.WriteFile(in, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := gomerge(t, "sfa", "--anchor", a, "--current", in, "--beta", "0.5", "--out", out)
			if code != exitBadInput || !strings.Contains(stderr, "in.gmz") {
				t.Fatalf("exit %d, want %d naming in.gmz: %s", code, exitBadInput, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not name %q", stderr, w)
				}
			}
			ents, _ := os.ReadDir(sub)
			for _, e := range ents {
				if e.Name() != "in.gmz" {
					t.Errorf("left %s behind", e.Name())
				}
			}
		})
	}
}

func readSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// inspect lists a .gmz file's and a compressed folder's tensors like those of the
// checkpoint they were made from, and refuses a damaged .gmz with exit 3.
func TestInspectCompressed(t *testing.T) {
	f := newCLIFixture(t)
	gz, dir := filepath.Join(f.dir, "a.gmz"), filepath.Join(f.dir, "folder-gz")
	for _, args := range [][]string{{"compress", f.anchor, gz}, {"compress", f.folder, dir}} {
		if code, _, stderr := gomerge(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	names := func(path string) (string, []string) {
		t.Helper()
		code, stdout, stderr := gomerge(t, "inspect", path, "--json")
		if code != 0 {
			t.Fatalf("inspect %s: exit %d: %s", path, code, stderr)
		}
		var rep inspectReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		var ns []string
		for _, x := range rep.Tensors {
			ns = append(ns, x.Name+" "+x.DType+" "+fmt.Sprint(x.Shape))
		}
		slices.Sort(ns)
		return rep.Format, ns
	}
	for _, c := range [][2]string{{gz, f.anchor}, {dir, f.folder}} {
		format, got := names(c[0])
		_, want := names(c[1])
		if !strings.Contains(format, "gmz") || !slices.Equal(got, want) {
			t.Errorf("inspect %s: format %q, tensors %v, want those of %s: %v", c[0], format, got, c[1], want)
		}
	}
	b := readFile(t, gz)
	if err := os.WriteFile(gz, b[:len(b)-7], 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := gomerge(t, "inspect", gz); code != exitBadInput {
		t.Errorf("inspect of a truncated .gmz: exit %d: %s", code, stderr)
	}
}
