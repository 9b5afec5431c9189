package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Parsing what the Hub answers: the revision JSON of /api/models/{id}/revision/{rev},
// and a weights index (model.safetensors.index.json) that names the shards.

// ErrResponse marks an answer from the Hub (or a cached index) that does not parse or
// names something it may not.
var ErrResponse = errors.New("malformed Hub response")

// Limits on what is read from the server: a revision listing of a very large
// repository is a few MB; an index, a few hundred kB.
const (
	maxInfoBytes  = 32 << 20
	maxIndexBytes = 64 << 20
	maxSiblings   = 1 << 20
)

// revisionInfo is the part of /api/models/{id}/revision/{rev} the client uses.
type revisionInfo struct {
	ID       string
	SHA      string   // the commit the revision is at
	Siblings []string // every file of the repository at that commit
}

func parseRevision(data []byte) (*revisionInfo, error) {
	var raw struct {
		ID       string `json:"id"`
		SHA      string `json:"sha"`
		Siblings []struct {
			RFilename string `json:"rfilename"`
		} `json:"siblings"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: revision info: %v", ErrResponse, err)
	}
	if !isCommit(raw.SHA) {
		return nil, fmt.Errorf("%w: revision info: sha %.50q is not a commit hash", ErrResponse, raw.SHA)
	}
	if len(raw.Siblings) > maxSiblings {
		return nil, fmt.Errorf("%w: revision info: %d files", ErrResponse, len(raw.Siblings))
	}
	info := &revisionInfo{ID: raw.ID, SHA: raw.SHA}
	seen := map[string]bool{}
	for _, s := range raw.Siblings {
		if err := checkRepoPath(s.RFilename); err != nil {
			return nil, fmt.Errorf("%w: revision info: %v", ErrResponse, err)
		}
		if seen[s.RFilename] {
			return nil, fmt.Errorf("%w: revision info: file %q listed twice", ErrResponse, s.RFilename)
		}
		seen[s.RFilename] = true
		info.Siblings = append(info.Siblings, s.RFilename)
	}
	return info, nil
}

// parseIndex returns the shards a weights index names, sorted, each once. The shards
// sit in the index's folder, so dir ("" at the top) is prefixed to them.
func parseIndex(data []byte) ([]string, error) {
	var raw struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: weights index: %v", ErrResponse, err)
	}
	if len(raw.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: weights index: no weight_map", ErrResponse)
	}
	set := map[string]bool{}
	for tensor, shard := range raw.WeightMap {
		if err := checkRepoPath(shard); err != nil {
			return nil, fmt.Errorf("%w: weights index: tensor %q: %v", ErrResponse, tensor, err)
		}
		set[shard] = true
	}
	shards := make([]string, 0, len(set))
	for s := range set {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	return shards, nil
}
