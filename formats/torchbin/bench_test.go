package torchbin_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/torchbin"
	tbt "github.com/gomerge/gomerge/formats/torchbin/torchbintest"
)

// BenchmarkBytes measures a tensor's read from a mapped file: zero copy when it is
// contiguous, a gather into a new slice when it is a transposed view.
func BenchmarkBytes(b *testing.B) {
	const n = 1024 // a 1024×1024 float32: 4 MiB
	ts := []tbt.Tensor{
		{Name: "contiguous", StorageType: "FloatStorage", Key: "0", Numel: n * n, Shape: []int64{n, n}, Stride: []int64{n, 1}},
		{Name: "transposed", StorageType: "FloatStorage", Key: "0", Numel: n * n, Shape: []int64{n, n}, Stride: []int64{1, n}},
		{Name: "rows-strided", StorageType: "FloatStorage", Key: "0", Numel: n * n, Shape: []int64{n / 2, n}, Stride: []int64{2 * n, 1}},
	}
	path := filepath.Join(b.TempDir(), "m.bin")
	if err := os.WriteFile(path, tbt.StateDictArchive(ts, map[string][]byte{"0": f32(n * n)}), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := torchbin.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, tc := range ts {
		b.Run("F32/"+tc.Name+"/"+fmt.Sprint(tc.Shape), func(b *testing.B) {
			ti, _ := f.Tensor(tc.Name)
			b.SetBytes(ti.Size())
			b.ReportAllocs()
			for b.Loop() {
				d, err := f.Bytes(ti)
				if err != nil || int64(len(d)) != ti.Size() {
					b.Fatal(len(d), err)
				}
			}
		})
	}
}

// BenchmarkParse measures parsing a state dict of many small tensors (the pickle and
// the zip directory dominate).
func BenchmarkParse(b *testing.B) {
	for _, count := range []int{100, 1000} {
		var ts []tbt.Tensor
		data := map[string][]byte{}
		for i := range count {
			key := fmt.Sprint(i)
			ts = append(ts, tbt.Tensor{Name: fmt.Sprintf("model.layers.%d.weight", i), StorageType: "FloatStorage", Key: key, Numel: 16, Shape: []int64{4, 4}, Stride: []int64{4, 1}})
			data[key] = make([]byte, 64)
		}
		arc := tbt.StateDictArchive(ts, data)
		b.Run(fmt.Sprintf("tensors=%d", count), func(b *testing.B) {
			b.SetBytes(int64(len(arc)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := torchbin.NewFile(bytes.NewReader(arc), int64(len(arc)))
				if err != nil || len(f.Tensors) != count {
					b.Fatal(err)
				}
			}
		})
	}
}
