package mapfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestOpenLeaksNothing: a failed Open closes the descriptor it opened, and Close closes
// a good one. /proc/self/fd counts them.
func TestOpenLeaksNothing(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tst")
	bad := filepath.Join(dir, "bad.tst")
	if err := os.WriteFile(good, testFile([]byte("payload")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("XXXXXXXXXX"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	for range 50 {
		if _, _, err := Open(bad, parseTest, errTestFormat); !errors.Is(err, errTestFormat) {
			t.Fatalf("bad file: %v", err)
		}
		if _, _, err := Open(dir, parseTest, errTestFormat); !errors.Is(err, errTestFormat) {
			t.Fatalf("folder: %v", err)
		}
		_, m, err := Open(good, parseTest, errTestFormat)
		if err != nil {
			t.Fatalf("good file: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after 150 Opens", before, after)
	}
}
