package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
)

// splitFixture is a model split in three parts (a, the anchor or base, and b, a
// fine-tune of it), the same models in one file each, and a third model c in one
// file, all of type dt, in dir.
type splitFixture struct {
	dir                    string
	aParts, bParts         []string // plain parts, in dir/plain
	aWhole, bWhole, cWhole string
}

func newSplitFixture(t *testing.T, dt dtype.DType) *splitFixture {
	t.Helper()
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	c := gguftest.KTiny
	a := gguftest.Random(c, dt, 1)
	b := gguftest.Random(c, dt, 2)
	f := &splitFixture{dir: dir,
		aWhole: filepath.Join(dir, "a.gguf"), bWhole: filepath.Join(dir, "b.gguf"), cWhole: filepath.Join(dir, "c.gguf")}
	cuts := []int{2, len(a) / 2}
	f.aParts = writeSplit(t, filepath.Join(plain, "a"), c, a, cuts, nil)
	f.bParts = writeSplit(t, filepath.Join(plain, "b"), c, b, cuts, nil)
	for p, ts := range map[string][]gguftest.Tensor{f.aWhole: a, f.bWhole: b, f.cWhole: gguftest.Random(c, dt, 3)} {
		if err := gguftest.WriteFile(p, gguftest.Metadata(c, "split"), ts); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// copyTo copies src to dst.
func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Split GGUF models whose parts are all or partly compressed, full or as deltas
// (against a plain or a compressed split model), are merge inputs like the plain
// parts: every merge gives the tensors (and the metadata but for the input paths)
// that it gives from the plain parts. Frames of 3000 bytes cut through blocks and
// the engine's spans; Q8_0 (32-element blocks) and Q4_K (256-element super-blocks).
func TestMergeCompressedSplitGGUF(t *testing.T) {
	for _, dt := range []dtype.DType{dtype.Q8_0, dtype.Q4_K} {
		t.Run(dt.String(), func(t *testing.T) {
			f := newSplitFixture(t, dt)
			dir := f.dir
			gz := filepath.Join(dir, "gz")
			mix := filepath.Join(dir, "mix")
			for _, d := range []string{gz, mix} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// a: every part compressed, by naming any part and NAME.gmz.
			mustGomerge(t, "compress", f.aParts[1], filepath.Join(gz, "a.gmz"), "--frame-size", "3000")
			az := make([]string, 3)
			for i := range az {
				az[i] = filepath.Join(gz, fmt.Sprintf("a-%05d-of-00003.gmz", i+1))
				// An output named as the same part: that part alone.
				back := filepath.Join(dir, fmt.Sprintf("back-%05d-of-00003.gguf", i+1))
				mustGomerge(t, "decompress", az[i], back)
				if !bytes.Equal(readFile(t, back), readFile(t, f.aParts[i])) {
					t.Fatalf("%s does not decompress to %s byte for byte", az[i], f.aParts[i])
				}
				os.Remove(back)
			}
			if _, err := os.Stat(filepath.Join(gz, "a.gmz")); !os.IsNotExist(err) {
				t.Errorf("compress of a split model wrote a.gmz beside its parts")
			}
			// b, whole: every part a delta against the compressed a.
			mustGomerge(t, "compress", f.bParts[0], filepath.Join(gz, "b.gmz"), "--against", az[0], "--frame-size", "3000")
			bz := filepath.Join(gz, "b-00003-of-00003.gmz")
			// b, mixed: part 2 a delta against the plain a, compressed on its own;
			// parts 1 and 3 plain.
			for _, i := range []int{0, 2} {
				copyTo(t, f.bParts[i], filepath.Join(mix, filepath.Base(f.bParts[i])))
			}
			mustGomerge(t, "compress", f.bParts[1], filepath.Join(mix, "b-00002-of-00003.gmz"), "--against", f.aParts[0], "--frame-size", "3000")
			bMixPlain := filepath.Join(mix, "b-00001-of-00003.gguf")
			bMixGz := filepath.Join(mix, "b-00002-of-00003.gmz")
			testDecompressSplit(t, f, az, bz, bMixGz)

			merges := []struct {
				name  string
				plain []string
				gz    [][]string
			}{
				{"sfa", []string{"sfa", "--anchor", f.aParts[0], "--current", f.bParts[0], "--beta", "0.3"}, [][]string{
					{"sfa", "--anchor", az[1], "--current", bz, "--beta", "0.3"},
					{"sfa", "--anchor", f.aParts[0], "--current", bMixPlain, "--beta", "0.3"},
					{"sfa", "--anchor", az[2], "--current", bMixGz, "--beta", "0.3"},
				}},
				{"linear", []string{"linear", f.aParts[0], f.bParts[0], f.aParts[2]}, [][]string{
					{"linear", az[0], bMixGz, az[2]},
				}},
				{"ties", []string{"ties", f.bParts[0], f.aParts[0], "--base", f.aParts[0], "--density", "0.5"}, [][]string{
					{"ties", bz, bMixPlain, "--base", az[0], "--density", "0.5"},
				}},
			}
			for _, m := range merges {
				want := filepath.Join(dir, m.name+".want.gguf")
				mustGomerge(t, append(m.plain, "--out", want)...)
				for i, args := range m.gz {
					for _, ext := range []string{".gguf", ".gmz"} {
						got := filepath.Join(dir, fmt.Sprintf("%s.%d%s", m.name, i, ext))
						mustGomerge(t, append(args, "--out", got, "--threads", "2")...)
						if ext == ".gmz" {
							back := filepath.Join(dir, "back.gguf")
							mustGomerge(t, "decompress", got, back)
							got = back
						}
						sameTensors(t, fmt.Sprint(args, ext), got, want)
						sameGGUFMetadata(t, got, want)
					}
				}
			}
			// A split output from compressed split inputs: the parts of the plain merge.
			wantSplit, gotSplit := filepath.Join(dir, "ws.gguf"), filepath.Join(dir, "gs.gguf")
			mustGomerge(t, "sfa", "--anchor", f.aParts[0], "--current", f.bParts[0], "--beta", "0.3", "--out", wantSplit, "--split-max-tensors", "4")
			mustGomerge(t, "sfa", "--anchor", az[0], "--current", bz, "--beta", "0.3", "--out", gotSplit, "--split-max-tensors", "4")
			wantParts, _ := filepath.Glob(filepath.Join(dir, "ws-*.gguf"))
			gotParts, _ := filepath.Glob(filepath.Join(dir, "gs-*.gguf"))
			if len(wantParts) < 2 || len(gotParts) != len(wantParts) {
				t.Fatalf("split output in %d parts, want %d (more than 1)", len(gotParts), len(wantParts))
			}
			sameTensors(t, "split output", gotParts[0], wantParts[0])
			// --out NAME.gmz with a split: one .gmz per part, the parts of the plain merge.
			mustGomerge(t, "sfa", "--anchor", az[0], "--current", bz, "--beta", "0.3", "--out", filepath.Join(dir, "xs.gmz"), "--split-max-tensors", "4")
			backDir := filepath.Join(dir, "back")
			if err := os.Mkdir(backDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i := range wantParts {
				name := fmt.Sprintf("xs-%05d-of-%05d", i+1, len(wantParts))
				mustGomerge(t, "decompress", filepath.Join(dir, name+".gmz"), filepath.Join(backDir, name+".gguf"))
			}
			sameTensors(t, "split .gmz output", filepath.Join(backDir, fmt.Sprintf("xs-00001-of-%05d.gguf", len(wantParts))), wantParts[0])
			if left, _ := filepath.Glob(filepath.Join(dir, ".xs*")); len(left) > 0 {
				t.Errorf("left %v behind", left)
			}
			// In place on a split model with a compressed part: refused, nothing changed.
			before := readFile(t, bMixPlain)
			if code, _, stderr := gomerge(t, "sfa", "--anchor", f.aParts[0], "--current", bMixPlain, "--beta", "0.3", "--in-place"); code != exitUsage || !strings.Contains(stderr, "compressed parts") {
				t.Errorf("in place on a split model with a compressed part: exit %d: %s", code, stderr)
			}
			if !bytes.Equal(readFile(t, bMixPlain), before) {
				t.Errorf("a refused in-place merge changed %s", bMixPlain)
			}
			// run: a recipe naming compressed parts.
			r := writeRecipe(t, dir, "linear.yaml", "merge_method: linear\nmodels:\n  - model: "+az[0]+"\n  - model: "+bMixGz+"\n  - model: "+az[2]+"\n")
			got := filepath.Join(dir, "run.gguf")
			mustGomerge(t, "run", r, "--out", got)
			sameTensors(t, "run", got, filepath.Join(dir, "linear.want.gguf"))
			// distance: the same numbers.
			dist := func(x, y string) string {
				t.Helper()
				var rep map[string]any
				if err := json.Unmarshal([]byte(mustGomerge(t, "distance", x, y, "--json")), &rep); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprint(rep["total"])
			}
			if got, want := dist(az[0], bMixGz), dist(f.aParts[0], f.bParts[0]); got != want {
				t.Errorf("distance from compressed parts %s, from the plain parts %s", got, want)
			}
			// inspect shows a compressed part as the part it holds.
			var ri, rf inspectReport
			for p, rep := range map[string]*inspectReport{bz: &ri, f.bParts[2]: &rf} {
				if err := json.Unmarshal([]byte(mustGomerge(t, "inspect", p, "--json")), rep); err != nil {
					t.Fatal(err)
				}
			}
			if len(ri.Tensors) != len(rf.Tensors) || len(ri.Metadata) != len(rf.Metadata) {
				t.Errorf("inspect %s: %d tensors and %d keys, want %d and %d", bz, len(ri.Tensors), len(ri.Metadata), len(rf.Tensors), len(rf.Metadata))
			}
		})
	}
}

// Compress of a split model: an output named as the same part codes that part
// alone, one named as another part is refused, and an output that is a file of the
// reference is refused; nothing is written.
func TestCompressSplitGGUFNames(t *testing.T) {
	f := newSplitFixture(t, dtype.Q8_0)
	part := filepath.Join(f.dir, "a-00002-of-00003.gmz")
	mustGomerge(t, "compress", f.aParts[1], part)
	ents, _ := os.ReadDir(f.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".gmz") && e.Name() != filepath.Base(part) {
			t.Errorf("compress of one part wrote %s", e.Name())
		}
	}
	var rep compressReport
	if err := json.Unmarshal([]byte(mustGomerge(t, "compress", f.aParts[0], filepath.Join(f.dir, "z.gmz"), "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 3 {
		want = append(want, filepath.Join(f.dir, fmt.Sprintf("z-%05d-of-00003.gmz", i+1)))
	}
	if !slices.Equal(rep.Outputs, want) || rep.Output != want[0] {
		t.Errorf("report names %s and %v, want the parts %v", rep.Output, rep.Outputs, want)
	}
	for _, args := range [][]string{
		{"compress", f.aParts[1], filepath.Join(f.dir, "x-00001-of-00003.gmz")},
		{"compress", f.aWhole, filepath.Join(f.dir, "x-00001-of-00003.gmz")},
		{"compress", f.bParts[0], filepath.Join(f.dir, "z.gmz"), "--against", filepath.Join(f.dir, "z-00002-of-00003.gmz")},
	} {
		var before [][]byte
		for i := range 3 {
			b, _ := os.ReadFile(filepath.Join(f.dir, fmt.Sprintf("z-%05d-of-00003.gmz", i+1)))
			before = append(before, b)
		}
		code, _, stderr := gomerge(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (a refusal of the output's name): %s", args, code, exitUsage, stderr)
		}
		if _, err := os.Stat(args[2]); !os.IsNotExist(err) || strings.Contains(stderr, "panic") {
			t.Errorf("%v: wrote %s (%s)", args, args[2], stderr)
		}
		for i := range 3 {
			if b, _ := os.ReadFile(filepath.Join(f.dir, fmt.Sprintf("z-%05d-of-00003.gmz", i+1))); !bytes.Equal(b, before[i]) {
				t.Errorf("%v: replaced part %d of the reference", args, i+1)
			}
		}
	}
}

// A split model with compressed parts that do not make one model is refused with
// exit 3, naming the file (and the tensor where there is one), before anything is
// written: a missing part, a compressed part whose GGUF header disagrees with its
// container, a part compressed against another reference than the one beside it,
// parts of differently split models mixed, a compressed part renamed.
func TestMergeCompressedSplitGGUFBadInput(t *testing.T) {
	f := newSplitFixture(t, dtype.Q8_0)
	gz := filepath.Join(f.dir, "gz")
	if err := os.Mkdir(gz, 0o755); err != nil {
		t.Fatal(err)
	}
	mustGomerge(t, "compress", f.aParts[0], filepath.Join(gz, "a.gmz"), "--frame-size", "3000")
	mustGomerge(t, "compress", f.bParts[0], filepath.Join(gz, "b.gmz"), "--against", filepath.Join(gz, "a-00001-of-00003.gmz"), "--frame-size", "3000")
	// Another model split at other places.
	other := writeSplit(t, filepath.Join(f.dir, "o"), gguftest.KTiny, gguftest.Random(gguftest.KTiny, dtype.Q8_0, 5), []int{1, 3}, nil)
	mustGomerge(t, "compress", other[0], filepath.Join(gz, "o.gmz"))
	aGz := func(i int) string { return filepath.Join(gz, fmt.Sprintf("a-%05d-of-00003.gmz", i+1)) }
	bGz := func(i int) string { return filepath.Join(gz, fmt.Sprintf("b-%05d-of-00003.gmz", i+1)) }
	oGz := func(i int) string { return filepath.Join(gz, fmt.Sprintf("o-%05d-of-00003.gmz", i+1)) }
	var tensor string // the first tensor of a's part 2
	gmzEdit(t, readFile(t, aGz(1)), func(h map[string]any) {
		tensor = h["tensors"].([]any)[0].(map[string]any)["name"].(string)
	})
	cases := []struct {
		name  string
		setup func(sub string) string // returns the input to merge
		want  []string                // in stderr, beside the file at fault
		at    string                  // the file at fault, relative to sub
	}{
		{"missing part", func(sub string) string {
			copyTo(t, aGz(0), filepath.Join(sub, "a-00001-of-00003.gmz"))
			copyTo(t, aGz(2), filepath.Join(sub, "a-00003-of-00003.gmz"))
			return filepath.Join(sub, "a-00001-of-00003.gmz")
		}, []string{"part 2 of 3", "does not exist"}, "a-00002-of-00003.gmz"},
		{"part header disagrees with its container", func(sub string) string {
			copyTo(t, aGz(0), filepath.Join(sub, "a-00001-of-00003.gmz"))
			copyTo(t, aGz(2), filepath.Join(sub, "a-00003-of-00003.gmz"))
			p := filepath.Join(sub, "a-00002-of-00003.gmz")
			if err := os.WriteFile(p, gmzEdit(t, readFile(t, aGz(1)), func(h map[string]any) {
				for _, tn := range h["tensors"].([]any) {
					if m := tn.(map[string]any); m["name"] == tensor {
						m["name"] = "other.weight"
					}
				}
			}), 0o644); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(sub, "a-00001-of-00003.gmz")
		}, []string{tensor, "does not hold it"}, "a-00002-of-00003.gmz"},
		{"part against the wrong reference", func(sub string) string {
			// b's parts are deltas against a-00001-of-00003.gmz beside them: put
			// the other model's parts there under a's names.
			for i := range 3 {
				copyTo(t, bGz(i), filepath.Join(sub, filepath.Base(bGz(i))))
				copyTo(t, oGz(i), filepath.Join(sub, filepath.Base(aGz(i))))
			}
			return filepath.Join(sub, "b-00002-of-00003.gmz")
		}, []string{"reference"}, "b-0000"},
		{"parts of two models", func(sub string) string {
			copyTo(t, aGz(0), filepath.Join(sub, "a-00001-of-00003.gmz"))
			copyTo(t, oGz(1), filepath.Join(sub, "a-00002-of-00003.gmz"))
			copyTo(t, aGz(2), filepath.Join(sub, "a-00003-of-00003.gmz"))
			return filepath.Join(sub, "a-00001-of-00003.gmz")
		}, []string{"split model"}, "a-0000"},
		{"part renamed", func(sub string) string {
			p := filepath.Join(sub, "in.gmz")
			copyTo(t, aGz(0), p)
			return p
		}, []string{"part 1 of a model split in 3", "not named"}, "in.gmz"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub := t.TempDir()
			in := c.setup(sub)
			before, _ := os.ReadDir(sub)
			out := filepath.Join(sub, "out.gguf")
			code, _, stderr := gomerge(t, "sfa", "--anchor", in, "--current", f.cWhole, "--beta", "0.5", "--out", out)
			if code != exitBadInput || !strings.Contains(stderr, filepath.Join(sub, c.at)) {
				t.Fatalf("exit %d, want %d naming %s: %s", code, exitBadInput, c.at, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			after, _ := os.ReadDir(sub)
			if len(after) != len(before) {
				t.Errorf("%d files in the folder after the merge, %d before", len(after), len(before))
			}
		})
	}
}

// testDecompressSplit: decompress of any part of a split model with an output
// NAME.gguf gives back every part, NAME-0000k-of-00003.gguf, byte for byte: all parts
// compressed, all deltas against a compressed split model, or one part a delta beside
// plain parts (copied). Outputs named as another part, or not .gguf, a missing part,
// and a wrong reference are refused, and nothing is written.
func testDecompressSplit(t *testing.T, f *splitFixture, az []string, bz, bMixGz string) {
	t.Helper()
	out := filepath.Join(f.dir, "whole")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, in string
		want     []string
		args     []string
	}{
		{"every part compressed", az[1], f.aParts, nil},
		{"every part a delta against a compressed split model", bz, f.bParts, []string{"--against", az[0]}},
		{"a delta beside plain parts", bMixGz, f.bParts, []string{"--against", f.aParts[0]}},
	}
	for _, c := range cases {
		name := filepath.Join(out, "m.gguf")
		code, stdout, stderr := gomerge(t, append([]string{"decompress", c.in, name, "--json"}, c.args...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.name, code, stderr)
		}
		var rep struct{ Outputs []string }
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		if len(rep.Outputs) != 3 {
			t.Errorf("%s: the report names %v, want 3 parts", c.name, rep.Outputs)
		}
		for i, w := range c.want {
			got := filepath.Join(out, fmt.Sprintf("m-%05d-of-00003.gguf", i+1))
			if !bytes.Equal(readFile(t, got), readFile(t, w)) {
				t.Errorf("%s: %s is not %s byte for byte", c.name, got, w)
			}
			os.Remove(got)
		}
		if left, _ := os.ReadDir(out); len(left) > 0 {
			t.Errorf("%s: left %v in the output folder", c.name, left)
		}
	}
	// Refusals write nothing.
	lone := filepath.Join(f.dir, "lone")
	if err := os.Mkdir(lone, 0o755); err != nil {
		t.Fatal(err)
	}
	copyTo(t, az[1], filepath.Join(lone, filepath.Base(az[1])))
	refusals := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"output named as another part", []string{az[1], filepath.Join(out, "m-00003-of-00003.gguf")}, exitUsage, "part 2 of 3"},
		{"output not .gguf", []string{az[1], filepath.Join(out, "m.bin")}, exitUsage, "NAME.gguf"},
		{"a missing part", []string{filepath.Join(lone, filepath.Base(az[1])), filepath.Join(out, "m.gguf")}, exitBadInput, "a-00001-of-00003"},
		{"the wrong reference", []string{bz, filepath.Join(out, "m.gguf"), "--against", f.bParts[0]}, exitBadInput, "reference"},
	}
	for _, r := range refusals {
		code, _, stderr := gomerge(t, append([]string{"decompress"}, r.args...)...)
		if code != r.code || !strings.Contains(stderr, r.says) {
			t.Errorf("%s: exit %d, want %d, saying %q: %s", r.name, code, r.code, r.says, stderr)
		}
		if left, _ := os.ReadDir(out); len(left) > 0 {
			t.Errorf("%s: left %v in the output folder", r.name, left)
		}
	}
	// The lone part still decompresses alone, named as itself.
	one := filepath.Join(out, "m-00002-of-00003.gguf")
	mustGomerge(t, "decompress", filepath.Join(lone, filepath.Base(az[1])), one)
	if !bytes.Equal(readFile(t, one), readFile(t, f.aParts[1])) {
		t.Errorf("a lone part decompressed alone is not %s byte for byte", f.aParts[1])
	}
	os.Remove(one)
}
