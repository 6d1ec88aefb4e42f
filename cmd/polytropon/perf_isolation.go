package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/isolation"
)

func init() {
	registerUnder("perf", newPerfIsolationCmd)
	registerUnder("perf", newPerfNoisyCmd)
}

func newPerfIsolationCmd() *cobra.Command {
	var (
		o      isolation.Options
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "isolation [--json]",
		Short: "The quiet tenant's read latency on the direct and kernel paths, alone and beside a noisy writer, each tenant in its own pool",
		Long: `isolation measures what one tenant's heavy writes do to another tenant's
latency-sensitive reads, with each tenant in a pool of its own (a cgroup with one
reserved CPU, made through package pool; root only).

The quiet tenant (pool t0, --quiet-cpu) runs perf run's micro read4k-rand on the
kernel path (pread on its backing directory) and on the direct path (fslib to
its own filesystem service, started inside the pool). The noisy tenant (pool t1,
--noisy-cpu) writes --block-sized blocks sequentially to a file of its own on
the same filesystem, with fsync every --sync-every blocks, without pause. Each
round measures both paths without the neighbour, then with it.

Prints the quiet tenant's p50/p99 per path and neighbour and the p99 ratio
(noisy / alone); --json prints the whole report. DIR holds every run's
results.json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if o.Out == "" {
				o.Out = "perf-isolation-" + time.Now().UTC().Format("20060102-150405")
			}
			o.Exe = exe
			o.Launcher = execLauncher{exe: exe, logLevel: logLevel, logFormat: logFormat}
			o.NoisyCommand = func(n isolation.NoisyOptions) *exec.Cmd {
				return exec.Command(exe, "perf", "noisy", "--dir", n.Dir, "--block", fmt.Sprint(n.BlockBytes),
					"--sync-every", fmt.Sprint(n.SyncEvery))
			}
			o.Progress = cmd.ErrOrStderr()
			o.Params = map[string]string{"command": strings.Join(os.Args, " ")}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := isolation.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.Out, "out", "", "report directory (default perf-isolation-DATE)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per cell")
	cmd.Flags().DurationVar(&o.Warmup, "warmup", 2*time.Second, "warm-up before each cell")
	cmd.Flags().IntVar(&o.Rounds, "rounds", 1, "rounds of (alone, with the noisy tenant)")
	cmd.Flags().IntVar(&o.QuietCPU, "quiet-cpu", -1, "the quiet tenant's reserved CPU (default the last online CPU)")
	cmd.Flags().IntVar(&o.NoisyCPU, "noisy-cpu", -1, "the noisy tenant's reserved CPU (default the first online CPU)")
	cmd.Flags().IntVar(&o.BlockBytes, "block", 1<<20, "the noisy tenant's write size in bytes")
	cmd.Flags().IntVar(&o.SyncEvery, "sync-every", 8, "the noisy tenant fsyncs every this many writes")
	return cmd
}

// newPerfNoisyCmd is perf isolation's noisy tenant.
func newPerfNoisyCmd() *cobra.Command {
	var o isolation.NoisyOptions
	cmd := &cobra.Command{
		Use:    "noisy --dir DIR",
		Short:  "Write sequentially with fsync until SIGTERM (perf isolation's noisy tenant)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(term)
			return isolation.Noisy(o, cmd.OutOrStdout(), term)
		},
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "", "directory of the noise file")
	cmd.Flags().IntVar(&o.BlockBytes, "block", 1<<20, "write size in bytes")
	cmd.Flags().IntVar(&o.SyncEvery, "sync-every", 8, "fsync every this many writes")
	cmd.Flags().IntVar(&o.FileBlocks, "file-blocks", isolation.DefaultFileBlocks, "the file wraps around after this many blocks")
	return cmd
}
