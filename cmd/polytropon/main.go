// Command polytropon is the one command-line tool for everything a user of polytropon
// does: run the host daemon and filesystem services, mount, measure, tune.
//
// It parses flags and calls packages: the services are in service and pool, the
// measurements in perf/... (one package per experiment), the copy tuner in
// ipc/memcopy/tune. What a subcommand's file holds beyond its flags is the glue
// of a process: signals, where output goes, how this binary starts itself again
// (a service, a perf worker, a copy reader, a pool-exec).
//
// Privilege: serve and a root-started `service` whose configuration names a
// user are privileged parents that make sockets and FUSE mounts and hand them
// to a service running as the tenant's user (`pool-exec` drops to it); see
// package service and SECURITY.md at the repository root.
//
// Each subcommand lives in its own file and registers itself from init() with
// register (or registerUnder for a group such as perf or tune). A group command is
// added to the tree only when at least one subcommand registered under it, so --help
// never lists a command that does nothing. `polytropon demo` runs the main
// measurements; `polytropon --help` lists the rest.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/logging"
)

var (
	logLevel  string
	logFormat string
	// log is the process logger, set before any subcommand runs.
	log = zap.NewNop()
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "polytropon",
		Short: "Per-tenant user-level storage I/O stack for multitenant container hosts",
		Long: `polytropon gives each tenant of a container host a pool of reserved resources
with its own user-level filesystem service, reached over shared-memory queues
(the direct path) or through FUSE (the legacy path).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			l, err := logging.New(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return err
			}
			log = l
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", logging.FormatConsole, "log format: console or json")
	for _, c := range commands {
		root.AddCommand(c())
	}
	for _, g := range groups {
		if len(g.subs) == 0 {
			continue
		}
		gc := &cobra.Command{Use: g.name, Short: g.short, Args: cobra.NoArgs}
		for _, s := range g.subs {
			gc.AddCommand(s())
		}
		root.AddCommand(gc)
	}
	return root
}

// commands and groups are filled by init() functions in the subcommand files. They
// hold constructors, not commands, so that each test gets a fresh tree with fresh
// flag values.
var (
	commands []func() *cobra.Command
	groups   = []*group{
		{name: "perf", short: "Measure latency and throughput of polytropon's paths and parts"},
		{name: "tune", short: "Tune polytropon to this machine"},
	}
)

type group struct {
	name, short string
	subs        []func() *cobra.Command
}

func register(c func() *cobra.Command) { commands = append(commands, c) }

func registerUnder(name string, c func() *cobra.Command) {
	for _, g := range groups {
		if g.name == name {
			g.subs = append(g.subs, c)
			return
		}
	}
	panic("polytropon: no command group " + name)
}

func main() {
	serveCopyReader()
	root := newRoot()
	err := root.Execute()
	_ = log.Sync()
	if err != nil {
		// A status passed on (run's command's) has nothing to say.
		if e, ok := err.(*exitError); !ok || e.err != nil {
			fmt.Fprintln(os.Stderr, "polytropon:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status (for example a child's, in `run`);
// err nil means the status alone, with no message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
