package recipe

import (
	"fmt"

	"github.com/gomerge/gomerge/formats/dtype"
	"github.com/gomerge/gomerge/merge"
)

// The recipe's types: a parsed recipe (Recipe, Step, models, slices), where its
// parts were written (Pos, Error), and what planning it gives (Plan, StepPlan).

// Pos is a place in a recipe file, for messages.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Error is a problem with a recipe, at a place in its file. A recipe is an input
// file, so its errors are bad input (exit status 3), like a malformed checkpoint's.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Is makes a recipe error a merge.ErrBadInput for errors.Is.
func (e *Error) Is(target error) bool { return target == merge.ErrBadInput }

func errorf(pos Pos, format string, args ...any) error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// Recipe is a parsed recipe file: one mergekit configuration, or several YAML
// documents (mergekit-multi's format) whose named steps later steps refer to.
type Recipe struct {
	File  string
	Steps []*Step // in file order

	byName map[string]*Step
}

// Step is one merge: one mergekit configuration.
type Step struct {
	Pos    Pos    // where its document starts
	Name   string // "" for the final step, written to the command's --out
	Out    *Str   // gomerge's `out:`, where this step writes
	Method Str    // merge_method
	Base   *ModelRef
	Models []*ModelEntry
	Slices []*Slice
	Params Params

	DType, OutDType *Str
	TokenizerSource *ModelRef // "base", a model, or "union"; the tokenizer block's source
	Tokenizer       *TokenizerBlock
	ChatTemplate    *Str
}

// Str is a string value and where it was written.
type Str struct {
	Value string
	Pos   Pos
}

// ModelRef names a model: a local path, or an earlier step's name.
type ModelRef struct {
	Name string
	Pos  Pos
}

// ModelEntry is one item of `models:`.
type ModelEntry struct {
	Pos    Pos
	Model  ModelRef
	Params Params
	Fisher *Str // gomerge's method fisher: the model's diagonal Fisher
}

// Slice is one item of `slices:`: output layers built from ranges of the sources'
// layers.
type Slice struct {
	Pos     Pos
	Sources []*SliceSource
	Base    *ModelRef
	Params  Params
}

// SliceSource is one source of a slice: layers [Start, End) of a model.
type SliceSource struct {
	Pos        Pos
	Model      ModelRef
	Start, End int
	Params     Params
}

// Options are what the command line adds to a recipe.
type Options struct {
	// Out is where the final (unnamed) step writes, or the only step of a one-step
	// recipe; it overrides that step's out:.
	Out string
	// IntermediateDir holds the outputs of named steps that have no out:, each in a
	// folder named after its step.
	IntermediateDir string
	// Resolve turns a Hugging Face id (org/name[@revision]) that is no local path
	// into a local folder or file, downloading it if it may; the command line passes
	// a hub.Client's. Nil: the local Hugging Face cache only (hub.Client.Cached).
	Resolve func(name string) (string, error)
}

// Plan is what a recipe will do, step by step, in execution order.
type Plan struct {
	Recipe       string      `json:"recipe"`
	Steps        []*StepPlan `json:"steps"`
	BytesRead    int64       `json:"bytes_read"`
	BytesWritten int64       `json:"bytes_written"`
}

// StepPlan is what one step will do.
type StepPlan struct {
	Name         string  `json:"name"` // "" for the final step
	Method       string  `json:"method"`
	Inputs       []Input `json:"inputs"`
	Output       string  `json:"output"`
	Tensors      int     `json:"tensors"`
	Layers       int     `json:"layers,omitempty"`
	PerTensor    bool    `json:"per_tensor"` // parameters vary by tensor (filters, gradients)
	BytesRead    int64   `json:"bytes_read"`
	BytesWritten int64   `json:"bytes_written"`

	step     *Step
	spec     *merge.Method
	pos      []position // the merge's inputs: the base (if any) first
	views    []*view    // per position, when slices rename layers; nil otherwise
	outMetas []merge.TensorMeta
	outDType dtype.DType
	values   map[string]*tensorValues
	first    *tensorValues // the first tensor's values, for the report
	vary     bool
	extras   extras
	refDir   string // the folder the engine copies non-weight files from
	refPos   int
	layers   int
	origins  map[string]*origin
}

// Input is one checkpoint a step reads.
type Input struct {
	Role string `json:"role"`
	Path string `json:"path"`
	Step string `json:"step,omitempty"` // the step whose output it is
	// Layers, for a slice recipe, says which layers of which models the input
	// stacks, e.g. "a.safetensors[0:8] + b[4:12]".
	Layers string `json:"layers,omitempty"`
}
