package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/demo"
)

func init() { register(newDemoCmd) }

func newDemoCmd() *cobra.Command {
	var (
		short bool
		dir   string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main end-to-end measurements on this machine and say which goals held",
		Long: `Runs the main measurements (perf paths, ipc, stack, copy, blockdev) with small
parameters and ends with a verdict: per goal the project set itself, what this
run measured and whether the goal held. Each step prints the command it runs;
run it without --json for the full table. With --dir the JSON reports stay in
that directory.`,
		Args: cobra.NoArgs,
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
			return demo.Run(cmd.OutOrStdout(), work, short, demoRunner(cmd.ErrOrStderr()))
		},
	}
	cmd.Flags().BoolVar(&short, "short", false, "shorter measurements (for tests)")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory on a disk filesystem, kept with the steps' JSON reports (default: a new one under /var/tmp, removed at the end)")
	return cmd
}

// demoRunner runs the demo's steps on this binary's own command tree, with
// the log settings the demo itself was given.
func demoRunner(errOut io.Writer) demo.Runner {
	return func(args []string, out io.Writer) error {
		sub := newRoot()
		sub.SetOut(out)
		sub.SetErr(errOut)
		sub.SetArgs(append([]string{"--log-level", logLevel, "--log-format", logFormat}, args...))
		return sub.Execute()
	}
}
