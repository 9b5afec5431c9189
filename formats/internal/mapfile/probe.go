package mapfile

import (
	"io"
	"runtime"
	"time"
	"unsafe"
)

// Whether a reader that goes through a file once should take its bytes from the
// mapping or copy them with pread into a buffer it reuses depends on the machine, and
// on the moment, more than on the file system:
//
//   - With hardware-assisted paging, touching a mapped page-cache page costs a minor
//     fault per 64 KiB (fault-around), or one per 2 MiB folio, which is less than
//     copying the bytes.
//   - On a virtual machine whose hypervisor shadows the guest's page tables (this
//     project's VMs run the PVM kernel), each 4 KiB page of a mapping also traps to
//     the host when first touched. A pass over a 1.05 GB safetensors file in the ext4
//     page cache then took 0.6 s of user time through the mapping against 0.13 s of
//     user and 0.1 s of system time with pread (bench/roundtrip/mapread, 2026-12-04),
//     and gomerge's sfa of two such files 1.6–1.9 s against 1.2 s; in the hours when
//     the page cache held the same files in 2 MiB folios, mapped a PMD at a time, the
//     mapping cost 0.13 s.
//
// No file system flag or kernel version says which holds, and on the PVM guest it
// varies along one file (parts of it in 2 MiB folios, the rest in small pages), so
// copyBeatsMapping times both on the file itself, once: windows spread over the file,
// every other one touched through the mapping and the others copied into a warm
// buffer, each followed by the same sum of the bytes. The measurements are in
// docs/reliability.md#how-inputs-are-read.

const (
	// probeWindow is the bytes each timed sample reads: one 2 MiB folio, so that a
	// part of the file the page cache maps a PMD at a time pays its one trap for as
	// many bytes as a pass does (a 256 KiB window, the first form, charged that trap
	// to an eighth of them and called fresh files in large folios dearer mapped than
	// copied, where whole merges ran quicker mapped), and 512 small pages at 2–4 µs a
	// trap on the PVM guest stand well clear of the timer and of the copy's
	// 100–200 µs.
	probeWindow = 2 << 20
	// probeAlign aligns the windows, so that each starts a 2 MiB folio of its own and
	// a part of the file the page cache maps a PMD at a time is timed as such (where
	// the mapping's address is 2 MiB-aligned too, as the kernel places large file
	// mappings when it can).
	probeAlign = 2 << 20
	// probeWindows is the number of windows, one in each of as many equal parts of
	// the file: half are touched through the mapping and half copied, and each side
	// adds its times, so that the file's mix of folio sizes is weighed as a whole
	// pass meets it.
	probeWindows = 8
	// copyMargin is how much dearer the mapping must be before copying is preferred,
	// set between the two cases measured on the PVM guest (2026-12-04, 2 MiB windows;
	// bench/README.md, "Inputs copied where the mapping traps"):
	//   - the 1 GB bench fixtures, held in small pages: 2.7 to 4.5 times dearer mapped,
	//     and whole merges twice as quick copied (sfa 1.0–1.2 s against 1.7–2.3 s);
	//   - the same bytes freshly written (dd), held in 2 MiB folios: 0.6 to 1.6, and
	//     sfa quicker mapped (0.91–1.08 s against 1.16–1.19 s, 0.86 against 1.07 s of
	//     CPU).
	// With hardware paging the mapped windows should cost about what the copies do or
	// less (a fault per 64 KiB, no copy; not measured here: this task's GPU host was
	// not lent this session).
	copyMargin = 2
	// minProbedSize is the smallest file probed: below it the choice saves little, and
	// aligned windows would not fall in parts of their own.
	minProbedSize = 2 * probeWindows * probeAlign
)

// copyBeatsMapping reports whether reading the file's bytes through r into a reused
// buffer is more than copyMargin times cheaper than touching them through data, its
// mapping, on this machine now (see above). It reads 24 MiB of the file and touches
// 8 MiB of the mapping. Files under minProbedSize, and a probe whose reads fail, keep
// the mapping.
func copyBeatsMapping(r io.ReaderAt, data []byte) bool {
	if runtime.GOOS != "linux" {
		// The trapping guests are Linux's (PVM). Elsewhere the mapping is kept, and
		// the probe could not be trusted anyway on Windows, whose monotonic clock
		// advances by the timer tick, coarser than a window.
		return false
	}
	mapped, copied, ok := probeCosts(r, data)
	return ok && prefersCopy(mapped, copied)
}

// prefersCopy is copyBeatsMapping's rule, given the time of the mapped windows and of
// the copied ones.
func prefersCopy(mapped, copied time.Duration) bool {
	return float64(mapped) > copyMargin*float64(copied)
}

// probeCosts times the windows: the time to sum the mapped ones the first time they
// are touched, and to copy the others into a warm buffer and sum them, each side
// without its slowest window (a preemption or an interrupt in one window decides
// nothing). ok is false when the file is too small to probe or a read fails.
func probeCosts(r io.ReaderAt, data []byte) (mapped, copied time.Duration, ok bool) {
	n := int64(len(data))
	if n < minProbedSize {
		return 0, 0, false
	}
	buf := make([]byte, probeWindow)
	// Reading every window first brings them into the page cache, so that neither
	// side waits on a disk, and brings the buffer's fresh pages in, whose first touch
	// traps too: the copied side is timed as the engine's reused buffers run.
	for w := range int64(probeWindows) {
		if _, err := r.ReadAt(buf, probeOffset(n, w)); err != nil {
			return 0, 0, false
		}
	}
	var sink uint64
	var slowestMapped, slowestCopied time.Duration
	for w := range int64(probeWindows) {
		off := probeOffset(n, w)
		start := time.Now()
		if w%2 == 0 {
			sink ^= sumWords(data[off : off+probeWindow])
			d := time.Since(start)
			mapped, slowestMapped = mapped+d, max(slowestMapped, d)
			continue
		}
		if _, err := r.ReadAt(buf, off); err != nil {
			return 0, 0, false
		}
		sink ^= sumWords(buf)
		d := time.Since(start)
		copied, slowestCopied = copied+d, max(slowestCopied, d)
	}
	runtime.KeepAlive(sink) // the sums are used, so the timed loads cannot be dropped
	return mapped - slowestMapped, copied - slowestCopied, true
}

// probeOffset is where window w of a file of n bytes (at least minProbedSize)
// starts: in the middle of the w-th of probeWindows equal parts, rounded down to
// probeAlign, so that every window lies in its own part of the file.
func probeOffset(n, w int64) int64 {
	part := n / probeWindows
	return (w*part + part/2) &^ (probeAlign - 1)
}

// sumWords adds b's 8-byte words (len(b) a multiple of 8, b 8-byte aligned: a window
// of a mapping, or a buffer from make).
func sumWords(b []byte) uint64 {
	words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
	var s uint64
	for _, v := range words {
		s += v
	}
	return s
}
