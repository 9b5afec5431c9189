//go:build linux

// Command mapread times one pass over files read two ways: through a read-only shared
// mapping (what gomerge's format readers do), and with read(2) into one reused 4 MiB
// buffer. Each pass sums the file as 64-bit words, so every byte is touched. It prints
// the pass's wall time, its user and system CPU and its minor page faults
// (getrusage), which is what told why gomerge reading a file on tmpfs cost several
// times the CPU of reading it from ext4's page cache (bench/roundtrip/README.md).
//
//	go build -o mapread ./bench/roundtrip/mapread
//	mapread [-rounds N] FILE...
//
// The modes, for every file in every round (interleaved): mmap (fault the mapping in
// while summing), populate (MAP_POPULATE: the kernel fills the page tables up front),
// read. Read the files once beforehand so that they are in the page cache.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	rounds := flag.Int("rounds", 3, "rounds of every mode on every file")
	flag.Parse()
	for range *rounds {
		for _, path := range flag.Args() {
			for _, mode := range []string{"mmap", "populate", "read"} {
				if err := pass(path, mode); err != nil {
					fmt.Fprintln(os.Stderr, "mapread:", err)
					os.Exit(1)
				}
			}
		}
	}
}

func pass(path, mode string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := int(st.Size())
	r0, t0 := usage(), time.Now()
	var sum uint64
	switch mode {
	case "read":
		buf := make([]byte, 4<<20)
		for {
			n, err := f.Read(buf)
			sum += sumWords(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
	default:
		flags := unix.MAP_SHARED
		if mode == "populate" {
			flags |= unix.MAP_POPULATE
		}
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, flags)
		if err != nil {
			return fmt.Errorf("%s: mmap: %w", path, err)
		}
		sum = sumWords(m)
		if err := unix.Munmap(m); err != nil {
			return err
		}
	}
	wall, r1 := time.Since(t0), usage()
	fmt.Printf("%-50s %-8s wall %.3f s  user %.3f s  sys %.3f s  minor faults %6d  (sum %x)\n", path, mode,
		wall.Seconds(), seconds(r1.Utime)-seconds(r0.Utime), seconds(r1.Stime)-seconds(r0.Stime), r1.Minflt-r0.Minflt, sum&0xff)
	return nil
}

// sumWords adds b up as little-endian 64-bit words (a tail under 8 bytes is skipped),
// so that the compiler cannot drop the reads.
func sumWords(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
	var s uint64
	for _, w := range words {
		s += w
	}
	return s
}

func usage() syscall.Rusage {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return r
}

func seconds(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
