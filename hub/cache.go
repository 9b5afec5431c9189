package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The cache, laid out as huggingface_hub's file_download.py writes it.

// repoFolder is the cache folder name of a model repository.
func repoFolder(repo string) string { return "models--" + strings.ReplaceAll(repo, "/", "--") }

func (c *Client) repoDir(repo string) string { return filepath.Join(c.CacheDir, repoFolder(repo)) }

func (c *Client) snapshotDir(repo, commit string) string {
	return filepath.Join(c.repoDir(repo), "snapshots", commit)
}

func (c *Client) blobPath(repo, etag string) string {
	return filepath.Join(c.repoDir(repo), "blobs", etag)
}

func (c *Client) lockPath(repo, etag string) string {
	return filepath.Join(c.CacheDir, ".locks", repoFolder(repo), etag+".lock")
}

// readRef returns the commit refs/<revision> holds.
func (c *Client) readRef(repo, rev string) (string, error) {
	f, err := os.Open(filepath.Join(c.repoDir(repo), "refs", filepath.FromSlash(rev)))
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 128))
	if err != nil {
		return "", err
	}
	commit := string(bytes.TrimSpace(b))
	if !isCommit(commit) {
		return "", fmt.Errorf("%s: %w: %.50q is not a commit hash", f.Name(), ErrResponse, commit)
	}
	return commit, nil
}

// writeRef records the commit a branch or tag is at, atomically, as Python does once
// it has asked the Hub.
func (c *Client) writeRef(repo, rev, commit string) error {
	if rev == commit {
		return nil
	}
	path := filepath.Join(c.repoDir(repo), "refs", filepath.FromSlash(rev))
	if old, err := c.readRef(repo, rev); err == nil && old == commit {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ref-*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(commit)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// weightFiles are the files that hold a model's weights, in the order they are
// preferred: safetensors before PyTorch's pickles, an index (sharded) before a single
// file, a full model before an adapter.
var weightFiles = []struct {
	name  string
	index bool
}{
	{"model.safetensors.index.json", true},
	{"model.safetensors", false},
	{"adapter_model.safetensors", false},
	{"pytorch_model.bin.index.json", true},
	{"pytorch_model.bin", false},
}

// metadataFiles are the small files fetched with a model when the repository has them:
// its config, and what a tokenizer and chat template are built from. Nothing that
// runs (no *.py).
var metadataFiles = []string{
	"config.json", "generation_config.json", "adapter_config.json",
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
	"tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
}

// chooseWeights picks the weights file among those has says exist.
func chooseWeights(has func(string) bool) (name string, index bool, ok bool) {
	for _, w := range weightFiles {
		if has(w.name) {
			return w.name, w.index, true
		}
	}
	return "", false, false
}

func noWeights() string {
	names := make([]string, len(weightFiles))
	for i, w := range weightFiles {
		names[i] = w.name
	}
	return strings.Join(names, ", ")
}

// exists says whether a snapshot file is there and its blob too (os.Stat follows the
// link).
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Cached returns the local path of ref from the cache alone, never the network: the
// snapshot folder (or, for a single file, the file), when every weights file is there.
// Otherwise an *Error wrapping ErrNotCached names the first missing file.
func (c *Client) Cached(ref Ref) (string, error) {
	rev := ref.revision()
	notCached := func(file, msg string) error {
		return &Error{Ref: ref, File: file, Msg: msg, Err: ErrNotCached}
	}
	commit := rev
	if !isCommit(rev) {
		var err error
		commit, err = c.readRef(ref.Repo, rev)
		if errors.Is(err, fs.ErrNotExist) {
			return "", notCached("", fmt.Sprintf("not in the Hugging Face cache (no %s in %s)", filepath.Join("refs", rev), c.repoDir(ref.Repo)))
		}
		if err != nil {
			return "", &Error{Ref: ref, Msg: "reading the cache: " + err.Error(), Err: err}
		}
	}
	snap := c.snapshotDir(ref.Repo, commit)
	if _, err := os.Stat(snap); err != nil {
		return "", notCached("", fmt.Sprintf("not in the Hugging Face cache (no snapshot %s)", snap))
	}
	if ref.File != "" {
		p := filepath.Join(snap, filepath.FromSlash(ref.File))
		if !exists(p) {
			return "", notCached(ref.File, "missing from the cached snapshot "+snap)
		}
		return p, nil
	}
	has := func(n string) bool { return exists(filepath.Join(snap, n)) }
	name, index, ok := chooseWeights(has)
	if !ok {
		return "", notCached("", fmt.Sprintf("the cached snapshot %s has no weights (none of %s)", snap, noWeights()))
	}
	if index {
		shards, err := readIndex(filepath.Join(snap, name))
		if err != nil {
			return "", &Error{Ref: ref, File: name, Msg: err.Error(), Err: err}
		}
		for _, s := range shards {
			if !has(s) {
				return "", notCached(s, fmt.Sprintf("missing from the cached snapshot %s (%s names it)", snap, name))
			}
		}
	}
	return snap, nil
}

func readIndex(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIndexBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxIndexBytes {
		return nil, fmt.Errorf("%w: weights index larger than %d bytes", ErrResponse, maxIndexBytes)
	}
	return parseIndex(data)
}
