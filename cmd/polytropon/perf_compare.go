package main

import (
	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
)

func init() { registerUnder("perf", newPerfCompareCmd) }

func newPerfCompareCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "compare A.json B.json",
		Short: "Compare two perf run results files: B/A of p50, p99 and ops/s per cell",
		Long: `For every cell (workload, op, path, tenants) measured in both runs, prints the
ratios B/A of p50, p99 and ops/s, each called better, worse or same (within 5%);
then the cells measured in one run only. Failed cells are left out.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := results.Load(args[0])
			if err != nil {
				return err
			}
			b, err := results.Load(args[1])
			if err != nil {
				return err
			}
			return harness.PrintCompare(cmd.OutOrStdout(), a, b, args[0], args[1])
		},
	}
}
