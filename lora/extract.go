package lora

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"regexp"
	"slices"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/gomerge/gomerge/checkpoint"
	"github.com/gomerge/gomerge/formats/dtype"
)

// ExtractOptions say what Extract captures.
type ExtractOptions struct {
	Rank int // the most a module gets; required, ≥ 1
	// SVEpsilon drops singular values at or under it (mergekit's --sv-epsilon), so a
	// module's rank may be lower than Rank; a module left with none is skipped.
	SVEpsilon float64
	// Embeddings also extracts the embeddings (as lora_embedding_A/B); otherwise
	// they are left out, as mergekit does without --embed-lora.
	Embeddings bool
	// Include and Exclude filter the tensors by name (nil: all, none).
	Include, Exclude *regexp.Regexp
	// ExactBelow is the smaller dimension under which the exact SVD is used (0:
	// 512); larger matrices take the randomized SVD.
	ExactBelow int
	DType      dtype.DType // of the factors (default F32)
}

// ExtractReport is what Extract did, per matrix.
type ExtractReport struct {
	Output  string          `json:"output"`
	Files   []string        `json:"output_files"`
	Modules []ModuleReport  `json:"modules"`
	Skipped []SkippedTensor `json:"skipped,omitempty"`
}

// ModuleReport is one extracted matrix: its rank, the relative error
// ‖ΔW − B·A‖/‖ΔW‖ and the share of ‖ΔW‖² the kept singular values hold.
type ModuleReport struct {
	Tensor     string  `json:"tensor"`
	Rank       int     `json:"rank"`
	RelError   float64 `json:"relative_error"`
	EnergyKept float64 `json:"energy_kept"`
	Randomized bool    `json:"randomized"`
}

// SkippedTensor is a tensor that differs between base and model but is not in the
// adapter, and why.
type SkippedTensor struct {
	Tensor string `json:"tensor"`
	Reason string `json:"reason"`
}

// isEmbedding says which tensors are token embeddings, by the names transformers
// gives them (llama, mistral and qwen: embed_tokens; GPT-2: wte; BERT-likes:
// word_embeddings) and llama.cpp's (token_embd).
func isEmbedding(name string) bool {
	for _, s := range []string{"embed_tokens.weight", "wte.weight", "word_embeddings.weight", "token_embd.weight"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// Extract computes an adapter whose ΔW approximates model − base for every 2-D float
// tensor that differs (a truncated SVD of each delta: B = U·√S, A = √S·Vᵀ, with
// lora_alpha = r so that the scale is 1), and writes it as a PEFT folder at out.
func Extract(ctx context.Context, base, model checkpoint.Source, out string, o ExtractOptions) (*ExtractReport, error) {
	if o.Rank < 1 || o.Rank > maxRank {
		return nil, fmt.Errorf("rank %d: want 1 to %d", o.Rank, maxRank)
	}
	if o.ExactBelow == 0 {
		o.ExactBelow = exactSVDBelow
	}
	bIndex := checkpoint.TensorIndex(base)
	rep := &ExtractReport{Output: out}
	ad := &AdapterOut{DType: o.DType, Base: base.Path()}
	if isGGUFPath(out) {
		if base.Format() != checkpoint.GGUF {
			return nil, fmt.Errorf("%s: a GGUF adapter is extracted from GGUF models (its tensor names are theirs)", out)
		}
		arch, err := ggufArch(base.Path())
		if err != nil {
			return nil, err
		}
		ad.Arch = arch
	}
	for _, mt := range model.Tensors() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if (o.Include != nil && !o.Include.MatchString(mt.Name)) || (o.Exclude != nil && o.Exclude.MatchString(mt.Name)) {
			continue
		}
		bt := bIndex[mt.Name]
		if bt == nil {
			return nil, fmt.Errorf("%s: tensor %q: the base %s has no tensor of that name: %w", mt.File, mt.Name, base.Path(), ErrBadInput)
		}
		if !slices.Equal(bt.Shape, mt.Shape) {
			return nil, fmt.Errorf("%s: tensor %q: shape %v, but %v in the base %s: %w", mt.File, mt.Name, mt.Shape, bt.Shape, bt.File, ErrBadInput)
		}
		if !mt.DType.IsFloat() && !mt.DType.IsBlock() {
			continue
		}
		D, err := delta(base, model, *bt, mt)
		if err != nil {
			return nil, err
		}
		if D == nil {
			continue // unchanged
		}
		emb := isEmbedding(mt.Name)
		switch {
		case len(mt.Shape) != 2 || !strings.HasSuffix(mt.Name, ".weight"):
			rep.Skipped = append(rep.Skipped, SkippedTensor{mt.Name, "changed, but not a matrix: LoRA cannot hold it"})
			continue
		case emb && !o.Embeddings:
			rep.Skipped = append(rep.Skipped, SkippedTensor{mt.Name, "an embedding (--embeddings extracts it)"})
			continue
		}
		rows, cols := int(mt.Shape[0]), int(mt.Shape[1])
		Dm := mat.NewDense(rows, cols, D)
		h := fnv.New64a()
		h.Write([]byte(mt.Name))
		tr, err := truncatedSVD(Dm, o.Rank, o.ExactBelow, h.Sum64())
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", mt.File, mt.Name, err)
		}
		k := 0
		for k < len(tr.S) && tr.S[k] > o.SVEpsilon {
			k++
		}
		if k == 0 {
			rep.Skipped = append(rep.Skipped, SkippedTensor{mt.Name, "every singular value is at or under --sv-epsilon"})
			continue
		}
		total := frob2(Dm)
		kept := sumSquares(tr.S[:k])
		m := OutModule{Name: strings.TrimSuffix(mt.Name, ".weight"), Rank: k, Alpha: float64(k), Out: int64(rows), In: int64(cols), Embedding: emb}
		// B = U·√S (rows×k), A = √S·Vᵀ (k×cols): the balanced split keeps both factors
		// in the same range, which matters when they are stored as bfloat16.
		Bf, Af := make([]float64, rows*k), make([]float64, k*cols)
		for j := range k {
			rs := math.Sqrt(tr.S[j])
			for i := range rows {
				Bf[i*k+j] = tr.U.At(i, j) * rs
			}
			for i := range cols {
				Af[j*cols+i] = tr.V.At(i, j) * rs
			}
		}
		m.A, m.B = to32(Af), to32(Bf)
		if emb {
			// lora_embedding_A is r×vocab and B dim×r: ΔW = (B·A)ᵀ, so A = Bfᵀ, B = Afᵀ.
			m.A, m.B = to32(transpose(Bf, rows, k)), to32(transpose(Af, k, cols))
			m.Out, m.In = int64(cols), int64(rows)
		}
		// The error of the factors as stored, not of the exact SVD.
		res := residual(D, rows, cols, m, ad.DType)
		rep.Modules = append(rep.Modules, ModuleReport{Tensor: mt.Name, Rank: k, RelError: math.Sqrt(res / total),
			EnergyKept: kept / total, Randomized: min(rows, cols) >= o.ExactBelow && o.Rank+svdOversample < min(rows, cols)})
		ad.Modules = append(ad.Modules, m)
	}
	files, err := WriteAdapter(ctx, out, ad)
	if err != nil {
		return nil, err
	}
	rep.Files = files
	return rep, nil
}

