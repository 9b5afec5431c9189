package hub

import (
	"errors"
	"strings"
	"testing"
)

var goodRevision = `{"id":"org/m","sha":"0123456789abcdef0123456789abcdef01234567","siblings":[{"rfilename":"config.json"},{"rfilename":"sub/model.safetensors"}]}`

var goodIndex = `{"metadata":{"total_size":8},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}}`

func TestParseGood(t *testing.T) {
	info, err := parseRevision([]byte(goodRevision))
	if err != nil || info.SHA != "0123456789abcdef0123456789abcdef01234567" || len(info.Siblings) != 2 || info.Siblings[1] != "sub/model.safetensors" {
		t.Fatalf("%+v, %v", info, err)
	}
	shards, err := parseIndex([]byte(goodIndex))
	if err != nil || strings.Join(shards, ",") != "model-00001-of-00002.safetensors,model-00002-of-00002.safetensors" {
		t.Fatalf("%q, %v", shards, err)
	}
}

// TestParseMalformed: every answer that could name a file outside the cache, or is
// not what the Hub sends, is refused with ErrResponse.
func TestParseMalformed(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	for name, in := range map[string]string{
		"not json":          `<html>`,
		"empty":             ``,
		"no sha":            `{"siblings":[]}`,
		"short sha":         `{"sha":"0123"}`,
		"upper-case sha":    `{"sha":"0123456789ABCDEF0123456789abcdef01234567"}`,
		"sha path":          `{"sha":"../../../../../../../../../../../../../etc/x"}`,
		"sha not string":    `{"sha":12}`,
		"sibling dotdot":    `{"sha":"` + sha + `","siblings":[{"rfilename":"../x"}]}`,
		"sibling absolute":  `{"sha":"` + sha + `","siblings":[{"rfilename":"/etc/passwd"}]}`,
		"sibling backslash": `{"sha":"` + sha + `","siblings":[{"rfilename":"a\\..\\..\\x"}]}`,
		"sibling empty":     `{"sha":"` + sha + `","siblings":[{"rfilename":""}]}`,
		"sibling nul":       `{"sha":"` + sha + `","siblings":[{"rfilename":"a\u0000b"}]}`,
		"sibling twice":     `{"sha":"` + sha + `","siblings":[{"rfilename":"a"},{"rfilename":"a"}]}`,
		"siblings object":   `{"sha":"` + sha + `","siblings":{"rfilename":"a"}}`,
	} {
		if _, err := parseRevision([]byte(in)); !errors.Is(err, ErrResponse) {
			t.Errorf("revision %s: %v", name, err)
		}
	}
	for name, in := range map[string]string{
		"not json":     `weight_map`,
		"no map":       `{"metadata":{}}`,
		"empty map":    `{"weight_map":{}}`,
		"shard dotdot": `{"weight_map":{"a":"../../blobs/x"}}`,
		"shard abs":    `{"weight_map":{"a":"/tmp/x"}}`,
		"shard empty":  `{"weight_map":{"a":""}}`,
		"shard dot":    `{"weight_map":{"a":"./x"}}`,
		"shard number": `{"weight_map":{"a":3}}`,
		"map array":    `{"weight_map":["a"]}`,
	} {
		if _, err := parseIndex([]byte(in)); !errors.Is(err, ErrResponse) {
			t.Errorf("index %s: %v", name, err)
		}
	}
}

// FuzzParseResponse feeds the revision and index parsers the same bytes: neither may
// panic, and whatever they accept must be safe to use as paths in the cache.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte(goodRevision))
	f.Add([]byte(goodIndex))
	f.Add([]byte(`{"sha":"0123456789abcdef0123456789abcdef01234567","siblings":[{"rfilename":"a/../b"}]}`))
	f.Add([]byte(`{"weight_map":{"a":"x\\y"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if info, err := parseRevision(data); err == nil {
			if !isCommit(info.SHA) {
				t.Fatalf("accepted sha %q", info.SHA)
			}
			for _, s := range info.Siblings {
				if checkRepoPath(s) != nil {
					t.Fatalf("accepted sibling %q", s)
				}
			}
		}
		if shards, err := parseIndex(data); err == nil {
			if len(shards) == 0 {
				t.Fatal("accepted an index with no shards")
			}
			for _, s := range shards {
				if checkRepoPath(s) != nil || strings.Contains(s, "..") && strings.Contains("/"+s+"/", "/../") {
					t.Fatalf("accepted shard %q", s)
				}
			}
		}
		if r, err := ParseRef(string(data)); err == nil {
			if checkName(strings.Split(r.Repo, "/")[0]) != nil || r.File != "" && checkRepoPath(r.File) != nil {
				t.Fatalf("accepted ref %+v", r)
			}
		}
	})
}
