package main

import (
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/harness"
)

// paperTenants are the tenant counts of perf paper: powers of two up to twice
// the cores (1, 2, 4 on 2 cores), as the seeds' figures go past the cores.
func paperTenants(cores int) []int {
	var out []int
	for n := 1; n <= 2*max(cores, 1); n *= 2 {
		out = append(out, n)
	}
	return out
}

func newPerfPaperCmd() *cobra.Command {
	var (
		r       runOptions
		tenants []int
	)
	cmd := &cobra.Command{
		Use:   "paper",
		Short: "The seeds' Fig. 5a/5b: Pebble put and get latency, 1..N tenants, three paths",
		Long: `The canned experiment mirroring the seeds' Fig. 5a (put latency) and 5b (get
latency): pebble-fillrandom (put) and pebble-readrandom (get, on a store filled
and flushed first), for 1, 2, 4, ... tenants up to twice the machine's cores, on
the kernel, fuse and direct paths; writes the full report as perf run does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.out == "" {
				r.out = "perf-paper-" + time.Now().UTC().Format("20060102-150405")
			}
			if len(tenants) == 0 {
				tenants = paperTenants(runtime.NumCPU())
			}
			return runHarness(cmd, harness.Options{Out: r.out, Workloads: []string{harness.WorkloadPebbleFillRandom,
				harness.WorkloadPebbleReadRandom}, Paths: r.paths, Tenants: tenants, Warmup: r.warmup, Duration: r.duration,
				Threads: r.threads, Sync: r.sync, Keys: r.keys, Seed: r.seed}, &r)
		},
	}
	r.flags(cmd, 5*time.Second, time.Second)
	cmd.Flags().StringVar(&r.out, "out", "", "report directory (default perf-paper-DATE)")
	cmd.Flags().IntSliceVar(&tenants, "tenants", nil, "tenant counts (default 1, 2, 4, ... up to twice the cores)")
	return cmd
}
