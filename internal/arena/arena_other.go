//go:build !linux

package arena

// New returns a zeroed buffer of n bytes from the Go heap.
func New(n int64) (*Buffer, error) {
	return &Buffer{Bytes: make([]byte, max(n, 0))}, nil
}
