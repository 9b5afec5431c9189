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
// No file system flag or kernel version says which holds, so copyBeatsMapping times
// both on the file itself, once, on a few hundred KiB: the first touch of mapped
// windows against pread of others into a warm buffer, each followed by the same sum
// of the bytes. docs/reliability.md#how-inputs-are-read has the measurements.

const (
	// probeWindow is the bytes each timed sample reads: 64 pages, long enough that a
	// trap per page (2–3 µs on the PVM guest) stands well clear of the timer's
	// resolution and of pread's 20–40 µs for the same bytes.
	probeWindow = 256 << 10
	// probeStride separates the windows, so that each starts a 2 MiB folio of its own
	// and a file the page cache maps a PMD at a time is timed as such.
	probeStride = 2 << 20
	// probeWindows is the number of windows: half are touched through the mapping and
	// half copied, and each side keeps its least time, a scheduling hiccup in one
	// sample deciding nothing.
	probeWindows = 4
	// copyMargin is how much dearer the mapping must be before copying is preferred:
	// a method with passes copies its inputs once per pass, where the mapping traps
	// only on the first, and a copy costs system time the sample does not see whole.
	copyMargin = 2
	// minProbedSize is the smallest file probed: below it the choice saves little, and
	// the windows would not fit apart.
	minProbedSize = 2 * probeWindows * probeStride
)

// copyBeatsMapping reports whether reading the file's bytes through r into a reused
// buffer is at least copyMargin times cheaper than touching them through data, its
// mapping, on this machine now (see above). It reads at most a MiB of the file and
// touches half a MiB of the mapping. Files under minProbedSize, and a probe whose
// reads fail, keep the mapping.
func copyBeatsMapping(r io.ReaderAt, data []byte) bool {
	mapped, copied, ok := probeCosts(r, data)
	return ok && prefersCopy(mapped, copied)
}

// prefersCopy is copyBeatsMapping's rule, given the least time of a mapped window
// and of a copied one.
func prefersCopy(mapped, copied time.Duration) bool {
	return mapped > copyMargin*copied
}

// probeCosts times the windows: the least time to sum a window through the mapping
// the first time it is touched, and to copy one into a warm buffer and sum it. ok is
// false when the file is too small to probe or a read fails.
func probeCosts(r io.ReaderAt, data []byte) (mapped, copied time.Duration, ok bool) {
	n := int64(len(data))
	if n < minProbedSize {
		return 0, 0, false
	}
	// The windows sit in the middle of the file, on 2 MiB boundaries, clear of the
	// header that parsing read.
	first := (n/2/probeStride - probeWindows/2) * probeStride
	buf := make([]byte, probeWindow)
	// Reading every window first brings them into the page cache, so that neither
	// side waits on a disk, and brings the buffer's fresh pages in, whose first touch
	// traps too: the copied side is timed as the engine's reused buffers run.
	for w := range int64(probeWindows) {
		if _, err := r.ReadAt(buf, first+w*probeStride); err != nil {
			return 0, 0, false
		}
	}
	var sink uint64
	mapped, copied = time.Duration(1<<63-1), time.Duration(1<<63-1)
	for w := range int64(probeWindows) {
		off := first + w*probeStride
		start := time.Now()
		if w%2 == 0 {
			sink ^= sumWords(data[off : off+probeWindow])
			mapped = min(mapped, time.Since(start))
			continue
		}
		if _, err := r.ReadAt(buf, off); err != nil {
			return 0, 0, false
		}
		sink ^= sumWords(buf)
		copied = min(copied, time.Since(start))
	}
	runtime.KeepAlive(sink) // the sums are used, so the timed loads cannot be dropped
	return mapped, copied, true
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
