package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/stackperf"
)

func init() { registerUnder("perf", newPerfStackCmd) }

func newPerfStackCmd() *cobra.Command {
	var (
		dur    time.Duration
		dir    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "stack",
		Short: "File operations through a libservices stack in process, beside the kernel on the same directory",
		Long: `Measures stat, 4 KiB random reads and writes, and create+unlink through the
default stack (write-back cache over a union of a writable and a read-only
passthrough branch), in process, and the same operations with system calls on the
branch directories. No transport is involved: this is what the libservices cost.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			work := dir
			if work == "" {
				d, err := os.MkdirTemp("", "polytropon-stackperf-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(d)
				work = d
			}
			res, err := stackperf.Run(stackperf.Config{Dir: work, Duration: dur, Seed: uint64(time.Now().UnixNano())})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "op\tpath\tp50\tp99\tp99.9\tmean\tops/s\tp50 vs kernel\t")
			kernelP50 := map[string]int64{}
			for _, r := range res {
				if r.Path == "kernel" {
					kernelP50[r.Op] = r.P50Ns
				}
				ratio := float64(kernelP50[r.Op]) / float64(r.P50Ns)
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%v\t%v\t%.0f\t%.2fx\t\n", r.Op, r.Path,
					time.Duration(r.P50Ns), time.Duration(r.P99Ns), time.Duration(r.P999Ns),
					time.Duration(r.MeanNs).Round(time.Nanosecond), r.OpsPerSec, ratio)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().DurationVar(&dur, "duration", 2*time.Second, "time per operation and path")
	cmd.Flags().StringVar(&dir, "dir", "", "backing directory (default: a new temporary one, removed at the end)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}
