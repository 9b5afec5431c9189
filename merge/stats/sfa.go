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
		for _, f := range []struct {
			raw json.RawMessage
			dst **float64
			key string
		}{{rep.L2Before, &p.L2Before, "l2_before"}, {rep.L2After, &p.L2After, "l2_after"}} {
			if string(f.raw) == "null" {
				continue
			}
			var v float64
			if err := json.Unmarshal(f.raw, &v); err != nil || v < 0 {
				return nil, fmt.Errorf("%s: report %d: %s %s: want a non-negative number or null", name, i+1, f.key, f.raw)
			}
			*f.dst = &v
		}
		pts[i] = p
	}
	return pts, nil
}
