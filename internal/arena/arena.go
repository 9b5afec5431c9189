// Package arena allocates large, long-lived byte buffers that are reused many times,
// outside the Go heap where the operating system can back them with huge pages.
//
// Why not make([]byte, n): the first touch of every page of fresh memory faults, and
// on this project's VMs (a PVM guest, whose page tables the host shadows) a 4 KiB
// page's fault cost about 3 µs: filling a fresh 512 MiB buffer from the page cache
// took 1.55 s, against 0.08 s for the second fill of the same buffer (2026-12-04,
// bench/README.md). On Linux the buffer is an anonymous mapping advised for
// transparent huge pages, faulted 2 MiB at a time (0.11 s for the same first fill
// when the kernel had huge pages free); elsewhere it is an ordinary slice.
package arena

// Buffer is a byte buffer from New; Free returns its memory.
type Buffer struct {
	Bytes []byte
	free  func() error
}

// Free returns the buffer's memory to the system; Bytes must no longer be used.
func (b *Buffer) Free() error {
	if b == nil || b.free == nil {
		return nil
	}
	f := b.free
	b.Bytes, b.free = nil, nil
	return f()
}
