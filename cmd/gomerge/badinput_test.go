package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/safetensors"
	"github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// Tensor names of the small fixtures. Dots and digits as in real checkpoints, so that a
// message that names the tensor is told from one that merely mentions a word.
const (
	badTA = "layers.0.attn.weight"
	badTB = "layers.0.norm.weight"
)

// badFixture is one case's files and command line. setup fills it in; what it leaves
// empty gets the defaults described here.
type badFixture struct {
	in, out         string // folders for the inputs and for the output (both exist)
	anchor, current string // sfa's inputs: in/anchor.safetensors (a valid file), in/current.safetensors
	outPath         string // sfa's --out: out/merged.safetensors
	args            []string
	// blame lists the paths the message must name (default: current).
	blame []string
	// want adds to the case's want what depends on the setup.
	want []string
	// unblock, if set, is called when the command has not returned after a while,
	// to free it (a FIFO nobody writes); the case then fails for blocking.
	unblock func()
}

type badInputCase struct {
	name   string
	code   int      // the exit status docs/numerics.md#exit-status asks for
	tensor string   // the tensor the message must name, if any
	want   []string // what the message must say about the problem
	flags  []string // more sfa flags
	setup  func(t *testing.T, f *badFixture)
}

// TestBadInput runs malformed and mismatched checkpoints, and outputs that cannot be
// written, through the command line in-process. Each must give exactly the exit status
// docs/numerics.md#exit-status names (3 bad input, 4 I/O failure), a message that names the file, the tensor
// and the problem, no panic, unchanged inputs, and no output or temporary file.
func TestBadInput(t *testing.T) {
	for _, c := range badInputCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runBadInputCase(t, c)
		})
	}
}

