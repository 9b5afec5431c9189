package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// allDTypeTensors has every safetensors dtype gomerge reads, in odd and empty
// shapes, with float weights normal (compressible) and integers small.
func allDTypeTensors(seed uint64) []stt.Tensor {
	rng := rand.New(rand.NewPCG(seed, 1))
	var ts []stt.Tensor
	for _, dt := range []dtype.DType{dtype.F32, dtype.F16, dtype.BF16, dtype.F64, dtype.I8, dtype.I16, dtype.I32,
		dtype.I64, dtype.U8, dtype.U16, dtype.U32, dtype.U64, dtype.Bool} {
		for i, shape := range [][]int64{{}, {0}, {2, 0}, {1}, {3, 5, 7}, {129, 1031}} {
			n := int64(1)
			for _, d := range shape {
				n *= d
			}
			t := stt.Tensor{Name: dt.String() + "." + string(rune('a'+i)), DType: dt, Shape: shape, Data: make([]byte, n*int64(dt.Size()))}
			if dt.IsFloat() && dt != dtype.F64 {
				v := make([]float32, n)
				for j := range v {
					v[j] = float32(0.02 * rng.NormFloat64())
				}
				t = stt.FromFloat32(t.Name, dt, shape, v)
			} else {
				for j := range t.Data {
					t.Data[j] = byte(rng.IntN(4))
				}
				if dt == dtype.Bool {
					for j := range t.Data {
						t.Data[j] &= 1
					}
				}
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// rawSafetensors encodes tensors in the given order (the header's keys sorted, as
// json.Marshal writes maps).
func rawSafetensors(t *testing.T, ts []stt.Tensor, meta map[string]string) []byte {
	t.Helper()
	h := map[string]any{"__metadata__": meta}
	var data []byte
	for _, x := range ts {
		h[x.Name] = map[string]any{"dtype": x.DType.String(), "shape": x.Shape, "data_offsets": []int{len(data), len(data) + len(x.Data)}}
		data = append(data, x.Data...)
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return stt.Raw(string(hdr), data)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCompressRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "all.safetensors")
	// Written by hand: the independent writer the other tests use refuses rank 0.
	if err := os.WriteFile(in, rawSafetensors(t, allDTypeTensors(1), map[string]string{"format": "pt", "note": "ünïcode"}), 0o644); err != nil {
		t.Fatal(err)
	}
	// A hand-made file whose header has padding spaces: those bytes come back too.
	odd := filepath.Join(dir, "odd.safetensors")
	hdr := `{"__metadata__":{"a":"b"},"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}` + "      "
	if err := os.WriteFile(odd, stt.Raw(hdr, []byte{1, 2, 3, 4, 5, 6}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{in, odd} {
		gz := p + ".gmz"
		back := p + ".back"
		if code, _, stderr := gomerge(t, "compress", p, gz, "--frame-size", "4096"); code != 0 {
			t.Fatalf("compress %s: exit %d: %s", p, code, stderr)
		}
		code, stdout, stderr := gomerge(t, "decompress", gz, back, "--json")
		if code != 0 {
			t.Fatalf("decompress: exit %d: %s", code, stderr)
		}
		var rep compressReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.OutBytes != int64(len(readFile(t, p))) {
			t.Fatalf("report %q (%v)", stdout, err)
		}
		if !bytes.Equal(readFile(t, back), readFile(t, p)) {
			t.Fatalf("%s: decompress(compress(x)) differs from x", p)
		}
	}
}

func TestCompressDelta(t *testing.T) {
	f := newCLIFixture(t)
	dense := filepath.Join(f.dir, "dense.gmz")
	delta := filepath.Join(f.dir, "delta.gmz")
	if code, _, stderr := gomerge(t, "compress", f.current, dense); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, stdout, stderr := gomerge(t, "compress", f.current, delta, "--against", f.anchor, "--json", "--stats")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep compressReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.DeltaTensors != len(f.currentTs) || rep.BoundBytes <= 0 || float64(rep.StoredBytes) < rep.BoundBytes {
		t.Errorf("report: %d delta tensors of %d, stored %d, bound %.0f", rep.DeltaTensors, len(f.currentTs), rep.StoredBytes, rep.BoundBytes)
	}
	back := filepath.Join(f.dir, "back.safetensors")
	if code, _, stderr := gomerge(t, "decompress", delta, back, "--against", f.anchor); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, back), readFile(t, f.current)) {
		t.Fatal("delta round trip differs")
	}
	// The reference may itself be compressed: the anchor kept as .gmz.
	anchorGz := filepath.Join(f.dir, "anchor.gmz")
	if code, _, stderr := gomerge(t, "compress", f.anchor, anchorGz); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	back2 := filepath.Join(f.dir, "back2.safetensors")
	if code, _, stderr := gomerge(t, "decompress", delta, back2, "--against", anchorGz); code != 0 {
		t.Fatalf("against .gmz: exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, back2), readFile(t, f.current)) {
		t.Fatal("delta round trip against a .gmz reference differs")
	}
	delta2 := filepath.Join(f.dir, "delta2.gmz")
	if code, _, stderr := gomerge(t, "compress", f.current, delta2, "--against", anchorGz); code != 0 {
		t.Fatalf("compress against .gmz: exit %d: %s", code, stderr)
	}
	// The reference is checked by its tensors' bytes, not by how it is stored.
	back3 := filepath.Join(f.dir, "back3.safetensors")
	if code, _, stderr := gomerge(t, "decompress", delta2, back3, "--against", f.anchor); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !bytes.Equal(readFile(t, back3), readFile(t, f.current)) {
		t.Fatal("a delta made against anchor.gmz, decoded against anchor.safetensors, differs")
	}
}

// gmzEdit returns a .gmz file with its JSON header edited (and its checksum
// recomputed), so that the checks behind the checksum are reached.
func gmzEdit(t *testing.T, b []byte, edit func(h map[string]any)) []byte {
	t.Helper()
	n := int(binary.LittleEndian.Uint64(b[len(b)-20:]))
	off := len(b) - 20 - n
	var h map[string]any
	dec := json.NewDecoder(bytes.NewReader(b[off : off+n]))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	nh, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := append(append([]byte(nil), b[:off]...), nh...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(nh)))
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(nh, crc32.MakeTable(crc32.Castagnoli)))
	return append(out, b[len(b)-8:]...)
}

// flipFrame returns a .gmz file with a bit flipped in the middle of the named
// tensor's first frame.
func flipFrame(t *testing.T, b []byte, name string) []byte {
	t.Helper()
	n := int(binary.LittleEndian.Uint64(b[len(b)-20:]))
	var h struct {
		Tensors []struct {
			Name   string
			Frames [][]int64
		}
	}
	if err := json.Unmarshal(b[len(b)-20-n:len(b)-20], &h); err != nil {
		t.Fatal(err)
	}
	at := 16
	for _, tn := range h.Tensors {
		for i, fr := range tn.Frames {
			if tn.Name == name && i == 0 {
				out := bytes.Clone(b)
				out[at+int(fr[0])/2] ^= 0x10
				return out
			}
			at += int(fr[0])
		}
	}
	t.Fatalf("no tensor %q", name)
	return nil
}

func TestCompressBadInput(t *testing.T) {
	f := newCLIFixture(t)
	dense := filepath.Join(f.dir, "dense.gmz")
	delta := filepath.Join(f.dir, "delta.gmz")
	for _, args := range [][]string{{f.current, dense}, {f.current, delta, "--against", f.anchor}} {
		if code, _, stderr := gomerge(t, append([]string{"compress"}, args...)...); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	}
	good := readFile(t, dense)
	big := f.currentTs[0]
	for _, ts := range f.currentTs {
		if len(ts.Data) > len(big.Data) {
			big = ts
		}
	}
	name := big.Name
	flipped := flipFrame(t, good, name)
	setSize := gmzEdit(t, good, func(h map[string]any) {
		for _, tn := range h["tensors"].([]any) {
			if m := tn.(map[string]any); m["name"] == name {
				m["shape"] = []any{1, 1}
				m["size"] = 2
			}
		}
	})
	wrongRef := filepath.Join(f.dir, "wrong.safetensors")
	other := stt.Perturb(f.anchorTs, 0.1, 99)
	if err := stt.WriteFile(wrongRef, other, nil); err != nil {
		t.Fatal(err)
	}
	// The same, compressed: refused by the checksums its container records.
	wrongRefGz := filepath.Join(f.dir, "wrong.gmz")
	if code, _, stderr := gomerge(t, "compress", wrongRef, wrongRefGz); code != 0 {
		t.Fatalf("compress the wrong reference: exit %d: %s", code, stderr)
	}

	cases := []struct {
		name string
		file []byte // written as the input, nil: use args as they are
		args []string
		code int
		want []string // substrings of stderr
	}{
		{"truncated", good[:len(good)/2], nil, exitBadInput, []string{"in.gmz", "truncated"}},
		{"truncated frames", append(append([]byte(nil), good[:len(good)/2]...), good[len(good)-20-2000:]...), nil, exitBadInput, []string{"in.gmz"}},
		{"checksum", flipped, nil, exitBadInput, []string{"in.gmz", name, "frame 0"}},
		{"size lies", setSize, nil, exitBadInput, []string{"in.gmz", name, "raw size"}},
		{"not gmz", readFile(t, f.current), nil, exitBadInput, []string{"bad magic"}},
		{"wrong reference", readFile(t, delta), []string{"--against", wrongRef}, exitBadInput, []string{"in.gmz", "wrong.safetensors", "different reference"}},
		{"wrong compressed reference", readFile(t, delta), []string{"--against", wrongRefGz}, exitBadInput, []string{"in.gmz", "wrong.gmz", "different reference"}},
		{"missing reference", readFile(t, delta), nil, exitUsage, []string{"--against", "anchor.safetensors"}},
		{"missing input", nil, []string{filepath.Join(f.dir, "nope.gmz")}, exitBadInput, []string{"nope.gmz"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in.gmz")
			out := filepath.Join(dir, "out.safetensors")
			args := []string{"decompress", in, out}
			if c.file != nil {
				if err := os.WriteFile(in, c.file, 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, c.args...)
			} else {
				args = []string{"decompress", c.args[0], out}
			}
			code, _, stderr := gomerge(t, args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not name %q", stderr, w)
				}
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() != "in.gmz" {
					t.Errorf("left %s behind", e.Name())
				}
			}
		})
	}
}

func TestCompressUsage(t *testing.T) {
	f := newCLIFixture(t)
	for _, args := range [][]string{
		{"compress", f.current},
		{"compress", f.current, "x.gmz", "--frame-size", "7"},
		{"compress", f.folder, filepath.Join(f.dir, "x.gmz")},
		{"decompress", "a"},
		{"compress", f.current, f.current},
		{"compress", f.current, f.anchor, "--against", f.anchor},
	} {
		if code, _, stderr := gomerge(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, code, exitUsage, stderr)
		}
	}
	// A reference that shares no tensor with the input is refused, not ignored.
	other := filepath.Join(f.dir, "other.safetensors")
	if err := stt.WriteFile(other, []stt.Tensor{stt.FromFloat32("unrelated", dtype.F32, []int64{1}, []float32{1})}, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(f.dir, "x.gmz")
	if code, _, stderr := gomerge(t, "compress", f.current, out, "--against", other); code != exitBadInput || !strings.Contains(stderr, "no tensor") {
		t.Errorf("unrelated reference: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output written after a failure: %v", err)
	}
}

// TestCompressDiskFull: compress and decompress onto a full filesystem (a 16 KiB
// tmpfs) exit 4 naming the output, not the input, and leave nothing there.
func TestCompressDiskFull(t *testing.T) {
	f := newCLIFixture(t)
	dense := filepath.Join(f.dir, "dense.gmz")
	if code, _, stderr := gomerge(t, "compress", f.current, dense); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// Compressed or not, the file (and the folder, which holds the same tensors)
	// must not fit in 16 KiB.
	if st, err := os.Stat(f.current); err != nil || st.Size() <= 4*16<<10 {
		t.Fatalf("the fixture must not fit in 16 KiB compressed: %v, %v", st, err)
	}
	for _, c := range []struct{ name, cmd, in, out string }{
		{"compress", "compress", f.current, "out.gmz"},
		{"compress a folder", "compress", f.folder, "out"},
		{"decompress", "decompress", dense, "out.safetensors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mnt := t.TempDir()
			badMountTmpfs(t, mnt, "size=16k")
			code, _, stderr := gomerge(t, c.cmd, c.in, filepath.Join(mnt, c.out))
			if code != exitIO {
				t.Fatalf("exit %d, want %d: %s", code, exitIO, stderr)
			}
			out := filepath.Join(mnt, c.out)
			if !strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, "writing "+out) {
				t.Errorf("stderr %q does not name the full disk and %s", stderr, out)
			}
			if strings.Contains(stderr, c.in) {
				t.Errorf("stderr %q blames the input %s", stderr, c.in)
			}
			if ents, _ := os.ReadDir(mnt); len(ents) > 0 {
				t.Errorf("left %d files behind, the first %s", len(ents), ents[0].Name())
			}
		})
	}
}
