package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/copytune"
	"github.com/polytropon/polytropon/ipc/memcopy"
)

func init() { registerUnder("perf", newPerfCopyCmd) }

// tunedSpeedup is the tuned Copier's throughput over copy() at one size and
// setting, measured in the same run.
type tunedSpeedup struct {
	Setting string  `json:"setting"`
	Bytes   int     `json:"bytes"`
	Kernel  string  `json:"kernel"`
	Speedup float64 `json:"speedup"`
}

type perfCopyReport struct {
	Result   *copytune.Result `json:"result"`
	Profile  *memcopy.Profile `json:"profile"`
	Speedups []tunedSpeedup   `json:"tuned_speedups"`
	// Worst and Best are the extremes of Speedups.
	Worst float64 `json:"worst_speedup"`
	Best  float64 `json:"best_speedup"`
}

func newPerfCopyCmd() *cobra.Command {
	var (
		rf          copyRunFlags
		profilePath string
		asJSON      bool
	)
	c := &cobra.Command{
		Use:   "copy",
		Short: "Memory copy throughput per kernel and size, and the tuned choice's speedup over copy()",
		Long: `perf copy measures GB/s for every copy kernel and size in the direct path's settings
(see tune copy), together with the tuned copier, and reports the tuned copier's speedup
over copy() measured in the same run. The profile is --profile, else the user's standard
profile, else one tuned in-process first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := rf.options(cmd.ErrOrStderr())
			p, err := perfProfile(profilePath, opts)
			if err != nil {
				return err
			}
			copier, err := memcopy.NewCopier(p)
			if err != nil {
				return fmt.Errorf("perf copy: %w", err)
			}
			opts.Candidates = append(copytune.KernelCandidates(), copytune.Candidate{Name: "tuned", Copy: copier.Copy})
			r, err := copytune.Run(opts)
			if err != nil {
				return fmt.Errorf("perf copy: %w", err)
			}
			rep := perfCopyReport{Result: r, Profile: p, Worst: math.Inf(1)}
			for _, cell := range r.Cells {
				if cell.Kernel != "tuned" {
					continue
				}
				base, _ := r.Cell(cell.Setting, cell.Bytes, "copy")
				s := tunedSpeedup{Setting: cell.Setting, Bytes: cell.Bytes, Kernel: copier.KernelFor(cell.Bytes).Name(),
					Speedup: base.MedianNs / cell.MedianNs}
				rep.Speedups = append(rep.Speedups, s)
				rep.Worst, rep.Best = min(rep.Worst, s.Speedup), max(rep.Best, s.Speedup)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			if err := copytune.WriteTable(w, r, p); err != nil {
				return err
			}
			fmt.Fprintln(w, "\ntuned copier vs copy(), same run")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "setting\tsize\tkernel\tspeedup")
			for _, s := range rep.Speedups {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.3fx\n", s.Setting, s.Bytes, s.Kernel, s.Speedup)
			}
			fmt.Fprintf(tw, "worst\t\t\t%.3fx\nbest\t\t\t%.3fx\n", rep.Worst, rep.Best)
			return tw.Flush()
		},
	}
	rf.add(c)
	c.Flags().StringVar(&profilePath, "profile", "", "copy profile to measure (default: the user's standard profile, else tune first)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

// perfProfile loads the profile perf copy measures, or tunes one in-process.
func perfProfile(path string, opts copytune.Options) (*memcopy.Profile, error) {
	explicit := path != ""
	if !explicit {
		path = memcopy.DefaultProfilePath(false)
	}
	if path != "" {
		p, err := memcopy.LoadProfile(path)
		switch {
		case err == nil:
			log.Info("measuring copy profile", zap.String("path", path))
			return p, nil
		case explicit || !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("perf copy: %w", err)
		}
	}
	log.Info("no copy profile: tuning in-process first")
	r, err := copytune.Run(opts)
	if err != nil {
		return nil, fmt.Errorf("perf copy: tuning: %w", err)
	}
	return copytune.Choose(r), nil
}
