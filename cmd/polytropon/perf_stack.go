package main

import (
	"encoding/json"
	"os"
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
			return stackperf.WriteTable(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().DurationVar(&dur, "duration", 2*time.Second, "time per operation and path")
	cmd.Flags().StringVar(&dir, "dir", "", "backing directory (default: a new temporary one, removed at the end)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}
