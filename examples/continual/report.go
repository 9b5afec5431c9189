package main

import (
	"encoding/csv"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteReport writes results.csv, results.md, plane.png, plane_task_aware.png and
// l2.png into dir. plane.png and l2.png show every setting in results; the task-aware
// plane only the class-incremental rows (with one 5-way head it is plane.png again).
func WriteReport(dir string, cfg Config, results []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(dir, "results.csv"), results); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(Markdown(cfg, results)), 0o644); err != nil {
		return err
	}
	if err := plotPlane(filepath.Join(dir, "plane.png"), results, false); err != nil {
		return err
	}
	var class []Result
	for _, r := range results {
		if r.Setting == ClassIncremental {
			class = append(class, r)
		}
	}
	if err := plotPlane(filepath.Join(dir, "plane_task_aware.png"), class, true); err != nil {
		return err
	}
	return plotL2(filepath.Join(dir, "l2.png"), results)
}

func writeCSV(path string, results []Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write(csvHeader)
	for _, r := range results {
		w.Write([]string{r.Setting.String(), r.Method, r.Param, strconv.FormatFloat(r.Value, 'g', -1, 64),
			strconv.FormatFloat(r.AccA, 'f', 4, 64), strconv.FormatFloat(r.AccB, 'f', 4, 64),
			strconv.FormatFloat(r.L2, 'f', 6, 64), strconv.Itoa(r.SFACalls),
			strconv.FormatFloat(r.TaskA, 'f', 4, 64), strconv.FormatFloat(r.TaskB, 'f', 4, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

var csvHeader = []string{"setting", "method", "param", "value", "acc_a", "acc_b", "l2_to_anchor", "sfa_calls", "task_aware_acc_a", "task_aware_acc_b"}

// ReadCSV reads back what writeCSV wrote, so that the report can be redrawn without
// training again. A file without the setting column (written before there were two
// settings) is class-incremental.
func ReadCSV(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	withSetting := len(rows) > 0 && slices.Equal(rows[0], csvHeader)
	if !withSetting && (len(rows) == 0 || !slices.Equal(rows[0], csvHeader[1:])) {
		return nil, fmt.Errorf("%s: not a results.csv written by this program", path)
	}
	var out []Result
	for i, row := range rows[1:] {
		var r Result
		if withSetting {
			if r.Setting, err = ParseSetting(row[0]); err != nil {
				return nil, fmt.Errorf("%s: line %d: %w", path, i+2, err)
			}
			row = row[1:]
		}
		var v [7]float64
		for j, col := range []int{2, 3, 4, 5, 6, 7, 8} {
			if v[j], err = strconv.ParseFloat(row[col], 64); err != nil {
				return nil, fmt.Errorf("%s: line %d, column %s: %w", path, i+2, csvHeader[col+1], err)
			}
		}
		r.Method, r.Param, r.Value, r.AccA, r.AccB, r.L2 = row[0], row[1], v[0], v[1], v[2], v[3]
		r.SFACalls, r.TaskA, r.TaskB = int(v[4]), v[5], v[6]
		out = append(out, r)
	}
	return out, nil
}

// Markdown renders the results as one table per setting, with the configuration above
// them. With a 5-way head the task-aware columns equal the others and are left out.
func Markdown(cfg Config, results []Result) string {
	var b strings.Builder
	all := func(n int) string {
		if n == 0 {
			return "all"
		}
		return strconv.Itoa(n)
	}
	fmt.Fprintf(&b, "MLP %v, then the head; SGD lr %g, batch %d; %d steps on A, T = %d steps on B; train examples per task: %s, test: %s; seed %d.\n",
		cfg.Sizes[:len(cfg.Sizes)-1], cfg.LR, cfg.Batch, cfg.StepsA, cfg.StepsB, all(cfg.TrainPerTask), all(cfg.TestPerTask), cfg.Seed)
	for _, s := range Settings {
		rows := slices.DeleteFunc(slices.Clone(results), func(r Result) bool { return r.Setting != s })
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### %s%s\n\n", strings.ToUpper(s.Title()[:1]), s.Title()[1:])
		taskAware := s.Classes() > 5
		b.WriteString("| row | acc A | acc B | mean | L2 to θ_A | gomerge sfa calls |")
		if taskAware {
			b.WriteString(" task-aware A | task-aware B |")
		}
		b.WriteString("\n|---|---:|---:|---:|---:|---:|")
		if taskAware {
			b.WriteString("---:|---:|")
		}
		b.WriteString("\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.2f | %d |", r.Label(), r.AccA, r.AccB, (r.AccA+r.AccB)/2, r.L2, r.SFACalls)
			if taskAware {
				fmt.Fprintf(&b, " %.3f | %.3f |", r.TaskA, r.TaskB)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// group is one line on a plot: the rows of one method in one setting, in row order
// (the sweeps are listed in order of their parameter).
type group struct {
	setting Setting
	method  string
	rows    []Result
}

// groups splits the results by setting and method, in first-seen order, and numbers
// the methods in first-seen order over all settings, so that a method has one colour
// in both.
func groups(results []Result) (gs []group, methodIndex map[string]int) {
	methodIndex = map[string]int{}
	at := map[[2]string]int{}
	for _, r := range results {
		if _, ok := methodIndex[r.Method]; !ok {
			methodIndex[r.Method] = len(methodIndex)
		}
		key := [2]string{r.Setting.String(), r.Method}
		i, ok := at[key]
		if !ok {
			i = len(gs)
			at[key] = i
			gs = append(gs, group{setting: r.Setting, method: r.Method})
		}
		gs[i].rows = append(gs[i].rows, r)
	}
	return gs, methodIndex
}

// style gives each method a fixed colour and marker, so the plots agree. The
// domain-incremental rows of a method keep its colour but are drawn as rings on dashed
// lines.
func style(i int, s Setting) (color.Color, draw.GlyphDrawer, []vg.Length) {
	palette := []color.Color{
		color.RGBA{0, 0, 0, 255}, color.RGBA{214, 39, 40, 255}, color.RGBA{31, 119, 180, 255},
		color.RGBA{0, 150, 136, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{148, 103, 189, 255},
		color.RGBA{44, 160, 44, 255}, color.RGBA{140, 86, 75, 255}, color.RGBA{227, 119, 194, 255},
		color.RGBA{127, 127, 127, 255}, color.RGBA{188, 189, 34, 255},
	}
	glyphs := []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{},
		draw.CrossGlyph{}, draw.PlusGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}} // rings mark the 5-way head
	if s == DomainIncremental {
		return palette[i%len(palette)], draw.RingGlyph{}, []vg.Length{vg.Points(4), vg.Points(2.5)}
	}
	return palette[i%len(palette)], glyphs[i%len(glyphs)], nil
}

// scatter adds one series per setting and method (a line through the points of a
// sweep, in row order) with each sweep point labelled by its parameter value, and
// returns the legend: one entry per method and, when both settings are drawn, one per
// setting.
func scatter(p *plot.Plot, results []Result, xy func(Result) (float64, float64)) (plot.Legend, error) {
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	leg.TextStyle.Font.Size = vg.Points(9)
	gs, methodIndex := groups(results)
	inLegend := map[string]bool{}
	settings := map[Setting]bool{}
	for _, g := range gs {
		settings[g.setting] = true
		pts := make(plotter.XYs, len(g.rows))
		labels := make([]string, len(g.rows))
		for j, r := range g.rows {
			pts[j].X, pts[j].Y = xy(r)
			if len(g.rows) > 1 {
				labels[j] = strconv.FormatFloat(r.Value, 'g', -1, 64)
			}
		}
		c, glyph, dashes := style(methodIndex[g.method], g.setting)
		if len(g.rows) > 1 {
			line, err := plotter.NewLine(pts)
			if err != nil {
				return leg, err
			}
			line.Color = c
			line.Width = vg.Points(1)
			line.Dashes = dashes
			p.Add(line)
			lab, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
			if err != nil {
				return leg, err
			}
			for k := range lab.TextStyle {
				lab.TextStyle[k].Color = c
				lab.TextStyle[k].Font.Size = vg.Points(7)
			}
			lab.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(2)}
			p.Add(lab)
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return leg, err
		}
		sc.Color, sc.Shape, sc.Radius = c, glyph, vg.Points(3)
		p.Add(sc)
		if !inLegend[g.method] {
			inLegend[g.method] = true
			label := g.method
			if len(g.rows) > 1 {
				label += " (" + g.rows[0].Param + ")"
			}
			leg.Add(label, sc)
		}
	}
	if len(settings) > 1 {
		for _, s := range Settings {
			c, glyph, dashes := style(0, s)
			line := &plotter.Line{LineStyle: draw.LineStyle{Color: c, Width: vg.Points(1), Dashes: dashes}}
			dot := &plotter.Scatter{GlyphStyle: draw.GlyphStyle{Color: c, Shape: glyph, Radius: vg.Points(3)}}
			leg.Add(map[Setting]string{ClassIncremental: "10-way head (class-incr.)", DomainIncremental: "5-way head (domain-incr.)"}[s], line, dot)
		}
	}
	return leg, nil
}

// save draws the plot with its legend in a column to the right, where it hides no
// point, and writes a PNG.
func save(p *plot.Plot, leg plot.Legend, path string) error {
	const w, h, legendW = 7.5 * vg.Inch, 5 * vg.Inch, 1.9 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, -legendW, 0, 0))
	leg.Draw(draw.Crop(dc, w-legendW+vg.Points(6), 0, -vg.Points(30), 0))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// plotPlane plots accuracy on B against accuracy on A: argmax over all ten classes, or
// with taskAware over the task's own five.
func plotPlane(path string, results []Result, taskAware bool) error {
	p := plot.New()
	p.Title.Text = "Fashion-MNIST, A = even labels, then B = odd labels"
	p.X.Label.Text = "test accuracy on A"
	p.Y.Label.Text = "test accuracy on B"
	xy := func(r Result) (float64, float64) { return r.AccA, r.AccB }
	if taskAware {
		p.Title.Text = "Task-aware: argmax over the task's own five classes"
		p.X.Label.Text, p.Y.Label.Text = "task-aware test accuracy on A", "task-aware test accuracy on B"
		xy = func(r Result) (float64, float64) { return r.TaskA, r.TaskB }
	}
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	p.Add(plotter.NewGrid())
	leg, err := scatter(p, results, xy)
	if err != nil {
		return err
	}
	return save(p, leg, path)
}

func plotL2(path string, results []Result) error {
	p := plot.New()
	p.Title.Text = "Distance to the task-A model vs accuracy on A"
	p.X.Label.Text = "L2 distance to θ_A (gomerge distance)"
	p.Y.Label.Text = "test accuracy on A"
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	leg, err := scatter(p, results, func(r Result) (float64, float64) { return r.L2, r.AccA })
	if err != nil {
		return err
	}
	return save(p, leg, path)
}
