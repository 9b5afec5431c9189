package merge

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
)

// TestPlanInputReads: Reads decides how a safetensors input's operands are read:
// mapped (Data, no load) or copied in ranges (a deferred load with a range reader),
// and a compressed input decodes whatever it says.
func TestPlanInputReads(t *testing.T) {
	dir := t.TempDir()
	plain, gz := writeCompressedInputs(t, dir, 1<<20)
	for _, c := range []struct {
		path   string
		reads  checkpoint.Reads
		copied bool
	}{
		{plain("m0"), checkpoint.ReadsMapped, false},
		{plain("m0"), checkpoint.ReadsCopied, true},
		{gz("m2"), checkpoint.ReadsMapped, true},
		{gz("m2"), checkpoint.ReadsCopied, true},
	} {
		s, err := Open(c.path)
		must(t, err)
		plan, err := BuildPlan([]Source{s}, nil, PlanOptions{Reads: c.reads})
		must(t, err)
		for _, tp := range plan.Tensors {
			op := tp.Copy
			if tp.Merge {
				op = tp.In[0]
			}
			if copied := op.load != nil && op.read != nil && op.Data == nil; copied != c.copied {
				t.Errorf("%s, Reads %d: tensor %q read in ranges %v, want %v", filepath.Base(c.path), c.reads, tp.Name, copied, c.copied)
			}
		}
		must(t, s.Close())
	}
}

// TestEveryMethodInputReads: every method, and sfa with a Fisher, writes the same
// bytes whether the engine takes its safetensors inputs from their mappings or
// copies them a span at a time (--input-reads map and copy), and so whatever the
// probe that picks between them decides on a given machine.
func TestEveryMethodInputReads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	plain, _ := writeCompressedInputs(t, dir, 1<<20)
	type runFunc func(reads checkpoint.Reads, hold int64, out string) (*Report, error)
	runs := map[string]runFunc{
		"sfa": func(reads checkpoint.Reads, hold int64, out string) (*Report, error) {
			return RunSFA(ctx, SFAJob{Anchor: plain("base"), Current: plain("m0"), SFA: SFA{Beta: 0.3},
				Job: Job{Out: out, Reads: reads, Exec: ExecOptions{Threads: 2, HoldBytes: hold}}})
		},
		"sfa-fisher": func(reads checkpoint.Reads, hold int64, out string) (*Report, error) {
			return RunSFA(ctx, SFAJob{Anchor: plain("base"), Current: plain("m1"), Fisher: plain("fisher"), SFA: SFA{Eta: 30},
				Job: Job{Out: out, OutDType: dtype.F32, Reads: reads, Exec: ExecOptions{Threads: 3, HoldBytes: hold}}})
		},
	}
	for _, method := range append(testMethods(), "della-inv", "model_stock-filter_wise") {
		name := method
		runs[name] = func(reads checkpoint.Reads, hold int64, out string) (*Report, error) {
			j := methodTestJob(name, plain, out, 2)
			j.Job.Reads = reads
			j.Job.Exec.HoldBytes = hold
			return RunMethod(ctx, j)
		}
	}
	// The report says how the inputs were read: the policy reached the plan.
	readAs := func(rep *Report, want string) bool {
		for _, r := range rep.InputReads {
			if r != want {
				return false
			}
		}
		return len(rep.InputReads) == len(rep.Inputs)
	}
	for name, run := range runs {
		mapped := filepath.Join(dir, name+".map.safetensors")
		rep, err := run(checkpoint.ReadsMapped, 0, mapped)
		if err != nil {
			t.Fatalf("%s, inputs mapped: %v", name, err)
		}
		if !readAs(rep, "map") {
			t.Errorf("%s, inputs mapped: the report's input_reads %q", name, rep.InputReads)
		}
		want, err := os.ReadFile(mapped)
		must(t, err)
		// Copied, with the engine's arena (which holds nothing this small), with
		// none, and with one that holds every tensor a kernel's passes read again.
		for _, hold := range []int64{0, -1, 1 << 30} {
			copied := filepath.Join(dir, name+".copy.safetensors")
			if rep, err = run(checkpoint.ReadsCopied, hold, copied); err != nil {
				t.Fatalf("%s, inputs copied, HoldBytes %d: %v", name, hold, err)
			}
			if !readAs(rep, "copy") {
				t.Errorf("%s, inputs copied: the report's input_reads %q", name, rep.InputReads)
			}
			got, err := os.ReadFile(copied)
			must(t, err)
			if !bytes.Equal(got, want) {
				t.Errorf("%s, HoldBytes %d: the merge of inputs copied in spans differs from the merge of the same inputs mapped (%s)", name, hold, tensorsDiffer(t, copied, mapped))
			}
			os.Remove(copied)
		}
		os.Remove(mapped)
	}
}

// mappedSource is a checkpoint.MappedDecoder whose preference is set: copied because
// it is on tmpfs (onTmpfs) or because its probe found the mapping traps (traps).
type mappedSource struct {
	checkpoint.RangeDecoder
	onTmpfs, traps bool
}

func (s mappedSource) Decodes() bool      { return s.onTmpfs || s.traps }
func (s mappedSource) Mapped() bool       { return true }
func (s mappedSource) MappingTraps() bool { return s.traps }

// decodingSource is a Decoder that is not mapped (a compressed checkpoint).
type decodingSource struct{ checkpoint.RangeDecoder }

func (decodingSource) Decodes() bool { return true }

// TestResolveReads: ReadsAuto copies every mapped input once one of them found its
// mapping traps, and otherwise leaves each to itself (a file on tmpfs copied, the
// rest mapped); a source that decodes anyway does not count; an explicit policy
// stands.
func TestResolveReads(t *testing.T) {
	mapped, tmpfs, traps, decodes := mappedSource{}, mappedSource{onTmpfs: true}, mappedSource{traps: true}, decodingSource{}
	for _, c := range []struct {
		r         checkpoint.Reads
		in, aux   []Source
		want      checkpoint.Reads
		situation string
	}{
		{checkpoint.ReadsAuto, []Source{mapped, mapped}, nil, checkpoint.ReadsAuto, "no mapping traps"},
		{checkpoint.ReadsAuto, []Source{mapped, tmpfs}, nil, checkpoint.ReadsAuto, "one input on tmpfs"},
		{checkpoint.ReadsAuto, []Source{mapped, traps}, nil, checkpoint.ReadsCopied, "one input's mapping traps"},
		{checkpoint.ReadsAuto, []Source{mapped}, []Source{traps}, checkpoint.ReadsCopied, "an auxiliary source's mapping traps"},
		{checkpoint.ReadsAuto, []Source{mapped, decodes}, nil, checkpoint.ReadsAuto, "a compressed input decodes"},
		{checkpoint.ReadsMapped, []Source{traps}, nil, checkpoint.ReadsMapped, "told to map"},
		{checkpoint.ReadsCopied, []Source{mapped}, nil, checkpoint.ReadsCopied, "told to copy"},
	} {
		if got := resolveReads(c.r, c.in, c.aux); got != c.want {
			t.Errorf("%s: resolveReads(%d) = %d, want %d", c.situation, c.r, got, c.want)
		}
	}
	// Under the resolved ReadsAuto each source follows its own preference.
	if checkpoint.ReadsRanges(mapped, checkpoint.ReadsAuto) || !checkpoint.ReadsRanges(tmpfs, checkpoint.ReadsAuto) {
		t.Error("under ReadsAuto a mapped file is not mapped, or a file on tmpfs not copied")
	}
}
