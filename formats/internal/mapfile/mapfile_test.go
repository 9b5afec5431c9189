package mapfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// errTestFormat and testHeader stand in for a format: a file is a 4-byte magic, a
// 4-byte payload length and the payload, and the parser reads it through the
// descriptor as the real readers do.
var errTestFormat = errors.New("test format")

var testMagic = []byte("TST1")

type testHeader struct {
	size    int64
	payload []byte
}

func parseTest(r io.ReaderAt, size int64) (*testHeader, error) {
	if size < 8 {
		return nil, fmt.Errorf("%w: file is %d bytes, shorter than the 8-byte header", errTestFormat, size)
	}
	var head [8]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("%w: reading header: %w", errTestFormat, err)
	}
	if !bytes.Equal(head[:4], testMagic) {
		return nil, fmt.Errorf("%w: bad magic %q", errTestFormat, head[:4])
	}
	n := int64(head[4]) | int64(head[5])<<8 | int64(head[6])<<16 | int64(head[7])<<24
	if n != size-8 {
		return nil, fmt.Errorf("%w: payload length %d, but %d bytes follow the header", errTestFormat, n, size-8)
	}
	p := make([]byte, n)
	if _, err := r.ReadAt(p, 8); err != nil && n > 0 {
		return nil, fmt.Errorf("%w: reading payload: %w", errTestFormat, err)
	}
	return &testHeader{size: size, payload: p}, nil
}

func testFile(payload []byte) []byte {
	n := len(payload)
	b := append(bytes.Clone(testMagic), byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	return append(b, payload...)
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenMapsWhatItParsed(t *testing.T) {
	// More than a page, so that the mapping is checked past its first page.
	payload := make([]byte, 3*4096+17)
	for i := range payload {
		payload[i] = byte(i*7 + 3)
	}
	want := testFile(payload)
	path := writeFile(t, "good.tst", want)
	h, m, err := Open(path, parseTest, errTestFormat)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if h.size != int64(len(want)) || !bytes.Equal(h.payload, payload) {
		t.Errorf("parser saw size %d and a %d-byte payload, want %d and %d", h.size, len(h.payload), len(want), len(payload))
	}
	if !bytes.Equal(m.Data, want) {
		t.Errorf("mapping holds %d bytes that differ from the file's %d", len(m.Data), len(want))
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if m.Data != nil {
		t.Error("Data is still set after Close")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
}

func TestOpenEmptyFile(t *testing.T) {
	// An empty file maps to nil; a parser that accepts it gets size 0, and Close
	// still closes the descriptor.
	path := writeFile(t, "empty", nil)
	var seen int64 = -1
	n, m, err := Open(path, func(r io.ReaderAt, size int64) (int, error) {
		seen = size
		return 42, nil
	}, errTestFormat)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if seen != 0 || n != 42 {
		t.Errorf("parser saw size %d and Open returned %d, want 0 and 42", seen, n)
	}
	if m.Data != nil {
		t.Errorf("Data = %v, want nil for an empty file", m.Data)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestCloseNil(t *testing.T) {
	// A format's File made by NewFile has no Mapped: its Close calls this.
	var m *Mapped
	if err := m.Close(); err != nil {
		t.Errorf("Close of a nil Mapped: %v", err)
	}
}

// TestOpenMalformed: every malformed file is refused with the parser's error, prefixed
// with the path and still matching the format's sentinel, and nothing is returned.
func TestOpenMalformed(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "file is 0 bytes"},
		{"short", []byte("TST"), "file is 3 bytes"},
		{"bad magic", append([]byte("XXXX"), 0, 0, 0, 0), `bad magic "XXXX"`},
		{"truncated", testFile(make([]byte, 100))[:50], "payload length 100, but 42 bytes follow"},
		{"trailing bytes", append(testFile([]byte{1, 2}), 9), "payload length 2, but 3 bytes follow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "bad.tst", c.b)
			h, m, err := Open(path, parseTest, errTestFormat)
			if err == nil {
				m.Close()
				t.Fatal("Open accepted a malformed file")
			}
			if h != nil || m != nil {
				t.Errorf("Open returned %v and %v with its error", h, m)
			}
			if !errors.Is(err, errTestFormat) {
				t.Errorf("error %q does not match the format's sentinel", err)
			}
			if !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q prefixed with the path", err, c.want)
			}
		})
	}
}

// TestOpenNotAFile: what cannot be opened, or is not a regular file, is refused before
// the parser runs, with an error that names the path.
func TestOpenNotAFile(t *testing.T) {
	dir := t.TempDir()
	parse := func(io.ReaderAt, int64) (*testHeader, error) {
		t.Error("the parser ran")
		return nil, nil
	}
	missing := filepath.Join(dir, "missing.tst")
	_, m, err := Open(missing, parse, errTestFormat)
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != missing || m != nil {
		t.Errorf("missing file: %v, %v; want a *fs.PathError for %s", m, err, missing)
	}
	if errors.Is(err, errTestFormat) {
		t.Errorf("missing file: %q matches the format's sentinel", err)
	}

	_, m, err = Open(dir, parse, errTestFormat)
	if !errors.Is(err, errTestFormat) || m != nil {
		t.Errorf("folder: %v, %v; want the format's not-regular error", m, err)
	}
	if want := dir + ": " + errTestFormat.Error(); err == nil || err.Error() != want {
		t.Errorf("folder: error %q, want %q", err, want)
	}
}
