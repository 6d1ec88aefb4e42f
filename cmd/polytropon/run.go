package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/pool"
)

func init() {
	register(newRunCmd)
	register(newContainerInitCmd)
}

func newRunCmd() *cobra.Command {
	var poolName, config, runDir string
	cmd := &cobra.Command{
		Use:   "run --pool NAME [--config FILE | --run-dir DIR] -- CMD ARGS",
		Short: "Run a command as a container in a pool of a running serve",
		Long: `run starts CMD in new mount, PID, UTS and IPC namespaces, inside the cgroups of
pool NAME of the serve running with the configuration's run_dir (--config) or
with --run-dir (default /run/polytropon). In the container:

  - the hostname is the pool's name;
  - mounts are private, and /proc is that of the new PID namespace;
  - POLYTROPON_SOCKET names the pool's service socket (for fslib);
  - pid 1 is a small init (polytropon itself) that reaps orphans and forwards
    signals; CMD is its child, and CMD's exit ends the container.

Standard input, output and error are CMD's. run exits with CMD's status, or
128+n when CMD died of signal n. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2,
SIGWINCH and SIGCONT sent to run are passed on to CMD. run does not allocate a
terminal or give CMD the foreground of one.

Needs root (CAP_SYS_ADMIN). Not yet: --rootfs, per-pool networks.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if poolName == "" {
				return fmt.Errorf("--pool is required")
			}
			if cmd.ArgsLenAtDash() != 0 {
				return fmt.Errorf("the command goes after --: run --pool %s -- CMD ARGS", poolName)
			}
			if config != "" && cmd.Flags().Changed("run-dir") {
				return fmt.Errorf("--config and --run-dir are exclusive")
			}
			if config != "" {
				cfg, err := pool.LoadConfig(config)
				if err != nil {
					return err
				}
				runDir = cfg.RunDir
			}
			p, err := pool.Lookup(runDir, poolName)
			if err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			c, err := pool.StartContainer(exe, p, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			code, err := pool.WaitContainer(c)
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&poolName, "pool", "", "pool to run in")
	cmd.Flags().StringVar(&config, "config", "", "serve's configuration (for its run_dir)")
	cmd.Flags().StringVar(&runDir, "run-dir", pool.DefaultRunDir, "serve's run directory")
	return cmd
}

// newContainerInitCmd is run's pid 1 inside the container (pool.ContainerInit).
func newContainerInitCmd() *cobra.Command {
	var procs []string
	var hostname string
	cmd := &cobra.Command{
		Use:    "container-init --hostname NAME --cgroup-procs FILE... -- CMD ARGS",
		Short:  "A container's init (used by run)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return pool.ContainerInit(procs, hostname, args)
		},
	}
	cmd.Flags().StringArrayVar(&procs, "cgroup-procs", nil, "cgroup.procs file to write our pid to (repeatable)")
	cmd.Flags().StringVar(&hostname, "hostname", "", "the container's hostname")
	return cmd
}
