package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/pool"
)

func init() {
	register(newRunCmd)
	register(newContainerInitCmd)
	register(newContainerFUSECmd)
}

// newContainerFUSECmd is the FUSE gateway of a container's root
// (pool.ContainerFUSE), started by its init; fd 3 is the ready pipe.
func newContainerFUSECmd() *cobra.Command {
	var inst, stage string
	cmd := &cobra.Command{
		Use:    "container-fuse --rootfs INSTANCE --stage DIR",
		Short:  "A container's root filesystem gateway (used by run --rootfs)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return pool.ContainerFUSE(inst, stage, os.NewFile(3, "ready"))
		},
	}
	cmd.Flags().StringVar(&inst, "rootfs", "", "filesystem instance")
	cmd.Flags().StringVar(&stage, "stage", "", "where to mount a tmpfs, and the instance on its root/")
	return cmd
}

func newRunCmd() *cobra.Command {
	var poolName, config, runDir, rootfs string
	var asRoot bool
	cmd := &cobra.Command{
		Use:   "run --pool NAME [--config FILE | --run-dir DIR] [--rootfs INSTANCE] -- CMD ARGS",
		Short: "Run a command as a container in a pool of a running serve",
		Long: `run starts CMD in new mount, PID, UTS and IPC namespaces, inside the cgroups of
pool NAME of the serve running with the configuration's run_dir (--config) or
with --run-dir (default /run/polytropon). In the container:

  - the hostname is the pool's name;
  - mounts are private, and /proc is that of the new PID namespace;
  - POLYTROPON_SOCKET names the pool's service socket (for fslib);
  - when the pool has a network, CMD runs in the pool's network namespace
    (eth0 with the pool's address, default route through the host end);
  - pid 1 is a small init (polytropon itself) that reaps orphans and forwards
    signals; CMD is its child, and CMD's exit ends the container.

With --rootfs INSTANCE, the container's root is that filesystem instance of the
pool's service, mounted through the FUSE gateway (served over the direct path by
a gateway process of the container) and pivot_root'ed into; it gets its own /proc and a
minimal /dev (null, zero, full, random, urandom, tty). The instance must have
/proc and /dev directories; CMD is looked up in it. The mount exists only in the
container's mount namespace and is gone when the container ends. The image is
the tenant's, so CMD runs as the pool's uid and gid (--root: as uid 0), with
the capability bounding set cut to Docker's default set without CAP_MKNOD,
no_new_privs, a nodev /dev and a read-only /proc/sys.

Standard input, output and error are CMD's. When standard input is the
terminal run has in the foreground, CMD gets its own process group and the
foreground of the terminal (Ctrl-C, Ctrl-Z reach it), and run takes the
terminal back when CMD is gone. run exits with CMD's status, or 128+n when CMD
died of signal n. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH and
SIGCONT sent to run are passed on to CMD.

Needs root (CAP_SYS_ADMIN).`,
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
			if asRoot && rootfs == "" {
				return fmt.Errorf("--root goes with --rootfs (without it CMD runs as root on the host's files)")
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
			o := pool.ContainerOptions{Rootfs: rootfs, TTY: pool.ForegroundTerminal(cmd.InOrStdin()), AsRoot: asRoot}
			c, err := pool.StartContainer(exe, p, o, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			code, err := c.Wait()
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
	cmd.Flags().BoolVar(&asRoot, "root", false, "with --rootfs: run CMD as uid 0 (capabilities still confined) instead of the pool's uid and gid")
	cmd.Flags().StringVar(&config, "config", "", "serve's configuration (for its run_dir)")
	cmd.Flags().StringVar(&runDir, "run-dir", pool.DefaultRunDir, "serve's run directory")
	cmd.Flags().StringVar(&rootfs, "rootfs", "", "filesystem instance of the pool's service to use as the container's root")
	return cmd
}

// newContainerInitCmd is run's pid 1 inside the container (pool.ContainerInit).
func newContainerInitCmd() *cobra.Command {
	var (
		o        pool.InitOptions
		uid, gid uint32
	)
	cmd := &cobra.Command{
		Use:    "container-init --hostname NAME --cgroup-procs FILE... [--netns F] [--rootfs I] [--tty] -- CMD ARGS",
		Short:  "A container's init (used by run)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if c.Flags().Changed("uid") != c.Flags().Changed("gid") {
				return fmt.Errorf("--uid and --gid go together")
			}
			if c.Flags().Changed("uid") {
				o.User = &syscall.Credential{Uid: uid, Gid: gid}
			}
			return pool.ContainerInit(o, args)
		},
	}
	cmd.Flags().Uint32Var(&uid, "uid", 0, "run the command as this uid (with --gid)")
	cmd.Flags().Uint32Var(&gid, "gid", 0, "run the command as this gid (with --uid)")
	cmd.Flags().StringArrayVar(&o.ProcsFiles, "cgroup-procs", nil, "cgroup.procs file to write our pid to (repeatable)")
	cmd.Flags().StringVar(&o.Hostname, "hostname", "", "the container's hostname")
	cmd.Flags().StringVar(&o.Netns, "netns", "", "network namespace file to join")
	cmd.Flags().StringVar(&o.Rootfs, "rootfs", "", "filesystem instance to use as root")
	cmd.Flags().BoolVar(&o.TTY, "tty", false, "give the command the foreground of the terminal on stdin")
	return cmd
}
