package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Downloading: each file's metadata from a HEAD request, then its blob, resumed,
// verified and renamed into blobs/, then its link in the snapshot.

// fileMeta is what a HEAD of /{id}/resolve/{commit}/{file} tells.
type fileMeta struct {
	name   string
	etag   string // the blob's name: sha256 (LFS) or git blob sha1
	size   int64
	commit string
}

// copyBuffer is each download's write size: fewer, larger writes than io.Copy's 32 KiB.
const copyBuffer = 1 << 20

// maxAttempts bounds the tries of one file's download; each resumes from what the
// earlier ones wrote.
const maxAttempts = 6

// fetchAll brings files of commit into the cache: those already linked in the
// snapshot are left alone, the others are downloaded in parallel.
func (c *Client) fetchAll(ctx context.Context, ref Ref, commit string, files []string) error {
	snap := c.snapshotDir(ref.Repo, commit)
	var todo []string
	for _, f := range files {
		if !exists(filepath.Join(snap, filepath.FromSlash(f))) {
			todo = append(todo, f)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	limit := c.Parallel
	if limit <= 0 {
		limit = DefaultParallel
	}
	metas := make([]fileMeta, len(todo))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i, f := range todo {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			m, err := c.head(gctx, ref, commit, f)
			metas[i] = m
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var total int64
	for _, m := range metas {
		if !exists(c.blobPath(ref.Repo, m.etag)) {
			total += m.size
		}
	}
	add := func(int64) {}
	if c.Progress != nil && total > 0 {
		var done func()
		add, done = c.Progress(ref, total)
		defer done()
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, m := range metas {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := c.fetchBlob(gctx, ref, m, add); err != nil {
				return err
			}
			return c.link(ref, commit, m)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// head asks the Hub for a file's blob name, size and commit, without following a
// redirect to the storage host: the Hub's own answer carries X-Linked-Etag and
// X-Linked-Size for LFS files, ETag and Content-Length for the others.
func (c *Client) head(ctx context.Context, ref Ref, commit, file string) (fileMeta, error) {
	h := http.Header{"Accept-Encoding": {"identity"}}
	resp, err := c.do(ctx, http.MethodHead, c.resolveURL(ref, commit, file), h, false)
	if err != nil {
		return fileMeta{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && !isRedirect(resp.StatusCode) {
		return fileMeta{}, c.statusError(ref, file, resp)
	}
	bad := func(msg string) error {
		return &Error{Ref: ref, File: file, Msg: "the Hub's answer to HEAD: " + msg, Err: ErrResponse}
	}
	m := fileMeta{name: file, commit: resp.Header.Get("X-Repo-Commit")}
	if m.commit != "" && m.commit != commit {
		return fileMeta{}, bad(fmt.Sprintf("X-Repo-Commit %.50q, not the commit %s asked for", m.commit, commit))
	}
	m.etag = normalizeEtag(resp.Header.Get("X-Linked-Etag"))
	if m.etag == "" {
		m.etag = normalizeEtag(resp.Header.Get("ETag"))
	}
	if !isHex(m.etag, 64) && !isHex(m.etag, 40) {
		return fileMeta{}, bad(fmt.Sprintf("etag %.80q is neither a sha256 nor a git sha1", m.etag))
	}
	sz := resp.Header.Get("X-Linked-Size")
	if sz == "" {
		sz = resp.Header.Get("Content-Length")
	}
	m.size, err = strconv.ParseInt(sz, 10, 64)
	if err != nil || m.size < 0 {
		return fileMeta{}, bad(fmt.Sprintf("size %.30q", sz))
	}
	return m, nil
}

// normalizeEtag strips the weak marker and the quotes.
func normalizeEtag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.ToLower(strings.Trim(s, `"`))
}

func (c *Client) resolveURL(ref Ref, commit, file string) string {
	parts := strings.Split(file, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return c.Endpoint + "/" + ref.Repo + "/resolve/" + commit + "/" + strings.Join(parts, "/")
}

// fetchBlob makes blobs/<etag> hold the file, under the blob's lock so that two
// processes fetching it at once write it once: the second finds it done.
func (c *Client) fetchBlob(ctx context.Context, ref Ref, m fileMeta, add func(int64)) error {
	blob := c.blobPath(ref.Repo, m.etag)
	if exists(blob) {
		return nil
	}
	lockPath := c.lockPath(ref.Repo, m.etag)
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	unlock, err := lockFile(ctx, lockPath)
	if err != nil {
		return fmt.Errorf("hub cache: locking %s: %w", lockPath, err)
	}
	defer unlock()
	if exists(blob) {
		return nil // another process fetched it while this one waited
	}
	incomplete := blob + ".incomplete"
	if err := c.download(ctx, ref, m, incomplete, add); err != nil {
		return err
	}
	if err := verify(incomplete, m); err != nil {
		os.Remove(incomplete) // a resumed download would only repeat the mistake
		return &Error{Ref: ref, File: m.name, Msg: err.Error() + "; the download was removed", Err: ErrChecksum}
	}
	if err := os.Rename(incomplete, blob); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	syncDir(filepath.Dir(blob))
	return nil
}

// download fills path with the file, resuming from what it holds: a dropped
// connection or a server error is tried again from where it stopped.
func (c *Client) download(ctx context.Context, ref Ref, m fileMeta, path string, add func(int64)) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	have := fi.Size()
	if have > m.size {
		have = 0
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("hub cache: %w", err)
		}
	}
	add(have)
	var last error
	for attempt := 0; attempt < maxAttempts && have < m.size || attempt == 0 && m.size == 0; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
			}
		}
		n, retry, err := c.getRange(ctx, ref, m, f, have, add)
		have = n
		if err == nil {
			break
		}
		if !retry || ctx.Err() != nil {
			return err
		}
		last = err
	}
	if have < m.size {
		return fmt.Errorf("model %s: %s: %d of %d bytes after %d tries: %w", ref, m.name, have, m.size, maxAttempts, last)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	return f.Close()
}

// getRange asks for the file from byte have on and writes what comes at its offset.
// It returns how many bytes the file now holds, and whether a failure may be retried.
func (c *Client) getRange(ctx context.Context, ref Ref, m fileMeta, f *os.File, have int64, add func(int64)) (int64, bool, error) {
	h := http.Header{"Accept-Encoding": {"identity"}}
	if have > 0 {
		h.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := c.do(ctx, http.MethodGet, c.resolveURL(ref, m.commit, m.name), h, true)
	if err != nil {
		return have, true, fmt.Errorf("model %s: %s: %w", ref, m.name, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			return have, false, &Error{Ref: ref, File: m.name, Msg: fmt.Sprintf("asked for bytes from %d, got Content-Range %.60q", have, resp.Header.Get("Content-Range")), Err: ErrResponse}
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 { // the server ignored the range: start over
			have = 0
			if err := f.Truncate(0); err != nil {
				return 0, false, fmt.Errorf("hub cache: %w", err)
			}
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// What is there is not a prefix the server knows: start over.
		if err := f.Truncate(0); err != nil {
			return 0, false, fmt.Errorf("hub cache: %w", err)
		}
		return 0, true, fmt.Errorf("model %s: %s: range from %d not satisfiable", ref, m.name, have)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return have, true, c.statusError(ref, m.name, resp)
	default:
		return have, false, c.statusError(ref, m.name, resp)
	}
	// At most one byte more than announced is read: enough to tell that the file is
	// too long, without letting a server fill the disk.
	w := &countingWriter{w: io.NewOffsetWriter(f, have), add: add}
	_, err = io.CopyBuffer(w, io.LimitReader(resp.Body, m.size-have+1), make([]byte, copyBuffer))
	have += w.n
	if err != nil {
		if ctx.Err() != nil {
			return have, false, ctx.Err()
		}
		return have, true, fmt.Errorf("model %s: %s: connection lost after %d of %d bytes: %w", ref, m.name, have, m.size, err)
	}
	if have > m.size {
		return have, false, &Error{Ref: ref, File: m.name, Msg: fmt.Sprintf("the server sent more than the %d bytes announced", m.size), Err: ErrChecksum}
	}
	if have < m.size {
		return have, true, fmt.Errorf("model %s: %s: the server closed the file after %d of %d bytes", ref, m.name, have, m.size)
	}
	return have, false, nil
}

func contentRangeStart(s string) (int64, bool) {
	s, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, false
	}
	a, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(a, 10, 64)
	return n, err == nil && n >= 0
}

type countingWriter struct {
	w   io.Writer
	n   int64
	add func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.add(int64(n))
	return n, err
}

// verify checks a downloaded file's size, and its hash against the etag: the sha256
// of the contents for an LFS file, the git blob sha1 ("blob <size>\0" + contents) for
// the others.
func verify(path string, m fileMeta) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != m.size {
		return fmt.Errorf("%d bytes, not the %d the Hub announced", fi.Size(), m.size)
	}
	var h hash.Hash
	kind := "sha256"
	if len(m.etag) == 64 {
		h = sha256.New()
	} else {
		h, kind = sha1.New(), "git sha1"
		fmt.Fprintf(h, "blob %d\x00", m.size)
	}
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.etag {
		return fmt.Errorf("%s %s, not the %s the Hub announced", kind, got, m.etag)
	}
	return nil
}

var tmpSeq atomic.Uint64

// link points snapshots/<commit>/<file> at its blob with a relative symlink, as
// huggingface_hub does, replacing whatever was there atomically. Where symlinks are
// not allowed (Windows without developer mode) the blob is hard-linked instead.
func (c *Client) link(ref Ref, commit string, m fileMeta) error {
	dst := filepath.Join(c.snapshotDir(ref.Repo, commit), filepath.FromSlash(m.name))
	blob := c.blobPath(ref.Repo, m.etag)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(dst), blob)
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d-%d.tmp", dst, os.Getpid(), tmpSeq.Add(1))
	if err := os.Symlink(rel, tmp); err != nil {
		if lerr := os.Link(blob, tmp); lerr != nil {
			return fmt.Errorf("hub cache: %w", errors.Join(err, lerr))
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("hub cache: %w", err)
	}
	return nil
}

// syncDir makes a rename in dir durable; a failure only weakens durability, and the
// next run verifies nothing it did not write, so it is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
