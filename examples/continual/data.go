package main

import (
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// DefaultDataDir is where Debian's dataset-fashion-mnist package puts the files.
const DefaultDataDir = "/usr/share/datasets/fashion-mnist"

// Dataset is a set of images (rows of Dim floats in [0, 1]) and their labels.
type Dataset struct {
	Dim int
	X   []float32
	Y   []uint8
}

// Len is the number of examples.
func (d *Dataset) Len() int { return len(d.Y) }

// Row returns example i's pixels.
func (d *Dataset) Row(i int) []float32 { return d.X[i*d.Dim : (i+1)*d.Dim] }

// Filter keeps the examples whose label satisfies keep, in order.
func (d *Dataset) Filter(keep func(label uint8) bool) *Dataset {
	out := &Dataset{Dim: d.Dim}
	for i, y := range d.Y {
		if keep(y) {
			out.X = append(out.X, d.Row(i)...)
			out.Y = append(out.Y, y)
		}
	}
	return out
}

// Relabel returns the examples with each label y replaced by f(y); the pixels are
// shared with d.
func (d *Dataset) Relabel(f func(label uint8) uint8) *Dataset {
	out := &Dataset{Dim: d.Dim, X: d.X, Y: make([]uint8, len(d.Y))}
	for i, y := range d.Y {
		out.Y[i] = f(y)
	}
	return out
}

// Subset returns n examples drawn without replacement by a generator seeded with seed
// (all of them, shuffled, if n ≥ Len).
func (d *Dataset) Subset(n int, seed uint64) *Dataset {
	perm := rand.New(rand.NewPCG(seed, 0x5851f42d4c957f2d)).Perm(d.Len())
	if n < len(perm) {
		perm = perm[:n]
	}
	out := &Dataset{Dim: d.Dim, X: make([]float32, 0, len(perm)*d.Dim), Y: make([]uint8, 0, len(perm))}
	for _, i := range perm {
		out.X = append(out.X, d.Row(i)...)
		out.Y = append(out.Y, d.Y[i])
	}
	return out
}

// Concat returns the examples of a followed by those of b.
func Concat(a, b *Dataset) *Dataset {
	return &Dataset{
		Dim: a.Dim,
		X:   append(append(make([]float32, 0, len(a.X)+len(b.X)), a.X...), b.X...),
		Y:   append(append(make([]uint8, 0, len(a.Y)+len(b.Y)), a.Y...), b.Y...),
	}
}

// FashionMNIST is the train and test split.
type FashionMNIST struct {
	Train, Test *Dataset
}

// LoadFashionMNIST reads the four IDX files (gzipped, as Debian ships them) from dir:
// the first maxTrain training and maxTest test images (0: all of them). Reading a prefix
// saves decompressing the rest, which matters under the race detector.
func LoadFashionMNIST(dir string, maxTrain, maxTest int) (*FashionMNIST, error) {
	load := func(prefix string, limit int) (*Dataset, error) {
		x, rows, cols, err := readIDXImages(filepath.Join(dir, prefix+"-images-idx3-ubyte.gz"), limit)
		if err != nil {
			return nil, err
		}
		y, err := readIDXLabels(filepath.Join(dir, prefix+"-labels-idx1-ubyte.gz"), limit)
		if err != nil {
			return nil, err
		}
		if len(y)*rows*cols != len(x) {
			return nil, fmt.Errorf("fashion-mnist %s: %d labels for %d images", prefix, len(y), len(x)/(rows*cols))
		}
		return &Dataset{Dim: rows * cols, X: x, Y: y}, nil
	}
	train, err := load("train", maxTrain)
	if err != nil {
		return nil, err
	}
	test, err := load("t10k", maxTest)
	if err != nil {
		return nil, err
	}
	return &FashionMNIST{Train: train, Test: test}, nil
}

// Limits on the IDX headers: Fashion-MNIST has 60,000 images of 28×28; anything far
// beyond that is a corrupt file, not a bigger dataset.
const (
	maxIDXItems = 1 << 20
	maxIDXSide  = 1 << 10
)

// readIDX reads an IDX file's header and the data of its first limit items (0: all).
func readIDX(path string, wantMagic uint32, dims, limit int) (sizes []int, data []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	hdr := make([]byte, 4+4*dims)
	if _, err := io.ReadFull(zr, hdr); err != nil {
		return nil, nil, fmt.Errorf("%s: reading the IDX header: %w", path, err)
	}
	if m := binary.BigEndian.Uint32(hdr); m != wantMagic {
		return nil, nil, fmt.Errorf("%s: IDX magic %#08x, want %#08x", path, m, wantMagic)
	}
	total := 1
	for i := range dims {
		s := binary.BigEndian.Uint32(hdr[4+4*i:])
		bound := uint32(maxIDXSide)
		if i == 0 {
			bound = maxIDXItems
		}
		if s == 0 || s > bound {
			return nil, nil, fmt.Errorf("%s: IDX dimension %d is %d, outside [1, %d]", path, i, s, bound)
		}
		if i == 0 && limit > 0 && int(s) > limit {
			s = uint32(limit)
		}
		sizes = append(sizes, int(s))
		total *= int(s)
	}
	data = make([]byte, total) // bounded by the limits above
	if _, err := io.ReadFull(zr, data); err != nil {
		return nil, nil, fmt.Errorf("%s: reading %d bytes of data: %w", path, total, err)
	}
	return sizes, data, nil
}

func readIDXImages(path string, limit int) (x []float32, rows, cols int, err error) {
	sizes, data, err := readIDX(path, 0x00000803, 3, limit)
	if err != nil {
		return nil, 0, 0, err
	}
	var scale [256]float32
	for i := range scale {
		scale[i] = float32(i) / 255
	}
	x = make([]float32, len(data))
	for i, b := range data {
		x[i] = scale[b]
	}
	return x, sizes[1], sizes[2], nil
}

func readIDXLabels(path string, limit int) ([]uint8, error) {
	_, data, err := readIDX(path, 0x00000801, 1, limit)
	if err != nil {
		return nil, err
	}
	for i, y := range data {
		if y > 9 {
			return nil, fmt.Errorf("%s: label %d of example %d is not a class 0..9", path, y, i)
		}
	}
	return data, nil
}
