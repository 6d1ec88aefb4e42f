package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/service"
)

func init() { register(newServiceCmd) }

func newServiceCmd() *cobra.Command {
	var (
		config     string
		socket     string
		cpuprofile string
	)
	cmd := &cobra.Command{
		Use:   "service --config FILE",
		Short: "Run a filesystem service: its instances on the direct path, FUSE mounts, metrics",
		Long: `service hosts the filesystem instances of one pool, built from the stacks in its
configuration, and serves them to fslib clients over shared memory (the direct path)
and, where configured, to unmodified programs through FUSE mounts.

SIGTERM or SIGINT stops it gracefully: no new clients, in-flight requests finish,
open files are closed, FUSE mounts unmounted, write-back caches flushed; exit 0.

Example configuration:

  socket: /run/polytropon/tenant-a.sock
  workers: 1
  metrics: 127.0.0.1:9464
  filesystems:
    - name: data
      mount: /data              # prefix in the service namespace (default /NAME)
      fuse: /mnt/tenant-a/data  # optional FUSE mountpoint
      stack:
        - cache: {size: 256MiB, policy: writeback}
        - union: {}
      branches:
        - passthrough: {dir: /var/lib/polytropon/tenant-a/upper}
        - passthrough: {dir: /srv/images/base}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config == "" {
				return fmt.Errorf("--config is required")
			}
			cfg, err := service.LoadConfig(config)
			if err != nil {
				return err
			}
			if socket != "" {
				cfg.Socket = socket
			}
			if cpuprofile != "" {
				// Written at shutdown, so that a measurement (perf paths) can see
				// where the service spends its time; --cpuprofile is hidden.
				f, err := os.Create(cpuprofile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return err
				}
				defer func() {
					pprof.StopCPUProfile()
					f.Close()
				}()
			}
			return service.Run(*cfg, log, func(s *service.Service) {
				fmt.Fprintf(cmd.OutOrStdout(), "polytropon service ready on %s\n", s.Socket())
			})
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "service configuration (YAML)")
	cmd.Flags().StringVar(&socket, "socket", "", "override the configuration's socket")
	cmd.Flags().StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the service to this file at shutdown")
	_ = cmd.Flags().MarkHidden("cpuprofile")
	return cmd
}
