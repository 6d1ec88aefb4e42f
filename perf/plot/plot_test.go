package plot

import (
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/perf/results"
)

// lognormal fills a histogram with n samples of a log-normal distribution whose
// median is medianNs: the shape of storage latencies (a body and a long tail).
func lognormal(rng *rand.Rand, n int, medianNs, sigma float64) *results.Histogram {
	h := results.NewHistogram()
	for range n {
		h.Record(int64(medianNs * math.Exp(sigma*rng.NormFloat64())))
	}
	return h
}

func cell(rng *rand.Rand, workload, op, path string, tenants int, medianNs float64) results.Cell {
	h := lognormal(rng, 2000, medianNs, 0.6)
	return results.Cell{Workload: workload, Op: op, Path: path, Tenants: tenants, Seconds: 2,
		Summary: results.Summarize(h, 2), Hist: h, Source: "polytropon"}
}

func machine() results.Machine {
	return results.Machine{CPU: "AMD EPYC", Cores: 2, Kernel: "6.1.0", Go: "go1.26", Date: "2026-11-21T03:00:00Z", Backing: "ext4"}
}

// syntheticRun mirrors the papers' experiment: three paths whose latency grows
// with tenants at different rates, so the log axis is exercised, plus a failed
// cell and an external cell that reported percentiles only.
func syntheticRun() *results.Run {
	rng := rand.New(rand.NewPCG(1, 2))
	r := &results.Run{Machine: machine(), Params: map[string]string{"duration": "2s"}}
	base := map[string]float64{"direct": 3e3, "fuse": 20e3, "kernel": 50e3}
	for _, op := range []string{"put", "get"} {
		for _, t := range []int{1, 4} {
			for _, p := range []string{"kernel", "fuse", "direct"} {
				r.Cells = append(r.Cells, cell(rng, "pebble", op, p, t, base[p]*float64(t)))
			}
		}
	}
	r.Cells = append(r.Cells, results.Cell{Workload: "pebble", Op: "put", Path: "direct", Tenants: 8, Source: "polytropon", Error: "service died"})
	r.Cells = append(r.Cells,
		results.Cell{Workload: "fio", Op: "fio-randread-read", Path: "kernel", Tenants: 1, Seconds: 1, Source: "fio",
			Summary: results.Summary{Count: 1000, P50: 40e3, P99: 90e3, P999: 150e3, Mean: 45e3, OpsPerSec: 1000}},
		results.Cell{Workload: "fio", Op: "fio-randread-read", Path: "fuse", Tenants: 1, Seconds: 1, Source: "fio",
			Summary: results.Summary{Count: 1000, P50: 60e3, P99: 130e3, P999: 250e3, Mean: 65e3, OpsPerSec: 800}})
	return r
}

// checkFiles decodes every PNG and parses every SVG in files, all of which must
// lie directly in dir.
func checkFiles(t *testing.T, dir string, files []string) {
	t.Helper()
	for _, f := range files {
		if filepath.Dir(f) != dir {
			t.Errorf("%s is not directly in %s", f, dir)
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(f) {
		case ".png":
			img, err := png.Decode(fh)
			if err != nil {
				t.Errorf("%s: %v", f, err)
			} else if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
				t.Errorf("%s: image is %v", f, b)
			}
		case ".svg":
			checkSVG(t, f, fh)
		default:
			t.Errorf("unexpected file %s", f)
		}
		fh.Close()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(files) {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %v, Write reported %v (temporary files left?)", names, files)
	}
}

func checkSVG(t *testing.T, name string, r io.Reader) {
	t.Helper()
	d := xml.NewDecoder(r)
	root, elems := "", 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			elems++
		}
	}
	if root != "svg" || elems < 10 {
		t.Errorf("%s: root element %q, %d elements", name, root, elems)
	}
}

func names(files []string) []string {
	var out []string
	for _, f := range files {
		out = append(out, filepath.Base(f))
	}
	slices.Sort(out)
	return out
}

