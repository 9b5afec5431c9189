//go:build unix

// Command floor measures the I/O floor of an N-input merge: the least work any tool
// that merges N checkpoints into one must do. It maps the N inputs, makes one pass
// that reads every byte of every input and writes every byte of a pre-sized output
// (each output word is the XOR of the inputs' words at the same offset: no arithmetic
// to speak of), then fsyncs the output, as a crash-safe merge must before it may
// rename its result into place.
//
//	go build -o floor ./bench/floor
//	floor [-threads T] [-size BYTES] [-write pwrite|mmap] [-writeback=false] IN1 IN2 ... OUT
//
// -write says how the output is written. pwrite (the default) reserves the file's
// space (fallocate, on Linux) and writes each block from a buffer, as gomerge writes
// its outputs; mmap maps the file, only truncated to size, and writes through the
// mapping, then msyncs it. A floor must be the cheapest way to do the I/O, and on this
// project's VMs writing through a shared mapping is not: each first write to a page
// faults, and under the hypervisor's shadow page tables that cost 4.5 to 5.9 s of
// system time per GB written to ext4 (2026-12-04), against about 0.4 s for pwrite, so
// that the mapped floor (3.2 to 4.2 s for two 1 GB inputs) ran 5x slower than
// gomerge's whole sfa merge of the same inputs (0.65 s). bench/README.md has the
// measurements.
//
// With pwrite the floor also asks the kernel every 100 ms to start writing the
// output's dirty pages back (sync_file_range), as gomerge does while it merges, so
// that the final fsync has little left to do; -writeback=false leaves all of it to
// that fsync. Without it the floor waited on the disk for the whole output at the
// end: 1.35 to 3.7 s for two 1 GB inputs in the hours the virtual disk wrote slowly,
// when gomerge's whole sfa merge took 0.6 to 0.8 s (2026-12-04, bench/README.md).
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
	write := flag.String("write", "pwrite", "how the output is written: pwrite (into reserved space, from a buffer) or mmap (through a mapping)")
	writeback := flag.Bool("writeback", true, "with pwrite, ask the kernel every 100 ms to start writing the output (as gomerge does); false leaves it all to the final fsync")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: floor [-threads T] [-size BYTES] IN1 [IN2 ...] OUT")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 || *threads < 1 || *write != "pwrite" && *write != "mmap" {
		flag.Usage()
		os.Exit(2)
	}
	sum, err := run(args[:len(args)-1], args[len(args)-1], *size, *threads, *write == "mmap", *writeback)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	// Printing the checksum of the input tails keeps their reads observable.
	if sum != 0 {
		fmt.Fprintf(os.Stderr, "floor: checksum of input bytes past the output's end %#x\n", sum)
	}
}

// run makes the pass from inputs into out (through a mapping when mapped, else with
// pwrite into reserved space, the kernel asked to start writing it back as it goes
// when writeback) and fsyncs it.
func run(inputs []string, out string, size int64, threads int, mapped, writeback bool) (uint64, error) {
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
	var sum uint64
	if mapped {
		var dst []byte
		if size > 0 {
			if dst, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
				return 0, fmt.Errorf("%s: mmap: %w", out, err)
			}
			defer unix.Munmap(dst)
		}
		sum = pass(size, ins, threads, func(lo, hi int) []byte { return dst[lo:hi] }, nil)
		if len(dst) > 0 {
			if err := unix.Msync(dst, unix.MS_SYNC); err != nil {
				return 0, fmt.Errorf("%s: msync: %w", out, err)
			}
		}
	} else {
		if err := preallocate(f, size); err != nil {
			return 0, fmt.Errorf("%s: %w", out, err)
		}
		var werr error
		var mu sync.Mutex
		stopWriteback := func() {}
		if writeback {
			stopWriteback = startWriteback(f)
		}
		sum = pass(size, ins, threads, nil, func(b []byte, off int) {
			if _, err := f.WriteAt(b, int64(off)); err != nil {
				mu.Lock()
				werr = err
				mu.Unlock()
			}
		})
		stopWriteback()
		if werr != nil {
			return 0, werr
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

// pass makes output byte i the XOR of the inputs' bytes i (those long enough to have
// it) for every i < size, and returns a checksum of the input bytes at or past size.
// The output's blocks are either the mapping's bytes (view gives them) or a buffer of
// each goroutine's handed to write once filled. The whole span [0, the longest input or
// the output) is cut into threads contiguous ranges of whole blocks, one goroutine
// each.
func pass(size int64, ins [][]byte, threads int, view func(lo, hi int) []byte, write func(b []byte, off int)) uint64 {
	n := int(size)
	span := n
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
			var buf []byte
			if view == nil {
				buf = make([]byte, block)
			}
			for b := lo; b < hi; b += block {
				e := min(b+block, hi)
				var out []byte
				if w := min(e, n); b < w {
					if view != nil {
						out = view(b, w)
					} else {
						out = buf[:w-b]
					}
				}
				sums[t] ^= passBlock(out, ins, b, e)
				if write != nil && len(out) > 0 {
					write(out, b)
				}
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

// passBlock handles bytes [lo, hi): out (bytes [lo, lo+len(out)) of the output, empty
// past its end) gets the XOR of the inputs, and the inputs' bytes past the output are
// folded into the returned checksum.
func passBlock(out []byte, ins [][]byte, lo, hi int) uint64 {
	var sum uint64
	w := lo + len(out) // bytes [lo, w) are written
	if lo < w {
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
