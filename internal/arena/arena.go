// Package arena allocates large, long-lived byte buffers that are reused many times,
// outside the Go heap where the operating system can back them with huge pages.
//
// Why not make([]byte, n): the first touch of every page of fresh memory faults, and
// on this project's VMs (a PVM guest, whose page tables the host shadows) that is
// dear: filling a fresh 512 MiB buffer from the page cache took 1.55 s in 4 KiB
// pages, against 0.08 s for the second fill of the same buffer (2026-12-04,
// docs/reliability.md#how-inputs-are-read). On Linux the buffer is an anonymous
// mapping advised for transparent huge pages, faulted 2 MiB at a time: the same first
// fill took 0.99 s in one run and 0.11 s in the next, when the kernel handed back the
// huge pages the first had freed (the kernel zeroes each new page, and the host backs
// memory the guest has not touched before). Elsewhere it is an ordinary slice. Buffers are freed
// explicitly, not by the garbage collector, so a run returns its memory when it ends.
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
