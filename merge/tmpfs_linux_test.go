package merge

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
	"golang.org/x/sys/unix"
)

// shmDir is a temporary folder on tmpfs (/dev/shm), or "" where /dev/shm is not one.
func shmDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return ""
	}
	dir, err := os.MkdirTemp("/dev/shm", "gomerge-merge-test-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Inputs on tmpfs (the trainer's staged weights) are read a span at a time with
// pread rather than through their mapping (checkpoint's safetensorsSource), and
// every method writes the same bytes from them as from the same files on the test's
// temporary folder, an input on tmpfs beside one elsewhere included.
func TestTmpfsInputsRead(t *testing.T) {
	shm := shmDir(t)
	if shm == "" {
		t.Skip("/dev/shm is not tmpfs here")
	}
	ctx := context.Background()
	disk := t.TempDir()
	plainDisk, _ := writeCompressedInputs(t, disk, 1<<20)
	plainShm := func(n string) string { return filepath.Join(shm, n+".safetensors") }
	for _, n := range []string{"base", "m0", "m1", "m2", "fisher"} {
		b, err := os.ReadFile(plainDisk(n))
		must(t, err)
		must(t, os.WriteFile(plainShm(n), b, 0o644))
	}
	// mixed: the anchor on disk, the rest on tmpfs, as a staged SFA step has them
	mixed := func(n string) string {
		if n == "base" {
			return plainDisk(n)
		}
		return plainShm(n)
	}

	s, err := checkpoint.Open(plainShm("m0"))
	must(t, err)
	rd, ok := s.(checkpoint.RangeDecoder)
	if !ok || !rd.Decodes() {
		t.Fatalf("a safetensors file on tmpfs: RangeDecoder %v, Decodes %v; want both", ok, ok && rd.Decodes())
	}
	first := s.Tensors()[0]
	whole, err := s.Data(first.Name)
	must(t, err)
	part := make([]byte, 10)
	must(t, rd.DecodeRange(first.Name, 6, part))
	if string(part) != string(whole[6:16]) {
		t.Errorf("DecodeRange(%q, 6, 10 bytes) = %x, want %x", first.Name, part, whole[6:16])
	}
	for _, off := range []int64{-1, int64(len(whole)) - 9} {
		err := rd.DecodeRange(first.Name, off, part)
		if err == nil || !strings.Contains(err.Error(), plainShm("m0")) || !strings.Contains(err.Error(), first.Name) {
			t.Errorf("DecodeRange(%q, %d, 10 bytes) of %d: %v, want an error naming the file and tensor", first.Name, off, len(whole), err)
		}
	}
	must(t, s.Close())
	var st unix.Statfs_t
	must(t, unix.Statfs(disk, &st))
	d, err := checkpoint.Open(plainDisk("m0"))
	must(t, err)
	if want := st.Type == unix.TMPFS_MAGIC; checkpoint.Decodes(d) != want {
		t.Errorf("%s: Decodes %v, want %v (on tmpfs: %v)", plainDisk("m0"), checkpoint.Decodes(d), want, want)
	}
	must(t, d.Close())

	type runFunc func(path func(string) string, out string) error
	runs := map[string]runFunc{
		"sfa": func(path func(string) string, out string) error {
			_, err := RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m0"), SFA: SFA{Beta: 0.3},
				Job: Job{Out: out, Exec: ExecOptions{Threads: 2}}})
			return err
		},
		"sfa-fisher": func(path func(string) string, out string) error {
			_, err := RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m1"), Fisher: path("fisher"), SFA: SFA{Eta: 30},
				Job: Job{Out: out, OutDType: dtype.F32, Exec: ExecOptions{Threads: 3}}})
			return err
		},
	}
	for _, method := range testMethods() {
		runs[method] = func(path func(string) string, out string) error {
			_, err := RunMethod(ctx, methodTestJob(method, path, out, 2))
			return err
		}
	}
	for name, run := range runs {
		want := filepath.Join(disk, name+".want.safetensors")
		must(t, run(plainDisk, want))
		for where, path := range map[string]func(string) string{"tmpfs": plainShm, "mixed": mixed} {
			got := filepath.Join(disk, name+"."+where+".safetensors")
			if err := run(path, got); err != nil {
				t.Fatalf("%s, inputs on %s: %v", name, where, err)
			}
			if d := tensorsDiffer(t, got, want); d != "" {
				t.Errorf("%s: the merge of inputs on %s differs from the merge of the same files on disk: %s", name, where, d)
			}
			os.Remove(got)
		}
		os.Remove(want)
	}
}
