// Package hubtest is a fake Hugging Face Hub on loopback for tests: the API's revision
// endpoint, the resolve endpoint with its headers (X-Repo-Commit, X-Linked-Etag,
// X-Linked-Size, ETag, X-Error-Code) and its 302 redirects of LFS files to a separate
// storage host, which honours Range requests. Faults are set per file: a connection
// dropped part way, contents that do not match their hash, a download held until
// several clients have asked for the file.
package hubtest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is the fake Hub and its storage host.
type Server struct {
	Hub, Files *httptest.Server
	// Token, when set, is the one token the Hub accepts for private and gated repos.
	Token string

	mu      sync.Mutex
	repos   map[string]*repo
	blobs   map[string][]byte // sha256 → contents, for the storage host
	reqs    []Request
	drop    map[string]int64 // file → bytes sent before the connection drops, once
	corrupt map[string]bool
	hold    map[string]int // file → HEAD requests to wait for before serving it
	heads   map[string]int
}

// Request is one request either host received.
type Request struct {
	Host   string // "hub" or "files"
	Method string
	Path   string
	Range  string
	Auth   string // the Authorization header as received
}

type repo struct {
	refs    map[string]string            // branch or tag → commit
	commits map[string]map[string][]byte // commit → file → contents
	private bool
	gated   bool
}

// New starts both hosts; they stop when the test ends.
func New(t testing.TB) *Server {
	s := &Server{repos: map[string]*repo{}, blobs: map[string][]byte{}, drop: map[string]int64{},
		corrupt: map[string]bool{}, hold: map[string]int{}, heads: map[string]int{}}
	s.Hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.Files = httptest.NewServer(http.HandlerFunc(s.serveFiles))
	t.Cleanup(s.Files.Close)
	t.Cleanup(s.Hub.Close)
	return s
}

// Endpoint is the Hub's address, for HF_ENDPOINT.
func (s *Server) Endpoint() string { return s.Hub.URL }

// AddRevision puts files into repo as a new commit that branch (or tag) points to,
// and returns the commit hash.
func (s *Server) AddRevision(repoID, branch string, files map[string][]byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoID]
	if r == nil {
		r = &repo{refs: map[string]string{}, commits: map[string]map[string][]byte{}}
		s.repos[repoID] = r
	}
	h := sha1.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", repoID, branch, len(r.commits))
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	cp := map[string][]byte{}
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%x\x00", n, sha256.Sum256(files[n]))
		cp[n] = bytes.Clone(files[n])
		if IsLFS(n) {
			sum := sha256.Sum256(files[n])
			s.blobs[hex.EncodeToString(sum[:])] = cp[n]
		}
	}
	commit := hex.EncodeToString(h.Sum(nil))
	r.commits[commit] = cp
	r.refs[branch] = commit
	return commit
}

// AddRepo is AddRevision on main.
func (s *Server) AddRepo(repoID string, files map[string][]byte) string {
	return s.AddRevision(repoID, "main", files)
}

// Private makes repo readable only with Token; Gated makes it answer as a gated repo
// does to a client without access.
func (s *Server) Private(repoID string) { s.mu.Lock(); s.repos[repoID].private = true; s.mu.Unlock() }
func (s *Server) Gated(repoID string)   { s.mu.Lock(); s.repos[repoID].gated = true; s.mu.Unlock() }

// DropOnce makes the next download of file (by name) stop after n bytes, the
// connection closed.
func (s *Server) DropOnce(file string, n int64) { s.mu.Lock(); s.drop[file] = n; s.mu.Unlock() }

// Corrupt makes file's downloads differ from its announced hash in one byte.
func (s *Server) Corrupt(file string) { s.mu.Lock(); s.corrupt[file] = true; s.mu.Unlock() }

// HoldUntilHeads makes a download of file wait (up to 20 s) until the Hub has
// answered n HEAD requests for it: several clients are then known to be at it at once.
func (s *Server) HoldUntilHeads(file string, n int) { s.mu.Lock(); s.hold[file] = n; s.mu.Unlock() }

// Requests returns every request so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// IsLFS says which files the fake stores in LFS (redirected to the storage host).
func IsLFS(name string) bool {
	switch path.Ext(name) {
	case ".safetensors", ".gguf", ".bin", ".model":
		return true
	}
	return false
}

