// Package report renders merge/stats' statistics for people: a markdown table, SVG
// charts (drawn with gonum.org/v1/plot) and a self-contained HTML page that holds the
// charts, tables of the numbers and the JSON they come from (docs/report.md).
package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/gomerge/gomerge/merge/stats"
)

// Report is what the page shows: the statistics, and the SFA run's points if any.
type Report struct {
	*stats.Report
	SFA []stats.SFAPoint `json:"sfa,omitempty"`
}

// Num formats a value as the page and the markdown show it: 4 significant digits,
// "–" for null.
func Num(p *float64) string {
	if p == nil {
		return "–"
	}
	return strconv.FormatFloat(*p, 'g', 4, 64)
}

// exact is a value as data-value holds it: the shortest decimal that reads back as
// the same float64, or "null".
func exact(p *float64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}

// LayerName is "other" for -1 (the tensors outside the layers: embeddings, the final
// norm, the output head), else the layer's number.
func LayerName(l int) string {
	if l < 0 {
		return "other"
	}
	return strconv.Itoa(l)
}

// column is one number of a row, found in the JSON at path (relative to the row).
type column struct {
	head string
	path string
	get  func(g *stats.Group) *float64
}

// columns lists the numbers a row of groups shows, for these models and densities.
func columns(r *stats.Report) []column {
	var cs []column
	multi := len(r.Models) > 1
	for m := range r.Models {
		tag := ""
		if multi {
			tag = fmt.Sprintf(" m%d", m)
		}
		cs = append(cs, column{"‖τ‖/‖base‖" + tag, fmt.Sprintf("models.%d.relative", m), func(g *stats.Group) *float64 { return g.Models[m].Relative }})
		for d, den := range r.Densities {
			cs = append(cs, column{fmt.Sprintf("kept@%g%s", den, tag), fmt.Sprintf("models.%d.kept.%d", m, d), func(g *stats.Group) *float64 { return g.Models[m].Kept[d] }})
		}
	}
	for p := range len(r.Models) * (len(r.Models) - 1) / 2 {
		tag := ""
		if len(r.Models) > 2 {
			tag = fmt.Sprintf(" m%d·m%d", r.Total.Pairs[p].A, r.Total.Pairs[p].B)
		}
		cs = append(cs, column{"cos" + tag, fmt.Sprintf("pairs.%d.cosine", p), func(g *stats.Group) *float64 { return g.Pairs[p].Cosine }})
		cs = append(cs, column{"sign conflict" + tag, fmt.Sprintf("pairs.%d.sign_conflict", p), func(g *stats.Group) *float64 { return g.Pairs[p].SignConflict }})
		for d, den := range r.Densities {
			cs = append(cs, column{fmt.Sprintf("overlap@%g%s", den, tag), fmt.Sprintf("pairs.%d.overlap.%d", p, d), func(g *stats.Group) *float64 { return g.Pairs[p].Overlap[d] }})
		}
	}
	return cs
}

