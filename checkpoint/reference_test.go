package checkpoint

import (
	"bytes"
	"context"
	"hash/crc32"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

// A reference serves a tensor's ranges, with pread or decoded, the same bytes either
// way; its checksum only where its container records it (a .gmz), and neither for a
// tensor of another dtype or shape.
func TestReferenceRangesAndChecksums(t *testing.T) {
	dir := t.TempDir()
	plain, gz := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "a.gmz")
	st := stt.Random(stt.TinyLlama, dtype.BF16, 1)
	must(t, stt.WriteFile(plain, st, nil))
	if _, err := Compress(context.Background(), plain, gz, CompressOptions{FrameSize: 4096}); err != nil {
		t.Fatal(err)
	}
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	for _, path := range []string{plain, gz} {
		r, err := OpenReference(path)
		must(t, err)
		for _, tn := range st {
			if len(tn.Data) < 3 {
				continue
			}
			off, n := int64(len(tn.Data)/3), len(tn.Data)/3
			dst := make([]byte, n)
			ok, err := r.ReadRange(tn.Name, tn.DType, tn.Shape, off, dst)
			if err != nil || !ok || !bytes.Equal(dst, tn.Data[off:off+int64(n)]) {
				t.Fatalf("%s: tensor %q: bytes [%d, %d): ok %v, %v, or other bytes", path, tn.Name, off, off+int64(n), ok, err)
			}
			if ok, err := r.ReadRange(tn.Name, tn.DType, []int64{1, 1}, 0, dst[:2]); ok || err != nil {
				t.Errorf("%s: tensor %q of another shape: ok %v, %v", path, tn.Name, ok, err)
			}
			crc, ok := r.Checksum(tn.Name, tn.DType, tn.Shape)
			if want := path == gz; ok != want || ok && crc != crc32.Checksum(tn.Data, castagnoli) {
				t.Errorf("%s: tensor %q: checksum %08x, %v; want one (%v) of its bytes", path, tn.Name, crc, ok, want)
			}
			if _, ok := r.Checksum(tn.Name, dtype.F32, tn.Shape); ok {
				t.Errorf("%s: tensor %q as F32: a checksum", path, tn.Name)
			}
		}
		must(t, r.Close())
	}
}
