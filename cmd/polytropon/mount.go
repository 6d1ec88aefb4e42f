package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/service/fusegw"
)

func init() { register(newMountCmd) }

func newMountCmd() *cobra.Command {
	var (
		socket string
		fsName string
		opts   fusegw.Options
	)
	cmd := &cobra.Command{
		Use:   "mount --fs NAME [--socket S] MOUNTPOINT",
		Short: "Mount a service's filesystem instance through FUSE, for unmodified programs",
		Long: `mount serves one filesystem instance of a running service at MOUNTPOINT through
FUSE (the legacy path). Requests reach the service over the direct path, so the
mount shows exactly what fslib clients see. It runs in the foreground until
SIGTERM or SIGINT, or until the mount is unmounted from outside, and unmounts on
exit; a stale mount left at MOUNTPOINT by a killed gateway is cleaned up first.

Run by a user, it is that user's mount (fusermount3) with default_permissions:
the kernel checks every caller's permission bits, the service checks the
mounter's credentials on each request, and the service itself acts with no
more than its own user's rights.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fsName == "" {
				return fmt.Errorf("--fs is required (the instance to mount)")
			}
			o, err := fslib.ForInstance(fslib.DialOptions{Socket: socket, Logger: log}, fsName)
			if err != nil {
				return err
			}
			fsys, err := fslib.DialFS(o)
			if err != nil {
				return err
			}
			defer fsys.(libservices.Closer).CloseFS()
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sigs)
			opts.Name = "polytropon:" + fsName
			opts.Logger = log
			srv, err := fusegw.Mount(args[0], fsys, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mounted %s at %s\n", fsName, srv.Mountpoint())
			select {
			case sig := <-sigs:
				log.Info("unmounting", zap.Stringer("signal", sig), zap.String("mountpoint", srv.Mountpoint()))
				if err := srv.Unmount(); err != nil {
					return err
				}
				srv.Wait()
			case <-srv.Done():
				log.Info("unmounted from outside", zap.String("mountpoint", srv.Mountpoint()))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "the service's socket (default $"+fslib.SocketEnv+")")
	cmd.Flags().StringVar(&fsName, "fs", "", "the instance to mount")
	cmd.Flags().BoolVar(&opts.AllowOther, "allow-other", false, "let other users in (permission bits still apply)")
	// Files behind this mount change through the direct path too, and the kernel's
	// page cache over a remote instance has shown stale pages under concurrent
	// writers; so every read and write is a request unless asked otherwise.
	var pageCache bool
	cmd.Flags().BoolVar(&pageCache, "page-cache", false, "let the kernel cache file pages (faster re-reads; see the help)")
	cmd.PreRun = func(*cobra.Command, []string) { opts.DirectIO = !pageCache }
	cmd.Flags().DurationVar(&opts.AttrTimeout, "attr-timeout", 0, "kernel attribute cache time (0: default 1s, negative: none)")
	cmd.Flags().DurationVar(&opts.EntryTimeout, "entry-timeout", 0, "kernel name cache time (0: default 1s, negative: none)")
	return cmd
}
