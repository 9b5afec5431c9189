//go:build unix

// Command floor measures the I/O floor of an N-input merge: the least work any tool
// that merges N checkpoints into one must do. It maps the N inputs, makes one pass
// that reads every byte of every input and writes every byte of a pre-sized output
// (each output word is the XOR of the inputs' words at the same offset: no arithmetic
// to speak of), then fsyncs the output, as a crash-safe merge must before it may
// rename its result into place.
//
//	go build -o floor ./bench/floor
//	floor [-threads T] [-size BYTES] [-read mmap|pread] [-write pwrite|mmap] [-writeback=false] IN1 IN2 ... OUT
//
// -read says how the inputs are read: through read-only shared mappings (mmap, the
// default, as gomerge maps its inputs), or with pread into a block-sized buffer per
// input per goroutine, reused (pread). Neither is the cheaper everywhere: on this
// project's VMs the hypervisor traps the first touch of every 4 KiB page of a mapping
// (time the guest counts as user time), so that a mapped pass over a 1 GB file in the
// page cache cost 0.6 s of user time in the hours the page cache held it in small
// pages, against 0.13 s of user and 0.1 s of system time for pread's copy
// (2026-12-04, bench/README.md); where the page cache maps 2 MiB folios whole, or
// with no hypervisor in the way, the mapping costs less than the copy. bench/methods.sh
// runs both and takes the least, since a floor must be the cheapest way to do the I/O.
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
	read := flag.String("read", "mmap", "how the inputs are read: mmap (through mappings) or pread (into reused buffers)")
	write := flag.String("write", "pwrite", "how the output is written: pwrite (into reserved space, from a buffer) or mmap (through a mapping)")
	writeback := flag.Bool("writeback", true, "with pwrite, ask the kernel every 100 ms to start writing the output (as gomerge does); false leaves it all to the final fsync")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: floor [-threads T] [-size BYTES] IN1 [IN2 ...] OUT")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 || *threads < 1 || *write != "pwrite" && *write != "mmap" || *read != "mmap" && *read != "pread" {
		flag.Usage()
		os.Exit(2)
	}
	sum, err := run(args[:len(args)-1], args[len(args)-1], *size, *threads, *read == "pread", *write == "mmap", *writeback)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	// Printing the checksum of the input tails keeps their reads observable.
	if sum != 0 {
		fmt.Fprintf(os.Stderr, "floor: checksum of input bytes past the output's end %#x\n", sum)
	}
}

// run makes the pass from inputs (read with pread when preads, else through mappings)
// into out (through a mapping when mapped, else with pwrite into reserved space, the
// kernel asked to start writing it back as it goes when writeback) and fsyncs it.
func run(inputs []string, out string, size int64, threads int, preads, mapped, writeback bool) (uint64, error) {
	ins := make([]input, len(inputs))
	for i, path := range inputs {
		in, err := openInput(path, preads)
		if err != nil {
			return 0, err
		}
		defer in.close()
		ins[i] = in
	}
	if size < 0 {
		size = ins[0].size
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

// input is one input file: its whole mapping (mapped), or the open file read with
// pread.
type input struct {
	path   string
	size   int64
	mapped []byte
	f      *os.File
}

// openInput opens path, mapping it whole read-only unless preads (an empty file maps
// to nil).
func openInput(path string, preads bool) (input, error) {
	f, err := os.Open(path)
	if err != nil {
		return input{}, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return input{}, err
	}
	in := input{path: path, size: st.Size()}
	if preads {
		in.f = f
		return in, nil
	}
	defer f.Close()
	if in.size == 0 {
		return in, nil
	}
	if int64(int(in.size)) != in.size {
		return input{}, fmt.Errorf("%s: %d bytes do not fit in this platform's address space", path, in.size)
	}
	if in.mapped, err = unix.Mmap(int(f.Fd()), 0, int(in.size), unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return input{}, fmt.Errorf("%s: mmap: %w", path, err)
	}
	return in, nil
}

func (in input) close() {
	if in.f != nil {
		in.f.Close()
	}
	if in.mapped != nil {
		unix.Munmap(in.mapped)
	}
}

// bytes returns the input's bytes [lo, hi) (hi at most its size): a view of the
// mapping, or buf filled by pread. A failed read ends the program: the floor has no
// use for a partial pass.
func (in input) bytes(lo, hi int, buf []byte) []byte {
	if in.f == nil {
		return in.mapped[lo:hi]
	}
	b := buf[:hi-lo]
	if _, err := in.f.ReadAt(b, int64(lo)); err != nil {
		fmt.Fprintf(os.Stderr, "floor: %s: %v\n", in.path, err)
		os.Exit(1)
	}
	return b
}

// pass makes output byte i the XOR of the inputs' bytes i (those long enough to have
// it) for every i < size, and returns a checksum of the input bytes at or past size.
// The output's blocks are either the mapping's bytes (view gives them) or a buffer of
// each goroutine's handed to write once filled. The whole span [0, the longest input or
// the output) is cut into threads contiguous ranges of whole blocks, one goroutine
// each.
func pass(size int64, ins []input, threads int, view func(lo, hi int) []byte, write func(b []byte, off int)) uint64 {
	n := int(size)
	span := n
	for _, in := range ins {
		span = max(span, int(in.size))
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
			inBufs, srcs := make([][]byte, len(ins)), make([][]byte, len(ins))
			for i := range ins {
				if ins[i].f != nil {
					inBufs[i] = make([]byte, block)
				}
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
				sums[t] ^= passBlock(out, ins, inBufs, srcs, b, e)
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
// folded into the returned checksum. bufs holds a block-sized buffer for each input
// read with pread; srcs, one entry per input, is the goroutine's own, reused from
// block to block so that the pass allocates nothing.
func passBlock(out []byte, ins []input, bufs, srcs [][]byte, lo, hi int) uint64 {
	var sum uint64
	for i, in := range ins { // each input's bytes [lo, min(hi, its size))
		srcs[i] = nil
		if e := min(hi, int(in.size)); lo < e {
			srcs[i] = in.bytes(lo, e, bufs[i])
		}
	}
	w := lo + len(out) // bytes [lo, w) are written
	if lo < w {
		first := true
		for _, in := range srcs {
			if len(in) == 0 {
				continue
			}
			src := in[:min(w-lo, len(in))]
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
	for _, in := range srcs {
		if s, e := max(lo, w), lo+len(in); s < e {
			sum ^= fold(in[s-lo:e-lo], s)
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
