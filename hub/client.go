package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultEndpoint is the Hub's address when HF_ENDPOINT is unset.
const DefaultEndpoint = "https://huggingface.co"

// DefaultParallel is how many files download at once, huggingface_hub's default.
const DefaultParallel = 8

// Client resolves references through one cache and, unless Offline, one Hub.
type Client struct {
	Endpoint string // the Hub, without a trailing slash
	Token    string // sent as a bearer token to Endpoint's host only; never printed
	CacheDir string // the hub cache: models--org--name folders and .locks
	Offline  bool   // never use the network: the cache must hold what is needed
	// Parallel bounds the files downloading at once; 0 means DefaultParallel.
	Parallel int
	// HTTP makes the requests; nil means one with the timeouts below. Its
	// CheckRedirect is not used: the client follows redirects itself.
	HTTP *http.Client
	// Progress, when set, is called once before a download with the bytes to fetch.
	// It returns add, told of each chunk as it arrives (from several goroutines at
	// once; a resumed download counts again the bytes it restarts), and done, called
	// once when the download ends.
	Progress func(ref Ref, total int64) (add func(n int64), done func())
	// Log, when set, receives one-line notes (a cached snapshot used because the Hub
	// could not be reached).
	Log func(msg string)
	// UserAgent names the program in requests.
	UserAgent string
}

// FromEnv returns a client configured as huggingface_hub configures itself:
// HF_ENDPOINT, HF_TOKEN (else HUGGING_FACE_HUB_TOKEN, else the file at HF_TOKEN_PATH or
// HF_HOME/token), HF_HUB_CACHE (else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub) and
// HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to 1, ON, YES or TRUE.
func FromEnv() *Client {
	home := os.Getenv("HF_HOME")
	if home == "" {
		xdg := os.Getenv("XDG_CACHE_HOME")
		if xdg == "" {
			if h, err := os.UserHomeDir(); err == nil {
				xdg = filepath.Join(h, ".cache")
			}
		}
		home = filepath.Join(xdg, "huggingface")
	}
	cache := os.Getenv("HF_HUB_CACHE")
	if cache == "" {
		cache = os.Getenv("HUGGINGFACE_HUB_CACHE")
	}
	if cache == "" {
		cache = filepath.Join(home, "hub")
	}
	endpoint := strings.TrimRight(os.Getenv("HF_ENDPOINT"), "/")
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	token := os.Getenv("HF_TOKEN")
	if token == "" {
		token = os.Getenv("HUGGING_FACE_HUB_TOKEN")
	}
	if token == "" {
		path := os.Getenv("HF_TOKEN_PATH")
		if path == "" {
			path = filepath.Join(home, "token")
		}
		if b, err := os.ReadFile(path); err == nil && len(b) < 4096 {
			token = strings.TrimSpace(string(b))
		}
	}
	return &Client{
		Endpoint: endpoint,
		Token:    token,
		CacheDir: cache,
		Offline:  envTrue("HF_HUB_OFFLINE") || envTrue("TRANSFORMERS_OFFLINE"),
	}
}

func envTrue(name string) bool {
	switch strings.ToUpper(os.Getenv(name)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// Resolve parses s and returns its local path (Snapshot).
func (c *Client) Resolve(ctx context.Context, s string) (string, error) {
	ref, err := ParseRef(s)
	if err != nil {
		return "", err
	}
	return c.Snapshot(ctx, ref)
}

// Snapshot returns the local folder of ref's revision with its config, tokenizer
// files and weights (or, for a single file, that file), downloading what the cache
// lacks unless the client is offline. A full commit hash whose snapshot is complete
// needs no network; a branch or tag is asked of the Hub, as huggingface_hub does, and
// the cache is used as it is only when the Hub cannot be reached.
func (c *Client) Snapshot(ctx context.Context, ref Ref) (string, error) {
	if isCommit(ref.revision()) || c.Offline {
		p, err := c.Cached(ref)
		if err == nil || c.Offline {
			if err != nil {
				var he *Error
				if errors.As(err, &he) {
					he.Msg += "; offline mode is on (HF_HUB_OFFLINE or --offline), so it is not downloaded"
				}
			}
			return p, err
		}
	}
	info, err := c.revisionInfo(ctx, ref)
	if err != nil {
		var he *Error
		if !errors.As(err, &he) && ctx.Err() == nil {
			// The Hub could not be reached: a complete cached snapshot still serves.
			if p, cerr := c.Cached(ref); cerr == nil {
				c.logf("could not reach %s (%v); using the cached snapshot of %s", c.Endpoint, err, ref)
				return p, nil
			}
		}
		return "", err
	}
	if err := c.writeRef(ref.Repo, ref.revision(), info.SHA); err != nil {
		return "", fmt.Errorf("hub cache: %w", err)
	}
	snap := c.snapshotDir(ref.Repo, info.SHA)
	has := map[string]bool{}
	for _, s := range info.Siblings {
		has[s] = true
	}
	if ref.File != "" {
		if !has[ref.File] {
			return "", &Error{Ref: ref, File: ref.File, Msg: "no such file in the repository at commit " + info.SHA, Err: ErrNotFound}
		}
		if err := c.fetchAll(ctx, ref, info.SHA, []string{ref.File}); err != nil {
			return "", err
		}
		return filepath.Join(snap, filepath.FromSlash(ref.File)), nil
	}
	var files []string
	for _, m := range metadataFiles {
		if has[m] {
			files = append(files, m)
		}
	}
	weights, index, ok := chooseWeights(func(n string) bool { return has[n] })
	if !ok {
		return "", &Error{Ref: ref, Msg: fmt.Sprintf("the repository has no weights at commit %s (none of %s)", info.SHA, noWeights()), Err: ErrNotFound}
	}
	if index {
		// The index names the shards: fetch it first, alone.
		if err := c.fetchAll(ctx, ref, info.SHA, []string{weights}); err != nil {
			return "", err
		}
		shards, err := readIndex(filepath.Join(snap, weights))
		if err != nil {
			return "", &Error{Ref: ref, File: weights, Msg: err.Error(), Err: err}
		}
		for _, s := range shards {
			if !has[s] {
				return "", &Error{Ref: ref, File: s, Msg: fmt.Sprintf("%s names it, but the repository has no such file at commit %s", weights, info.SHA), Err: ErrNotFound}
			}
		}
		files = append(files, shards...)
	} else {
		files = append(files, weights)
	}
	if err := c.fetchAll(ctx, ref, info.SHA, files); err != nil {
		return "", err
	}
	return snap, nil
}

func (c *Client) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log(fmt.Sprintf(format, args...))
	}
}

