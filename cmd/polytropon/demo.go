package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newDemoCmd) }

// demoStep is one real measurement the demo runs, as the command line a user would
// type, so that the demo shows exactly what the tools do and nothing else.
type demoStep struct {
	title string
	args  func(dir string, short bool) []string
}

// demoSteps is the main job: the most complete end-to-end runs that exist. Each is
// an ordinary subcommand; the demo only chooses parameters small enough for a
// couple of minutes on a 2-core machine.
var demoSteps = []demoStep{
	{
		title: "the main job: stat, 4 KiB reads and writes, open, create, Pebble puts through the kernel, FUSE and the direct path of one service",
		args: func(dir string, short bool) []string {
			d, keys := "1s", "100000"
			if short {
				d, keys = "200ms", "20000"
			}
			return []string{"perf", "paths", "--dir", dir, "--duration", d, "--pebble-keys", keys}
		},
	},
	{
		title: "direct-path transport: RCQB over shared memory vs Unix socket and pipe",
		args: func(dir string, short bool) []string {
			if short {
				return []string{"perf", "ipc", "--queue-ops", "200000", "--round-trips", "20000"}
			}
			return []string{"perf", "ipc", "--queue-ops", "1000000", "--round-trips", "100000"}
		},
	},
	{
		title: "libservices: cache over union over passthrough, in process, beside the kernel",
		args: func(dir string, short bool) []string {
			d := "1s"
			if short {
				d = "200ms"
			}
			return []string{"perf", "stack", "--dir", filepath.Join(dir, "stack"), "--duration", d}
		},
	},
	{
		title: "copy kernels: tune per CPU, then measure the tuned copier against copy()",
		args: func(dir string, short bool) []string {
			return []string{"tune", "copy", "--quick", "--out", filepath.Join(dir, "copy-profile.json")}
		},
	},
	{
		title: "copy kernels: GB/s per kernel and the tuned choice's speedup",
		args: func(dir string, short bool) []string {
			return []string{"perf", "copy", "--quick", "--profile", filepath.Join(dir, "copy-profile.json")}
		},
	},
	{
		title: "block device on io_uring (O_DIRECT 4 KiB random reads) beside fio",
		args: func(dir string, short bool) []string {
			d := "3s"
			if short {
				d = "1s"
			}
			return []string{"perf", "blockdev", "--dev", filepath.Join(dir, "blockdev.img"), "--size", "256M",
				"--rw", "randread", "--bs", "4k", "--qd", "1,32", "--duration", d, "--vs-fio"}
		},
	},
}

func newDemoCmd() *cobra.Command {
	var (
		short bool
		dir   string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main end-to-end measurements on this machine and print their tables",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			work := dir
			if work == "" {
				// Not tmpfs: the block device step needs O_DIRECT on a real disk.
				d, err := os.MkdirTemp("/var/tmp", "polytropon-demo-")
				if err != nil {
					return fmt.Errorf("demo: %w", err)
				}
				defer os.RemoveAll(d)
				work = d
			}
			out := cmd.OutOrStdout()
			for i, s := range demoSteps {
				args := s.args(work, short)
				fmt.Fprintf(out, "\n=== %d/%d %s\n$ polytropon %s\n", i+1, len(demoSteps), s.title, strings.Join(args, " "))
				start := time.Now()
				sub := newRoot()
				sub.SetOut(out)
				sub.SetErr(cmd.ErrOrStderr())
				sub.SetArgs(append([]string{"--log-level", logLevel, "--log-format", logFormat}, args...))
				if err := sub.Execute(); err != nil {
					return fmt.Errorf("demo step %d (%s): %w", i+1, strings.Join(args, " "), err)
				}
				fmt.Fprintf(out, "(%s)\n", time.Since(start).Round(time.Millisecond))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&short, "short", false, "shorter measurements (for tests)")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory on a disk filesystem (default: a new one under /var/tmp, removed at the end)")
	return cmd
}
