package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/isolation"
	"github.com/polytropon/polytropon/perf/results"
)

// TestPerfRunPools runs a tiny perf run with two tenants inside pools on the
// kernel and direct paths.
func TestPerfRunPools(t *testing.T) {
	testenv.Root(t)
	testenv.Cpusets(t, false) // creates cpusets: not beside an exclusive one
	out := filepath.Join(t.TempDir(), "report")
	if s, err := runCLI(t, "perf", "run", "--pools", "--workload", "micro", "--ops", "stat", "--paths", "kernel,direct",
		"--tenants", "2", "--duration", "300ms", "--warmup", "100ms", "--out", out); err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	run, err := results.Load(filepath.Join(out, harness.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{harness.PathKernel, harness.PathDirect} {
		if c := run.Find("micro", "stat", p, 2); c == nil || c.Error != "" || c.Hist == nil || c.Hist.Count() == 0 {
			t.Fatalf("%s: cell %+v", p, c)
		}
	}
	if !strings.Contains(run.Params["pools"], "one pool per tenant") {
		t.Fatalf("params %v lack the pools", run.Params)
	}
	left, _ := filepath.Glob("/sys/fs/cgroup/cpuset/polytropon-perf-*")
	for _, l := range left {
		if strings.HasSuffix(l, fmt.Sprintf("-%d", os.Getpid())) {
			t.Fatalf("pools left after the run: %s", l)
		}
	}
}

// TestPerfIsolation runs the isolation experiment briefly: every row measured,
// the noisy tenant wrote and fsynced, the pools are gone afterwards.
func TestPerfIsolation(t *testing.T) {
	testenv.Root(t)
	testenv.Cpusets(t, false) // creates cpusets: not beside an exclusive one
	out := filepath.Join(t.TempDir(), "iso")
	s, err := runCLI(t, "perf", "isolation", "--duration", "300ms", "--warmup", "100ms", "--block", "65536", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	for _, want := range []string{"kernel  none", "direct  noisy", "P99 vs ALONE", "t0 on CPU", "t1 on CPU"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "isolation.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep isolation.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if r.Error != "" || r.Summary.Count == 0 || (r.Neighbour == "noisy") != (r.Noisy != nil) {
			t.Fatalf("row %+v", r)
		}
		if r.Noisy != nil && (r.Noisy.Bytes == 0 || r.Noisy.Fsyncs == 0) {
			t.Fatalf("the noisy tenant did nothing: %+v", r.Noisy)
		}
	}
	if left, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/cpuset/polytropon-isolation-%d", os.Getpid())); len(left) != 0 {
		t.Fatalf("pools left: %v", left)
	}
	if _, err := runCLI(t, "perf", "isolation", "--rounds", "0", "--out", out); err == nil || !strings.Contains(err.Error(), "0 rounds") {
		t.Fatalf("--rounds 0: %v", err)
	}
}
