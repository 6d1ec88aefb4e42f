package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/external"
	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
)

func TestPerfRunBadFlags(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"perf", "run", "--workload", "tpcc", "--out", out}, "valid: micro, pebble-fillseq, pebble-fillrandom, pebble-readrandom, db_bench, fio"},
		{[]string{"perf", "run", "--workload", "micro", "--paths", "kernel,nfs", "--out", out}, "valid: kernel, fuse, direct"},
		{[]string{"perf", "run", "--workload", "micro", "--tenants", "0", "--out", out}, "tenant count 0"},
		{[]string{"perf", "run", "--workload", "micro"}, "--out is required"},
		{[]string{"perf", "compare", "a.json"}, "accepts 2 arg(s)"},
		{[]string{"perf", "compare", filepath.Join(out, "a.json"), filepath.Join(out, "b.json")}, "no such file"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("bad flags made %s", out)
	}
}

// TestPerfCompare compares two results files made here (perf/harness tests the
// arithmetic).
func TestPerfCompare(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i, scale := range []int64{1, 3} {
		h := results.NewHistogram()
		for v := range int64(1000) {
			h.Record(scale * (1000 + v))
		}
		run := &results.Run{Machine: results.Machine{CPU: "test", Date: "2026-11-21T00:00:00Z"},
			Cells: []results.Cell{{Workload: "pebble-fillrandom", Op: "put", Path: "direct", Tenants: 4, Seconds: 1,
				Summary: results.Summarize(h, float64(scale)), Hist: h}}}
		d := filepath.Join(dir, string(rune('a'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := harness.WriteReport(run, d); err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(d, harness.ResultsFile))
	}
	out, err := runCLI(t, "perf", "compare", files[0], files[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pebble-fillrandom", "3.00x", "worse", "0.33x"} {
		if !strings.Contains(out, want) {
			t.Errorf("compare lacks %q:\n%s", want, out)
		}
	}
}

func TestPaperTenants(t *testing.T) {
	for cores, want := range map[int][]int{1: {1, 2}, 2: {1, 2, 4}, 3: {1, 2, 4}, 8: {1, 2, 4, 8, 16}} {
		if got := paperTenants(cores); !slices.Equal(got, want) {
			t.Errorf("%d cores: %v, want %v", cores, got, want)
		}
	}
}

// TestPerfWorker speaks the worker protocol to the hidden subcommand, on the
// kernel path (the harness's tests run workers on every path).
func TestPerfWorker(t *testing.T) {
	spec, err := json.Marshal(harness.Spec{Workload: harness.WorkloadMicro, Op: harness.OpStat, Path: harness.PathKernel,
		Dir: filepath.Join(t.TempDir(), "w"), Threads: 2, WarmupNs: int64(time.Millisecond), DurationNs: int64(20 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	in := fmt.Sprintf("%s\ngo %d\n", spec, time.Now().UnixNano())
	root := newRoot()
	var out bytes.Buffer
	root.SetIn(strings.NewReader(in))
	root.SetOut(&out)
	root.SetArgs([]string{"perf", "worker"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	ready, rest, _ := strings.Cut(out.String(), "\n")
	var res harness.WorkerResult
	if err := json.Unmarshal([]byte(rest), &res); ready != "ready" || err != nil {
		t.Fatalf("worker said %q, then %q (%v)", ready, rest, err)
	}
	// At least the window: a thread times one operation even if it outlasts it.
	if res.Hist.Count() == 0 || res.Partial || res.Seconds < 0.02 {
		t.Fatalf("result %+v, %d ops", res, res.Hist.Count())
	}
}

// TestPerfRunExternal runs fio and db_bench through perf run on the kernel path,
// briefly, and checks their cells and plots arrive in the report.
func TestPerfRunExternal(t *testing.T) {
	for _, c := range []struct {
		args []string
		op   string
	}{
		{[]string{"--workload", "fio", "--fio", "--rw=randread --bs=4k --size=4M --ioengine=psync"}, "fio-randread-read"},
		{[]string{"--workload", "db_bench", "--db-bench", "fillrandom", "--db-bench-num", "2000"}, "fillrandom"},
	} {
		out := filepath.Join(t.TempDir(), "report")
		args := append([]string{"perf", "run", "--paths", "kernel", "--duration", "1s", "--warmup", "0s", "--out", out}, c.args...)
		if s, err := runCLI(t, args...); err != nil {
			var nf *external.NotInstalledError
			if errors.As(err, &nf) {
				testenv.SkipOrFail(t, err.Error())
				return
			}
			t.Fatalf("%v: %v\n%s", args, err, s)
		}
		run, err := results.Load(filepath.Join(out, harness.ResultsFile))
		if err != nil {
			t.Fatal(err)
		}
		cell := run.Find(c.args[1], c.op, harness.PathKernel, 1)
		if cell == nil || cell.Error != "" || cell.Summary.Count == 0 || cell.Summary.P50 <= 0 {
			t.Fatalf("%s: cell %+v", c.args[1], cell)
		}
		if _, err := os.Stat(filepath.Join(out, "latency-"+c.args[1]+"-"+c.op+".png")); err != nil {
			t.Fatalf("plot: %v", err)
		}
	}
}

// TestPerfRunAllPathsWithPlots is the end-to-end check through the CLI:
// one tenant, every path, a short run; the results file parses and holds all three
// paths, and the plots exist and decode (PNG) or parse (SVG).
func TestPerfRunAllPathsWithPlots(t *testing.T) {
	testenv.FUSE(t)
	out := filepath.Join(t.TempDir(), "report")
	if s, err := runCLI(t, "perf", "run", "--workload", "micro", "--ops", "stat,read4k-rand", "--paths", "kernel,fuse,direct",
		"--tenants", "1", "--duration", "1s", "--warmup", "200ms", "--out", out); err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	run, err := results.Load(filepath.Join(out, harness.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{harness.PathKernel, harness.PathFUSE, harness.PathDirect} {
		if c := run.Find("micro", "stat", p, 1); c == nil || c.Error != "" || c.Hist == nil || c.Hist.Count() == 0 {
			t.Fatalf("%s: cell %+v", p, c)
		}
	}
	pngs, _ := filepath.Glob(filepath.Join(out, "*.png"))
	svgs, _ := filepath.Glob(filepath.Join(out, "*.svg"))
	if len(pngs) < 4 || len(svgs) != len(pngs) {
		t.Fatalf("plots: %d PNG, %d SVG", len(pngs), len(svgs))
	}
	for _, f := range pngs {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(r)
		r.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	for _, f := range svgs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(bytes.NewReader(b))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
}