// delta is model − base in float64, nil when they are equal. Both are decoded to
// float32 first (their exact values), so that the float64 delta is the only large
// buffer.
func delta(base, model checkpoint.Source, bt, mt checkpoint.TensorMeta) ([]float64, error) {
	bw, err := decode32(base, bt)
	if err != nil {
		return nil, err
	}
	mw, err := decode32(model, mt)
	if err != nil {
		return nil, err
	}
	d := make([]float64, len(mw))
	same := true
	for i := range mw {
		d[i] = float64(mw[i]) - float64(bw[i])
		if d[i] != 0 {
			same = false
		}
	}
	if same {
		return nil, nil
	}
	return d, nil
}

func decode32(s checkpoint.Source, t checkpoint.TensorMeta) ([]float32, error) {
	data, err := s.Data(t.Name)
	if err != nil {
		return nil, err
	}
	f := make([]float32, t.NumElements())
	if err := dtype.Decode(f, data, t.DType); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", t.File, t.Name, err)
	}
	for i, v := range f {
		if !finite(float64(v)) {
			return nil, fmt.Errorf("%s: tensor %q: element %d is %v: %w", t.File, t.Name, i, v, ErrBadInput)
		}
	}
	return f, nil
}

func to32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

func transpose(x []float64, rows, cols int) []float64 {
	out := make([]float64, len(x))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = x[i*cols+j]
		}
	}
	return out
}

// residual is ‖D − ΔW‖² for m's factors rounded to dt, ΔW computed as apply does.
func residual(D []float64, rows, cols int, m OutModule, dt dtype.DType) float64 {
	if dt == dtype.Invalid {
		dt = dtype.F32
	}
	round := func(v []float32) []float64 {
		buf := make([]byte, dt.Bytes(int64(len(v))))
		dtype.Encode(buf, v, dt)
		f := make([]float32, len(v))
		dtype.Decode(f, buf, dt)
		out := make([]float64, len(f))
		for i, x := range f {
			out[i] = float64(x)
		}
		return out
	}
	A, B := round(m.A), round(m.B)
	var L, R []float64
	if m.Embedding {
		L, R = transpose(A, m.Rank, rows), transpose(B, cols, m.Rank)
	} else {
		L, R = B, A
	}
	// Row by row, so that no second rows×cols buffer is needed.
	var s float64
	forRows(rows, cols, L, R, m.Rank, make([]float64, cols), func(i int, row []float64) {
		for c, v := range row {
			e := D[i*cols+c] - v
			s += e * e
		}
	})
	return s
}