// Markdown writes the per-layer × kind table and the total.
func Markdown(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Base: `%s`\n\n", r.Base)
	for i, m := range r.Models {
		fmt.Fprintf(&b, "- m%d: `%s`\n", i, m)
	}
	b.WriteString("\n")
	cs := columns(r.Report)
	b.WriteString("| layer | kind |")
	for _, c := range cs {
		b.WriteString(" " + c.head + " |")
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(cs)) + "\n")
	row := func(layer, kind string, g *stats.Group) {
		fmt.Fprintf(&b, "| %s | %s |", layer, kind)
		for _, c := range cs {
			b.WriteString(" " + Num(c.get(g)) + " |")
		}
		b.WriteString("\n")
	}
	for i := range r.Groups {
		g := &r.Groups[i]
		row(LayerName(g.Layer), g.Kind, g)
	}
	row("**total**", "", &r.Total)
	if r.Total.OverlapSampled {
		b.WriteString("\nOverlaps of tensors over 2²⁰ elements are estimated from a 1/16 sample (docs/report.md#top-k).\n")
	}
	if len(r.SFA) > 0 {
		b.WriteString("\n| SFA step | l2_before | l2_after |\n|---:|---:|---:|\n")
		for _, p := range r.SFA {
			fmt.Fprintf(&b, "| %d | %s | %s |\n", p.Step, Num(p.L2Before), Num(p.L2After))
		}
		if sfaHasLayers(r.SFA) {
			b.WriteString("\n| SFA step | layer | l2_before | l2_after |\n|---:|---|---:|---:|\n")
			for _, p := range r.SFA {
				for _, l := range p.Layers {
					fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", p.Step, LayerName(l.Layer), Num(l.L2Before), Num(l.L2After))
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cell is one number of the page's tables: its JSON path, exact value and display.
type cell struct {
	Key, Value, Text string
}

type tableRow struct {
	Layer, Kind string
	Cells       []cell
}

type table struct {
	Title string
	Heads []string
	Rows  []tableRow
}

func groupTable(title, prefix string, cs []column, gs []stats.Group) table {
	t := table{Title: title}
	for _, c := range cs {
		t.Heads = append(t.Heads, c.head)
	}
	for i := range gs {
		g := &gs[i]
		row := tableRow{Layer: LayerName(g.Layer), Kind: g.Kind}
		if prefix == "total" {
			row.Layer = "total"
		}
		for _, c := range cs {
			key := prefix + "." + c.path
			if prefix != "total" {
				key = fmt.Sprintf("%s.%d.%s", prefix, i, c.path)
			}
			v := c.get(g)
			row.Cells = append(row.Cells, cell{key, exact(v), Num(v)})
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// HTML writes a self-contained page: no scripts, styles or images from elsewhere.
// Each number shown carries its JSON path (data-key) and exact value (data-value),
// and the JSON itself is embedded (script#gomerge-report), so that a browser test can
// check that the page shows the JSON's numbers; a small inline script does the same
// check in the page and records it in body's data-checked.
func HTML(w io.Writer, r *Report) error {
	js, err := json.Marshal(r) // escapes <, > and &: safe inside <script>
	if err != nil {
		return err
	}
	charts, err := Charts(r)
	if err != nil {
		return err
	}
	cs := columns(r.Report)
	data := struct {
		Base, Title string
		Models      []string
		Charts      []template.HTML
		Tables      []table
		SFA         []tableRow
		Sampled     bool
		JSON        template.JS
	}{Base: r.Base, Models: r.Models, Title: "gomerge report", JSON: template.JS(js), Sampled: r.Total.OverlapSampled}
	for _, c := range charts {
		data.Charts = append(data.Charts, template.HTML(c.SVG)) // our own plot output
	}
	data.Tables = []table{
		groupTable("Total", "total", cs, []stats.Group{r.Total}),
		groupTable("Per layer", "layers", cs, r.Layers),
		groupTable("Per layer and kind", "groups", cs, r.Groups),
	}
	for i, p := range r.SFA {
		data.SFA = append(data.SFA, tableRow{Layer: strconv.Itoa(p.Step), Cells: []cell{
			{fmt.Sprintf("sfa.%d.l2_before", i), exact(p.L2Before), Num(p.L2Before)},
			{fmt.Sprintf("sfa.%d.l2_after", i), exact(p.L2After), Num(p.L2After)},
		}})
		for j, l := range p.Layers {
			data.SFA = append(data.SFA, tableRow{Layer: strconv.Itoa(p.Step), Kind: LayerName(l.Layer), Cells: []cell{
				{fmt.Sprintf("sfa.%d.layers.%d.l2_before", i, j), exact(l.L2Before), Num(l.L2Before)},
				{fmt.Sprintf("sfa.%d.layers.%d.l2_after", i, j), exact(l.L2After), Num(l.L2After)},
			}})
		}
	}
	return page.Execute(w, data)
}

var page = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
td.l,th.l{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1em}
.charts svg{border:1px solid #eee}
</style></head>
<body>
<h1>{{.Title}}</h1>
<p>Base: <code>{{.Base}}</code></p>
<ul>{{range $i, $m := .Models}}<li>m{{$i}}: <code>{{$m}}</code></li>{{end}}</ul>
<p>τ = model − base. kept@d: the fraction of ‖τ‖² held by each tensor's top d·n |τ| (what TIES keeps at density d).
sign conflict: the fraction of elements, non-zero in both task vectors, where their signs differ.
overlap@d: |top-k(τa) ∩ top-k(τb)| / k.{{if .Sampled}} Overlaps of tensors over 2²⁰ elements are estimated from a 1/16 sample.{{end}}</p>
<div class="charts">{{range .Charts}}{{.}}
{{end}}</div>
{{range .Tables}}<h2>{{.Title}}</h2>
<table><tr><th class="l">layer</th><th class="l">kind</th>{{range .Heads}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><td class="l">{{.Layer}}</td><td class="l">{{.Kind}}</td>{{range .Cells}}<td data-key="{{.Key}}" data-value="{{.Value}}">{{.Text}}</td>{{end}}</tr>
{{end}}</table>
{{end}}{{if .SFA}}<h2>SFA run</h2>
<table><tr><th>step</th><th class="l">layer</th><th>l2_before</th><th>l2_after</th></tr>
{{range .SFA}}<tr><td>{{.Layer}}</td><td class="l">{{if .Kind}}{{.Kind}}{{else}}all{{end}}</td>{{range .Cells}}<td data-key="{{.Key}}" data-value="{{.Value}}">{{.Text}}</td>{{end}}</tr>
{{end}}</table>
{{end}}<script type="application/json" id="gomerge-report">{{.JSON}}</script>
<script>
(function () {
  var data = JSON.parse(document.getElementById("gomerge-report").textContent);
  var bad = [], n = 0;
  document.querySelectorAll("[data-key]").forEach(function (td) {
    var v = data;
    td.dataset.key.split(".").forEach(function (k) { v = v == null ? undefined : v[k]; });
    var want = td.dataset.value === "null" ? null : Number(td.dataset.value);
    if (v !== want) bad.push(td.dataset.key);
    n++;
  });
  document.body.setAttribute("data-checked", bad.length ? "mismatch " + bad.join(" ") : "ok " + n);
})();
</script>
</body></html>
`))

// sfaHasLayers says whether any of an SFA run's reports splits its distances by layer.
func sfaHasLayers(pts []stats.SFAPoint) bool {
	return slices.ContainsFunc(pts, func(p stats.SFAPoint) bool { return len(p.Layers) > 0 })
}
