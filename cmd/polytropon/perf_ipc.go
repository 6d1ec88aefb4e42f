package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/ipc/rcqb"
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
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "queue\tP\tC\tMops/s\t")
			for _, q := range rep.Queue {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t\n", q.Kind, q.Producers, q.Consumers, q.OpsPerSec/1e6)
			}
			fmt.Fprintln(tw, "\t\t\t\t")
			fmt.Fprintln(tw, "round trip\tp50\tp99\tops/s\t")
			for _, r := range rep.RoundTrip {
				fmt.Fprintf(tw, "%s\t%v\t%v\t%.0f\t\n", r.Path, time.Duration(r.P50Ns), time.Duration(r.P99Ns), r.OpsPerSec)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			var spin, unix int64
			for _, r := range rep.RoundTrip {
				switch r.Path {
				case ipcperf.PeerDirectSpin:
					spin = r.P50Ns
				case ipcperf.PeerUnix:
					unix = r.P50Ns
				}
			}
			fmt.Fprintf(out, "\n1P1C: rcqb / chan = %.2fx, rcqb-spsc / chan = %.2fx; 2P2C: rcqb / vyukov = %.2fx\n",
				rep.QueueRatio(rcqb.KindRCQB, rcqb.KindChannel, 1, 1),
				rep.QueueRatio(rcqb.KindRCQBSPSC, rcqb.KindChannel, 1, 1),
				rep.QueueRatio(rcqb.KindRCQB, rcqb.KindVyukov, 2, 2))
			if spin > 0 {
				fmt.Fprintf(out, "unix-socket p50 / direct (spinning) p50 = %.1fx (%s)\n", float64(unix)/float64(spin), rep.Date)
			}
			return nil
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
