package main

import (
	"encoding/json"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/ipcperf"
)

func init() { registerUnder("perf", newPerfIPCCmd) }

func newPerfIPCCmd() *cobra.Command {
	var (
		asJSON     bool
		roundTrips int
		queueOps   int
		peer       string
		socket     string
	)
	cmd := &cobra.Command{
		Use:   "ipc",
		Short: "Queue throughput and cross-process round trips of the direct path vs a Unix socket and a pipe",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if peer != "" {
				// The re-executed peer process (hidden flags).
				return ipcperf.RunPeer(peer, socket)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			rep, err := ipcperf.Run(ipcperf.Options{RoundTrips: roundTrips, QueueOps: queueOps,
				PeerCommand: func(mode, sock string) *exec.Cmd {
					return exec.Command(exe, "perf", "ipc", "--peer", mode, "--socket", sock)
				}})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return ipcperf.WriteTable(cmd.OutOrStdout(), rep)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().IntVar(&roundTrips, "round-trips", 200000, "round trips per path")
	cmd.Flags().IntVar(&queueOps, "queue-ops", 2000000, "values per queue throughput measurement")
	cmd.Flags().StringVar(&peer, "peer", "", "run as the measurement peer (internal)")
	cmd.Flags().StringVar(&socket, "socket", "", "peer socket path (internal)")
	_ = cmd.Flags().MarkHidden("peer")
	_ = cmd.Flags().MarkHidden("socket")
	return cmd
}