// GitBlobSHA1 is a file's git object id, the ETag of a file not in LFS.
func GitBlobSHA1(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Server) record(host string, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, Request{Host: host, Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")})
	s.mu.Unlock()
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// access finds a repo as the Hub would show it to this request, or answers for it.
func (s *Server) access(w http.ResponseWriter, r *http.Request, id string) *repo {
	auth := r.Header.Get("Authorization")
	valid := s.Token != "" && auth == "Bearer "+s.Token
	if auth != "" && !valid {
		hubError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
		return nil
	}
	s.mu.Lock()
	rp := s.repos[id]
	s.mu.Unlock()
	switch {
	case rp == nil || rp.private && !valid:
		if auth == "" {
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
		} else {
			hubError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		}
		return nil
	case rp.gated && !valid:
		if auth == "" {
			hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to this model is restricted")
		} else {
			hubError(w, http.StatusForbidden, "GatedRepo", "Access to this model is restricted")
		}
		return nil
	}
	return rp
}

// commitOf resolves a branch, tag or commit hash.
func (s *Server) commitOf(rp *repo, rev string) (string, map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := rp.refs[rev]; ok {
		rev = c
	}
	return rev, rp.commits[rev]
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	s.record("hub", r)
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, seg := range segs {
		if u, err := url.PathUnescape(seg); err == nil {
			segs[i] = u
		}
	}
	switch {
	case len(segs) == 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "revision" && r.Method == http.MethodGet:
		s.serveRevision(w, r, segs[2]+"/"+segs[3], segs[5])
	case len(segs) >= 5 && segs[2] == "resolve" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.serveResolve(w, r, segs[0]+"/"+segs[1], segs[3], strings.Join(segs[4:], "/"))
	default:
		hubError(w, http.StatusNotFound, "", "Not found")
	}
}

func (s *Server) serveRevision(w http.ResponseWriter, r *http.Request, id, rev string) {
	rp := s.access(w, r, id)
	if rp == nil {
		return
	}
	commit, files := s.commitOf(rp, rev)
	if files == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	type sibling struct {
		RFilename string `json:"rfilename"`
	}
	out := struct {
		ID       string    `json:"id"`
		SHA      string    `json:"sha"`
		Private  bool      `json:"private"`
		Siblings []sibling `json:"siblings"`
	}{ID: id, SHA: commit, Private: rp.private}
	for n := range files {
		out.Siblings = append(out.Siblings, sibling{n})
	}
	sort.Slice(out.Siblings, func(i, j int) bool { return out.Siblings[i].RFilename < out.Siblings[j].RFilename })
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, id, rev, file string) {
	rp := s.access(w, r, id)
	if rp == nil {
		return
	}
	commit, files := s.commitOf(rp, rev)
	if files == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	data, ok := files[file]
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", file+" does not exist on \""+rev+"\"")
		return
	}
	if r.Method == http.MethodHead {
		s.mu.Lock()
		s.heads[file]++
		s.mu.Unlock()
	}
	w.Header().Set("X-Repo-Commit", commit)
	if IsLFS(file) {
		sum := sha256.Sum256(data)
		sha := hex.EncodeToString(sum[:])
		w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(data)))
		w.Header().Set("ETag", `"`+GitBlobSHA1([]byte("version https://git-lfs.github.com/spec/v1\noid sha256:"+sha))+`"`)
		w.Header().Set("Location", s.Files.URL+"/repos/"+sha[:2]+"/"+sha+"?name="+url.QueryEscape(file)+"&X-Amz-Signature=fake")
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+GitBlobSHA1(data)+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func (s *Server) serveFiles(w http.ResponseWriter, r *http.Request) {
	s.record("files", r)
	sha := path.Base(r.URL.Path)
	file := r.URL.Query().Get("name")
	s.mu.Lock()
	data, ok := s.blobs[sha]
	drop, dropping := s.drop[file]
	delete(s.drop, file)
	corrupt := s.corrupt[file]
	want := s.hold[file]
	s.mu.Unlock()
	if !ok || r.URL.Query().Get("X-Amz-Signature") == "" {
		http.Error(w, "AccessDenied", http.StatusForbidden)
		return
	}
	for deadline := time.Now().Add(20 * time.Second); want > 0 && time.Now().Before(deadline); {
		s.mu.Lock()
		n := s.heads[file]
		s.mu.Unlock()
		if n >= want {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if corrupt {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	if dropping {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:min(int(drop), len(data))])
		http.NewResponseController(w).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}
