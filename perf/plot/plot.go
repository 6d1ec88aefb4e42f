// Package plot draws a latency harness run (perf/results) as PNG and SVG figures
// with gonum/plot: latency against tenant count per path, in the manner of the
// seeds' Fig. 5, and latency CDFs per path from the merged histograms.
//
// WriteAll renders one figure per (workload, op) and one per (workload, op,
// tenants). Invariants: it reads the run and never modifies it; every file is
// written under a temporary name and renamed into place, so a failure leaves no
// truncated image behind; file names are built from the cells' names with every
// byte outside [A-Za-z0-9._-] replaced, so a cell cannot name a path outside dir,
// and two cells whose names sanitise alike get distinct files. Failed cells
// (Error set) are left out of every figure, and cells without a histogram (an
// external program that reported only percentiles) are left out of the CDFs.
//
// It holds no locks and keeps no state between calls.
//
// It measures nothing; `polytropon perf run` and `perf paper` call it through
// harness.Options.Plots.
package plot

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/polytropon/polytropon/perf/results"
)

// Figure size: wide enough for a legend beside three paths' lines.
const (
	width  = 16 * vg.Centimeter
	height = 11 * vg.Centimeter
)

// logRatio is the max/min ratio from which the latency axis becomes logarithmic:
// below it a linear axis shows the differences better, above it the slow path
// would flatten the fast one against the axis.
const logRatio = 20

// formats are the file types every figure is written in.
var formats = []string{"png", "svg"}

// pathOrder puts the paths in the order the papers use; others follow by name.
var pathOrder = map[string]int{"kernel": 0, "fuse": 1, "direct": 2}

// ErrEmpty is returned for a run with nothing that can be drawn.
var ErrEmpty = errors.New("plot: the run has no measured cells to plot")

// WriteAll writes every figure of run into dir (created if missing) as PNG and
// SVG: latency-<workload>-<op> and cdf-<workload>-<op>-t<tenants>.
func WriteAll(run *results.Run, dir string) error {
	_, err := Write(run, dir)
	return err
}

