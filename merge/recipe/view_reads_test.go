package recipe

import (
	"testing"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/merge"
)

// mappedCheckpoint is a mapped checkpoint (checkpoint.MappedDecoder) that prefers
// its mapping; decodingCheckpoint is a compressed one.
type mappedCheckpoint struct{ checkpoint.RangeDecoder }

func (mappedCheckpoint) Decodes() bool      { return false }
func (mappedCheckpoint) Mapped() bool       { return true }
func (mappedCheckpoint) MappingTraps() bool { return false }

type decodingCheckpoint struct{ checkpoint.RangeDecoder }

func (decodingCheckpoint) Decodes() bool { return true }

// TestViewReadsItsOwnCheckpoints: a view is mapped, and can be read either way, when
// the checkpoints it takes tensors from are, whatever else its step opened (a
// compressed checkpoint for another input); over a compressed one it decodes.
func TestViewReadsItsOwnCheckpoints(t *testing.T) {
	opened := map[string]merge.Source{"a.safetensors": mappedCheckpoint{}, "b.gmz": decodingCheckpoint{}}
	overA := &viewSource{v: &view{paths: []string{"a.safetensors"}}, srcs: opened}
	if !overA.Mapped() || overA.Decodes() {
		t.Errorf("a view over a mapped checkpoint, beside a compressed one: Mapped %v, Decodes %v; want true, false", overA.Mapped(), overA.Decodes())
	}
	if checkpoint.ReadsRanges(overA, checkpoint.ReadsMapped) || !checkpoint.ReadsRanges(overA, checkpoint.ReadsCopied) {
		t.Error("a view over a mapped checkpoint does not follow the policy")
	}
	overB := &viewSource{v: &view{paths: []string{"a.safetensors", "b.gmz"}}, srcs: opened}
	if overB.Mapped() || !overB.Decodes() || !checkpoint.ReadsRanges(overB, checkpoint.ReadsMapped) {
		t.Errorf("a view over a compressed checkpoint: Mapped %v, Decodes %v; want false, true, and decoded whatever the policy", overB.Mapped(), overB.Decodes())
	}
}
