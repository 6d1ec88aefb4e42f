package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/service"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status [--socket S]",
		Short: "Show a filesystem service's instances, clients and per-operation latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := fslib.ServiceStatus(fslib.DialOptions{Socket: socket})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				_, err := fmt.Fprintf(out, "%s\n", raw)
				return err
			}
			var st service.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("status document: %w", err)
			}
			fmt.Fprintf(out, "service on %s  pid %d  up %.0fs  workers %d  clients %d  served %d  rejected %d\n",
				st.Socket, st.PID, st.UptimeSec, st.Workers, st.Clients, st.Served, st.Rejected)
			if st.Metrics != "" {
				fmt.Fprintf(out, "metrics: http://%s/metrics\n", st.Metrics)
			}
			tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\nFILESYSTEM\tMOUNT\tFUSE\tOPEN\tLOCKS")
			for _, f := range st.Filesystems {
				fuse := strings.Join(f.FUSE, ",")
				if fuse == "" {
					fuse = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", f.Name, f.Mount, fuse, f.Open, f.Locks)
			}
			if len(st.Ops) > 0 {
				fmt.Fprintln(tw, "\nOP\tCOUNT\tERRORS\tMEAN us\tP50 us\tP99 us")
				for _, o := range st.Ops {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\n", o.Op, o.Count, o.Errors, o.MeanUs, o.P50Us, o.P99Us)
				}
			}
			if len(st.Counters) > 0 {
				fmt.Fprintln(tw, "\nFILESYSTEM\tLAYER\tCOUNTER\tVALUE")
				for _, c := range st.Counters {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\n", c.FS, c.Layer, c.Name, c.Value)
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "the service's socket (default $"+fslib.SocketEnv+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status document as JSON")
	return cmd
}
