package merge

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/formats/gguf/gguftest"
	stt "github.com/gomerge/gomerge/formats/safetensors/safetensorstest"
)

var updateDigests = flag.Bool("update-digests", false, "rewrite testdata/every-method.sha256 from this machine's outputs")

// everyMethodDigests holds the SHA-256 of each output of TestEveryMethodByteIdentical
// and of its inputs, as written on linux/amd64 with the assembly kernels. CI runs the
// test on amd64 and on arm64 (pure-Go kernels, and a compiler that fuses x*y+z into
// FMA there): both must write these bytes, so the same inputs give the same
// checkpoint whatever machine merges them.
const everyMethodDigests = "testdata/every-method.sha256"

// TestEveryMethodByteIdentical is the determinism matrix of docs/reliability.md#determinism: every method
// (sfa and sfa --fisher included), on BF16 safetensors and on Q8_0 GGUF, run at 1, 2
// and 8 threads and then again at 8, must write byte-identical files, and the same
// bytes as on every other architecture (everyMethodDigests).
func TestEveryMethodByteIdentical(t *testing.T) {
	// Relative paths: the outputs record their inputs' paths (provenance), which must
	// not depend on where the test runs for the digests to compare.
	digestFile, err := filepath.Abs(everyMethodDigests)
	must(t, err)
	t.Chdir(t.TempDir())
	dir := "."
	ctx := context.Background()
	digests := map[string]string{} // "ext name" -> SHA-256 of the file
	digest := func(key string, data []byte) {
		sum := sha256.Sum256(data)
		digests[key] = hex.EncodeToString(sum[:])
	}
	formats := map[string]func(name string, seed uint64){
		".safetensors": func(name string, seed uint64) {
			// A vocabulary of 1400: the embedding and lm_head span two chunks (the
			// second of 1664 elements), so the thread counts split tensors too.
			cfg := stt.TinyLlama
			cfg.Vocab = 1400
			ts := stt.Random(cfg, dtype.BF16, 1)
			if seed > 1 {
				ts = stt.Perturb(ts, 0.5, seed)
			}
			if name == "fisher" {
				ts = stt.Fisher(ts, 1e-2, seed)
			}
			must(t, stt.WriteFile(filepath.Join(dir, name+".safetensors"), ts, nil))
		},
		".gguf": func(name string, seed uint64) {
			ts := gguftest.Random(gguftest.Tiny, dtype.Q8_0, 1)
			if seed > 1 {
				ts = gguftest.Perturb(ts, 0.5, seed)
			}
			if name == "fisher" { // positive F32 values of the same shapes
				for i := range ts {
					v := ts[i].Float32()
					for j := range v {
						v[j] = float32(math.Abs(float64(v[j]))) + 1e-3
					}
					ts[i] = gguftest.Tensor{Name: ts[i].Name, DType: dtype.F32, Shape: ts[i].Shape, Data: encodeF32(v)}
				}
			}
			must(t, gguftest.WriteFile(filepath.Join(dir, name+".gguf"), gguftest.Metadata(gguftest.Tiny, name), ts))
		},
	}
	for ext, write := range formats {
		write("base", 1)
		write("m0", 2)
		write("m1", 3)
		write("m2", 4)
		write("fisher", 5)
		path := func(name string) string { return filepath.Join(dir, name+ext) }
		for _, name := range []string{"base", "m0", "m1", "m2", "fisher"} {
			data, err := os.ReadFile(path(name))
			must(t, err)
			digest(ext+" input "+name, data)
		}
		runs := map[string]func(out string, threads int) error{
			"sfa": func(out string, threads int) error {
				_, err := RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m0"), SFA: SFA{Beta: 0.3},
					Job: Job{Out: out, Exec: ExecOptions{Threads: threads}}})
				return err
			},
			"sfa-fisher": func(out string, threads int) error {
				_, err := RunSFA(ctx, SFAJob{Anchor: path("base"), Current: path("m0"), Fisher: path("fisher"), SFA: SFA{Eta: 30},
					Job: Job{Out: out, Exec: ExecOptions{Threads: threads}}})
				return err
			},
		}
		for _, method := range append(testMethods(), "della-inv", "model_stock-filter_wise") {
			name := method
			runs[name] = func(out string, threads int) error {
				_, err := RunMethod(ctx, methodTestJob(name, path, out, threads))
				return err
			}
		}
		// nuslerp's per-row and per-column angles: sums kept per chunk and segment.
		for _, rowWise := range []Switch{SwitchOff, SwitchOn} {
			runs[fmt.Sprint("nuslerp-unflattened-", rowWise)] = func(out string, threads int) error {
				_, err := RunMethod(ctx, MethodJob{Method: "nuslerp", Base: path("base"),
					Models: []Model{{Path: path("m0"), Weight: 0.3, Density: math.NaN()}, {Path: path("m1"), Weight: 0.7, Density: math.NaN()}},
					Params: Params{Geo: GeoParams{Flatten: SwitchOff, RowWise: rowWise}},
					Job:    Job{Out: out, Exec: ExecOptions{Threads: threads}}})
				return err
			}
		}
		runs["multislerp-base"] = func(out string, threads int) error {
			_, err := RunMethod(ctx, MethodJob{Method: "multislerp", Base: path("base"),
				Models: []Model{{Path: path("m0"), Weight: 1, Density: math.NaN()}, {Path: path("m1"), Weight: 2, Density: math.NaN()}, {Path: path("m2"), Weight: 0.5, Density: math.NaN()}},
				Params: Params{Normalize: SwitchOn, Epsilon: 1e-8},
				Job:    Job{Out: out, Exec: ExecOptions{Threads: threads}}})
			return err
		}
		threadCounts := []int{1, 2, 8, 8}
		if raceBuild {
			// One run, and one with eight threads for the detector to watch: four
			// took a minute of the race run.
			threadCounts = []int{1, 8}
		}
		for name, run := range runs {
			var first []byte
			for _, threads := range threadCounts {
				out := filepath.Join(dir, fmt.Sprintf("out-%s-%d%s", name, threads, ext))
				if err := run(out, threads); err != nil {
					t.Fatalf("%s %s threads=%d: %v", ext, name, threads, err)
				}
				data, err := os.ReadFile(out)
				must(t, err)
				os.Remove(out)
				if first == nil {
					first = data
					digest(ext+" "+name, data)
				} else if !bytes.Equal(data, first) {
					t.Errorf("%s %s: threads=%d wrote different bytes than threads=1", ext, name, threads)
				}
			}
		}
	}
	checkDigests(t, digestFile, digests)
}

