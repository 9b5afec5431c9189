//go:build unix

// Command floor measures the I/O floor of an N-input merge: the least work any tool
// that merges N checkpoints into one must do. It maps the N inputs and a pre-sized
// output file, makes one pass that reads every byte of every input and writes every
// byte of the output (each output word is the XOR of the inputs' words at the same
// offset: no arithmetic to speak of), then flushes the output and fsyncs it, as a
// crash-safe merge must before it may rename its result into place.
//
//	go build -o floor ./bench/floor
//	floor [-threads T] [-size BYTES] IN1 IN2 ... OUT
//
// The output is as large as the first input unless -size says otherwise (a merge
// writes one model's worth of bytes). Input bytes beyond the output's size are still
// read, into a checksum, so that every input byte is read whatever the sizes. The pass
// is split into -threads contiguous ranges (default: the number of CPUs, as gomerge
// uses), each walked in 64 KiB blocks so that a block of the output is written once
// while the inputs stream past it.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// block is how many bytes of the output one goroutine fills from all inputs before
// moving on: small enough to stay in L2 while N inputs are XORed into it.
const block = 64 << 10

func main() {
	threads := flag.Int("threads", runtime.NumCPU(), "goroutines making the pass")
	size := flag.Int64("size", -1, "output size in bytes (default: the first input's size)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: floor [-threads T] [-size BYTES] IN1 [IN2 ...] OUT")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 || *threads < 1 {
		flag.Usage()
		os.Exit(2)
	}
	sum, err := run(args[:len(args)-1], args[len(args)-1], *size, *threads)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	// Printing the checksum of the input tails keeps their reads observable.
	if sum != 0 {
		fmt.Fprintf(os.Stderr, "floor: checksum of input bytes past the output's end %#x\n", sum)
	}
}

func run(inputs []string, out string, size int64, threads int) (uint64, error) {
	ins := make([][]byte, len(inputs))
	for i, path := range inputs {
		b, err := mapInput(path)
		if err != nil {
			return 0, err
		}
		defer unix.Munmap(b)
		ins[i] = b
	}
	if size < 0 {
		size = int64(len(ins[0]))
	}
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	var dst []byte
	if size > 0 {
		if dst, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return 0, fmt.Errorf("%s: mmap: %w", out, err)
		}
		defer unix.Munmap(dst)
	}
	sum := pass(dst, ins, threads)
	if len(dst) > 0 {
		if err := unix.Msync(dst, unix.MS_SYNC); err != nil {
			return 0, fmt.Errorf("%s: msync: %w", out, err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("%s: fsync: %w", out, err)
	}
	return sum, f.Close()
}

// mapInput maps a whole file read-only (an empty file maps to nil).
func mapInput(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return nil, nil
	}
	if int64(int(st.Size())) != st.Size() {
		return nil, fmt.Errorf("%s: %d bytes do not fit in this platform's address space", path, st.Size())
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	return b, nil
}

// pass writes dst[i] = XOR of ins[k][i] over the inputs long enough to have byte i, for
// every i < len(dst), and returns a checksum of the input bytes at or past len(dst).
// The whole span [0, the longest input or the output) is cut into threads contiguous
// ranges of whole blocks, one goroutine each.
func pass(dst []byte, ins [][]byte, threads int) uint64 {
	span := len(dst)
	for _, in := range ins {
		span = max(span, len(in))
	}
	blocks := (span + block - 1) / block
	per := (blocks + threads - 1) / max(threads, 1)
	sums := make([]uint64, threads)
	var wg sync.WaitGroup
	for t := range threads {
		lo, hi := min(t*per*block, span), min((t+1)*per*block, span)
		if lo == hi {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := lo; b < hi; b += block {
				sums[t] ^= passBlock(dst, ins, b, min(b+block, hi))
			}
		}()
	}
	wg.Wait()
	var sum uint64
	for _, s := range sums {
		sum ^= s
	}
	return sum
}

// passBlock handles bytes [lo, hi): the part below len(dst) is written, the rest of
// each input is folded into the returned checksum.
func passBlock(dst []byte, ins [][]byte, lo, hi int) uint64 {
	var sum uint64
	w := min(hi, len(dst)) // bytes [lo, w) are written
	if lo < w {
		out := dst[lo:w]
		first := true
		for _, in := range ins {
			if lo >= len(in) {
				continue
			}
			src := in[lo:min(w, len(in))]
			if first {
				copy(out, src)
				clear(out[len(src):])
				first = false
			} else {
				xorInto(out[:len(src)], src)
			}
		}
		if first {
			clear(out)
		}
	}
	for _, in := range ins {
		if s, e := max(lo, w), min(hi, len(in)); s < e {
			sum ^= fold(in[s:e], s)
		}
	}
	return sum
}

// xorInto sets dst[i] ^= src[i], eight bytes at a time where both are aligned (mapped
// memory and block offsets are), the rest byte by byte.
func xorInto(dst, src []byte) {
	n := len(src) / 8
	if n > 0 && uintptr(unsafe.Pointer(&dst[0]))%8 == 0 && uintptr(unsafe.Pointer(&src[0]))%8 == 0 {
		d := unsafe.Slice((*uint64)(unsafe.Pointer(&dst[0])), n)
		s := unsafe.Slice((*uint64)(unsafe.Pointer(&src[0])), n)
		for i := range d {
			d[i] ^= s[i]
		}
	} else {
		n = 0
	}
	for i := 8 * n; i < len(src); i++ {
		dst[i] ^= src[i]
	}
}

// fold XORs b's bytes into one word, each at its file offset (off + i) mod 8, so that
// reading them cannot be optimised away and the result does not depend on how the
// pass was cut.
func fold(b []byte, off int) uint64 {
	var s uint64
	for i, v := range b {
		s ^= uint64(v) << (8 * ((off + i) % 8))
	}
	return s
}