// Write is WriteAll that also returns the files it wrote, in order.
func Write(run *results.Run, dir string) ([]string, error) {
	if run == nil {
		return nil, errors.New("plot: nil run")
	}
	cells, err := usable(run)
	if err != nil {
		return nil, err
	}
	if len(cells) == 0 {
		if len(run.Cells) == 0 {
			return nil, ErrEmpty
		}
		return nil, fmt.Errorf("%w (all %d cells failed or hold no measurement)", ErrEmpty, len(run.Cells))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	w := &writer{dir: dir, used: map[string]bool{}, subtitle: subtitle(run)}

	for _, g := range groupBy(cells, func(c *results.Cell) string { return c.Workload + "\x00" + c.Op }) {
		f, err := latencyPlot(g, w.subtitle)
		if err != nil {
			return w.files, err
		}
		if err := w.save(f, "latency-"+g[0].Workload+"-"+g[0].Op); err != nil {
			return w.files, err
		}
	}
	var withHist []*results.Cell
	for _, c := range cells {
		if c.Hist != nil && c.Hist.Count() > 0 {
			withHist = append(withHist, c)
		}
	}
	for _, g := range groupBy(withHist, func(c *results.Cell) string {
		return c.Workload + "\x00" + c.Op + "\x00" + strconv.Itoa(c.Tenants)
	}) {
		f, err := cdfPlot(g, w.subtitle)
		if err != nil {
			return w.files, err
		}
		name := fmt.Sprintf("cdf-%s-%s-t%d", g[0].Workload, g[0].Op, g[0].Tenants)
		if err := w.save(f, name); err != nil {
			return w.files, err
		}
	}
	return w.files, nil
}

// usable returns the cells that carry a measurement, and an error naming the first
// cell that cannot be placed on a figure at all.
func usable(run *results.Run) ([]*results.Cell, error) {
	var out []*results.Cell
	for i := range run.Cells {
		c := &run.Cells[i]
		if c.Workload == "" || c.Op == "" || c.Path == "" {
			return nil, fmt.Errorf("plot: cell %d has an empty workload, op or path (%q, %q, %q)", i, c.Workload, c.Op, c.Path)
		}
		if c.Tenants < 1 {
			return nil, fmt.Errorf("plot: cell %d (%s %s %s) has %d tenants; want at least 1", i, c.Workload, c.Op, c.Path, c.Tenants)
		}
		if c.Error != "" {
			continue
		}
		if c.Summary.P50 <= 0 && (c.Hist == nil || c.Hist.Count() == 0) {
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// groupBy splits cells by key, keeping the order in which keys first appear.
func groupBy(cells []*results.Cell, key func(*results.Cell) string) [][]*results.Cell {
	idx := map[string]int{}
	var groups [][]*results.Cell
	for _, c := range cells {
		k := key(c)
		i, ok := idx[k]
		if !ok {
			i = len(groups)
			idx[k] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], c)
	}
	return groups
}

// paths returns the distinct paths of cells in display order.
func paths(cells []*results.Cell) []string {
	var ps []string
	for _, c := range cells {
		if !slices.Contains(ps, c.Path) {
			ps = append(ps, c.Path)
		}
	}
	slices.SortFunc(ps, func(a, b string) int {
		oa, ka := pathOrder[a]
		ob, kb := pathOrder[b]
		switch {
		case ka && kb:
			return oa - ob
		case ka:
			return -1
		case kb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return ps
}

// pathStyle gives each path the same colour and marker on every figure.
func pathStyle(all []string, p string) (color.Color, draw.GlyphDrawer) {
	i, ok := pathOrder[p]
	if !ok {
		i = len(pathOrder) + slices.Index(all, p)
	}
	return plotutil.Color(i), plotutil.Shape(i)
}

func subtitle(run *results.Run) string {
	m := run.Machine
	var parts []string
	if m.CPU != "" {
		cpu := m.CPU
		if m.Cores > 0 {
			cpu += fmt.Sprintf(" (%d cores)", m.Cores)
		}
		parts = append(parts, cpu)
	}
	if m.Kernel != "" {
		k := m.Kernel
		if !strings.HasPrefix(k, "Linux") {
			k = "Linux " + k
		}
		parts = append(parts, k)
	}
	date := m.Date
	if t, err := time.Parse(time.RFC3339, m.Date); err == nil {
		date = t.UTC().Format("2006-01-02 15:04 UTC")
	}
	if date == "" {
		date = "date unknown"
	}
	parts = append(parts, date)
	s := strings.Join(parts, ", ")
	if run.Partial {
		s += " (partial: interrupted)"
	}
	return s
}

// micros converts nanoseconds for the axes, which are in µs: the papers' unit,
// and the one in which the paths' differences read as small integers.
func micros(ns float64) float64 { return ns / 1e3 }

// latencyPlot draws p50 (solid, with points) and p99 (dashed) against tenants for
// each path of one (workload, op).
func latencyPlot(cells []*results.Cell, sub string) (*figure, error) {
	f := newFigure()
	p := f.p
	p.Title.Text = fmt.Sprintf("%s %s: latency vs tenants\n%s", cells[0].Workload, cells[0].Op, sub)
	p.X.Label.Text = "tenants"
	p.Y.Label.Text = "latency (µs)"
	p.Add(plotter.NewGrid())

	all := paths(cells)
	type point struct {
		path     string
		tenants  int
		p50, p99 float64 // µs; p99 0 when not reported
	}
	var pts []point
	var tenants []int
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, c := range cells {
		s := c.Summary
		if s.P50 <= 0 && c.Hist != nil {
			s = results.Summarize(c.Hist, c.Seconds)
		}
		pt := point{c.Path, c.Tenants, micros(float64(s.P50)), micros(float64(max(s.P99, 0)))}
		pts = append(pts, pt)
		if !slices.Contains(tenants, c.Tenants) {
			tenants = append(tenants, c.Tenants)
		}
		lo, hi = min(lo, pt.p50), max(hi, pt.p50, pt.p99)
	}
	// gonum's LogScale misplaces the axis label (it centres it on the linear
	// midpoint, which leaves a band of empty space above the axes), so a wide
	// range is drawn as log10 of the value on a linear axis with decade ticks.
	logY := hi/lo >= logRatio
	y := func(v float64) float64 { return v }
	if logY {
		y = math.Log10
	}
	for _, path := range all {
		var p50, p99 plotter.XYs
		for _, pt := range pts {
			if pt.path != path {
				continue
			}
			p50 = append(p50, plotter.XY{X: float64(pt.tenants), Y: y(pt.p50)})
			if pt.p99 > 0 {
				p99 = append(p99, plotter.XY{X: float64(pt.tenants), Y: y(pt.p99)})
			}
		}
		slices.SortFunc(p50, func(a, b plotter.XY) int { return int(a.X - b.X) })
		slices.SortFunc(p99, func(a, b plotter.XY) int { return int(a.X - b.X) })
		col, shape := pathStyle(all, path)
		l, s, err := plotter.NewLinePoints(p50)
		if err != nil {
			return nil, fmt.Errorf("plot: %s %s %s: %w", cells[0].Workload, cells[0].Op, path, err)
		}
		l.Color, s.Color, s.Shape = col, col, shape
		s.Radius = vg.Points(3)
		p.Add(l, s)
		f.legend(path+" p50", l, s)
		if len(p99) > 0 {
			l99, s99, err := plotter.NewLinePoints(p99)
			if err != nil {
				return nil, fmt.Errorf("plot: %s %s %s p99: %w", cells[0].Workload, cells[0].Op, path, err)
			}
			l99.Color, s99.Color, s99.Shape = col, col, shape
			l99.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			s99.Radius = vg.Points(2)
			p.Add(l99, s99)
			f.legend(path+" p99", l99, s99)
		}
	}
	slices.Sort(tenants)
	p.X.Tick.Marker = tenantTicks(tenants)
	// A single tenant count would give a zero-width axis; pad so the points sit
	// in the middle, and pad a wider range a little so end points are not clipped.
	p.X.Min = float64(tenants[0]) - 0.5
	p.X.Max = float64(tenants[len(tenants)-1]) + 0.5
	if logY {
		p.Y.Label.Text = "latency (µs, log)"
		p.Y.Min, p.Y.Max = math.Log10(lo/1.5), math.Log10(hi*1.5)
		p.Y.Tick.Marker = decadeTicks{}
	} else {
		p.Y.Min, p.Y.Max = 0, hi*1.15
		p.Y.Tick.Marker = linearTicks{}
	}
	return f, nil
}

// decadeTicks marks an axis whose values are log10 of the data: a labelled tick
// at each power of ten, unlabelled ones at 2..9 times it.
type decadeTicks struct{}

func (decadeTicks) Ticks(min, max float64) []gplot.Tick {
	var ts []gplot.Tick
	for d := math.Floor(min); d <= math.Ceil(max); d++ {
		for k := 1; k < 10; k++ {
			v := d + math.Log10(float64(k))
			if v < min || v > max {
				continue
			}
			t := gplot.Tick{Value: v}
			if k == 1 {
				t.Label = strconv.FormatFloat(math.Pow(10, d), 'g', -1, 64)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// linearTicks labels about five round values (1, 2 or 5 times a power of ten)
// without trailing zeros; gonum's default labels two, with fixed decimals.
type linearTicks struct{}

func (linearTicks) Ticks(lo, hi float64) []gplot.Tick {
	if !(hi > lo) {
		return nil
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{2, 5, 10} {
		if raw/mag > m/1.5 {
			step = m * mag
		}
	}
	decimals := max(0, int(-math.Floor(math.Log10(step))))
	var ts []gplot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		v = math.Round(v/step) * step
		label := strconv.FormatFloat(v, 'f', decimals, 64)
		if strings.Contains(label, ".") {
			label = strings.TrimRight(strings.TrimRight(label, "0"), ".")
		}
		ts = append(ts, gplot.Tick{Value: v, Label: label})
		for k := 1; k < 5; k++ { // unlabelled minor ticks
			if m := v + float64(k)*step/5; m <= hi {
				ts = append(ts, gplot.Tick{Value: m})
			}
		}
	}
	return ts
}

// tenantTicks labels exactly the measured tenant counts: 1, 2, 4, 8... are the
// interesting values and the default ticker would put 2.5 between them. When
// there are many, only some are labelled so that labels do not overlap.
func tenantTicks(ts []int) gplot.ConstantTicks {
	step := 1
	for len(ts)/step > 12 {
		step++
	}
	var ticks gplot.ConstantTicks
	for i, t := range ts {
		label := ""
		if i%step == 0 || i == len(ts)-1 {
			label = strconv.Itoa(t)
		}
		ticks = append(ticks, gplot.Tick{Value: float64(t), Label: label})
	}
	return ticks
}

// cdfPlot draws the latency CDF of each path of one (workload, op, tenants).
func cdfPlot(cells []*results.Cell, sub string) (*figure, error) {
	f := newFigure()
	p := f.p
	p.Title.Text = fmt.Sprintf("%s %s, %d tenant(s): latency CDF\n%s", cells[0].Workload, cells[0].Op, cells[0].Tenants, sub)
	p.X.Label.Text = "latency (µs, log)"
	p.Y.Label.Text = "fraction of operations ≤ x"
	p.X.Scale = gplot.LogScale{}
	p.X.Tick.Marker = gplot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())

	all := paths(cells)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, path := range all {
		// Several cells for one path (a run appended to) are merged: the figure
		// is of the distribution, not of one sample of it.
		h := results.NewHistogram()
		for _, c := range cells {
			if c.Path == path {
				h.Merge(c.Hist)
			}
		}
		ns, frac := h.CDF()
		// Start the curve at 0 just below the first value so that a distribution
		// concentrated in one bucket is still a visible step, not a lone point.
		xy := plotter.XYs{{X: micros(float64(ns[0])) / 1.05, Y: 0}}
		for i := range ns {
			// A histogram has up to thousands of non-empty buckets; points
			// closer than a pixel in both directions only slow the rendering
			// and bloat the SVG.
			last := xy[len(xy)-1]
			x := micros(float64(ns[i]))
			if i == len(ns)-1 || math.Log(x/last.X) >= minStepLogX || frac[i]-last.Y >= minStepY {
				xy = append(xy, plotter.XY{X: x, Y: frac[i]})
			}
		}
		lo, hi = min(lo, xy[0].X), max(hi, xy[len(xy)-1].X)
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, fmt.Errorf("plot: %s %s %s CDF: %w", cells[0].Workload, cells[0].Op, path, err)
		}
		l.StepStyle = plotter.PostStep
		col, _ := pathStyle(all, path)
		l.Color = col
		l.Width = vg.Points(1.5)
		p.Add(l)
		f.legend(fmt.Sprintf("%s (n=%d)", path, h.Count()), l)
	}
	// At least one decade, so that LogTicks has a labelled power of ten to show.
	if hi/lo < 10 {
		mid := math.Sqrt(lo * hi)
		lo, hi = mid/math.Sqrt(10)/1.1, mid*math.Sqrt(10)*1.1
	}
	p.X.Min, p.X.Max = lo, hi
	p.Y.Min, p.Y.Max = 0, 1.02
	return f, nil
}

// CDF points closer than these to the previous one are dropped: about a pixel
// at the figure's size (three decades over ~500 px, the fraction over ~330 px).
const (
	minStepLogX = 0.01
	minStepY    = 0.003
)

type writer struct {
	dir      string
	subtitle string
	used     map[string]bool
	files    []string
}

// figure is a plot whose legend is drawn in a column to the right of the axes:
// inside them it would hide the data of whichever corner it took.
type figure struct {
	p      *gplot.Plot
	leg    gplot.Legend
	labels []string
}

func newFigure() *figure {
	return &figure{p: gplot.New(), leg: gplot.NewLegend()}
}

func (f *figure) legend(label string, th ...gplot.Thumbnailer) {
	f.leg.Add(label, th...)
	f.labels = append(f.labels, label)
}

// render draws the figure as format ("png" or "svg").
func (f *figure) render(format string) (io.WriterTo, error) {
	em := f.leg.TextStyle.Width("M")
	var legW vg.Length
	for _, l := range f.labels {
		legW = max(legW, f.leg.TextStyle.Width(l))
	}
	if legW > 0 {
		legW += f.leg.ThumbnailWidth + 3*em
	}
	c, err := draw.NewFormattedCanvas(width+legW, height, format)
	if err != nil {
		return nil, err
	}
	dc := draw.New(c)
	f.p.Draw(draw.Crop(dc, 0, -legW, 0, 0))
	if legW > 0 {
		f.leg.Top, f.leg.Left = true, true
		// Level with the top of the axes, below the two-line title.
		lines := vg.Length(strings.Count(f.p.Title.Text, "\n") + 1)
		top := lines*f.p.Title.TextStyle.Height("M") + f.p.Title.Padding + em
		f.leg.Draw(draw.Crop(dc, width+em, 0, 0, -top))
	}
	return c, nil
}

// save renders f in every format under a sanitised, unique base name.
func (w *writer) save(fig *figure, base string) error {
	base = Sanitize(base)
	name := base
	for n := 2; w.used[name]; n++ {
		name = fmt.Sprintf("%s-%d", base, n)
	}
	w.used[name] = true
	for _, f := range formats {
		wt, err := fig.render(f)
		if err != nil {
			return fmt.Errorf("plot: %s.%s: %w", name, f, err)
		}
		var buf bytes.Buffer
		if _, err := wt.WriteTo(&buf); err != nil {
			return fmt.Errorf("plot: rendering %s.%s: %w", name, f, err)
		}
		path := filepath.Join(w.dir, name+"."+f)
		if err := writeFile(path, buf.Bytes()); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		w.files = append(w.files, path)
	}
	return nil
}

// writeFile replaces path atomically so that a reader never sees half a figure.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// maxName keeps names (plus a suffix and extension) under the 255-byte limit of
// common filesystems.
const maxName = 200

// Sanitize makes s safe as a file name: bytes outside [A-Za-z0-9._-] become '_',
// a leading '.' or '-' becomes '_' (no hidden files, no option-like names), and
// the result is at most 200 bytes.
func Sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok || (i == 0 && (c == '.' || c == '-')) {
			b[i] = '_'
		}
	}
	if len(b) > maxName {
		b = b[:maxName]
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
