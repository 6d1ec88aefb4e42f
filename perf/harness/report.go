package harness

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/perf/results"
)

// Files of a report directory.
const (
	ResultsFile = "results.json"
	SummaryFile = "summary.csv"
)

// WriteReport writes results.json and summary.csv into dir (Run then draws
// the plots through Options.Plots). Each file is written whole to a temporary
// name and renamed, so a report directory never holds a torn file.
func WriteReport(run *results.Run, dir string) error {
	b, err := json.MarshalIndent(run, "", "  ")
	if err != nil {
		return fmt.Errorf("harness: encoding the results: %w", err)
	}
	if err := writeFile(filepath.Join(dir, ResultsFile), append(b, '\n')); err != nil {
		return err
	}
	var sb strings.Builder
	if err := WriteCSV(&sb, run); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, SummaryFile), []byte(sb.String()))
}

func writeFile(name string, b []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// CSVHeader is summary.csv's first line. Latencies are in nanoseconds, CPU in
// seconds over the measurement.
var CSVHeader = []string{"workload", "op", "path", "tenants", "count", "p50_ns", "p99_ns", "p999_ns",
	"mean_ns", "ops_per_sec", "cpu_client_s", "cpu_service_s", "seconds", "source", "error"}

// WriteCSV writes one row per cell.
func WriteCSV(w io.Writer, run *results.Run) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, c := range run.Cells {
		s := c.Summary
		if err := cw.Write([]string{c.Workload, c.Op, c.Path, strconv.Itoa(c.Tenants), strconv.FormatInt(s.Count, 10),
			strconv.FormatInt(s.P50, 10), strconv.FormatInt(s.P99, 10), strconv.FormatInt(s.P999, 10),
			f(math.Round(s.Mean)), f(math.Round(s.OpsPerSec*10) / 10), f(c.CPU.Client), f(c.CPU.Service),
			f(c.Seconds), c.Source, c.Error}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Table prints the run: machine, then per workload and op one row per tenant
// count and path, and where the direct path was measured, the other paths' p50
// over the direct path's (above 1: direct is faster).
func Table(w io.Writer, run *results.Run) error {
	m := run.Machine
	fmt.Fprintf(w, "%s, %d cores, %s, %s, backing %s, %s\n", m.CPU, m.Cores, m.Kernel, m.Go, m.Backing, m.Date)
	if run.Partial {
		fmt.Fprintln(w, "PARTIAL: the run was interrupted; cells hold what was measured")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\top\ttenants\tpath\tp50\tp99\tp99.9\tmean\tops/s\tcpu client\tcpu service\t")
	for _, c := range run.Cells {
		if c.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\tFAILED\t\t\t\t\t\t\t\n", c.Workload, c.Op, c.Tenants, c.Path)
			continue
		}
		s := c.Summary
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.2fs\t%.2fs\t\n", c.Workload, c.Op, c.Tenants, c.Path,
			results.FormatNs(float64(s.P50)), results.FormatNs(float64(s.P99)), results.FormatNs(float64(s.P999)), results.FormatNs(s.Mean),
			s.OpsPerSec, c.CPU.Client, c.CPU.Service)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ratios := ratioRows(run)
	if len(ratios) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\top\ttenants\tkernel/direct p50\tfuse/direct p50\tkernel/direct p99\tfuse/direct p99\t")
	for _, r := range ratios {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", r.workload, r.op, r.tenants, fmtRatio(r.k50), fmtRatio(r.f50),
			fmtRatio(r.k99), fmtRatio(r.f99))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nratios: the other path's latency over the direct path's; above 1: the direct path is faster.")
	return nil
}

type ratioRow struct {
	workload, op       string
	tenants            int
	k50, f50, k99, f99 float64
}

func ratioRows(run *results.Run) []ratioRow {
	var out []ratioRow
	for _, d := range run.Cells {
		if d.Path != PathDirect || d.Error != "" || d.Summary.Count == 0 {
			continue
		}
		r := ratioRow{workload: d.Workload, op: d.Op, tenants: d.Tenants}
		if k := run.Find(d.Workload, d.Op, PathKernel, d.Tenants); k != nil && k.Error == "" {
			r.k50, r.k99 = ratio(float64(k.Summary.P50), float64(d.Summary.P50)), ratio(float64(k.Summary.P99), float64(d.Summary.P99))
		}
		if f := run.Find(d.Workload, d.Op, PathFUSE, d.Tenants); f != nil && f.Error == "" {
			r.f50, r.f99 = ratio(float64(f.Summary.P50), float64(d.Summary.P50)), ratio(float64(f.Summary.P99), float64(d.Summary.P99))
		}
		out = append(out, r)
	}
	return out
}

func fmtRatio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// ratio is a/b, or 0 where that is not a finite number (JSON has no NaN).
func ratio(a, b float64) float64 {
	q := a / b
	if b == 0 || math.IsNaN(q) || math.IsInf(q, 0) {
		return 0
	}
	return q
}

// Diff is one cell of two runs compared: B over A. Latency ratios below 1 and
// throughput ratios above 1 mean B is better.
type Diff struct {
	Workload, Op, Path  string
	Tenants             int
	P50, P99, OpsPerSec float64 // B/A; 0 where A is 0
	// OnlyIn is "A" or "B" for a cell measured in one run only (ratios are 0).
	OnlyIn string
}

// Compare pairs the cells of a and b (failed cells are left out) in a's order,
// then those only in b.
func Compare(a, b *results.Run) []Diff {
	var out []Diff
	ok := func(c *results.Cell) bool { return c != nil && c.Error == "" && c.Summary.Count > 0 }
	for i := range a.Cells {
		ca := &a.Cells[i]
		if !ok(ca) {
			continue
		}
		d := Diff{Workload: ca.Workload, Op: ca.Op, Path: ca.Path, Tenants: ca.Tenants}
		cb := b.Find(ca.Workload, ca.Op, ca.Path, ca.Tenants)
		if !ok(cb) {
			d.OnlyIn = "A"
		} else {
			d.P50 = ratio(float64(cb.Summary.P50), float64(ca.Summary.P50))
			d.P99 = ratio(float64(cb.Summary.P99), float64(ca.Summary.P99))
			d.OpsPerSec = ratio(cb.Summary.OpsPerSec, ca.Summary.OpsPerSec)
		}
		out = append(out, d)
	}
	for i := range b.Cells {
		cb := &b.Cells[i]
		if !ok(cb) {
			continue
		}
		if !ok(a.Find(cb.Workload, cb.Op, cb.Path, cb.Tenants)) {
			out = append(out, Diff{Workload: cb.Workload, Op: cb.Op, Path: cb.Path, Tenants: cb.Tenants, OnlyIn: "B"})
		}
	}
	return out
}

// sameBand is how close to 1 a ratio is called "same": run-to-run noise on a
// shared machine is larger than that.
const sameBand = 0.05

// verdict calls a ratio: lowerBetter for latencies.
func verdict(r float64, lowerBetter bool) string {
	switch {
	case r == 0:
		return "-"
	case math.Abs(r-1) <= sameBand:
		return "same"
	case (r < 1) == lowerBetter:
		return "better"
	default:
		return "worse"
	}
}

// PrintCompare prints Compare(a, b) as a table.
func PrintCompare(w io.Writer, a, b *results.Run, nameA, nameB string) error {
	fmt.Fprintf(w, "A: %s (%s, %s)\nB: %s (%s, %s)\nratios B/A; within %.0f%% of 1: same\n\n", nameA, a.Machine.CPU, a.Machine.Date,
		nameB, b.Machine.CPU, b.Machine.Date, sameBand*100)
	diffs := Compare(a, b)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\top\tpath\ttenants\tp50 B/A\t\tp99 B/A\t\tops/s B/A\t\t")
	var only []Diff
	for _, d := range diffs {
		if d.OnlyIn != "" {
			only = append(only, d)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.Workload, d.Op, d.Path, d.Tenants,
			fmtRatio(d.P50), verdict(d.P50, true), fmtRatio(d.P99), verdict(d.P99, true),
			fmtRatio(d.OpsPerSec), verdict(d.OpsPerSec, false))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, side := range []string{"A", "B"} {
		var names []string
		for _, d := range only {
			if d.OnlyIn == side {
				names = append(names, fmt.Sprintf("%s/%s %s x%d", d.Workload, d.Op, d.Path, d.Tenants))
			}
		}
		if len(names) > 0 {
			fmt.Fprintf(w, "\nonly in %s: %s\n", side, strings.Join(names, ", "))
		}
	}
	return nil
}

// progress reports cells as they finish: a bar with an ETA on a terminal, one
// line per cell elsewhere, nothing without a writer.
type progress struct {
	w           io.Writer
	tty         bool
	total, done int
	start       time.Time
	perCell     time.Duration // the estimate before any cell finished
	cur         string
}

func newProgress(w io.Writer, total int, perCell time.Duration) *progress {
	p := &progress{w: w, total: total, start: time.Now(), perCell: perCell + time.Second}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) eta() time.Duration {
	left := p.total - p.done
	if p.done == 0 {
		return time.Duration(left) * p.perCell
	}
	return time.Since(p.start) / time.Duration(p.done) * time.Duration(left)
}

func (p *progress) bar() {
	const width = 30
	fill := 0
	if p.total > 0 {
		fill = p.done * width / p.total
	}
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %d/%d cells, ETA %s  %s", strings.Repeat("#", fill), strings.Repeat("-", width-fill),
		p.done, p.total, p.eta().Round(time.Second), p.cur)
}

func (p *progress) begin(c cellPlan, tenants int) {
	if p.w == nil {
		return
	}
	op := c.op
	if op == "" {
		op = "*"
	}
	p.cur = fmt.Sprintf("%s/%s %s x%d", c.workload, op, c.path, tenants)
	if p.tty {
		p.bar()
	}
}

func (p *progress) end(cells []results.Cell) {
	if p.w == nil {
		return
	}
	p.done++
	if p.tty {
		p.bar()
		return
	}
	for _, c := range cells {
		if c.Error != "" {
			fmt.Fprintf(p.w, "[%d/%d] %s/%s %s x%d: FAILED\n", p.done, p.total, c.Workload, c.Op, c.Path, c.Tenants)
			continue
		}
		fmt.Fprintf(p.w, "[%d/%d] %s/%s %s x%d: p50 %s p99 %s %.0f ops/s, ETA %s\n", p.done, p.total, c.Workload, c.Op,
			c.Path, c.Tenants, results.FormatNs(float64(c.Summary.P50)), results.FormatNs(float64(c.Summary.P99)), c.Summary.OpsPerSec,
			p.eta().Round(time.Second))
	}
}

func (p *progress) finish() {
	if p.w != nil && p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
