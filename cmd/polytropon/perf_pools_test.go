package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
)

// TestPoolLauncher: what the launcher starts runs inside the tenant's pool, on
// the tenant's CPU only, from its first instruction; Close removes the pools.
func TestPoolLauncher(t *testing.T) {
	testenv.Root(t)
	parent := fmt.Sprintf("polytropon-perftest-%d", os.Getpid())
	pl, err := newPoolLauncher(os.Args[0], parent, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	for tenant := 0; tenant < 3; tenant++ {
		cmd := pl.wrap(tenant, "/bin/sh", "-c", "cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tenant %d: %v\n%s", tenant, err, out)
		}
		pool := fmt.Sprintf("%s/t%d", parent, tenant)
		if !strings.Contains(string(out), pool) {
			t.Fatalf("tenant %d not in its pool %s:\n%s", tenant, pool, out)
		}
		if !strings.Contains(string(out), fmt.Sprintf("Cpus_allowed_list:\t%d\n", pl.CPU(tenant))) {
			t.Fatalf("tenant %d not confined to CPU %d:\n%s", tenant, pl.CPU(tenant), out)
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/cpuset", parent)); !os.IsNotExist(err) {
		t.Fatalf("pools left after Close: %v", err)
	}
}

// TestPerfRunPools runs a tiny perf run with two tenants inside pools on the
// kernel and direct paths.
func TestPerfRunPools(t *testing.T) {
	testenv.Root(t)
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
