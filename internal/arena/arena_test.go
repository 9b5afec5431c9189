package arena

import "testing"

// A buffer is zeroed, as long as asked, writable end to end, and freed once.
func TestNew(t *testing.T) {
	for _, n := range []int64{0, 1, 4096, 3<<20 + 5} {
		b, err := New(n)
		if err != nil {
			t.Fatalf("New(%d): %v", n, err)
		}
		if int64(len(b.Bytes)) != n {
			t.Fatalf("New(%d): %d bytes", n, len(b.Bytes))
		}
		for i, v := range b.Bytes {
			if v != 0 {
				t.Fatalf("New(%d): byte %d is %d, want zero", n, i, v)
			}
		}
		for i := range b.Bytes {
			b.Bytes[i] = byte(i)
		}
		if err := b.Free(); err != nil {
			t.Fatalf("Free of %d bytes: %v", n, err)
		}
		if b.Bytes != nil {
			t.Errorf("Free of %d bytes left them reachable", n)
		}
		if err := b.Free(); err != nil {
			t.Errorf("a second Free of %d bytes: %v", n, err)
		}
	}
}