// revisionInfo asks /api/models/{id}/revision/{rev} for the commit and the files.
func (c *Client) revisionInfo(ctx context.Context, ref Ref) (*revisionInfo, error) {
	u := c.Endpoint + "/api/models/" + ref.Repo + "/revision/" + url.PathEscape(ref.revision())
	resp, err := c.do(ctx, http.MethodGet, u, nil, false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusError(ref, "", resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxInfoBytes+1))
	if err != nil {
		return nil, fmt.Errorf("model %s: reading the revision info: %w", ref, err)
	}
	if len(data) > maxInfoBytes {
		return nil, &Error{Ref: ref, Msg: fmt.Sprintf("revision info larger than %d bytes", maxInfoBytes), Err: ErrResponse}
	}
	info, err := parseRevision(data)
	if err != nil {
		return nil, &Error{Ref: ref, Msg: err.Error(), Err: err}
	}
	return info, nil
}

// httpClient never follows redirects itself: do follows them, to decide at each hop
// whether the token goes along.
func (c *Client) httpClient() *http.Client {
	hc := c.HTTP
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 60 * time.Second
		hc = &http.Client{Transport: tr}
	}
	cp := *hc
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// maxRedirects bounds the hops of one request.
const maxRedirects = 10

// do sends one request, following redirects when follow is set (else only those to
// the same host, which the Hub uses for renamed repositories). The token goes only to
// the endpoint's scheme, host and port: a download redirected to a storage host gets a
// signed URL and no token. Errors carry the URL without its query (signed URLs carry
// credentials of their own).
func (c *Client) do(ctx context.Context, method, u string, header http.Header, follow bool) (*http.Response, error) {
	hc := c.httpClient()
	home, err := url.Parse(c.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("HF_ENDPOINT %q: %w", c.Endpoint, err)
	}
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, fmt.Errorf("request %s: %w", redact(u), err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		ua := c.UserAgent
		if ua == "" {
			ua = "gomerge"
		}
		req.Header.Set("User-Agent", ua)
		if c.Token != "" && req.URL.Scheme == home.Scheme && req.URL.Host == home.Host {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("%s %s: %w", method, redact(u), err)
		}
		if !isRedirect(resp.StatusCode) {
			return resp, nil
		}
		loc, err := resp.Location()
		if err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("%s %s: redirect without a usable Location: %w", method, redact(u), err)
		}
		sameHost := loc.Scheme == req.URL.Scheme && loc.Host == req.URL.Host
		if !follow && !sameHost {
			return resp, nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if hop >= maxRedirects {
			return nil, fmt.Errorf("%s %s: more than %d redirects", method, redact(u), maxRedirects)
		}
		u = loc.String()
	}
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// redact drops a URL's query and user info.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.RawQuery, p.User, p.Fragment = "", nil, ""
	return p.String()
}

// statusError explains an HTTP failure, from the Hub's X-Error-Code when it sends one.
func (c *Client) statusError(ref Ref, file string, resp *http.Response) error {
	code := resp.Header.Get("X-Error-Code")
	e := &Error{Ref: ref, File: file}
	tokenHint := "set HF_TOKEN to a token that can read it"
	if c.Token != "" {
		tokenHint = "the token in HF_TOKEN cannot read it"
	}
	switch {
	case code == "GatedRepo" || resp.StatusCode == http.StatusForbidden:
		e.Err = ErrAccess
		e.Msg = fmt.Sprintf("access refused (%d) by %s: the repository is gated or private; accept its terms on the Hub and %s", resp.StatusCode, c.Endpoint, tokenHint)
	case code == "RevisionNotFound":
		e.Err = ErrNotFound
		e.Msg = fmt.Sprintf("no revision %q on %s", ref.revision(), c.Endpoint)
	case code == "EntryNotFound":
		e.Err = ErrNotFound
		e.Msg = "no such file in the repository on " + c.Endpoint
	case code == "RepoNotFound" || resp.StatusCode == http.StatusNotFound:
		e.Err = ErrNotFound
		e.Msg = fmt.Sprintf("no such model on %s (or it is private: %s)", c.Endpoint, tokenHint)
	case resp.StatusCode == http.StatusUnauthorized:
		e.Err = ErrAccess
		if c.Token != "" {
			e.Msg = fmt.Sprintf("%s refused the token (401): it is invalid or expired, or cannot read this repository", c.Endpoint)
		} else {
			e.Msg = fmt.Sprintf("%s asks for authentication (401): the repository is private or gated; %s", c.Endpoint, tokenHint)
		}
	default:
		e.Err = fmt.Errorf("HTTP %s", resp.Status)
		e.Msg = fmt.Sprintf("%s answered %s", c.Endpoint, resp.Status)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return e
}
