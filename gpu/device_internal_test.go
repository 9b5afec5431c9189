package gpu

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"
)

// Benchmarks of the raw device, run by devcheck.sh on a GPU machine
// (GOMERGE_TEST_GPU=1): host↔device copies from pinned memory, and one kernel over
// device-resident data.

func openBench(b *testing.B) *Device {
	b.Helper()
	if os.Getenv("GOMERGE_TEST_GPU") == "" {
		b.Skip("set GOMERGE_TEST_GPU=1 to benchmark a real CUDA device")
	}
	d, err := OpenWith(Config{Library: os.Getenv("GOMERGE_TEST_GPU_LIBRARY")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

const benchBytes = 256 << 20

func BenchmarkDeviceCopy(b *testing.B) {
	d := openBench(b)
	s := d.streams[0]
	sl, err := s.ensure(d.be, 0, benchBytes, true)
	if err != nil {
		b.Fatal(err)
	}
	for _, dir := range []struct {
		name string
		kind opKind
	}{{"HtoD", opHtoD}, {"DtoH", opDtoH}} {
		b.Run(dir.name+"/256MiB", func(b *testing.B) {
			b.SetBytes(benchBytes)
			for b.Loop() {
				if err := d.be.run(0, []op{{kind: dir.kind, dev: sl.dev, host: sl.host[:benchBytes]}}); err != nil {
					b.Fatal(err)
				}
				if err := d.be.sync(0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDeviceKernel times gm_lerp (BF16 in and out) and gm_ties (two models) on
// data already on the device: bytes are those the kernel reads and writes.
func BenchmarkDeviceKernel(b *testing.B) {
	d := openBench(b)
	const n = 64 << 20 // elements
	s := d.streams[0]
	var dev [4]devPtr
	for i := range dev {
		sl, err := s.ensure(d.be, i, 2*n, false)
		if err != nil {
			b.Fatal(err)
		}
		dev[i] = sl.dev
	}
	run := func(b *testing.B, ops []op) {
		for b.Loop() {
			if err := d.be.run(0, ops); err != nil {
				b.Fatal(err)
			}
			if err := d.be.sync(0); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("lerp/BF16/64M", func(b *testing.B) {
		b.SetBytes(3 * 2 * n)
		run(b, []op{d.launch(kLerp, n, dev[0], uint32(2), dev[1], uint32(2), dev[2], uint32(2), float32(0.5), float32(0.5), uint64(n))})
	})
	b.Run("ties/BF16/64M", func(b *testing.B) {
		descs, err := s.ensure(d.be, 4, 2*modelDescSize, true)
		if err != nil {
			b.Fatal(err)
		}
		for i := range 2 {
			m := modelDesc{x: uint64(dev[2+i]), dt: 2, keep: uint32(KeepCut), t0: 0x3c000000, tieEnd0: 1 << 40, w: 1}
			m.put(descs.host[i*modelDescSize:])
		}
		if err := d.be.run(0, []op{{kind: opHtoD, dev: descs.dev, host: descs.host[:2*modelDescSize]}}); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(4 * 2 * n)
		run(b, []op{d.launch(kTies, n, dev[0], uint32(2), dev[1], uint32(2), descs.dev, uint32(2), float32(1), uint64(0), uint64(n))})
	})
}

// TestStageCopy: the parallel staging copy writes every destination byte from its
// source, across pair boundaries and piece sizes that do not divide the total
// (stagecopy_linux_test.go: a fault in a copying goroutine).
func TestStageCopy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sizes := range [][]int{{0}, {17}, {stageCopyPiece * 3}, {stageCopyPiece*2 + 5, 1, stageCopyPiece + 3}, {7, stageCopyPiece*5 - 1, 0, 3}} {
		var pairs [][2][]byte
		for _, n := range sizes {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			dst := make([]byte, n)
			pairs = append(pairs, [2][]byte{dst, src})
		}
		stageCopy(pairs)
		for i, p := range pairs {
			if !bytes.Equal(p[0], p[1]) {
				t.Errorf("sizes %v: pair %d not copied", sizes, i)
			}
		}
	}
}
