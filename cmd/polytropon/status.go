package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/pool"
	"github.com/polytropon/polytropon/service"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var (
		socket, runDir, config string
		asJSON, pools          bool
	)
	cmd := &cobra.Command{
		Use:   "status [--socket S | --pools [--run-dir DIR | --config FILE]] [--json]",
		Short: "Show a filesystem service's instances, clients and latency, or serve's pools",
		Long: `status shows one filesystem service (--socket, default $POLYTROPON_SOCKET):
its instances, clients, per-operation latency and counters.

With --pools, or with neither --socket nor $POLYTROPON_SOCKET when a serve's
record is found in its run directory (--run-dir, default /run/polytropon, or the
run_dir of --config), it shows serve's pools instead: each pool's reservations
(cpus, memory limit, pids, block I/O throttle, network), its usage from its
cgroups (CPU time, memory now and at peak, tasks), its service (running,
restarts) and socket. --json prints the document (pool.Report).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config != "" {
				cfg, err := pool.LoadConfig(config)
				if err != nil {
					return err
				}
				runDir = cfg.RunDir
				pools = true
			}
			if cmd.Flags().Changed("run-dir") {
				pools = true
			}
			if !pools && socket == "" && os.Getenv(fslib.SocketEnv) == "" {
				if _, err := os.Stat(filepath.Join(runDir, "pools.json")); err == nil {
					pools = true
				}
			}
			if pools {
				if socket != "" {
					return fmt.Errorf("--socket is a service's status; --pools, --run-dir and --config serve's")
				}
				return poolStatus(cmd.OutOrStdout(), runDir, asJSON)
			}
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
			if st.RunsAs != "" {
				fmt.Fprintf(out, "runs as: %s\n", st.RunsAs)
			}
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
	cmd.Flags().BoolVar(&pools, "pools", false, "show serve's pools")
	cmd.Flags().StringVar(&runDir, "run-dir", pool.DefaultRunDir, "serve's run directory (implies --pools)")
	cmd.Flags().StringVar(&config, "config", "", "serve's configuration, for its run_dir (implies --pools)")
	return cmd
}

func poolStatus(out io.Writer, runDir string, asJSON bool) error {
	rep, err := pool.Status(runDir)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	state := "running"
	if !rep.ServeRunning {
		state = "NOT running (a killed serve's leftovers; the next serve removes them)"
	}
	fmt.Fprintf(out, "serve of %s: %s; cgroup %s (v%d)\n", rep.RunDir, state, rep.Cgroup, rep.CgroupVersion)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPOOL\tCPUS\tMEMORY\tPIDS\tIO\tNETWORK\tCPU TIME\tMEM NOW\tMEM PEAK\tTASKS\tSERVICE\tRESTARTS\tSOCKET")
	for _, p := range rep.Pools {
		r := p.Reservation
		cpus := r.CPUs
		if r.CPUsExclusive {
			cpus += " (excl)"
		}
		io := "-"
		if r.IO != nil {
			io = fmt.Sprintf("%s r %s/s w %s/s", r.IO.Device, sizeOrDash(r.IO.ReadBPS), sizeOrDash(r.IO.WriteBPS))
		}
		nw := "-"
		if r.Network != nil {
			nw = fmt.Sprintf("%s via %s %s/s", r.Network.Address, r.Network.HostAddress, sizeOrDash(r.Network.RateBPS))
		}
		svc := "down"
		if p.Service.Running {
			svc = fmt.Sprintf("up pid %d uid %d", p.Service.Pid, p.Service.UID)
		}
		restarts := strconv.Itoa(p.Service.Restarts)
		if p.Service.HealthRestarts > 0 {
			restarts += fmt.Sprintf(" (%d unhealthy)", p.Service.HealthRestarts)
		}
		pids := "-"
		if r.Pids > 0 {
			pids = strconv.FormatInt(r.Pids, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.2fs\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, cpus, sizeOrDash(r.Memory), pids, io, nw,
			float64(p.Usage.CPUNanos)/1e9, sizeOrDash(p.Usage.Memory), sizeOrDash(p.Usage.MemoryPeak), p.Usage.Tasks, svc, restarts, p.Socket)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range rep.Pools {
		if p.Usage.Unavailable != "" {
			fmt.Fprintf(out, "pool %s: some statistics unavailable: %s\n", p.Name, p.Usage.Unavailable)
		}
		if p.Service.LastUnhealthy != "" {
			fmt.Fprintf(out, "pool %s: last restarted for not answering: %s\n", p.Name, p.Service.LastUnhealthy)
		}
		for _, d := range p.Decisions {
			fmt.Fprintf(out, "pool %s: %s\n", p.Name, d)
		}
	}
	return nil
}

// sizeOrDash prints a byte count in binary units, "-" for none.
func sizeOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return fmt.Sprintf("%.1f%s", f, units[i])
}
