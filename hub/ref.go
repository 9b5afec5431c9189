package hub

import (
	"fmt"
	"path"
	"strings"
)

// DefaultRevision is the branch a reference without @revision names.
const DefaultRevision = "main"

// Ref is a model on the Hub: a repository, a revision, and optionally one file of it.
type Ref struct {
	Repo     string // "org/name"
	Revision string // a branch, tag or commit hash; "" means main
	File     string // one file of the repository (a .gguf); "" means the model's files
}

// String gives the reference as it is written: org/name[/file][@revision].
func (r Ref) String() string {
	s := r.Repo
	if r.File != "" {
		s += "/" + r.File
	}
	if r.Revision != "" {
		s += "@" + r.Revision
	}
	return s
}

func (r Ref) revision() string {
	if r.Revision == "" {
		return DefaultRevision
	}
	return r.Revision
}

// maxNameLen is the Hub's limit on an owner's or a repository's name.
const maxNameLen = 96

// ParseRef reads org/name, org/name@revision, org/name/path/file.gguf and
// org/name/path/file.gguf@revision. A single file must be a .gguf: the other formats
// are folders, whose files the client picks. A name without an owner ("gpt2") is not
// accepted, since it cannot be told from a local path.
func ParseRef(s string) (Ref, error) {
	id, rev, hasRev := strings.Cut(s, "@")
	if hasRev {
		if err := checkRevision(rev); err != nil {
			return Ref{}, fmt.Errorf("hub reference %q: %w", s, err)
		}
	}
	parts := strings.Split(id, "/")
	if len(parts) < 2 {
		return Ref{}, fmt.Errorf("hub reference %q: want org/name", s)
	}
	for _, p := range parts[:2] {
		if err := checkName(p); err != nil {
			return Ref{}, fmt.Errorf("hub reference %q: %w", s, err)
		}
	}
	r := Ref{Repo: parts[0] + "/" + parts[1], Revision: rev}
	if len(parts) > 2 {
		file := strings.Join(parts[2:], "/")
		if err := checkRepoPath(file); err != nil {
			return Ref{}, fmt.Errorf("hub reference %q: %w", s, err)
		}
		if !strings.HasSuffix(strings.ToLower(file), ".gguf") {
			return Ref{}, fmt.Errorf("hub reference %q: a single file must be a .gguf (name the repository org/name for a safetensors model)", s)
		}
		r.File = file
	}
	return r, nil
}

// LooksLikeRef says whether s parses as a Hub reference. A caller tries local paths
// first: "org/name" is also a relative path.
func LooksLikeRef(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "/") || strings.Contains(s, "\\") {
		return false
	}
	_, err := ParseRef(s)
	return err == nil
}

// checkName checks an owner or repository name the way the Hub restricts them.
func checkName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("empty name")
	case len(n) > maxNameLen:
		return fmt.Errorf("name %.20q... longer than %d characters", n, maxNameLen)
	case strings.Contains(n, "--") || strings.Contains(n, ".."):
		return fmt.Errorf("name %q contains -- or ..", n)
	case strings.Trim(n, "-.") != n:
		return fmt.Errorf("name %q starts or ends with - or .", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("name %q has the character %q", n, c)
		}
	}
	return nil
}

// checkRevision accepts what a git branch or tag name may be, less what could escape
// the refs/ folder when used as a path (Python's cache writes refs/<revision>).
func checkRevision(rev string) error {
	if rev == "" {
		return fmt.Errorf("empty revision after @")
	}
	if len(rev) > 255 {
		return fmt.Errorf("revision longer than 255 characters")
	}
	for _, c := range rev {
		if c < 0x21 || c == 0x7f || c == '\\' || c == ':' || c == '~' || c == '^' || c == '?' || c == '*' || c == '[' {
			return fmt.Errorf("revision %q has the character %q", rev, c)
		}
	}
	for _, seg := range strings.Split(rev, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("revision %q has an empty, . or .. part", rev)
		}
	}
	return nil
}

// checkRepoPath accepts a file name inside a repository: relative, slash-separated,
// with no empty, . or .. part, so that it cannot name anything outside a snapshot.
func checkRepoPath(p string) error {
	if p == "" || len(p) > 1024 {
		return fmt.Errorf("file name of %d bytes", len(p))
	}
	if strings.ContainsAny(p, "\\\x00") || path.IsAbs(p) {
		return fmt.Errorf("file name %q is not a relative path", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("file name %q has an empty, . or .. part", p)
		}
		for _, c := range seg {
			// ':' would name a drive or a stream on Windows.
			if c < 0x20 || c == 0x7f || c == ':' {
				return fmt.Errorf("file name %q has the character %q", p, c)
			}
		}
	}
	return nil
}

// isCommit says whether s is a full commit hash, which names a snapshot directly.
func isCommit(s string) bool { return isHex(s, 40) }

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
