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
// setting, measured in the same run: Speedup is the ratio of the medians,
// Paired the median of the per-round ratios with its 95 % interval, and
// Verdict whether the interval shows the tuned copier at most 2 % slower than
// copy() (holds), more than 2 % slower (fails), or neither (unclear).
type tunedSpeedup struct {
	Setting string           `json:"setting"`
	Bytes   int              `json:"bytes"`
	Kernel  string           `json:"kernel"`
	Speedup float64          `json:"speedup"`
	Paired  *copytune.Paired `json:"paired,omitempty"`
	Verdict string           `json:"verdict"`
}

// noWorseBound is the goal: the tuned profile never slower than
// copy() by more than 2 %.
const noWorseBound = 0.98

type perfCopyReport struct {
	Result   *copytune.Result `json:"result"`
	Profile  *memcopy.Profile `json:"profile"`
	Speedups []tunedSpeedup   `json:"tuned_speedups"`
	// Worst and Best are the extremes of Speedups.
	Worst float64 `json:"worst_speedup"`
	Best  float64 `json:"best_speedup"`
	// Verdicts counts the cells per verdict of the 2 % bound.
	Verdicts map[string]int `json:"verdicts"`
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
			tuned := copytune.CopierCandidate("tuned", copier)
			all := copytune.KernelCandidates()
			opts.Candidates = append(all, tuned)
			r, err := copytune.Run(opts)
			if err != nil {
				return fmt.Errorf("perf copy: %w", err)
			}
			// The bound is judged on a second run of copy() and the tuned
			// copier alone: between two candidates minutes of other kernels
			// pass, and what each leaves in the caches (a non-temporal
			// kernel evicts the destination) skews its successor; with two
			// the only predecessor is the other one or itself.
			opts.Candidates = []copytune.Candidate{all[0], tuned}
			opts.KeepSamples = true
			opts.Progress = nil
			pair, err := copytune.Run(opts)
			if err != nil {
				return fmt.Errorf("perf copy: %w", err)
			}
			rep := perfCopyReport{Result: r, Profile: p, Worst: math.Inf(1), Verdicts: map[string]int{}}
			for _, cell := range r.Cells {
				if cell.Kernel != "tuned" {
					continue
				}
				base, _ := r.Cell(cell.Setting, cell.Bytes, "copy")
				s := tunedSpeedup{Setting: cell.Setting, Bytes: cell.Bytes, Kernel: copier.KernelFor(cell.Bytes).Name(),
					Speedup: base.MedianNs / cell.MedianNs, Verdict: copytune.VerdictUnclear}
				pb, _ := pair.Cell(cell.Setting, cell.Bytes, "copy")
				pt, _ := pair.Cell(cell.Setting, cell.Bytes, "tuned")
				if pr, err := copytune.PairRatios(pb.Samples, pt.Samples); err == nil {
					s.Paired, s.Verdict = &pr, pr.Verdict(noWorseBound)
				}
				rep.Verdicts[s.Verdict]++
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
			fmt.Fprintln(w, "\ntuned copier vs copy(), same run (paired: median of per-round ratios, 95 % interval; bound: at most 2 % slower)")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "setting\tsize\tkernel\tspeedup\tpaired\t95% interval\tbound")
			for _, s := range rep.Speedups {
				paired, ci := "-", "- (needs >= 6 reps)"
				if s.Paired != nil {
					paired = fmt.Sprintf("%.3fx", s.Paired.Median)
					ci = fmt.Sprintf("%.3f-%.3f", s.Paired.Lo, s.Paired.Hi)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.3fx\t%s\t%s\t%s\n", s.Setting, s.Bytes, s.Kernel, s.Speedup, paired, ci, s.Verdict)
			}
			fmt.Fprintf(tw, "worst\t\t\t%.3fx\nbest\t\t\t%.3fx\n", rep.Worst, rep.Best)
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "2 %% bound: holds in %d cells, fails in %d, unclear in %d\n",
				rep.Verdicts[copytune.VerdictHolds], rep.Verdicts[copytune.VerdictFails], rep.Verdicts[copytune.VerdictUnclear])
			return err
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
