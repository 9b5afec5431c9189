package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeIDX writes a gzipped IDX file with the given magic, dimensions and data.
func writeIDX(t *testing.T, path string, magic uint32, dims []uint32, data []byte) {
	t.Helper()
	var raw bytes.Buffer
	binary.Write(&raw, binary.BigEndian, magic)
	for _, d := range dims {
		binary.Write(&raw, binary.BigEndian, d)
	}
	raw.Write(data)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeMNIST writes a 4-image train split and a 2-image test split of 2×3 pixels.
func fakeMNIST(t *testing.T) string {
	dir := t.TempDir()
	pix := make([]byte, 4*6)
	for i := range pix {
		pix[i] = byte(i * 10)
	}
	writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), 0x803, []uint32{4, 2, 3}, pix)
	writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), 0x801, []uint32{4}, []byte{0, 1, 2, 3})
	writeIDX(t, filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), 0x803, []uint32{2, 2, 3}, pix[:12])
	writeIDX(t, filepath.Join(dir, "t10k-labels-idx1-ubyte.gz"), 0x801, []uint32{2}, []byte{9, 8})
	return dir
}

func TestLoadFashionMNIST(t *testing.T) {
	dir := fakeMNIST(t)
	d, err := LoadFashionMNIST(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Train.Dim != 6 || d.Train.Len() != 4 || d.Test.Len() != 2 {
		t.Fatalf("dim %d, %d train, %d test", d.Train.Dim, d.Train.Len(), d.Test.Len())
	}
	if got := d.Train.Row(1); got[0] != float32(60)/255 || got[5] != float32(110)/255 {
		t.Fatalf("row 1 = %v", got)
	}
	// A prefix reads only the first images and labels.
	d, err = LoadFashionMNIST(dir, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Train.Y, []uint8{0, 1, 2}) || !slices.Equal(d.Test.Y, []uint8{9}) || len(d.Train.X) != 18 {
		t.Fatalf("prefix: train labels %v, test labels %v, %d pixels", d.Train.Y, d.Test.Y, len(d.Train.X))
	}
	even := d.Train.Filter(isA)
	if !slices.Equal(even.Y, []uint8{0, 2}) || !slices.Equal(even.Row(1), d.Train.Row(2)) {
		t.Fatalf("filter: %v", even.Y)
	}
	sub := d.Train.Subset(2, 1)
	if sub.Len() != 2 || sub.Y[0] == sub.Y[1] {
		t.Fatalf("subset of 2 distinct examples: %v", sub.Y)
	}
	if c := Concat(even, sub); c.Len() != 4 || !slices.Equal(c.Row(2), sub.Row(0)) {
		t.Fatal("concat lost its order")
	}
}

func TestLoadFashionMNISTRejectsBadFiles(t *testing.T) {
	for name, mutate := range map[string]func(dir string){
		"bad magic": func(dir string) {
			writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), 0x803, []uint32{4}, []byte{0, 1, 2, 3})
		},
		"truncated": func(dir string) {
			writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), 0x803, []uint32{4, 2, 3}, make([]byte, 10))
		},
		"huge count": func(dir string) {
			writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), 0x803, []uint32{1 << 30, 2, 3}, nil)
		},
		"label out of range": func(dir string) {
			writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), 0x801, []uint32{4}, []byte{0, 1, 12, 3})
		},
		"count mismatch": func(dir string) {
			writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), 0x801, []uint32{3}, []byte{0, 1, 2})
		},
		"not gzip": func(dir string) {
			os.WriteFile(filepath.Join(dir, "t10k-labels-idx1-ubyte.gz"), []byte("plain"), 0o644)
		},
		"missing": func(dir string) { os.Remove(filepath.Join(dir, "t10k-images-idx3-ubyte.gz")) },
	} {
		dir := fakeMNIST(t)
		mutate(dir)
		if _, err := LoadFashionMNIST(dir, 0, 0); err == nil {
			t.Errorf("%s: loaded without error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
