package mapfile

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// countingReader is an io.ReaderAt over b that counts its reads and can fail them.
type countingReader struct {
	b     []byte
	reads int
	fail  bool
}

func (r *countingReader) ReadAt(p []byte, off int64) (int, error) {
	r.reads++
	if r.fail {
		return 0, errors.New("read failed")
	}
	return copy(p, r.b[off:]), nil
}

// TestPrefersCopy: copying wins only when the mapping's samples cost over
// copyMargin times the copies'.
func TestPrefersCopy(t *testing.T) {
	for _, c := range []struct {
		mapped, copied time.Duration
		want           bool
	}{
		{600 * time.Microsecond, 40 * time.Microsecond, true}, // a trapping VM
		{81 * time.Microsecond, 40 * time.Microsecond, true},
		{80 * time.Microsecond, 40 * time.Microsecond, false}, // exactly the margin: map
		{60 * time.Microsecond, 40 * time.Microsecond, false}, // large folios on the PVM guest
		{10 * time.Microsecond, 40 * time.Microsecond, false}, // fault-around or huge folios
		{0, 0, false},
	} {
		if got := prefersCopy(c.mapped, c.copied); got != c.want {
			t.Errorf("prefersCopy(mapped %v, copied %v) = %v, want %v", c.mapped, c.copied, got, c.want)
		}
	}
}

// TestProbeCosts: a file large enough is probed, reading each window once to warm
// it and the copied windows again; a smaller one, or one whose reads fail, is not
// (and keeps the mapping). The costs themselves are the machine's: logged, not
// checked.
func TestProbeCosts(t *testing.T) {
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, minProbedSize/8)
	r := &countingReader{b: data}
	mapped, copied, ok := probeCosts(r, data)
	if !ok || mapped <= 0 || copied <= 0 {
		t.Fatalf("probeCosts of %d bytes: mapped %v, copied %v, ok %v; want both timed", len(data), mapped, copied, ok)
	}
	if want := probeWindows + probeWindows/2; r.reads != want {
		t.Errorf("probeCosts made %d reads, want %d", r.reads, want)
	}
	t.Logf("heap memory standing in for a mapping: mapped %v, copied %v: copy preferred %v", mapped, copied, prefersCopy(mapped, copied))

	small := data[:minProbedSize-1]
	r = &countingReader{b: small}
	if _, _, ok := probeCosts(r, small); ok || r.reads != 0 {
		t.Errorf("a file of %d bytes: probed %v with %d reads, want neither", len(small), ok, r.reads)
	}
	if copyBeatsMapping(r, small) {
		t.Errorf("a file of %d bytes prefers copying, want the mapping", len(small))
	}
	r = &countingReader{b: data, fail: true}
	if _, _, ok := probeCosts(r, data); ok {
		t.Error("a probe whose reads fail reported costs")
	}
	if copyBeatsMapping(r, data) {
		t.Error("a file whose reads fail prefers copying, want the mapping")
	}
}

// TestProbeOffsets: for files from the smallest probed size up, every window is
// aligned, inside the file, and apart from the others.
func TestProbeOffsets(t *testing.T) {
	for _, n := range []int64{minProbedSize, minProbedSize + 1, minProbedSize + probeAlign - 1, 3*minProbedSize + 12345, 1<<40 + 7} {
		prev := int64(-probeWindow)
		for w := range int64(probeWindows) {
			off := probeOffset(n, w)
			if off%probeAlign != 0 || off < prev+probeWindow || off+probeWindow > n {
				t.Errorf("size %d: window %d at %d (the previous at %d): want aligned to %d, after the previous window, and inside the file", n, w, off, prev, probeAlign)
			}
			prev = off
		}
	}
}

// TestPreferReadProbesOnce: on a file large enough to probe, Mapped.PreferRead
// answers, the same each time, and leaves the mapping whole.
func TestPreferReadProbesOnce(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), minProbedSize/16)
	path := writeFile(t, "big.tst", testFile(payload))
	_, m, err := Open(path, parseTest, errTestFormat)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := m.PreferRead()
	for range 3 {
		if m.PreferRead() != first {
			t.Fatal("PreferRead changed its answer")
		}
	}
	if !bytes.Equal(m.Data[8:], payload) {
		t.Error("the mapping's bytes changed after the probe")
	}
	t.Logf("%d bytes on the test's folder: copy preferred %v", len(payload)+8, first)
	var none *Mapped
	if none.PreferRead() {
		t.Error("a nil Mapped prefers copying")
	}
}
