package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// SFAPoint is one SFA merge of a training run: ‖current − anchor‖ before and
// ‖merged − anchor‖ after, from the merge's --json report.
type SFAPoint struct {
	Step     int      `json:"step"`
	L2Before *float64 `json:"l2_before"`
	L2After  *float64 `json:"l2_after"`
	// Layers splits them by layer (the report's l2_layers; -1 is the tensors outside
	// the layers), when the report has them.
	Layers []SFALayer `json:"layers,omitempty"`
}

// SFALayer is one layer's distances to the anchor in an SFA merge.
type SFALayer struct {
	Layer    int      `json:"layer"`
	L2Before *float64 `json:"l2_before"`
	L2After  *float64 `json:"l2_after"`
}

// maxSFAReports bounds how many reports one file may hold (a run merges every p·T
// steps; a million merges is far beyond any schedule).
const maxSFAReports = 1 << 20

// ReadSFA reads the --json reports of a run's `gomerge sfa` merges, in order: a JSON
// array of them (integrations/python/gomerge.py's SFA.reports) or one per line. A
// report's "step", when it has one, is its step; otherwise its position, from 1.
// Every report must carry l2_before and l2_after (numbers or null).
func ReadSFA(r io.Reader, name string) ([]SFAPoint, error) {
	type report struct {
		Step     *int            `json:"step"`
		L2Before json.RawMessage `json:"l2_before"`
		L2After  json.RawMessage `json:"l2_after"`
		Layers   []struct {
			Layer    *int            `json:"layer"`
			L2Before json.RawMessage `json:"l2_before"`
			L2After  json.RawMessage `json:"l2_after"`
		} `json:"l2_layers"`
	}
	data, err := io.ReadAll(io.LimitReader(r, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var reports []report
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '[' {
		if err := json.Unmarshal(t, &reports); err != nil {
			return nil, fmt.Errorf("%s: not a JSON array of sfa reports: %w", name, err)
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(data))
		for {
			var rep report
			if err := dec.Decode(&rep); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: report %d: %w", name, len(reports)+1, err)
			}
			reports = append(reports, rep)
			if len(reports) > maxSFAReports {
				return nil, fmt.Errorf("%s: more than %d reports", name, maxSFAReports)
			}
		}
	}
	if len(reports) == 0 {
		return nil, fmt.Errorf("%s: no sfa reports", name)
	}
	if len(reports) > maxSFAReports {
		return nil, fmt.Errorf("%s: more than %d reports", name, maxSFAReports)
	}
	pts := make([]SFAPoint, len(reports))
	for i, rep := range reports {
		if rep.L2Before == nil || rep.L2After == nil {
			return nil, fmt.Errorf("%s: report %d: no l2_before and l2_after (is it a gomerge sfa --json report?)", name, i+1)
		}
		p := SFAPoint{Step: i + 1}
		if rep.Step != nil {
			if *rep.Step < 0 {
				return nil, fmt.Errorf("%s: report %d: step %d is negative", name, i+1, *rep.Step)
			}
			p.Step = *rep.Step
		}
		if err := readDistances(rep.L2Before, rep.L2After, &p.L2Before, &p.L2After); err != nil {
			return nil, fmt.Errorf("%s: report %d: %w", name, i+1, err)
		}
		for j, l := range rep.Layers {
			if l.Layer == nil || *l.Layer < -1 || (j > 0 && *l.Layer <= p.Layers[j-1].Layer) {
				return nil, fmt.Errorf("%s: report %d: l2_layers[%d]: want layers -1, 0, 1, … in increasing order", name, i+1, j)
			}
			sl := SFALayer{Layer: *l.Layer}
			if l.L2Before == nil || l.L2After == nil {
				return nil, fmt.Errorf("%s: report %d: l2_layers[%d]: no l2_before and l2_after", name, i+1, j)
			}
			if err := readDistances(l.L2Before, l.L2After, &sl.L2Before, &sl.L2After); err != nil {
				return nil, fmt.Errorf("%s: report %d: l2_layers[%d]: %w", name, i+1, j, err)
			}
			p.Layers = append(p.Layers, sl)
		}
		pts[i] = p
	}
	return pts, nil
}

// readDistances parses a report's l2_before and l2_after: each a non-negative number
// or null.
func readDistances(before, after json.RawMessage, dstBefore, dstAfter **float64) error {
	for _, f := range []struct {
		raw json.RawMessage
		dst **float64
		key string
	}{{before, dstBefore, "l2_before"}, {after, dstAfter, "l2_after"}} {
		if string(f.raw) == "null" {
			continue
		}
		var v float64
		if err := json.Unmarshal(f.raw, &v); err != nil || v < 0 {
			return fmt.Errorf("%s %s: want a non-negative number or null", f.key, f.raw)
		}
		*f.dst = &v
	}
	return nil
}
