package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"regexp"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/gomerge/gomerge/merge/stats"
)

// Chart is one drawn chart.
type Chart struct {
	Name string // a file name stem: relative-m0, sign-conflict-m0-m1, ...
	SVG  []byte // an <svg> element, without an XML prolog
}

const chartW, chartH = 5 * vg.Inch, 3.6 * vg.Inch

// Charts draws the report's charts: per layer × kind heatmaps of each model's
// relative task-vector norm and of each pair's sign conflicts, cosine and top-k
// overlap (at the middle density), per-layer lines of the relative norms and kept
// mass, and the SFA run's l2_before and l2_after against the step, whole and per layer.
func Charts(r *Report) ([]Chart, error) {
	var out []Chart
	add := func(name string, p *plot.Plot, err error) error {
		if err != nil || p == nil {
			return err
		}
		svg, err := drawSVG(p)
		if err != nil {
			return fmt.Errorf("chart %s: %w", name, err)
		}
		out = append(out, Chart{name, svg})
		return nil
	}
	mid := len(r.Densities) / 2
	for m := range r.Models {
		p, err := heatmap(r.Report, fmt.Sprintf("‖τ‖/‖base‖, m%d", m), func(g *stats.Group) *float64 { return g.Models[m].Relative })
		if err := add(fmt.Sprintf("relative-m%d", m), p, err); err != nil {
			return nil, err
		}
	}
	for i, pair := range r.Total.Pairs {
		tag := fmt.Sprintf("m%d-m%d", pair.A, pair.B)
		for _, h := range []struct {
			name, title string
			get         func(g *stats.Group) *float64
		}{
			{"sign-conflict", "sign conflict", func(g *stats.Group) *float64 { return g.Pairs[i].SignConflict }},
			{"cosine", "cosine", func(g *stats.Group) *float64 { return g.Pairs[i].Cosine }},
			{"overlap", fmt.Sprintf("top-k overlap at density %g", r.Densities[mid]), func(g *stats.Group) *float64 { return g.Pairs[i].Overlap[mid] }},
		} {
			p, err := heatmap(r.Report, fmt.Sprintf("%s, m%d·m%d", h.title, pair.A, pair.B), h.get)
			if err := add(h.name+"-"+tag, p, err); err != nil {
				return nil, err
			}
		}
	}
	var series []lineSeries
	for m := range r.Models {
		series = append(series, layerSeries(r.Report, fmt.Sprintf("m%d", m), func(g *stats.Group) *float64 { return g.Models[m].Relative }))
	}
	p, err := lines("‖τ‖/‖base‖ per layer", "layer", series)
	if err := add("relative-layers", p, err); err != nil {
		return nil, err
	}
	series = nil
	for m := range r.Models {
		for d, den := range r.Densities {
			series = append(series, layerSeries(r.Report, fmt.Sprintf("m%d kept@%g", m, den), func(g *stats.Group) *float64 { return g.Models[m].Kept[d] }))
		}
	}
	p, err = lines("fraction of ‖τ‖² in the top-k, per layer", "layer", series)
	if err := add("kept-layers", p, err); err != nil {
		return nil, err
	}
	if len(r.SFA) > 0 {
		before, after := lineSeries{name: "l2_before"}, lineSeries{name: "l2_after"}
		for _, pt := range r.SFA {
			if pt.L2Before != nil {
				before.xy = append(before.xy, plotter.XY{X: float64(pt.Step), Y: *pt.L2Before})
			}
			if pt.L2After != nil {
				after.xy = append(after.xy, plotter.XY{X: float64(pt.Step), Y: *pt.L2After})
			}
		}
		p, err := lines("SFA: L2 to the anchor", "step", []lineSeries{before, after})
		if err := add("sfa", p, err); err != nil {
			return nil, err
		}
		p, err = sfaHeatmap(r.SFA, "SFA: l2_before per layer", func(l *stats.SFALayer) *float64 { return l.L2Before })
		if err := add("sfa-layers-before", p, err); err != nil {
			return nil, err
		}
		p, err = sfaHeatmap(r.SFA, "SFA: l2_after per layer", func(l *stats.SFALayer) *float64 { return l.L2After })
		if err := add("sfa-layers-after", p, err); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var xmlProlog = regexp.MustCompile(`(?s)^.*?(<svg)`)

// drawSVG draws on an SVG canvas directly (not Plot.WriterTo, which would link
// every output format's backend into the binary).
func drawSVG(p *plot.Plot) ([]byte, error) {
	c := vgsvg.New(chartW, chartH)
	p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, err
	}
	return xmlProlog.ReplaceAll(b.Bytes(), []byte("$1")), nil
}

// grid is a table of values by layer for plotter.HeatMap: column c is cols[c] (a
// tensor kind, or an SFA step), row r is layers[r]; missing or null values are NaN.
type grid struct {
	cols   []string
	layers []int
	z      [][]float64 // [row][column]
}

func (g *grid) Dims() (c, r int)   { return len(g.cols), len(g.layers) }
func (g *grid) Z(c, r int) float64 { return g.z[r][c] }
func (g *grid) X(c int) float64    { return float64(c) }
func (g *grid) Y(r int) float64    { return float64(r) }

// newGrid is a grid of NaNs.
func newGrid(cols []string, layers []int) *grid {
	g := &grid{cols: cols, layers: layers, z: make([][]float64, len(layers))}
	for ri := range g.z {
		g.z[ri] = make([]float64, len(cols))
		for ci := range g.z[ri] {
			g.z[ri][ci] = math.NaN()
		}
	}
	return g
}

// heatmap is the layer × kind heatmap of a statistic of the report's groups.
func heatmap(r *stats.Report, title string, get func(*stats.Group) *float64) (*plot.Plot, error) {
	var kinds []string
	for _, k := range stats.Kinds {
		if slices.ContainsFunc(r.Groups, func(gr stats.Group) bool { return gr.Kind == k }) {
			kinds = append(kinds, k)
		}
	}
	var layers []int
	for _, l := range r.Layers {
		layers = append(layers, l.Layer)
	}
	g := newGrid(kinds, layers)
	for i := range r.Groups {
		gr := &r.Groups[i]
		if v := get(gr); v != nil {
			g.z[slices.Index(g.layers, gr.Layer)][slices.Index(g.cols, gr.Kind)] = *v
		}
	}
	return drawGrid(g, title, "")
}

// sfaHeatmap is the layer × step heatmap of an SFA run's per-layer distances to the
// anchor, nil when its reports have no layers.
func sfaHeatmap(pts []stats.SFAPoint, title string, get func(*stats.SFALayer) *float64) (*plot.Plot, error) {
	var steps []string
	var layers []int
	for _, p := range pts {
		steps = append(steps, strconv.Itoa(p.Step))
		for _, l := range p.Layers {
			layers = append(layers, l.Layer)
		}
	}
	slices.Sort(layers)
	g := newGrid(steps, slices.Compact(layers))
	for c, p := range pts {
		for i := range p.Layers {
			if v := get(&p.Layers[i]); v != nil {
				g.z[slices.Index(g.layers, p.Layers[i].Layer)][c] = *v
			}
		}
	}
	return drawGrid(g, title, "step")
}

// drawGrid draws g as a heatmap, nil when it holds no number.
func drawGrid(g *grid, title, xLabel string) (*plot.Plot, error) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, row := range g.z {
		for _, v := range row {
			if !math.IsNaN(v) {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if lo > hi { // nothing defined
		return nil, nil
	}
	if lo == hi {
		hi = lo + math.Max(math.Abs(lo)*1e-6, 1e-12)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (%.3g … %.3g)", title, lo, hi)
	h := plotter.NewHeatMap(g, moreland.SmoothBlueRed().Palette(64))
	h.Min, h.Max = lo, hi
	h.NaN = color.Gray{Y: 235}
	p.Add(h)
	var xt, yt plot.ConstantTicks
	xstep := max(1, len(g.cols)/12)
	for c, k := range g.cols {
		if c%xstep == 0 {
			xt = append(xt, plot.Tick{Value: float64(c), Label: k})
		}
	}
	step := max(1, len(g.layers)/12) // at most about a dozen labels
	for ri, l := range g.layers {
		if ri%step == 0 || l < 0 {
			yt = append(yt, plot.Tick{Value: float64(ri), Label: LayerName(l)})
		}
	}
	p.X.Tick.Marker, p.Y.Tick.Marker = xt, yt
	p.X.Label.Text = xLabel
	p.Y.Label.Text = "layer"
	p.X.Min, p.X.Max = -0.5, float64(len(g.cols))-0.5
	p.Y.Min, p.Y.Max = -0.5, float64(len(g.layers))-0.5
	return p, nil
}

type lineSeries struct {
	name string
	xy   plotter.XYs
}

// layerSeries is a value of every layer (not the tensors outside layers).
func layerSeries(r *stats.Report, name string, get func(*stats.Group) *float64) lineSeries {
	s := lineSeries{name: name}
	for i := range r.Layers {
		g := &r.Layers[i]
		if v := get(g); g.Layer >= 0 && v != nil {
			s.xy = append(s.xy, plotter.XY{X: float64(g.Layer), Y: *v})
		}
	}
	return s
}

func lines(title, x string, series []lineSeries) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	var args []any
	var xs []float64
	for _, s := range series {
		if len(s.xy) > 0 {
			args = append(args, s.name, s.xy)
		}
		for _, pt := range s.xy {
			xs = append(xs, pt.X)
		}
	}
	slices.Sort(xs)
	xs = slices.Compact(xs)
	// Whole-number ticks at the data's x values (layers, steps), about a dozen at most.
	var ticks plot.ConstantTicks
	step := max(1, len(xs)/12)
	for i, v := range xs {
		if i%step == 0 {
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
	}
	p.X.Tick.Marker = ticks
	if len(args) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	return p, nil
}
