package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestInputReadsFlag: sfa, a method and distance take --input-reads; map, copy and
// auto give the same bytes (and distances), the report says how each input was
// read, and an unknown value is a usage error naming the flag.
func TestInputReadsFlag(t *testing.T) {
	f := newCLIFixture(t)
	var first []byte
	var firstDist string
	for _, reads := range []string{"map", "copy", "auto"} {
		out := filepath.Join(f.dir, "sfa."+reads+".safetensors")
		code, stdout, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.folder, "--out", out, "--input-reads", reads, "--json")
		if code != 0 {
			t.Fatalf("sfa --input-reads %s: exit %d: %s", reads, code, stderr)
		}
		var rep struct {
			InputReads []string `json:"input_reads"`
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		// The fixture's files are too small for auto's probe, and not on tmpfs here
		// unless the test's folder is.
		if want := map[string]string{"map": "map", "copy": "copy"}[reads]; want != "" && !slices.Equal(rep.InputReads, []string{want, want}) {
			t.Errorf("sfa --input-reads %s: report's input_reads %q, want [%s %s]", reads, rep.InputReads, want, want)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		ties := filepath.Join(f.dir, "ties."+reads+".safetensors")
		if code, _, stderr := gomerge(t, "ties", "--base", f.anchor, f.current, f.folder, "--density", "0.3", "--out", ties, "--input-reads", reads); code != 0 {
			t.Fatalf("ties --input-reads %s: exit %d: %s", reads, code, stderr)
		}
		tb, err := os.ReadFile(ties)
		if err != nil {
			t.Fatal(err)
		}
		code, dist, stderr := gomerge(t, "distance", f.anchor, f.current, "--json", "--input-reads", reads)
		if code != 0 {
			t.Fatalf("distance --input-reads %s: exit %d: %s", reads, code, stderr)
		}
		got = append(got, tb...)
		if first == nil {
			first, firstDist = got, dist
			continue
		}
		if !bytes.Equal(got, first) {
			t.Errorf("--input-reads %s: the outputs differ from --input-reads map's", reads)
		}
		if dist != firstDist {
			t.Errorf("--input-reads %s: distance %s, want %s (map's)", reads, dist, firstDist)
		}
	}
	code, _, stderr := gomerge(t, "sfa", "--anchor", f.anchor, "--current", f.current, "--out", filepath.Join(f.dir, "x.safetensors"), "--input-reads", "mmap")
	if code != 2 || !strings.Contains(stderr, "--input-reads") {
		t.Errorf("--input-reads mmap: exit %d, stderr %q; want 2 and the flag named", code, stderr)
	}
}
