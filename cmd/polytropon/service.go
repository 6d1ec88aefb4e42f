package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/service"
)

func init() { register(newServiceCmd) }

func newServiceCmd() *cobra.Command {
	var (
		config     string
		socket     string
		cpuprofile string
		handoff    string
	)
	cmd := &cobra.Command{
		Use:   "service --config FILE",
		Short: "Run a filesystem service: its instances on the direct path, FUSE mounts, metrics",
		Long: `service hosts the filesystem instances of one pool, built from the stacks in its
configuration, and serves them to fslib clients over shared memory (the direct path)
and, where configured, to unmodified programs through FUSE mounts.

SIGTERM or SIGINT stops it gracefully: no new clients, in-flight requests finish,
open files are closed, FUSE mounts unmounted, write-back caches flushed; exit 0.

Started by root, a service with a user key (user: {uid: N, gid: M}, or a user
name) runs as that user with no capabilities, no_new_privs and not dumpable: a
small root parent makes its socket (owned by the user, mode 0660), its control
socket (root only) and its FUSE mounts (the user's, default_permissions), hands
them over, forwards SIGTERM and SIGINT, and removes them when the service exits.
Passthrough branches must be usable by the user (it fails at start naming the
directory otherwise). Without the key, a service started by root runs as host
root and warns so at start; polytropon status shows who a service runs as.

Example configuration:

  socket: /run/polytropon/tenant-a.sock
  user: {uid: 1000, gid: 1000}  # as root: run the service as this user
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
			var cfg *service.Config
			if handoff != "" {
				// Started by a privileged parent (serve, or the parent
				// below): finish the drop before reading anything else.
				h, err := service.ParseHandoff(handoff)
				if err != nil {
					return err
				}
				if cfg, err = service.Inherit(h, config); err != nil {
					return err
				}
			} else {
				var err error
				if cfg, err = service.LoadConfig(config); err != nil {
					return err
				}
				if cfg.User != nil && os.Geteuid() == 0 {
					return runServiceParent(cmd, config, socket, cfg)
				}
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
	cmd.Flags().StringVar(&handoff, "handoff", "", "descriptors inherited from a privileged parent (JSON; used by serve)")
	_ = cmd.Flags().MarkHidden("handoff")
	return cmd
}

// runServiceParent is `polytropon service` as root with a configuration that
// names a user: this process stays root only to make the sockets and FUSE
// mounts and to clean up, and the service runs as the user (pool-exec drops
// to it, then execs `service --handoff`).
func runServiceParent(cmd *cobra.Command, config, socket string, cfg *service.Config) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	id := cfg.User.Identity()
	err = service.RunParent(config, service.ParentOptions{
		Socket: socket,
		Command: func(handoffArgs []string) *exec.Cmd {
			args := []string{"pool-exec", "--uid", strconv.FormatUint(uint64(id.UID), 10), "--gid", strconv.FormatUint(uint64(id.GID), 10),
				"--", exe, "service", "--config", config}
			if socket != "" {
				args = append(args, "--socket", socket)
			}
			c := exec.Command(exe, append(args, handoffArgs...)...)
			c.Stdout, c.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return c
		},
	}, log)
	// The service said why it failed; its status is ours.
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return &exitError{code: ee.ExitCode()}
	}
	return err
}
