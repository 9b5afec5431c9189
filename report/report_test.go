package report

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gomerge/gomerge/merge/stats"
)

func num(v float64) *float64 { return &v }

func sample() *Report {
	g := func(layer int, kind string, rel *float64) stats.Group {
		return stats.Group{Layer: layer, Kind: kind, Tensors: 1, Elements: 4, BaseNorm: num(2),
			Models: []stats.ModelStats{{Norm: num(1), Relative: rel, Kept: []*float64{num(0.25)}}, {Norm: num(1), Relative: num(0.5), Kept: []*float64{nil}}},
			Pairs:  []stats.PairStats{{A: 0, B: 1, Cosine: num(-0.125), SignConflict: num(0.5), Overlap: []*float64{num(1)}}}}
	}
	r := &stats.Report{Base: "base</script><b>x", Models: []string{"a", "b"}, Densities: []float64{0.1},
		Total: g(-1, "", num(0.5)), Layers: []stats.Group{g(0, "all", num(0.5))},
		Groups: []stats.Group{g(0, stats.KindAttention, nil), g(0, stats.KindMLP, num(0.123456))}}
	return &Report{Report: r, SFA: []stats.SFAPoint{{Step: 3, L2Before: num(2), L2After: nil}}}
}

func TestMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := Markdown(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| layer | kind | ‖τ‖/‖base‖ m0 | kept@0.1 m0 | ‖τ‖/‖base‖ m1 | kept@0.1 m1 | cos | sign conflict | overlap@0.1 |",
		"| 0 | attention | – | 0.25 | 0.5 | – | -0.125 | 0.5 | 1 |",
		"| 0 | mlp | 0.1235 |",
		"| 3 | 2 | – |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestHTMLEscapesAndEmbeds(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, sample()); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if strings.Contains(page, "</script><b>") {
		t.Error("a path's markup reached the page unescaped")
	}
	for _, want := range []string{
		`<td data-key="groups.0.models.0.relative" data-value="null">–</td>`,
		`<td data-key="groups.1.models.0.relative" data-value="0.123456">0.1235</td>`,
		`<td data-key="sfa.0.l2_after" data-value="null">–</td>`,
		`<script type="application/json" id="gomerge-report">`,
		`"relative":0.123456`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// 2 relative-norm heatmaps, 3 of the pair, 2 per-layer line charts, the SFA run.
	if n := strings.Count(page, "<svg"); n != 8 {
		t.Errorf("%d charts, want 8", n)
	}
	for _, bad := range []string{"http://", "https://"} {
		for _, line := range strings.Split(page, "\n") {
			if strings.Contains(line, bad) && !strings.Contains(line, "www.w3.org") {
				t.Errorf("the page refers elsewhere: %q", line)
			}
		}
	}
}
