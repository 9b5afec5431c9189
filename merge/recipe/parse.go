package recipe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// Parsing: YAML nodes to a Recipe, every value checked where it was written.

// maxNodes bounds the YAML nodes one recipe may expand to, aliases included, so that
// a small file cannot make the parser do unbounded work ("billion laughs").
const maxNodes = 1 << 20

// maxRecipeBytes bounds a recipe file; real ones are a few kilobytes.
const maxRecipeBytes = 16 << 20

// Parse reads a recipe. file names it in messages.
func Parse(file string, data []byte) (*Recipe, error) {
	if len(data) > maxRecipeBytes {
		return nil, errorf(Pos{File: file}, "recipe is %d bytes, more than the %d a recipe may have", len(data), maxRecipeBytes)
	}
	p := &parser{file: file}
	r := &Recipe{File: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errorf(Pos{File: file}, "%v", err) // yaml's message names the line
		}
		if len(doc.Content) == 0 {
			continue
		}
		st, err := p.step(doc.Content[0])
		if err != nil {
			return nil, err
		}
		r.Steps = append(r.Steps, st)
	}
	if len(r.Steps) == 0 {
		return nil, errorf(Pos{File: file}, "empty recipe: want a mergekit configuration (merge_method, models or slices, ...)")
	}
	if err := r.checkSteps(); err != nil {
		return nil, err
	}
	return r, nil
}

type parser struct {
	file  string
	nodes int
}

func (p *parser) pos(n *yaml.Node) Pos { return Pos{File: p.file, Line: n.Line} }

// resolve follows aliases and counts nodes against maxNodes.
func (p *parser) resolve(n *yaml.Node) (*yaml.Node, error) {
	for depth := 0; n.Kind == yaml.AliasNode; depth++ {
		if n.Alias == nil || depth > 100 {
			return nil, errorf(p.pos(n), "bad YAML alias")
		}
		n = n.Alias
	}
	p.nodes++
	if p.nodes > maxNodes {
		return nil, errorf(p.pos(n), "recipe expands to more than %d YAML nodes", maxNodes)
	}
	return n, nil
}

