package tune

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"text/tabwriter"

	"github.com/polytropon/polytropon/ipc/memcopy"
)

// GoalBound is the copier's goal, which Compare judges: the tuned profile is
// never slower than copy() by more than 2 %.
const GoalBound = 0.98

// Speedup is the tuned Copier's throughput over copy() at one size and
// setting, measured in the same run: Speedup is the ratio of the medians,
// Paired the median of the per-round ratios with its 95 % interval, and
// Verdict whether the interval shows the tuned copier at most 2 % slower than
// copy() (holds), more than 2 % slower (fails), or neither (unclear: fewer
// than 6 rounds, or an interval across the bound).
type Speedup struct {
	Setting string  `json:"setting"`
	Bytes   int     `json:"bytes"`
	Kernel  string  `json:"kernel"`
	Speedup float64 `json:"speedup"`
	Paired  *Paired `json:"paired,omitempty"`
	Verdict string  `json:"verdict"`
}

// Comparison is what `polytropon perf copy` reports: every kernel and the
// tuned copier per size and setting, and the tuned copier against copy().
type Comparison struct {
	Result   *Result          `json:"result"`
	Profile  *memcopy.Profile `json:"profile"`
	Speedups []Speedup        `json:"tuned_speedups"`
	// Worst and Best are the extremes of Speedups.
	Worst float64 `json:"worst_speedup"`
	Best  float64 `json:"best_speedup"`
	// Verdicts counts the cells per verdict of GoalBound.
	Verdicts map[string]int `json:"verdicts"`
}

// Compare measures every kernel and a Copier built from p at opts' sizes and
// settings, then copy() against that Copier alone, and judges GoalBound per
// cell on the second run. opts.Candidates is replaced.
func Compare(p *memcopy.Profile, opts Options) (*Comparison, error) {
	copier, err := memcopy.NewCopier(p)
	if err != nil {
		return nil, fmt.Errorf("memcopy/tune: %w", err)
	}
	tuned := CopierCandidate("tuned", copier)
	all := KernelCandidates()
	opts.Candidates = append(all, tuned)
	r, err := Run(opts)
	if err != nil {
		return nil, err
	}
	// The bound is judged on a second run of copy() and the tuned copier
	// alone: between two candidates minutes of other kernels pass, and what
	// each leaves in the caches (a non-temporal kernel evicts the
	// destination) skews its successor; with two the only predecessor is the
	// other one or itself.
	opts.Candidates = []Candidate{all[0], tuned}
	opts.KeepSamples = true
	opts.Progress = nil
	pair, err := Run(opts)
	if err != nil {
		return nil, err
	}
	c := &Comparison{Result: r, Profile: p, Worst: math.Inf(1), Verdicts: map[string]int{}}
	for _, cell := range r.Cells {
		if cell.Kernel != "tuned" {
			continue
		}
		base, _ := r.Cell(cell.Setting, cell.Bytes, "copy")
		s := Speedup{Setting: cell.Setting, Bytes: cell.Bytes, Kernel: copier.KernelFor(cell.Bytes).Name(),
			Speedup: base.MedianNs / cell.MedianNs, Verdict: VerdictUnclear}
		pb, _ := pair.Cell(cell.Setting, cell.Bytes, "copy")
		pt, _ := pair.Cell(cell.Setting, cell.Bytes, "tuned")
		if pr, err := PairRatios(pb.Samples, pt.Samples); err == nil {
			s.Paired, s.Verdict = &pr, pr.Verdict(GoalBound)
		}
		c.Verdicts[s.Verdict]++
		c.Speedups = append(c.Speedups, s)
		c.Worst, c.Best = min(c.Worst, s.Speedup), max(c.Best, s.Speedup)
	}
	return c, nil
}

// WriteTable prints the measurements (WriteTable of the Result), then the
// tuned copier against copy() per cell and the count of cells per verdict.
func (c *Comparison) WriteTable(w io.Writer) error {
	if err := WriteTable(w, c.Result, c.Profile); err != nil {
		return err
	}
	fmt.Fprintln(w, "\ntuned copier vs copy(), same run (paired: median of per-round ratios, 95 % interval; bound: at most 2 % slower)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "setting\tsize\tkernel\tspeedup\tpaired\t95% interval\tbound")
	for _, s := range c.Speedups {
		paired, ci := "-", "- (needs >= 6 reps)"
		if s.Paired != nil {
			paired = fmt.Sprintf("%.3fx", s.Paired.Median)
			ci = fmt.Sprintf("%.3f-%.3f", s.Paired.Lo, s.Paired.Hi)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.3fx\t%s\t%s\t%s\n", s.Setting, s.Bytes, s.Kernel, s.Speedup, paired, ci, s.Verdict)
	}
	fmt.Fprintf(tw, "worst\t\t\t%.3fx\nbest\t\t\t%.3fx\n", c.Worst, c.Best)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "2 %% bound: holds in %d cells, fails in %d, unclear in %d\n",
		c.Verdicts[VerdictHolds], c.Verdicts[VerdictFails], c.Verdicts[VerdictUnclear])
	return err
}

// Profile sources, as LoadOrTune reports them.
const (
	SourceFile  = "file"  // loaded from the path given or the default path
	SourceTuned = "tuned" // no profile at the default path: tuned in-process
)

// LoadOrTune returns the profile at path; with path empty, the one at
// memcopy.DefaultProfilePath(false), or, when there is none, one tuned now
// with opts (Run, then Choose). A profile that exists but cannot be read is an
// error, never silently replaced. It returns where the profile came from and,
// for SourceFile, its path.
func LoadOrTune(path string, opts Options) (p *memcopy.Profile, source, from string, err error) {
	explicit := path != ""
	if !explicit {
		path = memcopy.DefaultProfilePath(false)
	}
	if path != "" {
		p, err := memcopy.LoadProfile(path)
		switch {
		case err == nil:
			return p, SourceFile, path, nil
		case explicit || !errors.Is(err, fs.ErrNotExist):
			return nil, "", "", fmt.Errorf("memcopy/tune: %w", err)
		}
	}
	r, err := Run(opts)
	if err != nil {
		return nil, "", "", fmt.Errorf("memcopy/tune: tuning: %w", err)
	}
	return Choose(r), SourceTuned, "", nil
}
