package stats

import (
	"strings"
	"testing"
)

func TestReadSFA(t *testing.T) {
	pts, err := ReadSFA(strings.NewReader(`[{"method":"sfa","l2_before":2,"l2_after":1},{"step":40,"l2_before":3.5,"l2_after":null}]`), "run.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 || pts[0].Step != 1 || *pts[0].L2Before != 2 || *pts[0].L2After != 1 || pts[1].Step != 40 || *pts[1].L2Before != 3.5 || pts[1].L2After != nil {
		t.Errorf("array: %+v", pts)
	}
	layered, err := ReadSFA(strings.NewReader(`[{"l2_before":2,"l2_after":1,"l2_layers":[{"layer":-1,"l2_before":1,"l2_after":0.5},{"layer":0,"l2_before":1.5,"l2_after":null}]}]`), "run.json")
	if err != nil || len(layered) != 1 || len(layered[0].Layers) != 2 {
		t.Fatalf("layers: %+v, %v", layered, err)
	}
	if l := layered[0].Layers; l[0].Layer != -1 || *l[0].L2After != 0.5 || l[1].Layer != 0 || *l[1].L2Before != 1.5 || l[1].L2After != nil {
		t.Errorf("layers: %+v %+v", l[0], l[1])
	}
	lines, err := ReadSFA(strings.NewReader("{\"l2_before\":2,\"l2_after\":1}\n{\"l2_before\":4,\"l2_after\":2}\n"), "run.jsonl")
	if err != nil || len(lines) != 2 || lines[1].Step != 2 || *lines[1].L2After != 2 {
		t.Errorf("lines: %+v, %v", lines, err)
	}
}

func TestReadSFAMalformed(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, "no sfa reports"},
		{`[]`, "no sfa reports"},
		{`[{"l2_before":1}]`, "report 1: no l2_before and l2_after"},
		{`{"l2_before":1,"l2_after":1}` + "\n{", "report 2:"},
		{`[{"l2_before":"x","l2_after":1}]`, "l2_before"},
		{`[{"l2_before":-1,"l2_after":1}]`, "non-negative"},
		{`[{"step":-3,"l2_before":1,"l2_after":1}]`, "negative"},
		{`[{"step":1.5,"l2_before":1,"l2_after":1}]`, "not a JSON array"},
		{`[1,2]`, "not a JSON array"},
		{`"text"`, "report 1:"},
		{`[{"l2_before":1,"l2_after":1,"l2_layers":[{"l2_before":1,"l2_after":1}]}]`, "l2_layers[0]: want layers"},
		{`[{"l2_before":1,"l2_after":1,"l2_layers":[{"layer":-2,"l2_before":1,"l2_after":1}]}]`, "l2_layers[0]: want layers"},
		{`[{"l2_before":1,"l2_after":1,"l2_layers":[{"layer":1,"l2_before":1,"l2_after":1},{"layer":1,"l2_before":1,"l2_after":1}]}]`, "l2_layers[1]: want layers"},
		{`[{"l2_before":1,"l2_after":1,"l2_layers":[{"layer":0,"l2_before":1}]}]`, "l2_layers[0]: no l2_before"},
		{`[{"l2_before":1,"l2_after":1,"l2_layers":[{"layer":0,"l2_before":1,"l2_after":-1}]}]`, "l2_layers[0]: l2_after -1"},
		{`[{"l2_before":1,"l2_after":1,"l2_layers":{"layer":0}}]`, "not a JSON array"},
	} {
		_, err := ReadSFA(strings.NewReader(c.in), "run.json")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "run.json: ") {
			t.Errorf("%q: error %v, want one naming run.json and saying %q", c.in, err, c.want)
		}
	}
}

func FuzzReadSFA(f *testing.F) {
	f.Add([]byte(`[{"l2_before":2,"l2_after":1,"step":3}]`))
	f.Add([]byte("{\"l2_before\":2,\"l2_after\":null}\n"))
	f.Add([]byte(`{"l2_before":2,"l2_after":1,"l2_layers":[{"layer":-1,"l2_before":1,"l2_after":0.5},{"layer":3,"l2_before":1,"l2_after":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pts, err := ReadSFA(strings.NewReader(string(b)), "f")
		if err != nil {
			return
		}
		for _, p := range pts {
			if p.Step < 0 || p.L2Before != nil && *p.L2Before < 0 || p.L2After != nil && *p.L2After < 0 {
				t.Fatalf("accepted %+v", p)
			}
			for j, l := range p.Layers {
				if l.Layer < -1 || j > 0 && l.Layer <= p.Layers[j-1].Layer || l.L2Before != nil && *l.L2Before < 0 || l.L2After != nil && *l.L2After < 0 {
					t.Fatalf("accepted layer %+v of %+v", l, p)
				}
			}
		}
	})
}