// mapping calls f for each key of a mapping node, in order, refusing duplicates.
func (p *parser) mapping(n *yaml.Node, what string, f func(key string, kpos Pos, v *yaml.Node) error) error {
	n, err := p.resolve(n)
	if err != nil {
		return err
	}
	if n.Kind != yaml.MappingNode {
		return errorf(p.pos(n), "%s: want a mapping (key: value), got %s", what, kindName(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, err := p.resolve(n.Content[i])
		if err != nil {
			return err
		}
		if k.Kind != yaml.ScalarNode {
			return errorf(p.pos(k), "%s: a key must be a plain name", what)
		}
		if line, dup := seen[k.Value]; dup {
			return errorf(p.pos(k), "%s: key %q given twice (first at line %d)", what, k.Value, line)
		}
		seen[k.Value] = k.Line
		v, err := p.resolve(n.Content[i+1])
		if err != nil {
			return err
		}
		if err := f(k.Value, p.pos(k), v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) sequence(n *yaml.Node, what string) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, errorf(p.pos(n), "%s: want a list, got %s", what, kindName(n))
	}
	out := make([]*yaml.Node, 0, len(n.Content))
	for _, c := range n.Content {
		c, err := p.resolve(c)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func (p *parser) str(n *yaml.Node, what string) (Str, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || n.Value == "" {
		return Str{}, errorf(p.pos(n), "%s: want a string, got %s", what, kindName(n))
	}
	return Str{Value: n.Value, Pos: p.pos(n)}, nil
}

func (p *parser) model(n *yaml.Node, what string) (*ModelRef, error) {
	if n.Kind == yaml.MappingNode {
		return p.modelMapping(n, what)
	}
	s, err := p.str(n, what)
	if err != nil {
		return nil, err
	}
	return &ModelRef{Name: s.Value, Pos: s.Pos}, nil
}

// refused are mergekit keys gomerge knows and does not support, with why.
var refused = map[string]string{
	"modules": "per-module configurations (modules:) are not supported; use models or slices",
}

func (p *parser) step(n *yaml.Node) (*Step, error) {
	st := &Step{Pos: p.pos(n), Params: Params{}}
	n, err := p.resolve(n)
	if err != nil {
		return nil, err
	}
	st.Pos = p.pos(n)
	var modelsNode, slicesNode *yaml.Node
	err = p.mapping(n, "recipe", func(key string, kpos Pos, v *yaml.Node) error {
		var err error
		switch key {
		case "name":
			var s Str
			s, err = p.str(v, key)
			st.Name = s.Value
			if err == nil && !stepName.MatchString(s.Value) {
				err = errorf(s.Pos, "name %q: want letters, digits, '.', '_' or '-' (it names the step's output folder)", s.Value)
			}
		case "out":
			var s Str
			s, err = p.str(v, key)
			st.Out = &s
		case "merge_method":
			st.Method, err = p.str(v, key)
		case "base_model":
			st.Base, err = p.model(v, key)
		case "models":
			modelsNode = v
		case "slices":
			slicesNode = v
		case "parameters":
			st.Params, err = p.params(v, key)
		case "dtype", "out_dtype":
			var s Str
			s, err = p.str(v, key)
			if key == "dtype" {
				st.DType = &s
			} else {
				st.OutDType = &s
			}
		case "tokenizer_source":
			if st.Tokenizer != nil {
				return errorf(kpos, "give tokenizer_source or a tokenizer: block, not both")
			}
			st.TokenizerSource, err = p.model(v, key)
		case "tokenizer":
			if st.TokenizerSource != nil {
				return errorf(kpos, "give tokenizer_source or a tokenizer: block, not both")
			}
			err = p.tokenizerBlock(v, st)
		case "chat_template":
			var s Str
			s, err = p.str(v, key)
			st.ChatTemplate = &s
		default:
			if why, ok := refused[key]; ok {
				return errorf(kpos, "%s", why)
			}
			return errorf(kpos, "unknown key %q (a recipe has name, out, merge_method, base_model, models, slices, parameters, dtype, out_dtype, tokenizer_source, tokenizer, chat_template)", key)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if st.Method.Value == "" {
		return nil, errorf(st.Pos, "no merge_method")
	}
	if _, ok := lookupMethod(st.Method.Value); !ok {
		if unsupportedMethod(st.Method.Value) {
			return nil, errorf(st.Method.Pos, "merge_method %q is mergekit's; gomerge does not implement it (it has %s)", st.Method.Value, supportedMethodsText())
		}
		return nil, errorf(st.Method.Pos, "unknown merge_method %q (gomerge has %s)", st.Method.Value, supportedMethodsText())
	}
	switch {
	case modelsNode != nil && slicesNode != nil, modelsNode == nil && slicesNode == nil:
		return nil, errorf(st.Pos, "give exactly one of models and slices")
	case modelsNode != nil:
		items, err := p.sequence(modelsNode, "models")
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			m, err := p.modelEntry(it)
			if err != nil {
				return nil, err
			}
			st.Models = append(st.Models, m)
		}
		if len(st.Models) == 0 {
			return nil, errorf(p.pos(modelsNode), "models: the list is empty")
		}
	default:
		items, err := p.sequence(slicesNode, "slices")
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			s, err := p.slice(it)
			if err != nil {
				return nil, err
			}
			st.Slices = append(st.Slices, s)
		}
		if len(st.Slices) == 0 {
			return nil, errorf(p.pos(slicesNode), "slices: the list is empty")
		}
	}
	if err := st.checkParams(); err != nil {
		return nil, err
	}
	return st, nil
}

var stepName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

func (p *parser) modelEntry(n *yaml.Node) (*ModelEntry, error) {
	m := &ModelEntry{Pos: p.pos(n), Params: Params{}}
	var haveModel bool
	err := p.mapping(n, "models item", func(key string, kpos Pos, v *yaml.Node) error {
		switch key {
		case "model":
			r, err := p.model(v, key)
			if err != nil {
				return err
			}
			m.Model, haveModel = *r, true
			return nil
		case "parameters":
			var err error
			m.Params, err = p.params(v, key)
			return err
		case "fisher":
			s, err := p.str(v, key)
			m.Fisher = &s
			return err
		}
		return errorf(kpos, "unknown key %q in a models item (it has model, parameters, and for method fisher, fisher)", key)
	})
	if err != nil {
		return nil, err
	}
	if !haveModel {
		return nil, errorf(m.Pos, "models item without model")
	}
	return m, nil
}

func (p *parser) slice(n *yaml.Node) (*Slice, error) {
	s := &Slice{Pos: p.pos(n), Params: Params{}}
	var sources *yaml.Node
	err := p.mapping(n, "slices item", func(key string, kpos Pos, v *yaml.Node) error {
		var err error
		switch key {
		case "sources":
			sources = v
		case "base_model":
			s.Base, err = p.model(v, key)
		case "parameters":
			s.Params, err = p.params(v, key)
		case "residual_weight":
			// mergekit's configuration declares it and no merge of mergekit reads it:
			// accepted, with no effect, so that such recipes run as they do there.
			_, err = p.number(v, key)
		default:
			err = errorf(kpos, "unknown key %q in a slices item (it has sources, base_model, parameters)", key)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if sources == nil {
		return nil, errorf(s.Pos, "slices item without sources")
	}
	items, err := p.sequence(sources, "sources")
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		src := &SliceSource{Pos: p.pos(it), Params: Params{}, Start: -1}
		var haveModel bool
		err := p.mapping(it, "sources item", func(key string, kpos Pos, v *yaml.Node) error {
			switch key {
			case "model":
				r, err := p.model(v, key)
				if err != nil {
					return err
				}
				src.Model, haveModel = *r, true
				return nil
			case "layer_range":
				return p.layerRange(v, src)
			case "parameters":
				var err error
				src.Params, err = p.params(v, key)
				return err
			}
			return errorf(kpos, "unknown key %q in a sources item (it has model, layer_range, parameters)", key)
		})
		if err != nil {
			return nil, err
		}
		if !haveModel || src.Start < 0 {
			return nil, errorf(src.Pos, "a sources item needs model and layer_range")
		}
		s.Sources = append(s.Sources, src)
	}
	if len(s.Sources) == 0 {
		return nil, errorf(s.Pos, "slices item with no sources")
	}
	return s, nil
}

// maxLayer bounds layer indices; no model has a million layers.
const maxLayer = 1 << 20

func (p *parser) layerRange(n *yaml.Node, src *SliceSource) error {
	items, err := p.sequence(n, "layer_range")
	if err != nil {
		return err
	}
	if len(items) != 2 {
		return errorf(p.pos(n), "layer_range: want [start, end], got %d numbers", len(items))
	}
	var v [2]int
	for i, it := range items {
		if it.Kind != yaml.ScalarNode || it.Tag != "!!int" || it.Decode(&v[i]) != nil || v[i] < 0 || v[i] > maxLayer {
			return errorf(p.pos(it), "layer_range: %s is not a layer number", kindName(it))
		}
	}
	if v[0] >= v[1] {
		return errorf(p.pos(n), "layer_range [%d, %d]: the end (exclusive) must be after the start", v[0], v[1])
	}
	src.Start, src.End = v[0], v[1]
	return nil
}

func (p *parser) params(n *yaml.Node, what string) (Params, error) {
	ps := Params{}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return ps, nil // `parameters:` with nothing under it
	}
	err := p.mapping(n, what, func(key string, kpos Pos, v *yaml.Node) error {
		s, err := p.setting(v, key, true)
		if err != nil {
			return err
		}
		s.Pos = kpos
		ps[key] = s
		return nil
	})
	return ps, err
}

// setting reads a scalar, a gradient or (when conds) a list of filtered values.
func (p *parser) setting(n *yaml.Node, key string, conds bool) (*Setting, error) {
	s := &Setting{Pos: p.pos(n)}
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, errorf(p.pos(n), "%s: %v", key, err)
			}
			s.Bool = &b
			return s, nil
		case "!!int", "!!float":
			x, err := p.number(n, key)
			if err != nil {
				return nil, err
			}
			s.Num = []float64{x}
			return s, nil
		}
	case yaml.SequenceNode:
		items, err := p.sequence(n, key)
		if err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return nil, errorf(p.pos(n), "%s: an empty list", key)
		}
		if items[0].Kind == yaml.ScalarNode {
			for _, it := range items {
				x, err := p.number(it, key)
				if err != nil {
					return nil, errorf(p.pos(it), "%s: a gradient is a list of numbers; %s is not one", key, kindName(it))
				}
				s.Num = append(s.Num, x)
			}
			return s, nil
		}
		if !conds {
			return nil, errorf(p.pos(n), "%s: a filter's value is a number, true/false or a list of numbers", key)
		}
		for _, it := range items {
			c := Cond{Pos: p.pos(it)}
			err := p.mapping(it, key+" filter entry", func(k string, kpos Pos, v *yaml.Node) error {
				switch k {
				case "filter":
					if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
						return errorf(p.pos(v), "%s: filter: want a string, got %s", key, kindName(v))
					}
					f := v.Value
					c.Filter = &f
					return nil
				case "value":
					var err error
					c.Value, err = p.setting(v, key, false)
					return err
				}
				return errorf(kpos, "%s: unknown key %q in a filter entry (it has filter and value)", key, k)
			})
			if err != nil {
				return nil, err
			}
			if c.Value == nil {
				return nil, errorf(c.Pos, "%s: filter entry without value", key)
			}
			s.Conds = append(s.Conds, c)
		}
		return s, nil
	}
	return nil, errorf(p.pos(n), "%s: want a number, true/false, a list of numbers (a gradient) or a list of filter/value entries; got %s", key, kindName(n))
}

func (p *parser) number(n *yaml.Node, key string) (float64, error) {
	var x float64
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&x) != nil {
		return 0, errorf(p.pos(n), "%s: %s is not a number", key, kindName(n))
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, errorf(p.pos(n), "%s: %s is not a finite number", key, n.Value)
	}
	return x, nil
}

// modelMapping reads mergekit's long form of a model reference, {model: M, lora: L},
// as the short form M+L (docs/lora.md). override_architecture, which only renames
// the architecture in the output's config.json for architectures mergekit does not
// know, is refused: gomerge merges by tensor name and knows no architectures, so
// there is nothing to override.
func (p *parser) modelMapping(n *yaml.Node, what string) (*ModelRef, error) {
	var model, adapter Str
	err := p.mapping(n, what, func(key string, kpos Pos, v *yaml.Node) error {
		var err error
		switch key {
		case "model":
			model, err = p.str(v, what+".model")
		case "lora":
			adapter, err = p.str(v, what+".lora")
		case "override_architecture":
			err = errorf(kpos, "%s: override_architecture is not supported (gomerge merges by tensor name and keeps the reference's config.json)", what)
		default:
			err = errorf(kpos, "unknown key %q in a model mapping (it has model, lora)", key)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if model.Value == "" {
		return nil, errorf(p.pos(n), "%s: a model mapping needs model:", what)
	}
	name := model.Value
	if adapter.Value != "" {
		name += "+" + adapter.Value
	}
	return &ModelRef{Name: name, Pos: model.Pos}, nil
}
