package pathperf

import (
	"strings"
	"testing"

	"github.com/polytropon/polytropon/perf/results"
)

// TestWriteTable checks the table's layout on a report of all three paths.
func TestWriteTable(t *testing.T) {
	paths := []string{PathKernel, PathFUSE, PathDirect}
	rep := &Report{
		Machine:  results.Machine{CPU: "Test CPU", Cores: 2, Kernel: "Linux 6.18 x86_64", Go: "go1.26", Date: "2026-11-21T00:00:00Z", Backing: "ext4"},
		Settings: Settings{Paths: paths, Ops: []string{OpStat, OpPebblePut}, PebbleKeys: 1000},
	}
	for _, op := range rep.Settings.Ops {
		for i, p := range paths {
			rep.Results = append(rep.Results, Result{Op: op, Path: p, N: 100, P50Ns: int64(3-i) * 1000,
				P99Ns: 9000, P999Ns: 20000, MeanNs: 2000, OpsPerSec: 1e5 * float64(i+1), CloseNs: 5e6, Stalls: int64(i), StallNs: int64(i) * 1e6})
		}
		rep.Ratios = append(rep.Ratios, Ratio{Op: op, FUSEOverDirectP50: 2, KernelOverDirectP50: 3,
			DirectOverFUSEOpsPerSec: 1.5, DirectOverKernelOpsPerSec: 3})
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
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
