package main

import (
	"fmt"
	"math"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/privdrop"
	"github.com/polytropon/polytropon/pool"
)

func init() {
	register(newServeCmd)
	register(newPoolExecCmd)
}

func newServeCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Create the tenants' pools (cgroups, state directories) and run their filesystem services",
		Long: `serve creates each pool of its configuration: a cgroup PARENT/POOL with the
pool's cpuset, memory, pids and block I/O limits, a state directory (root's,
group the pool's gid, mode 0751) holding the service's socket (0660 uid:gid), and the pool's
filesystem service started inside the cgroup, its workers pinned to the pool's
CPUs. The service runs as the pool's uid and gid (both required, neither 0)
with no capabilities, no_new_privs and not dumpable: serve makes its sockets
and FUSE mounts (the pool user's) and hands them over; its control socket is
root's alone; its passthrough branches must be usable by the pool's user.
Services that exit are restarted with exponential backoff; fslib clients
reconnect on their own. serve pings each service's control socket every
health.interval (2s) within health.timeout (5s) and kills and restarts one
that fails health.failures (3) checks in a row (detected within 17s with the
defaults); a busy service still answers and is left alone. A pool with a network: block gets a network namespace
pt-NAME (NAME at most 10 bytes: the host's veth end is pt-NAME-h, and Linux
interface names have 15), eth0 there with address, the host end with
host_address, a default route through it and a TBF rate limit (bytes/s) each
way; the service and the pool's containers run in it. exclusive_cpus: true
makes the cpusets of pools on cores no other pool has exclusive, where the
kernel allows (the reason is logged where not).

With an elasticity block, every interval serve reads the pool's CPU and memory
use (its cgroup) and its service's status (request latency, queue, cache hit
ratio; over the service's root-only control socket) and adds or retires service
workers and resizes its page caches within the bounds; each decision is logged
and the recent ones are in RUN_DIR/decisions-POOL.json.

SIGTERM or SIGINT stops the services (SIGTERM, then SIGKILL after a timeout) and
removes the cgroups, networks and state directories; exit 0. After a serve was
killed, the next start removes what it left (processes, cgroups, networks,
sockets). polytropon status --pools shows the pools.

Example configuration:

  cgroup: polytropon          # parent cgroup (default)
  run_dir: /run/polytropon    # lock, record, default state directories
  exclusive_cpus: false       # true: exclusive cpusets for disjoint pools
  health: {interval: 2s, timeout: 5s, failures: 3}   # the defaults
  pools:
    - name: tenant-a
      cpus: "1"
      memory: 2GiB
      pids: 512
      io: {device: /dev/nvme0n1, read_bps: 400MB, write_bps: 200MB}
      network: {address: 10.77.1.2/30, host_address: 10.77.1.1/30, rate: 100MB}
      uid: 1000
      gid: 1000
      workers: 1
      elasticity:                 # optional: serve moves workers and cache size
        interval: 5s
        workers: {min: 1, max: 2}
        cache: {min: 64MiB, max: 512MiB}
        # thresholds (defaults): latency_high_us 200, latency_low_us 50,
        # queue_wait_high_us 200, queue_wait_low_us 20, cpu_high 0.9,
        # hit_ratio_low 0.8, memory_high 0.9, min_ops 100, min_lookups 100,
        # cooldown 3 (intervals)
      filesystems:
        - name: data
          stack:
            - cache: {size: 256MiB, max_size: 512MiB, policy: writeback}
            - union: {}
          branches:
            - passthrough: {dir: /var/lib/polytropon/tenant-a/upper}
            - passthrough: {dir: /srv/images/base, readonly: true}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config == "" {
				return fmt.Errorf("--config is required")
			}
			cfg, err := pool.LoadConfig(config)
			if err != nil {
				return err
			}
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sigs)
			s, err := pool.Serve(*cfg, pool.Options{Stderr: cmd.ErrOrStderr()}, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "polytropon serve ready: %d pools\n", len(cfg.Pools))
			sig := <-sigs
			log.Info("shutting down", zap.Stringer("signal", sig))
			return s.Close()
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "serve configuration (YAML)")
	return cmd
}

// newPoolExecCmd is serve's helper (and a root-started service's with a
// user): it joins the pool's cgroups and network namespace, drops to the
// pool's user for good, then execs the service (see pool.EnterAndExec for
// why not start-then-move, and internal/privdrop for the drop).
func newPoolExecCmd() *cobra.Command {
	var procs []string
	var netns string
	var uid, gid int64
	cmd := &cobra.Command{
		Use:    "pool-exec [--cgroup-procs FILE...] [--netns PATH] [--uid N --gid M] -- CMD ARGS",
		Short:  "Enter cgroups, drop to a user, then exec a command (used by serve)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if (uid < 0) != (gid < 0) {
				return fmt.Errorf("pool-exec: --uid and --gid go together")
			}
			if uid < 0 {
				return pool.EnterAndExec(procs, netns, args)
			}
			if uid > math.MaxUint32 || gid > math.MaxUint32 {
				return fmt.Errorf("pool-exec: --uid %d --gid %d out of range", uid, gid)
			}
			return pool.EnterAndExecAs(procs, netns, &privdrop.Identity{UID: uint32(uid), GID: uint32(gid)}, args)
		},
	}
	cmd.Flags().StringArrayVar(&procs, "cgroup-procs", nil, "cgroup.procs file to write our pid to (repeatable)")
	cmd.Flags().StringVar(&netns, "netns", "", "network namespace to run in (bind-mounted namespace file)")
	cmd.Flags().Int64Var(&uid, "uid", -1, "user to drop to before the exec (with --gid)")
	cmd.Flags().Int64Var(&gid, "gid", -1, "group to drop to before the exec (with --uid)")
	return cmd
}
