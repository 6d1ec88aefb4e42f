package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/memcopy"
	"github.com/polytropon/polytropon/ipc/memcopy/tune"
)

func init() { registerUnder("tune", newTuneCopyCmd) }

// serveCopyReader is the reader child of `tune copy` and `perf copy`: this
// executable started again with the tuner's environment marker. main (and
// TestMain, in tests) calls it before cobra or the test runner parses
// arguments that were never meant for it; it is the re-exec pattern of
// container runtimes. It returns only when this process is not the child.
func serveCopyReader() {
	if !tune.IsChild() {
		return
	}
	if err := tune.ServeChild(); err != nil {
		fmt.Fprintln(os.Stderr, "polytropon: copy reader:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// copyRunFlags are the measurement flags shared by tune copy and perf copy.
type copyRunFlags struct {
	quick, progress bool
	reps            int
	sizes           []int
}

func (f *copyRunFlags) add(c *cobra.Command) {
	c.Flags().BoolVar(&f.quick, "quick", false, "fewer sizes (64 B to 4 MiB, every 4th power of two) and 3 repetitions")
	c.Flags().IntVar(&f.reps, "reps", 0, "samples per kernel, size and setting (median taken); 0: 7, or 3 with --quick")
	c.Flags().IntSliceVar(&f.sizes, "sizes", nil, "measure only these sizes in bytes (comma-separated), e.g. to re-check a few classes with many --reps")
	c.Flags().BoolVar(&f.progress, "progress", false, "draw a progress bar on stderr even when it is not a terminal")
}

func (f *copyRunFlags) options(stderr io.Writer) tune.Options {
	// KeepSamples: the choice compares kernels with copy() round by round
	// (see tune.Choose).
	o := tune.Options{Quick: f.quick, Reps: f.reps, Sizes: f.sizes, KeepSamples: true}
	if f.progress || isTerminal(stderr) {
		o.Progress = stderr
	}
	return o
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newTuneCopyCmd() *cobra.Command {
	var (
		rf     copyRunFlags
		out    string
		daemon bool
		show   bool
		// noConfirm skips the second measurement of each class a kernel won.
		noConfirm bool
	)
	c := &cobra.Command{
		Use:   "copy",
		Short: "Measure the memory copy kernels and write this CPU's copy profile",
		Long: `tune copy measures every copy kernel this CPU runs, at sizes from 64 B to 64 MiB,
copying into a shared memory mapping that another process reads and out of one that
another process wrote, with warm and cold destinations. For each size class it keeps
copy() unless a kernel is at least 3 % faster (and nowhere more than 2 % slower), in the
run and again in a second run of that class against copy() alone, and writes the choice as a JSON profile that the direct path's drivers load at start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				out = memcopy.DefaultProfilePath(daemon)
				if out == "" {
					return errors.New("tune copy: no configuration directory ($HOME unset): give --out")
				}
			}
			log.Info("tuning memory copy", zap.Stringer("cpu", memcopy.HostCPU()), zap.Bool("quick", rf.quick))
			r, err := tune.Run(rf.options(cmd.ErrOrStderr()))
			if err != nil {
				return fmt.Errorf("tune copy: %w", err)
			}
			p := tune.Choose(r)
			if !noConfirm {
				if err := tune.Confirm(p, r, rf.options(cmd.ErrOrStderr())); err != nil {
					return fmt.Errorf("tune copy: confirming: %w", err)
				}
			}
			if show {
				if err := tune.WriteTable(cmd.OutOrStdout(), r, p); err != nil {
					return err
				}
			}
			if err := p.Save(out); err != nil {
				return fmt.Errorf("tune copy: %w", err)
			}
			replaced := 0
			for _, cc := range p.Classes {
				if cc.Kernel != "copy" {
					replaced++
				}
			}
			log.Info("wrote copy profile", zap.String("path", out),
				zap.Int("size_classes", len(p.Classes)), zap.Int("classes_not_copy", replaced))
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringVar(&out, "out", "", "profile path (default: the standard location, see --daemon)")
	c.Flags().BoolVar(&daemon, "daemon", false, "write the daemon's profile (/var/lib/polytropon/) instead of the user's")
	c.Flags().BoolVar(&show, "show", false, "print the measurements and the choice per size class")
	c.Flags().BoolVar(&noConfirm, "no-confirm", false, "keep first-run choices without measuring each winning class again")
	return c
}