// checkDigests compares got with the digests in file, everyMethodDigests (or
// rewrites it with -update-digests). The inputs' digests come first in the report:
// if they differ, the fixtures' generator, not a method, is what changed.
func checkDigests(t *testing.T, file string, got map[string]string) {
	t.Helper()
	keys := slices.Sorted(maps.Keys(got))
	if *updateDigests {
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s  %s\n", got[k], k)
		}
		must(t, os.MkdirAll(filepath.Dir(file), 0o755))
		must(t, os.WriteFile(file, []byte(b.String()), 0o644))
		return
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (write it with go test -run TestEveryMethodByteIdentical -update-digests on linux/amd64)", err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		sum, key, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("%s: malformed line %q", file, line)
		}
		want[key] = sum
	}
	slices.SortStableFunc(keys, func(a, b string) int { // inputs first
		return cmp.Compare(b2i(!strings.Contains(a, " input ")), b2i(!strings.Contains(b, " input ")))
	})
	for _, k := range keys {
		if want[k] == "" {
			t.Errorf("%s: no digest for %q (run with -update-digests if it is a new case)", file, k)
		} else if got[k] != want[k] {
			t.Errorf("%s: %s wrote %s, not the %s recorded on linux/amd64", file, k, got[k][:16], want[k][:16])
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("%s: %q is recorded but no longer run", file, k)
		}
	}
}

// methodTestJob is the job the every-method tests run for name, a registered method
// or one of the variants below (method-variant): three models (or the method's most),
// a base and a Fisher where the method takes them, from path(name), written to out.
// The variants are options beyond the defaults that change how a method works
// through a tensor: della's per-entry rescale, model_stock's per-row factor.
func methodTestJob(name string, path func(string) string, out string, threads int) MethodJob {
	variants := map[string]func(*Params){
		"della":                   func(p *Params) { p.Epsilon = 0.2 },
		"della-inv":               func(p *Params) { p.Epsilon, p.Rescaling, p.Rescale = 0.1, SwitchOn, "inverse" },
		"model_stock-filter_wise": func(p *Params) { p.FilterWise = SwitchOn },
	}
	method, _, _ := strings.Cut(name, "-")
	def, _ := methodDefs(method)
	p := Params{Density: 0.3, Lambda: 0.9, T: 0.4, Gamma: 0.02, Seed: 7, Epsilon: 1e-6, Rescale: "l1", SelectTopK: 0.3,
		Geo: GeoParams{MaxIter: 10, Tol: 1e-5, R: 0.1, Alpha: 0.2}}
	if v := variants[name]; v != nil {
		v(&p)
	}
	j := MethodJob{Method: method, Params: p, Job: Job{Out: out, Exec: ExecOptions{Threads: threads}}}
	if def.base {
		j.Base = path("base")
	}
	n := 3
	if def.maxModels > 0 {
		n = def.maxModels
	}
	for i := range n {
		m := Model{Path: path(fmt.Sprint("m", i)), Weight: 0.5 + float64(i), Density: math.NaN()}
		if def.fisher {
			m.Fisher = path("fisher")
		}
		j.Models = append(j.Models, m)
	}
	return j
}