func TestWriteAll(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run := syntheticRun()
	files, err := Write(run, dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, base := range []string{
		"latency-pebble-put", "latency-pebble-get", "latency-fio-fio-randread-read",
		"cdf-pebble-put-t1", "cdf-pebble-put-t4", "cdf-pebble-get-t1", "cdf-pebble-get-t4",
	} {
		want = append(want, base+".png", base+".svg")
	}
	slices.Sort(want)
	// No CDF for the fio cells (no histogram) nor for the failed 8-tenant cell.
	if got := names(files); !slices.Equal(got, want) {
		t.Errorf("files:\n got %v\nwant %v", got, want)
	}
	checkFiles(t, dir, files)

	// The title names the machine and the date; SVG keeps text as text.
	svg, err := os.ReadFile(filepath.Join(dir, "latency-pebble-put.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"AMD EPYC", "2026-11-21", "kernel p50", "direct p99"} {
		if !strings.Contains(string(svg), s) {
			t.Errorf("latency-pebble-put.svg does not mention %q", s)
		}
	}
}

func TestSingleTenant(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	run := &results.Run{Machine: machine(), Partial: true}
	for _, p := range []string{"kernel", "fuse", "direct"} {
		run.Cells = append(run.Cells, cell(rng, "micro", "stat", p, 1, 5e3))
	}
	// One path's histogram is a single value: its CDF is one step.
	h := results.NewHistogram()
	for range 100 {
		h.Record(7000)
	}
	run.Cells = append(run.Cells, results.Cell{Workload: "micro", Op: "open", Path: "direct", Tenants: 1, Seconds: 1,
		Summary: results.Summarize(h, 1), Hist: h, Source: "polytropon"})
	dir := t.TempDir()
	files, err := Write(run, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cdf-micro-open-t1.png", "cdf-micro-open-t1.svg", "cdf-micro-stat-t1.png", "cdf-micro-stat-t1.svg",
		"latency-micro-open.png", "latency-micro-open.svg", "latency-micro-stat.png", "latency-micro-stat.svg"}
	if got := names(files); !slices.Equal(got, want) {
		t.Errorf("files %v, want %v", got, want)
	}
	checkFiles(t, dir, files)
	svg, err := os.ReadFile(filepath.Join(dir, "latency-micro-stat.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(svg), "partial") {
		t.Error("a partial run's figure does not say so")
	}
	// Writing again replaces the figures in place.
	again, err := Write(run, dir)
	if err != nil || !slices.Equal(names(again), want) {
		t.Errorf("rewriting: %v, %v", names(again), err)
	}
	checkFiles(t, dir, again)
}

func TestBadRuns(t *testing.T) {
	dir := t.TempDir()
	if err := WriteAll(nil, dir); err == nil {
		t.Error("nil run: no error")
	}
	if err := WriteAll(&results.Run{Machine: machine()}, dir); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty run: %v, want ErrEmpty", err)
	}
	failed := &results.Run{Cells: []results.Cell{{Workload: "w", Op: "o", Path: "fuse", Tenants: 1, Error: "mount failed"}}}
	if err := WriteAll(failed, dir); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "failed") {
		t.Errorf("all cells failed: %v", err)
	}
	zero := &results.Run{Cells: []results.Cell{{Workload: "w", Op: "o", Path: "fuse", Tenants: 0, Summary: results.Summary{P50: 1}}}}
	if err := WriteAll(zero, dir); err == nil || !strings.Contains(err.Error(), "0 tenants") {
		t.Errorf("0 tenants: %v", err)
	}
	noPath := &results.Run{Cells: []results.Cell{{Workload: "w", Op: "o", Tenants: 1, Summary: results.Summary{P50: 1}}}}
	if err := WriteAll(noPath, dir); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("no path: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("bad runs wrote %d files", len(ents))
	}
	// dir is a regular file: a clear error, and the file is untouched.
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteAll(syntheticRun(), f); err == nil {
		t.Error("dir is a file: no error")
	}
	if b, _ := os.ReadFile(f); string(b) != "keep" {
		t.Errorf("file now holds %q", b)
	}
}

func TestSanitizedNames(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	run := &results.Run{Machine: machine(), Cells: []results.Cell{
		cell(rng, "../../etc", "pass wd", "kernel", 1, 5e3),
		cell(rng, ".._.._etc", "pass_wd", "kernel", 1, 5e3), // sanitises to the same name
		cell(rng, "w", strings.Repeat("x", 400), "fuse", 2, 5e3),
	}}
	dir := t.TempDir()
	files, err := Write(run, dir)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, files)
	got := names(files)
	for _, n := range []string{"latency-.._.._etc-pass_wd.png", "latency-.._.._etc-pass_wd-2.png", "cdf-.._.._etc-pass_wd-t1-2.svg"} {
		if !slices.Contains(got, n) {
			t.Errorf("%s missing from %v", n, got)
		}
	}
	for _, n := range got {
		if len(n) > 255 {
			t.Errorf("name of %d bytes", len(n))
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"":             "_",
		"fillrandom":   "fillrandom",
		"a/b":          "a_b",
		"..":           "_.",
		"-rf":          "_rf",
		"p99.9 µs":     "p99.9___s",
		"x\x00y":       "x_y",
		"fio-read-4k_": "fio-read-4k_",
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	if n := len(Sanitize(strings.Repeat("a", 1000))); n != maxName {
		t.Errorf("long name sanitised to %d bytes", n)
	}
}

func TestLinearTicks(t *testing.T) {
	for _, c := range []struct {
		min, max float64
		labels   []string
	}{
		{0, 300, []string{"0", "50", "100", "150", "200", "250", "300"}},
		{0, 1.15, []string{"0", "0.2", "0.4", "0.6", "0.8", "1"}},
		{0, 9000, []string{"0", "2000", "4000", "6000", "8000"}},
		{5, 5, nil},
	} {
		var got []string
		for _, tk := range (linearTicks{}).Ticks(c.min, c.max) {
			if tk.Value < c.min || tk.Value > c.max {
				t.Errorf("[%v, %v]: tick %v outside", c.min, c.max, tk.Value)
			}
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if !slices.Equal(got, c.labels) {
			t.Errorf("[%v, %v]: labels %v, want %v", c.min, c.max, got, c.labels)
		}
	}
}
