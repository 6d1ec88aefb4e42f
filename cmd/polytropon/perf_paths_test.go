package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/perf/pathperf"
)

func TestPerfPathsBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"perf", "paths", "--ops", "stat,fsync"}, "valid: stat, read4k, write4k, open-close, create-unlink, pebble-put"},
		{[]string{"perf", "paths", "--paths", "kernel,nfs"}, "valid: kernel, fuse, fuse-uncached, direct"},
		{[]string{"perf", "paths", "--duration", "-1s"}, "negative"},
		{[]string{"perf", "paths", "--pebble-keys", "-1"}, "negative"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}

// TestPerfPathsKernelOnly runs the command for real on the one path that needs no
// service (the others are tested in package pathperf, which runs the service).
func TestPerfPathsKernelOnly(t *testing.T) {
	out, err := runCLI(t, "perf", "paths", "--paths", "kernel", "--ops", "read4k,stat", "--duration", "1ms",
		"--iterations", "10", "--dir", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kernel p50") || !strings.Contains(out, "read4k") || strings.Contains(out, "direct") {
		t.Fatalf("table:\n%s", out)
	}
}

// TestPrintPaths checks the table's layout on a report of all three paths.
func TestPrintPaths(t *testing.T) {
	paths := []string{pathperf.PathKernel, pathperf.PathFUSE, pathperf.PathDirect}
	rep := &pathperf.Report{
		Machine:  pathperf.Machine{CPU: "Test CPU", Cores: 2, Kernel: "Linux 6.18 x86_64", Go: "go1.26", Date: "2026-11-21T00:00:00Z", Backing: "ext4"},
		Settings: pathperf.Settings{Paths: paths, Ops: []string{pathperf.OpStat, pathperf.OpPebblePut}, PebbleKeys: 1000},
	}
	for _, op := range rep.Settings.Ops {
		for i, p := range paths {
			rep.Results = append(rep.Results, pathperf.Result{Op: op, Path: p, N: 100, P50Ns: int64(3-i) * 1000,
				P99Ns: 9000, P999Ns: 20000, MeanNs: 2000, OpsPerSec: 1e5 * float64(i+1), CloseNs: 5e6, Stalls: int64(i), StallNs: int64(i) * 1e6})
		}
		rep.Ratios = append(rep.Ratios, pathperf.Ratio{Op: op, FUSEOverDirectP50: 2, KernelOverDirectP50: 3,
			DirectOverFUSEOpsPerSec: 1.5, DirectOverKernelOpsPerSec: 3})
	}
	var b bytes.Buffer
	if err := printPaths(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"Test CPU, 2 cores", "kernel p50", "fuse p50", "direct p50", "kernel/direct", "fuse/direct",
		"3.00µs", "3.00x", "2.00x", "1.50x", "direct/kernel", "1000 puts", "direct 5ms", "write stalls kernel 0 (0s), fuse 1 (1ms), direct 2 (2ms)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
