package gmz

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
)

// benchInputs is size bytes of dt: normal weights (as in trained models), and with
// delta a reference that differs from them by a small perturbation.
func benchInputs(dt dtype.DType, size int, delta bool) []Input {
	rng := rand.New(rand.NewPCG(1, 1))
	n := size / dt.Size()
	in := Input{Name: "w", DType: dt, Shape: []int64{int64(n)}, Data: fill(rng, dt, n, "normal")}
	if delta {
		v := make([]float32, n)
		if err := dtype.Decode(v, in.Data, dt); err != nil {
			panic(err)
		}
		for i := range v {
			v[i] += float32(0.002 * rng.NormFloat64())
		}
		in.Ref = make([]byte, len(in.Data))
		if err := dtype.Encode(in.Ref, v, dt); err != nil {
			panic(err)
		}
	}
	return []Input{in}
}

func BenchmarkWrite(b *testing.B) {
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, delta := range []bool{false, true} {
			ins := benchInputs(dt, 16<<20, delta)
			b.Run(fmt.Sprintf("%s/16MiB/delta=%v", dt, delta), func(b *testing.B) {
				b.SetBytes(int64(len(ins[0].Data)))
				b.ReportAllocs()
				var st Stats
				for b.Loop() {
					var buf bytes.Buffer
					var err error
					if st, err = Write(context.Background(), &buf, Source{Format: "x"}, nil, ins, Options{Workers: 1}); err != nil {
						b.Fatal(err)
					}
				}
				if st.StoredBytes >= st.RawBytes {
					b.Fatalf("stored %d of %d bytes", st.StoredBytes, st.RawBytes)
				}
				b.ReportMetric(float64(st.RawBytes)/float64(st.StoredBytes), "ratio")
			})
		}
	}
}

func BenchmarkReadTensor(b *testing.B) {
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, delta := range []bool{false, true} {
			ins := benchInputs(dt, 16<<20, delta)
			var buf bytes.Buffer
			if _, err := Write(context.Background(), &buf, Source{Format: "x"}, nil, ins, Options{}); err != nil {
				b.Fatal(err)
			}
			f, err := NewFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, len(ins[0].Data))
			b.Run(fmt.Sprintf("%s/16MiB/delta=%v", dt, delta), func(b *testing.B) {
				b.SetBytes(int64(len(dst)))
				b.ReportAllocs()
				cpu0 := cpuTime()
				for b.Loop() {
					if err := f.ReadTensor(context.Background(), &f.Tensors[0], dst, ins[0].Ref, 1); err != nil {
						b.Fatal(err)
					}
				}
				if cpu := cpuTime() - cpu0; cpu > 0 {
					b.ReportMetric(float64(b.N)*float64(len(dst))/1e6/cpu.Seconds(), "MB/cpu-s")
				}
				if !bytes.Equal(dst, ins[0].Data) {
					b.Fatal("decoded bytes differ")
				}
			})
		}
	}
}

// BenchmarkWriteSource is decompression as `gomerge decompress` runs it: an opened
// .gmz of 64 MiB of BF16 written back to a file with WriteAt, on 1 and 2 workers
// (in $GMZ_BENCH_DIR, default the test's temporary folder: set it to a tmpfs such as
// /dev/shm to keep the disk out). MB/s is wall time; MB/cpu-s the process's CPU.
func BenchmarkWriteSource(b *testing.B) {
	ins := benchInputs(dtype.BF16, 64<<20, false)
	dir := os.Getenv("GMZ_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	gz := filepath.Join(dir, "bench.gmz")
	var buf bytes.Buffer
	if _, err := Write(context.Background(), &buf, Source{Format: "x"}, nil, ins, Options{}); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(gz, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(gz)
	f, err := Open(gz)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("BF16/64MiB/workers=%d", workers), func(b *testing.B) {
			b.SetBytes(f.Source.Size)
			cpu0 := cpuTime()
			for b.Loop() {
				out, err := os.Create(filepath.Join(dir, "bench.out"))
				if err != nil {
					b.Fatal(err)
				}
				if err := out.Truncate(f.Source.Size); err != nil {
					b.Fatal(err)
				}
				if err := f.WriteSource(context.Background(), out, nil, workers); err != nil {
					b.Fatal(err)
				}
				out.Close()
				os.Remove(out.Name())
			}
			if cpu := cpuTime() - cpu0; cpu > 0 {
				b.ReportMetric(float64(b.N)*float64(f.Source.Size)/1e6/cpu.Seconds(), "MB/cpu-s")
			}
		})
	}
}
