package recipe

import (
	"strconv"

	"go.yaml.in/yaml/v3"
)

// TokenizerBlock is mergekit's `tokenizer:` block: the output vocabulary's source
// (kept in Step.TokenizerSource, "union" when the block names none), embeddings
// for chosen tokens, and padding of the vocabulary.
type TokenizerBlock struct {
	Pos             Pos
	Tokens          []*TokenSpec // in file order
	PadToMultipleOf int          // 0: no padding
}

// TokenSpec is one entry of the block's tokens: where token's embedding comes from,
// for the models that lack it or, with Force, for all of them. A token the output
// vocabulary lacks is added to it.
type TokenSpec struct {
	Pos   Pos
	Token string
	// Kind is "" (mergekit's default rules), "model" (Model's own row for the
	// token), "model_token" (Model's row for SrcToken, or row SrcID) or "zero".
	Kind     string
	Model    *ModelRef
	SrcToken *string
	SrcID    *int
	Force    bool
}

// tokenizerBlock parses `tokenizer:` into st.
func (p *parser) tokenizerBlock(n *yaml.Node, st *Step) error {
	b := &TokenizerBlock{Pos: p.pos(n)}
	src := &ModelRef{Name: "union", Pos: b.Pos}
	err := p.mapping(n, "tokenizer", func(key string, kpos Pos, v *yaml.Node) error {
		var err error
		switch key {
		case "source":
			src, err = p.model(v, "tokenizer: source")
		case "pad_to_multiple_of":
			if v.Tag == "!!null" {
				return nil
			}
			b.PadToMultipleOf, err = p.positiveInt(v, "tokenizer: pad_to_multiple_of")
		case "tokens":
			if v.Tag == "!!null" {
				return nil
			}
			err = p.mapping(v, "tokenizer: tokens", func(tok string, tpos Pos, tv *yaml.Node) error {
				ts, err := p.tokenSpec(tok, tpos, tv)
				b.Tokens = append(b.Tokens, ts)
				return err
			})
		default:
			err = errorf(kpos, "tokenizer: unknown key %q (it has source, tokens, pad_to_multiple_of)", key)
		}
		return err
	})
	if err != nil {
		return err
	}
	st.Tokenizer, st.TokenizerSource = b, src
	return nil
}

func (p *parser) tokenSpec(tok string, pos Pos, n *yaml.Node) (*TokenSpec, error) {
	ts := &TokenSpec{Pos: pos, Token: tok}
	what := "tokenizer: tokens: " + strconv.Quote(tok)
	err := p.mapping(n, what, func(key string, kpos Pos, v *yaml.Node) error {
		switch key {
		case "force":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
				return errorf(p.pos(v), "%s: force: want true or false", what)
			}
			ts.Force = v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
			return nil
		case "source":
			if v.Tag == "!!null" {
				return nil
			}
			if v.Kind != yaml.MappingNode {
				m, err := p.model(v, what+": source")
				ts.Kind, ts.Model = "model", m
				return err
			}
			return p.tokenSource(v, ts, what+": source")
		}
		return errorf(kpos, "%s: unknown key %q (it has source, force)", what, key)
	})
	if err == nil && ts.Force && ts.Kind == "" {
		err = errorf(pos, "%s: force needs a source", what)
	}
	return ts, err
}

// tokenSource parses a source given as a mapping: {kind: zero} or
// {kind: model_token, model: M, token: T | token_id: N}.
func (p *parser) tokenSource(n *yaml.Node, ts *TokenSpec, what string) error {
	var kind Str
	err := p.mapping(n, what, func(key string, kpos Pos, v *yaml.Node) error {
		var err error
		switch key {
		case "kind":
			kind, err = p.str(v, what+": kind")
		case "model":
			ts.Model, err = p.model(v, what+": model")
		case "token":
			var s Str
			s, err = p.str(v, what+": token")
			ts.SrcToken = &s.Value
		case "token_id":
			var id int
			id, err = p.nonNegativeInt(v, what+": token_id")
			ts.SrcID = &id
		default:
			err = errorf(kpos, "%s: unknown key %q (it has kind, model, token, token_id)", what, key)
		}
		return err
	})
	if err != nil {
		return err
	}
	switch kind.Value {
	case "zero":
		if ts.Model != nil || ts.SrcToken != nil || ts.SrcID != nil {
			return errorf(kind.Pos, "%s: kind zero takes no model, token or token_id", what)
		}
	case "model_token":
		if ts.Model == nil {
			return errorf(kind.Pos, "%s: kind model_token needs a model", what)
		}
		if (ts.SrcToken == nil) == (ts.SrcID == nil) {
			return errorf(kind.Pos, "%s: kind model_token needs exactly one of token and token_id", what)
		}
	default:
		return errorf(p.pos(n), "%s: kind %q: want zero or model_token", what, kind.Value)
	}
	ts.Kind = kind.Value
	return nil
}

func (p *parser) nonNegativeInt(n *yaml.Node, what string) (int, error) {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v < 0 || v >= 1<<24 {
		return 0, errorf(p.pos(n), "%s: want a whole number in [0, %d)", what, 1<<24)
	}
	return v, nil
}

func (p *parser) positiveInt(n *yaml.Node, what string) (int, error) {
	v, err := p.nonNegativeInt(n, what)
	if err == nil && v == 0 {
		err = errorf(p.pos(n), "%s: want a whole number in [1, %d)", what, 1<<24)
	}
	return v, err
}