func badInputCases() []badInputCase {
	// current writes hand-built bytes as the current checkpoint.
	current := func(b []byte) func(*testing.T, *badFixture) {
		return func(t *testing.T, f *badFixture) { badWriteBytes(t, f.current, b) }
	}
	// currentRaw writes a file of the given header entries and data bytes.
	currentRaw := func(data int, entries ...string) func(*testing.T, *badFixture) {
		return current(safetensorstest.Raw(badHeader(entries...), badFill(data)))
	}
	// selfRaw is currentRaw with the file as both anchor and current, so that only
	// the file itself, not a mismatch with the anchor, can be refused.
	selfRaw := func(data int, entries ...string) func(*testing.T, *badFixture) {
		return func(t *testing.T, f *badFixture) {
			badWriteBytes(t, f.current, safetensorstest.Raw(badHeader(entries...), badFill(data)))
			f.anchor = f.current
		}
	}
	twoF32 := []string{badEntry(badTA, "F32", "[2]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)}
	good := safetensorstest.Raw(badHeader(twoF32...), badFill(16))

	return []badInputCase{
		// Malformed single files (docs/reliability.md#what-is-validated): exit 3, naming the file.
		{
			name: "truncated mid-data", code: exitBadInput, tensor: badTB,
			want:  []string{"data ends at byte", "truncated"},
			setup: current(good[:len(good)-5]),
		},
		{
			name: "header length past EOF", code: exitBadInput,
			want:  []string{"header length 4096 runs past the end"},
			setup: current(append(binary.LittleEndian.AppendUint64(nil, 4096), `{"a":{}}`...)),
		},
		{
			name: "header length over the limit", code: exitBadInput,
			want:  []string{"exceeds the limit"},
			setup: current(append(binary.LittleEndian.AppendUint64(nil, 1<<40), "{}      "...)),
		},
		{
			name: "shorter than 8 bytes", code: exitBadInput,
			want:  []string{"file is 5 bytes", "shorter than the 8-byte header length"},
			setup: current([]byte{1, 2, 3, 4, 5}),
		},
		{
			name: "empty file", code: exitBadInput,
			want:  []string{"file is 0 bytes"},
			setup: current(nil),
		},
		{
			name: "overlapping offsets", code: exitBadInput, tensor: badTB,
			want:  []string{"overlaps tensor"},
			setup: currentRaw(12, badEntry(badTA, "F32", "[2]", 0, 8), badEntry(badTB, "F32", "[2]", 4, 12)),
		},
		{
			name: "hole between tensors", code: exitBadInput, tensor: badTB,
			want:  []string{"hole of 4 bytes"},
			setup: currentRaw(20, badEntry(badTA, "F32", "[2]", 0, 8), badEntry(badTB, "F32", "[2]", 12, 20)),
		},
		{
			name: "data starts at non-zero offset", code: exitBadInput, tensor: badTA,
			want:  []string{"data starts at offset 4, not 0"},
			setup: currentRaw(20, badEntry(badTA, "F32", "[2]", 4, 12), badEntry(badTB, "F32", "[2]", 12, 20)),
		},
		{
			name: "trailing bytes after last tensor", code: exitBadInput,
			want:  []string{"4 unused bytes after the last tensor"},
			setup: current(append(bytes.Clone(good), 0, 0, 0, 0)),
		},
		{
			name: "dtype size mismatch", code: exitBadInput, tensor: badTA,
			want:  []string{"needs 12 bytes", "span 8"},
			setup: currentRaw(16, badEntry(badTA, "F32", "[3]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			name: "data_offsets end before begin", code: exitBadInput, tensor: badTA,
			want:  []string{"not 0 ≤ begin ≤ end"},
			setup: currentRaw(16, badEntry(badTA, "F32", "[0]", 8, 0), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			name: "duplicate tensor names", code: exitBadInput, tensor: badTA,
			want:  []string{"appears twice"},
			setup: currentRaw(16, badEntry(badTA, "F32", "[2]", 0, 8), badEntry(badTA, "F32", "[2]", 8, 16)),
		},
		{
			name: "F8_E4M3 tensor", code: exitBadInput, tensor: "layers.0.mlp.fp8_weight",
			want:  []string{"unsupported dtype", "F8_E4M3"},
			setup: currentRaw(16, badEntry("layers.0.mlp.fp8_weight", "F8_E4M3", "[8]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			name: "unknown dtype", code: exitBadInput, tensor: badTA,
			want:  []string{"unknown dtype", "F12"},
			setup: currentRaw(16, badEntry(badTA, "F12", "[2]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			name: "non-JSON header", code: exitBadInput,
			want:  []string{"header is not valid JSON"},
			setup: current(safetensorstest.Raw(`{this is not json}`, badFill(8))),
		},
		{
			name: "header is a JSON array", code: exitBadInput,
			want:  []string{"header is not a JSON object"},
			setup: current(safetensorstest.Raw(`[{"dtype":"F32","shape":[2],"data_offsets":[0,8]}]`, badFill(8))),
		},
		{
			name: "bytes after the header's JSON", code: exitBadInput,
			want:  []string{"trailing bytes after the header"},
			setup: current(safetensorstest.Raw(badHeader(twoF32...)+`xyz`, badFill(16))),
		},
		{
			name: "negative shape dim", code: exitBadInput, tensor: badTA,
			want:  []string{`shape dimension 0 (-2) is not a non-negative integer`},
			setup: currentRaw(16, badEntry(badTA, "F32", "[-2]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			name: "fractional shape dim", code: exitBadInput, tensor: badTA,
			want:  []string{`shape dimension 0 (2.5) is not a non-negative integer`},
			setup: currentRaw(16, badEntry(badTA, "F32", "[2.5]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			// The reference reader (huggingface/safetensors) refuses a header that is
			// not UTF-8; Go's JSON decoder would turn the name into "a\uFFFD" and the
			// merge would write the tensor under a name no input has.
			name: "header not valid UTF-8", code: exitBadInput,
			want:  []string{"UTF-8"},
			setup: selfRaw(16, "\"layers.0.attn.w\xffeight\""+`:{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`, badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			// The writer cannot write a tensor named "": a file holding one is bad
			// input (3), not an output failure (4).
			name: "tensor with an empty name", code: exitBadInput,
			want:  []string{"empty"},
			setup: selfRaw(16, badEntry("", "F32", "[2]", 0, 8), badEntry(badTB, "F32", "[2]", 8, 16)),
		},
		{
			name: "metadata with non-string value", code: exitBadInput,
			want:  []string{"__metadata__ must map strings to strings"},
			setup: currentRaw(16, append([]string{`"__metadata__":{"format":"pt","step":400}`}, twoF32...)...),
		},
		{
			name: "anchor malformed", code: exitBadInput, tensor: badTB,
			want: []string{"anchor", "hole of 4 bytes"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteGood(t, f.current)
				badWriteBytes(t, f.anchor, safetensorstest.Raw(badHeader(badEntry(badTA, "F32", "[2]", 0, 8), badEntry(badTB, "F32", "[2]", 12, 20)), badFill(20)))
				f.blame = []string{f.anchor}
			},
		},
		{
			name: "fisher malformed", code: exitBadInput,
			want: []string{"fisher", "4 unused bytes after the last tensor"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteGood(t, f.current)
				fisher := filepath.Join(f.in, "fisher.safetensors")
				badWriteBytes(t, fisher, append(bytes.Clone(good), 1, 2, 3, 4))
				f.args = []string{"sfa", "--anchor", f.anchor, "--current", f.current, "--fisher", fisher, "--eta", "10", "--out", f.outPath}
				f.blame = []string{fisher}
			},
		},
		{
			name: "input is a device", code: exitBadInput,
			want: []string{"not a regular file"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = os.DevNull
				f.blame = []string{os.DevNull}
			},
		},
		{
			name: "input is a FIFO nobody writes", code: exitBadInput,
			want: []string{"not a regular file"},
			setup: func(t *testing.T, f *badFixture) {
				if err := mkfifo(f.current); err != nil {
					t.Skipf("mkfifo: %v", err)
				}
				f.unblock = func() {
					// A writer lets a blocked open(O_RDONLY) return; O_RDWR never blocks.
					if w, err := os.OpenFile(f.current, os.O_RDWR, 0); err == nil {
						w.Close()
					}
				}
			},
		},

		// Inputs that are each well-formed but disagree (docs/methods.md#which-tensors-are-merged): exit 3, naming the
		// tensor and both files.
		{
			name: "shape mismatch", code: exitBadInput, tensor: badTA,
			want: []string{"shape [2] differs from [1 2]"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.current, badF32(badTA, []int64{1, 2}, 1, 2), badF32(badTB, []int64{2}, 3, 4))
				f.blame = []string{f.anchor, f.current}
			},
		},
		{
			name: "float tensor against int tensor", code: exitBadInput, tensor: badTA,
			want: []string{"dtype F32 cannot be merged with I32"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.current, badInts(badTA, dtype.I32, 1, 2), badF32(badTB, []int64{2}, 3, 4))
				f.blame = []string{f.anchor, f.current}
			},
		},
		{
			name: "missing tensor in current", code: exitBadInput, tensor: badTB,
			want: []string{"missing from 1 of 2 inputs", "--allow-missing"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.current, badF32(badTA, []int64{2}, 1, 2))
				f.blame = []string{f.anchor, f.current}
			},
		},
		{
			name: "missing tensor in current with --allow-missing", code: exitOK,
			flags: []string{"--allow-missing"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.current, badF32(badTA, []int64{2}, 1, 2))
			},
		},
		{
			name: "extra tensor in current", code: exitBadInput, tensor: "lm_head.bias",
			want: []string{"missing from 1 of 2 inputs"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.current, badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{2}, 3, 4), badF32("lm_head.bias", []int64{2}, 5, 6))
				f.blame = []string{f.anchor, f.current}
			},
		},
		{
			name: "I64 tensor differs between inputs", code: exitBadInput, tensor: "position_ids",
			want: []string{"I64 tensor differs between inputs"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.anchor, badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{2}, 3, 4), badInts("position_ids", dtype.I64, 0, 1, 2, 3))
				badWriteTensors(t, f.current, badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{2}, 3, 4), badInts("position_ids", dtype.I64, 0, 1, 2, 4))
				f.blame = []string{f.anchor, f.current}
			},
		},

		// Hugging Face folders whose index and shards disagree: exit 3.
		{
			name: "index names a missing shard", code: exitBadInput,
			want: []string{"index names shard model-00002-of-00002.safetensors, which does not exist"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = badWriteSharded(t, f.in)
				badRemove(t, filepath.Join(f.current, "model-00002-of-00002.safetensors"))
				f.blame = []string{filepath.Join(f.current, safetensors.IndexFileName)}
			},
		},
		{
			name: "index lists a tensor not in its shard", code: exitBadInput, tensor: "layers.1.attn.weight",
			want: []string{"index places the tensor in model-00001-of-00002.safetensors, which does not hold it"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = badWriteSharded(t, f.in)
				badEditIndex(t, f.current, func(wm map[string]string) { wm["layers.1.attn.weight"] = "model-00001-of-00002.safetensors" })
				f.blame = []string{filepath.Join(f.current, safetensors.IndexFileName)}
			},
		},
		{
			name: "shard holds a tensor absent from the index", code: exitBadInput, tensor: "layers.0.stray.weight",
			want: []string{"not listed in model.safetensors.index.json"},
			setup: func(t *testing.T, f *badFixture) {
				// The shard is listed (for badTA) but also holds a tensor the index omits.
				f.current = badWriteSharded(t, f.in)
				shard1 := filepath.Join(f.current, "model-00001-of-00002.safetensors")
				badWriteTensors(t, shard1, badF32(badTA, []int64{2}, 1, 2), badF32("layers.0.stray.weight", []int64{2}, 5, 6))
				f.blame = []string{shard1}
			},
		},
		{
			name: "tensor in two shards", code: exitBadInput, tensor: badTB,
			want: []string{"places the tensor in model-00002-of-00002.safetensors"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = badWriteSharded(t, f.in)
				shard1 := filepath.Join(f.current, "model-00001-of-00002.safetensors")
				badWriteTensors(t, shard1, badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{2}, 3, 4))
				f.blame = []string{shard1}
			},
		},
		{
			name: "index is not JSON", code: exitBadInput,
			want: []string{"index is not valid JSON"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = badWriteSharded(t, f.in)
				index := filepath.Join(f.current, safetensors.IndexFileName)
				badWriteBytes(t, index, []byte(`{"weight_map": {`))
				f.blame = []string{index}
			},
		},
		{
			name: "index names a shard outside the folder", code: exitBadInput, tensor: badTB,
			want: []string{`shard "../evil.safetensors" is not a .safetensors file name in the folder`},
			setup: func(t *testing.T, f *badFixture) {
				f.current = badWriteSharded(t, f.in)
				badWriteGood(t, filepath.Join(f.in, "evil.safetensors"))
				badEditIndex(t, f.current, func(wm map[string]string) { wm[badTB] = "../evil.safetensors" })
				f.blame = []string{filepath.Join(f.current, safetensors.IndexFileName)}
			},
		},
		{
			name: "folder with neither model.safetensors nor index", code: exitBadInput,
			want: []string{"folder has neither model.safetensors nor model.safetensors.index.json"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = filepath.Join(f.in, "step_400")
				badWriteBytes(t, filepath.Join(f.current, "config.json"), []byte(`{"model_type": "llama"}`))
				f.blame = []string{f.current}
			},
		},
		{
			name: "nonexistent input", code: exitBadInput,
			want: []string{"no such file or directory"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = filepath.Join(f.in, "no-such-checkpoint.safetensors")
			},
		},
		{
			name: "truncated GGUF input", code: exitBadInput,
			want: []string{"model.gguf", "gguf"},
			setup: func(t *testing.T, f *badFixture) {
				f.current = filepath.Join(f.in, "model.gguf")
				badWriteBytes(t, f.current, []byte("GGUF\x03\x00\x00\x00"))
			},
		},

		// distance and inspect read inputs through the same code.
		{
			name: "distance with a truncated B", code: exitBadInput, tensor: badTB,
			want: []string{"truncated"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteBytes(t, f.current, good[:len(good)-3])
				f.args = []string{"distance", f.anchor, f.current}
			},
		},
		{
			name: "distance with mismatched shapes", code: exitBadInput, tensor: badTB,
			want: []string{"shape [1 2] differs from [2]"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteTensors(t, f.current, badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{1, 2}, 3, 4))
				f.args = []string{"distance", f.anchor, f.current, "--json"}
				f.blame = []string{f.anchor, f.current}
			},
		},
		{
			name: "inspect an F8_E4M3 file", code: exitBadInput, tensor: "fp8.weight",
			want: []string{"unsupported dtype F8_E4M3"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteBytes(t, f.current, safetensorstest.Raw(badHeader(badEntry("fp8.weight", "F8_E4M3", "[4]", 0, 4)), badFill(4)))
				f.args = []string{"inspect", f.current}
			},
		},
		{
			name: "inspect a folder whose index names a missing shard", code: exitBadInput,
			want: []string{"which does not exist"},
			setup: func(t *testing.T, f *badFixture) {
				dir := badWriteSharded(t, f.in)
				badRemove(t, filepath.Join(dir, "model-00001-of-00002.safetensors"))
				f.args = []string{"inspect", "--json", dir}
				f.blame = []string{filepath.Join(dir, safetensors.IndexFileName), "model-00001-of-00002.safetensors"}
			},
		},

		// Outputs that cannot be written: exit 4, naming the output.
		{
			name: "output folder not writable", code: exitIO,
			setup: func(t *testing.T, f *badFixture) {
				badWriteGood(t, f.current)
				if os.Geteuid() == 0 {
					// Root ignores permission bits, so chmod 0555 would not stop the
					// write. A parent that is a regular file refuses every user alike.
					notDir := filepath.Join(f.out, "notadir")
					badWriteBytes(t, notDir, []byte("a file, not a folder\n"))
					f.outPath = filepath.Join(notDir, "merged.safetensors")
					f.blame = []string{f.outPath}
					f.want = []string{"not a directory"}
					return
				}
				if err := os.Chmod(f.out, 0o555); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Chmod(f.out, 0o755) })
				f.blame = []string{f.outPath}
				f.want = []string{"permission denied"}
			},
		},
		{
			name: "output on a read-only filesystem", code: exitIO,
			want: []string{"read-only file system"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteGood(t, f.current)
				badMountTmpfs(t, f.out, "ro,size=64k")
				f.blame = []string{f.outPath}
			},
		},
		{
			name: "disk full", code: exitIO,
			want: []string{"no space left on device"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteLlama(t, f.anchor, f.current)
				badMountTmpfs(t, f.out, "size=64k")
				f.blame = []string{f.out}
			},
		},
		{
			name: "disk full writing a folder", code: exitIO,
			want: []string{"no space left on device"},
			setup: func(t *testing.T, f *badFixture) {
				ts := safetensorstest.Random(safetensorstest.TinyLlama, dtype.F32, 1)
				if err := safetensorstest.WriteFile(f.anchor, safetensorstest.Perturb(ts, 0.1, 2), nil); err != nil {
					t.Fatal(err)
				}
				f.current = filepath.Join(f.in, "current")
				if err := safetensorstest.WriteFolder(f.current, ts, 1, nil); err != nil {
					t.Fatal(err)
				}
				badMountTmpfs(t, f.out, "size=64k")
				f.outPath = filepath.Join(f.out, "merged")
				f.blame = []string{f.out}
			},
		},
		{
			name: "output folder holds other files", code: exitIO,
			want: []string{"directory not empty"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteGood(t, f.current)
				f.outPath = filepath.Join(f.out, "home")
				badWriteBytes(t, filepath.Join(f.outPath, "thesis.tex"), []byte("\\documentclass{article}\n"))
				f.blame = []string{f.outPath}
			},
		},
		{
			name: "output file path is a folder", code: exitIO,
			want: []string{"is a folder"},
			setup: func(t *testing.T, f *badFixture) {
				badWriteGood(t, f.current)
				if err := os.Mkdir(f.outPath, 0o755); err != nil {
					t.Fatal(err)
				}
				f.blame = []string{f.outPath}
			},
		},
	}
}

// fifoGuard is how long a case with a FIFO input waits before it writes to the FIFO
// to free a command blocked opening it (and fails).
const fifoGuard = 30 * time.Second

func runBadInputCase(t *testing.T, c badInputCase) {
	dir := t.TempDir()
	f := &badFixture{in: filepath.Join(dir, "in"), out: filepath.Join(dir, "out")}
	for _, d := range []string{f.in, f.out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.anchor = filepath.Join(f.in, "anchor.safetensors")
	f.current = filepath.Join(f.in, "current.safetensors")
	f.outPath = filepath.Join(f.out, "merged.safetensors")
	badWriteGood(t, f.anchor)
	c.setup(t, f)
	if f.blame == nil {
		f.blame = []string{f.current}
	}
	args := f.args
	if args == nil {
		args = append([]string{"sfa", "--anchor", f.anchor, "--current", f.current, "--out", f.outPath}, c.flags...)
	}

	inBefore, outBefore := badSnapshot(t, f.in), badSnapshot(t, f.out)
	_, statErr := os.Lstat(f.outPath)
	outExisted := statErr == nil

	var stdout, stderr bytes.Buffer
	ios := &IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr}
	var blocked atomic.Bool
	var timer *time.Timer
	if f.unblock != nil {
		// A hang guard, not a deadline the command must meet: refusing the FIFO
		// takes microseconds, and only a command blocked in open(2) takes this long.
		timer = time.AfterFunc(fifoGuard, func() { blocked.Store(true); f.unblock() })
	}
	code, panicked := badRunRecovering(ios, args)
	if timer != nil {
		timer.Stop()
	}
	if panicked != "" {
		t.Fatalf("gomerge %s panicked: %s", strings.Join(args, " "), panicked)
	}
	if blocked.Load() {
		t.Errorf("gomerge blocked for over %v opening %s (a FIFO with no writer); it should refuse a non-regular file without opening it for reading", fifoGuard, f.current)
	}
	msg := stderr.String()
	t.Logf("exit %d; stderr: %s", code, msg)

	if code != c.code {
		t.Errorf("exit status %d, want %d", code, c.code)
	}
	if c.code != exitOK {
		if !strings.HasPrefix(msg, "gomerge: ") {
			t.Errorf("stderr does not start with \"gomerge: \": %q", msg)
		}
		for _, p := range f.blame {
			if !strings.Contains(msg, p) {
				t.Errorf("message does not name the file %s", p)
			}
		}
		if c.tensor != "" && !strings.Contains(msg, fmt.Sprintf("%q", c.tensor)) {
			t.Errorf("message does not name the tensor %q", c.tensor)
		}
		for _, w := range slices.Concat(c.want, f.want) {
			if !strings.Contains(msg, w) {
				t.Errorf("message does not say %q", w)
			}
		}
		if slices.Contains(args, "--json") {
			var e struct {
				Error      string `json:"error"`
				ExitStatus int    `json:"exit_status"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &e); err != nil || e.ExitStatus != code || e.Error == "" {
				t.Errorf("--json failure: stdout %q is not {error, exit_status}", stdout.String())
			}
		} else if stdout.Len() != 0 {
			t.Errorf("stdout is not empty after a failure: %q", stdout.String())
		}
	}

	// Inputs are never touched.
	badCompareSnapshots(t, "input", inBefore, badSnapshot(t, f.in))

	// A failed merge leaves the output folder exactly as it was: no output, no
	// temporary file or folder.
	badLeftovers(t, f.out)
	badLeftovers(t, f.in)
	if c.code != exitOK {
		badCompareSnapshots(t, "output folder", outBefore, badSnapshot(t, f.out))
		if _, err := os.Lstat(f.outPath); err == nil && !outExisted {
			t.Errorf("output %s exists after a failed merge", f.outPath)
		}
		return
	}
	out, err := safetensors.Open(f.outPath)
	if err != nil {
		t.Fatalf("output of a successful merge: %v", err)
	}
	defer out.Close()
	for _, name := range []string{badTA, badTB} {
		if _, ok := out.Tensor(name); !ok {
			t.Errorf("output lacks tensor %q", name)
		}
	}
}

// badRunRecovering runs a command line in-process and reports a panic as a string with
// its stack instead of crashing the test binary.
func badRunRecovering(ios *IOStreams, args []string) (code int, panicked string) {
	defer func() {
		if r := recover(); r != nil {
			panicked = fmt.Sprintf("%v\n%s", r, debug.Stack())
		}
	}()
	return run(context.Background(), ios, args), ""
}

// badSnapshot maps every path under root to its kind and, for regular files, the SHA-256
// of the contents. FIFOs and devices are recorded but not opened.
func badSnapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			m[rel] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m[rel] = info.Mode().String() + " " + hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return m
}

func badCompareSnapshots(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, h := range before {
		switch a, ok := after[p]; {
		case !ok:
			t.Errorf("%s %s was removed", what, p)
		case a != h:
			t.Errorf("%s %s changed: %s -> %s", what, p, h, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// badLeftovers fails the test if a temporary file or folder of an output remains in dir.
func badLeftovers(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	for _, e := range entries {
		if n := e.Name(); strings.Contains(n, ".gomerge-tmp-") || strings.Contains(n, ".gomerge-old") {
			t.Errorf("temporary %s left in %s", n, dir)
		}
	}
}

// badHeader is a safetensors JSON header of the given entries, unpadded.
func badHeader(entries ...string) string { return "{" + strings.Join(entries, ",") + "}" }

// badEntry is one tensor's header entry; shape is spelt as JSON, so it may be malformed.
func badEntry(name, dt, shape string, begin, end int) string {
	return fmt.Sprintf(`%q:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, dt, shape, begin, end)
}

// badFill is n bytes of tensor data: little-endian float32 ones, then zeros.
func badFill(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+4 <= n; i += 4 {
		binary.LittleEndian.PutUint32(b[i:], 0x3f800000)
	}
	return b
}

func badF32(name string, shape []int64, v ...float32) safetensorstest.Tensor {
	return safetensorstest.FromFloat32(name, dtype.F32, shape, v)
}

func badInts(name string, dt dtype.DType, v ...int64) safetensorstest.Tensor {
	t := safetensorstest.Tensor{Name: name, DType: dt, Shape: []int64{int64(len(v))}}
	for _, x := range v {
		switch dt.Size() {
		case 4:
			t.Data = binary.LittleEndian.AppendUint32(t.Data, uint32(x))
		case 8:
			t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(x))
		default:
			panic("ints: unsupported dtype " + dt.String())
		}
	}
	return t
}

func badWriteBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func badWriteTensors(t *testing.T, path string, ts ...safetensorstest.Tensor) {
	t.Helper()
	if err := safetensorstest.WriteFile(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

// badWriteGood writes a valid two-tensor file that matches every fixture's anchor.
func badWriteGood(t *testing.T, path string) {
	t.Helper()
	badWriteTensors(t, path, badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{2}, 3, 4))
}

// badWriteLlama writes a TinyLlama F32 checkpoint (about 240 kB) as current and a
// perturbed copy as anchor.
func badWriteLlama(t *testing.T, anchor, current string) {
	t.Helper()
	ts := safetensorstest.Random(safetensorstest.TinyLlama, dtype.F32, 1)
	if err := safetensorstest.WriteFile(current, ts, nil); err != nil {
		t.Fatal(err)
	}
	if err := safetensorstest.WriteFile(anchor, safetensorstest.Perturb(ts, 0.1, 2), nil); err != nil {
		t.Fatal(err)
	}
}

// badWriteSharded writes in/current as a Hugging Face folder of two shards: badTA in
// model-00001-of-00002.safetensors, badTB in model-00002-of-00002.safetensors.
func badWriteSharded(t *testing.T, in string) string {
	t.Helper()
	dir := filepath.Join(in, "current")
	ts := []safetensorstest.Tensor{badF32(badTA, []int64{2}, 1, 2), badF32(badTB, []int64{2}, 3, 4)}
	if err := safetensorstest.WriteFolder(dir, ts, 2, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func badEditIndex(t *testing.T, dir string, edit func(weightMap map[string]string)) {
	t.Helper()
	path := filepath.Join(dir, safetensors.IndexFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var idx safetensors.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	edit(idx.WeightMap)
	if b, err = json.Marshal(idx); err != nil {
		t.Fatal(err)
	}
	badWriteBytes(t, path, b)
}

func badRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
