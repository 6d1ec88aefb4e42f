package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/pathperf"
)

func init() { registerUnder("perf", newPerfPathsCmd) }

func newPerfPathsCmd() *cobra.Command {
	var (
		paths, ops []string
		dur        time.Duration
		iterations int
		keys       int
		dir        string
		asJSON     bool
		svcProfile string
		backend    string
		ceph       pathperf.CephOptions
	)
	cmd := &cobra.Command{
		Use:   "paths",
		Short: "The same file operations through the kernel, the FUSE path and the direct path of one service",
		Long: `Starts a filesystem service (this binary's "service" command) with the default
stack, a write-back cache over a union of two passthrough branches in a temporary
directory, mounts its instance with FUSE, and makes the same operations, caches
warm, through three paths:

  kernel  system calls on the upper branch's backing directory (no polytropon)
  fuse           the same system calls on the service's FUSE mount (the kernel
                 caches names and attributes for 1 s and keeps unchanged pages)
  fuse-uncached  the same on a second FUSE mount of the instance with those caches
                 off: every call is a FUSE round trip, as for shared files
  direct         fslib over shared memory to the service

Operations: stat, read4k (4 KiB pread at random offsets of a 4 MiB file),
write4k (4 KiB pwrite), open-close, create-unlink, pebble-put (random-key puts
without sync into a fresh Pebble store: Pebble's default vfs for kernel and fuse,
fslib/pebblevfs for direct). Prints p50 and p99 per path and the p50 ratios of
each path over direct (above 1: the direct path is faster). Needs FUSE (root, or
fusermount3) for the fuse paths.

With --backend cephfs the instance's stack is the cephfs libservice alone, on the
cluster given by --ceph-conf/--ceph-id/--ceph-keyring (defaults from
POLYTROPON_CEPH_CONF, _ID, _KEYRING, as scripts/ceph-dev-cluster.sh env prints
them); there is no kernel path then, and this binary must be built with
-tags ceph,pacific.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			// Interrupted, the run stops and cleans up (service, mount, directory)
			// instead of dying with them in place.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := pathperf.Run(pathperf.Options{Dir: dir, Paths: paths, Ops: ops, Duration: dur, Cancel: ctx.Done(),
				Iterations: iterations, PebbleKeys: keys, Seed: uint64(time.Now().UnixNano()),
				Backend: backend, Ceph: ceph,
				ServiceCommand: func(cfg string) *exec.Cmd {
					args := []string{"--log-level", logLevel, "--log-format", logFormat, "service", "--config", cfg}
					if svcProfile != "" {
						args = append(args, "--cpuprofile", svcProfile)
					}
					return exec.Command(exe, args...)
				}})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringSliceVar(&paths, "paths", nil, "paths to measure: "+strings.Join(pathperf.Paths, ",")+" (default all)")
	cmd.Flags().StringSliceVar(&ops, "ops", nil, "operations: "+strings.Join(pathperf.Ops, ",")+" (default all)")
	cmd.Flags().DurationVar(&dur, "duration", 2*time.Second, "time per operation and path")
	cmd.Flags().IntVar(&iterations, "iterations", pathperf.DefaultIterations, "at least this many operations per operation and path")
	cmd.Flags().IntVar(&keys, "pebble-keys", pathperf.DefaultPebbleKeys, "puts of pebble-put")
	cmd.Flags().StringVar(&dir, "dir", "", "where the temporary directory (backing directory, mountpoint, socket) is made (default $TMPDIR or /tmp)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole report as JSON")
	cmd.Flags().StringVar(&backend, "backend", pathperf.BackendHost, "what the instance stores on: host (cache over union of host directories) or cephfs")
	cmd.Flags().StringVar(&ceph.Conf, "ceph-conf", os.Getenv("POLYTROPON_CEPH_CONF"), "ceph.conf of the cluster, for --backend cephfs")
	cmd.Flags().StringVar(&ceph.ClientID, "ceph-id", os.Getenv("POLYTROPON_CEPH_ID"), "cephx client id (without client.), for --backend cephfs")
	cmd.Flags().StringVar(&ceph.Keyring, "ceph-keyring", os.Getenv("POLYTROPON_CEPH_KEYRING"), "keyring of that client, for --backend cephfs")
	cmd.Flags().StringVar(&ceph.FSName, "ceph-fs", "", "CephFS name (default: the cluster's default filesystem), for --backend cephfs")
	cmd.Flags().StringVar(&svcProfile, "service-cpuprofile", "", "have the service write a CPU profile to this file")
	_ = cmd.Flags().MarkHidden("service-cpuprofile")
	return cmd
}
