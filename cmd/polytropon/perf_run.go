package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/external"
	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/plot"
	"github.com/polytropon/polytropon/perf/tenantpool"
)

func init() {
	registerUnder("perf", newPerfRunCmd)
	registerUnder("perf", newPerfWorkerCmd)
	registerUnder("perf", newPerfPaperCmd)
}

// execLauncher starts services and workers as this binary's own subcommands,
// logging as this process does.
type execLauncher struct{ exe, logLevel, logFormat string }

func (l execLauncher) Service(_ int, cfg string) *exec.Cmd {
	return exec.Command(l.exe, "--log-level", l.logLevel, "--log-format", l.logFormat, "service", "--config", cfg)
}

func (l execLauncher) Worker(int) *exec.Cmd { return exec.Command(l.exe, "perf", "worker") }

// runOptions are the flags shared by perf run and perf paper.
type runOptions struct {
	paths    []string
	tenants  []int
	duration time.Duration
	warmup   time.Duration
	out      string
	threads  int
	sync     bool
	keys     int
	seed     uint64
	pools    bool
	// The external workloads' jobs.
	fio, dbBench, dbBenchArgs string
	dbBenchNum                int
}

// externals are the external workloads with the jobs the flags give.
func (r *runOptions) externals() []harness.External {
	return []harness.External{
		external.Fio{Args: strings.Fields(r.fio)},
		external.DBBench{Benchmarks: r.dbBench, Num: r.dbBenchNum, Args: strings.Fields(r.dbBenchArgs)},
	}
}

func (r *runOptions) flags(cmd *cobra.Command, duration, warmup time.Duration) {
	cmd.Flags().StringSliceVar(&r.paths, "paths", nil, "paths: "+strings.Join(harness.Paths, ",")+" (default all)")
	cmd.Flags().DurationVar(&r.duration, "duration", duration, "measured time per cell")
	cmd.Flags().DurationVar(&r.warmup, "warmup", warmup, "warm-up before each cell's measurement")
	cmd.Flags().IntVar(&r.threads, "threads", harness.DefaultThreads, "threads per worker process")
	cmd.Flags().BoolVar(&r.sync, "sync", false, "synchronous Pebble writes")
	cmd.Flags().IntVar(&r.keys, "keys", harness.DefaultKeys, "keys pebble-readrandom fills its store with")
	cmd.Flags().Uint64Var(&r.seed, "seed", 0, "seed of random offsets and keys (default: from the clock)")
	cmd.Flags().BoolVar(&r.pools, "pools", false, "run each tenant's service and workers in a pool of its own with a reserved CPU (root; tenant i on CPU i mod the online CPUs)")
	cmd.Flags().StringVar(&r.fio, "fio", external.DefaultFioJob, "the fio job as flags (workload fio; kernel and fuse paths)")
	cmd.Flags().StringVar(&r.dbBench, "db-bench", external.DefaultDBBenchBenchmarks, "db_bench's --benchmarks (workload db_bench; kernel and fuse paths)")
	cmd.Flags().IntVar(&r.dbBenchNum, "db-bench-num", external.DefaultDBBenchNum, "db_bench's --num")
	cmd.Flags().StringVar(&r.dbBenchArgs, "db-bench-args", "", "further db_bench flags, e.g. --sync=1")
}

// runHarness runs the harness with ^C and SIGTERM stopping it in order, prints
// the table and says where the report is.
func runHarness(cmd *cobra.Command, o harness.Options, r *runOptions) (err error) {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Launcher = execLauncher{exe: exe, logLevel: logLevel, logFormat: logFormat}
	o.Externals = r.externals()
	o.Plots = plot.WriteAll
	params := map[string]string{"command": strings.Join(os.Args, " ")}
	if r.pools {
		pl, err := tenantpool.New(exe, fmt.Sprintf("polytropon-perf-%d", os.Getpid()), nil, o.Launcher)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, pl.Err(), pl.Close()) }()
		o.Launcher = pl
		params["pools"] = pl.Describe(slices.Max(append([]int{1}, o.Tenants...)))
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	o.Progress = cmd.ErrOrStderr()
	o.Params = params
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run, err := harness.Run(ctx, o)
	if run == nil {
		return err
	}
	out := cmd.OutOrStdout()
	if terr := harness.Table(out, run); terr != nil {
		return errors.Join(err, terr)
	}
	fmt.Fprintf(out, "\nreport: %s (%s, %s)\n", o.Out, harness.ResultsFile, harness.SummaryFile)
	if errors.Is(err, harness.ErrInterrupted) {
		return fmt.Errorf("interrupted: the partial results are in %s", o.Out)
	}
	return err
}

func newPerfRunCmd() *cobra.Command {
	var (
		r         runOptions
		workloads []string
		ops       []string
	)
	cmd := &cobra.Command{
		Use:   "run --workload W --out DIR",
		Short: "Latency of a workload through the kernel, FUSE and direct paths, with one to many tenants",
		Long: `For each tenant count, starts that many filesystem services (this binary's
"service" command, one per tenant, each with the default stack on backing
directories of its own under DIR/work, FUSE-mounted for the fuse path), then for
each path and operation runs the workload in one worker process per tenant, all
measuring at the same moments, and records every operation's latency.

Paths:
  kernel  system calls on the tenant's backing directory (no polytropon)
  fuse    the same system calls on the tenant service's FUSE mount
  direct  fslib over shared memory to the tenant's service

Workloads:
  micro              stat, open-close, create-unlink, read4k-seq, read4k-rand,
                     write4k-seq, write4k-rand, append-fsync (4 KiB + fsync)
  pebble-fillseq     Pebble puts of sequential keys (op put)
  pebble-fillrandom  Pebble puts of random keys (op put)
  pebble-readrandom  Pebble gets of random keys of a store filled and flushed
                     first (--keys; op get)
Pebble runs on its default vfs for kernel and fuse, fslib/pebblevfs for direct.

Writes DIR/results.json (machine, parameters, every cell with its histogram),
DIR/summary.csv and prints a table. ^C stops the run, tears everything down and
still writes what was measured, marked partial.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.out == "" {
				return errors.New("--out is required")
			}
			return runHarness(cmd, harness.Options{Out: r.out, Workloads: workloads, Ops: ops, Paths: r.paths,
				Tenants: r.tenants, Warmup: r.warmup, Duration: r.duration, Threads: r.threads, Sync: r.sync,
				Keys: r.keys, Seed: r.seed}, &r)
		},
	}
	r.flags(cmd, harness.DefaultDuration, harness.DefaultWarmup)
	cmd.Flags().StringSliceVar(&workloads, "workload", nil, "workloads: "+strings.Join(harness.Workloads(r.externals()...), ","))
	cmd.Flags().StringSliceVar(&ops, "ops", nil, "only these operations of the workloads (default all)")
	cmd.Flags().IntSliceVar(&r.tenants, "tenants", []int{1}, "tenant counts")
	cmd.Flags().StringVar(&r.out, "out", "", "report directory")
	return cmd
}

func newPerfWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "worker",
		Short:  "One workload process of perf run (internal: speaks the worker protocol on stdin and stdout)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return harness.RunWorker(cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}
