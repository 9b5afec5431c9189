package gmz

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

var update = flag.Bool("update", false, "rewrite testdata/*.gmz")

// goldens are the fuzz seeds and a check that the format does not drift: the writer
// is deterministic, so regenerating them must give the same bytes.
func goldens() map[string][]byte {
	out := map[string][]byte{}
	for _, c := range []struct {
		name  string
		delta bool
		frame int
		gaps  bool // version 2: bytes between tensors and a tail
	}{{"dense.gmz", false, 64, false}, {"delta.gmz", true, 32, false}, {"gaps.gmz", false, 64, true}} {
		// Small, so that the fuzzer's minimization of new inputs stays fast: one
		// tensor for each coding and dtype family, a few frames each.
		all := inputs(21, c.delta, []int64{9, 10})
		var ins []Input
		for _, in := range all {
			if in.DType == dtype.BF16 || in.DType == dtype.F32 || in.DType == dtype.I16 || in.DType == dtype.Bool {
				if len(in.Data) < 200 {
					ins = append(ins, in)
				}
			}
		}
		src, _ := fakeSource(ins)
		if c.gaps {
			for i := range ins {
				ins[i].Gap = bytes.Repeat([]byte{byte(i)}, i%3)
			}
			src.Format, src.Tail = "gguf", []byte{1, 2, 3}
		}
		var buf bytes.Buffer
		if _, err := Write(context.Background(), &buf, src, map[string]string{"format": "pt"}, ins, Options{FrameSize: c.frame, Reference: "ref.safetensors"}); err != nil {
			panic(err)
		}
		out[c.name] = buf.Bytes()
	}
	// Multi-symbol Huffman blocks (coding 3 frames): weights near 1 (as a norm's),
	// whose few exponents make a table small enough for blocks this short.
	rng := rand.New(rand.NewPCG(21, 1))
	var ins []Input
	for _, c := range []struct {
		dt dtype.DType
		n  int
	}{{dtype.BF16, 300}, {dtype.F32, 100}} {
		v := make([]float32, c.n)
		for i := range v {
			v[i] = float32(1 + 0.3*rng.NormFloat64())
		}
		b := make([]byte, c.n*c.dt.Size())
		if err := dtype.Encode(b, v, c.dt); err != nil {
			panic(err)
		}
		ins = append(ins, Input{Name: "norm." + c.dt.String(), DType: c.dt, Shape: []int64{int64(c.n)}, Data: b})
	}
	src, _ := fakeSource(ins)
	var buf bytes.Buffer
	if _, err := Write(context.Background(), &buf, src, nil, ins, Options{FrameSize: 256}); err != nil {
		panic(err)
	}
	out["mh.gmz"] = buf.Bytes()
	return out
}

func TestGolden(t *testing.T) {
	for name, b := range goldens() {
		p := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (run go test -update)", err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s: the writer's output changed (%d bytes, golden %d); if the format changed on purpose, bump the version and run go test -update", name, len(b), len(want))
		}
	}
}

// FuzzOpen parses arbitrary bytes and decodes everything that parses, against
// all-zero references for deltas, checking that nothing panics and that whatever
// decodes without error has the checksum the header promises.
//
// Run it with a bounded minimization, for example
//
//	go test -run '^$' -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 100x ./formats/gmz
//
// Its inputs are whole files (1 to 4 KB, a JSON header), and the fuzzing engine
// minimizes each new interesting input by trying every range of bytes to remove,
// about n²/2 runs for n bytes: with the default (60 s a minimization) the fuzzer
// spends its time minimizing and reports a few executions (10 to 30 in 20 s, as if
// stuck); with 100x it runs about 25,000 inputs a second on two cores.
func FuzzOpen(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "*.gmz"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzOne(t, b)
		// Mutations almost never keep the header's checksum right; fixing it up lets
		// the fuzzer reach the checks behind it.
		if n := len(b); n >= preambleSize+trailerSize {
			hl := binary.LittleEndian.Uint64(b[n-trailerSize:])
			if hl <= uint64(n-preambleSize-trailerSize) {
				c := append([]byte(nil), b...)
				binary.LittleEndian.PutUint32(c[n-trailerSize+8:], checksum(c[n-trailerSize-int(hl):n-trailerSize]))
				fuzzOne(t, c)
			}
		}
	})
}

func fuzzOne(t *testing.T, b []byte) {
	gf, err := NewFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return
	}
	if gf.Size() != int64(len(b)) {
		t.Fatalf("Size %d for %d bytes", gf.Size(), len(b))
	}
	// A few stored bytes can legitimately stand for a frame of up to 64 MiB (zeros
	// code to almost nothing); decoding such inputs in full would only slow the
	// fuzzer down, so the decoded total is capped.
	if gf.Source.Size > 4<<20 {
		return
	}
	for i := range gf.Tensors {
		tn := &gf.Tensors[i]
		if got, ok := gf.Tensor(tn.Name); !ok || got != tn {
			t.Fatalf("Tensor(%q) does not find it", tn.Name)
		}
		dst := make([]byte, tn.Size) // bounded: every byte of it has a frame in b
		var ref []byte
		if tn.Delta {
			ref = make([]byte, tn.Size)
		}
		if err := gf.ReadTensor(context.Background(), tn, dst, ref, 2); err == nil && checksum(dst) != tn.Checksum {
			t.Fatalf("tensor %q decoded without error to bytes with the wrong checksum", tn.Name)
		}
		for j := range tn.Frames {
			fr := &tn.Frames[j]
			var r []byte
			if ref != nil {
				r = ref[fr.RawOff : fr.RawOff+fr.Raw]
			}
			if err := gf.ReadFrame(tn, j, dst[fr.RawOff:fr.RawOff+fr.Raw], r); err == nil && checksum(dst[fr.RawOff:fr.RawOff+fr.Raw]) != fr.Checksum {
				t.Fatalf("tensor %q frame %d decoded with the wrong checksum", tn.Name, j)
			}
		}
	}
	zeros := WholeRef(func(name string) ([]byte, error) {
		tn, _ := gf.Tensor(name)
		return make([]byte, tn.Size), nil
	})
	out := &memWriterAt{}
	if err := gf.WriteSource(context.Background(), out, zeros, 2); err == nil && int64(len(out.b)) != gf.Source.Size {
		t.Fatalf("WriteSource wrote %d bytes, the source has %d", len(out.b), gf.Source.Size)
	}
}
