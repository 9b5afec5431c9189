package recipe

import (
	"errors"
	"io/fs"
	"os"
	"strings"

	"github.com/gomerge/gomerge/hub"
	"github.com/gomerge/gomerge/merge"
)

// Model references by Hugging Face id: org/name[@revision] (or org/name/file.gguf)
// that is no local path is resolved to its snapshot in the Hugging Face cache.

// locate returns the path of a model reference that names no step: a local path as
// it is, a Hub id as its snapshot folder, a model+LoRA reference with each side
// located. A name that is neither is returned as it is, for open to report.
func (c *catalog) locate(ref ModelRef) (string, error) {
	name := ref.Name
	if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	if a, b, ok := strings.Cut(name, "+"); ok && a != "" && b != "" {
		pa, err := c.locate(ModelRef{Name: a, Pos: ref.Pos})
		if err != nil {
			return "", err
		}
		pb, err := c.locate(ModelRef{Name: b, Pos: ref.Pos})
		if err != nil {
			return "", err
		}
		return pa + "+" + pb, nil
	}
	if !hub.LooksLikeRef(name) {
		return name, nil
	}
	if p, ok := c.located[name]; ok {
		return p, nil
	}
	resolve := c.resolveHub
	if resolve == nil {
		resolve = cachedOnly
	}
	p, err := resolve(name)
	if err != nil {
		return "", &modelError{Pos: ref.Pos, Err: err}
	}
	if c.located == nil {
		c.located = map[string]string{}
	}
	c.located[name] = p
	return p, nil
}

// cachedOnly is the resolution without Options.Resolve: the local cache, never the
// network.
func cachedOnly(name string) (string, error) {
	ref, err := hub.ParseRef(name)
	if err != nil {
		return "", err
	}
	return hub.FromEnv().Cached(ref)
}

// modelError is a Hub id that could not be resolved, where the recipe names it. A
// model the Hub or the cache does not have, or refuses, is bad input like a missing
// local file; a network failure is not.
type modelError struct {
	Pos Pos
	Err error
}

func (e *modelError) Error() string { return e.Pos.String() + ": " + e.Err.Error() }
func (e *modelError) Unwrap() error { return e.Err }

func (e *modelError) Is(target error) bool {
	return target == merge.ErrBadInput && (errors.Is(e.Err, fs.ErrNotExist) || errors.Is(e.Err, hub.ErrAccess))
}
