package hub

import (
	"errors"
	"io/fs"
)

// missing is an error kind that is also fs.ErrNotExist, so that callers that map a
// missing input to "bad input" treat a model the Hub does not have, or the cache
// lacks offline, as they treat a missing local file.
type missing string

func (e missing) Error() string      { return string(e) }
func (missing) Is(target error) bool { return target == fs.ErrNotExist }

// The kinds of error, for errors.Is.
var (
	// ErrNotFound: the Hub has no such repository, revision or file (or hides a
	// private one from a request without a token).
	ErrNotFound error = missing("not found on the Hub")
	// ErrNotCached: a needed file is not in the local cache and the client may not
	// download it (offline).
	ErrNotCached error = missing("not in the Hugging Face cache")
	// ErrAccess: the Hub refused the request (401, 403): a gated repository, or a
	// token that is wrong or lacks access.
	ErrAccess = errors.New("access refused by the Hub")
	// ErrChecksum: a downloaded file's size or hash is not the one the Hub announced.
	ErrChecksum = errors.New("checksum mismatch")
)

// Error is a failure to resolve one reference, or one file of it.
type Error struct {
	Ref  Ref
	File string // "" when the failure is the repository's or the revision's
	Msg  string
	Err  error // a kind above, or the lower error
}

func (e *Error) Error() string {
	s := "model " + e.Ref.String()
	if e.File != "" {
		s += ": " + e.File
	}
	return s + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }
