package tune

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"text/tabwriter"

	"github.com/polytropon/polytropon/ipc/memcopy"
)

// Decision rules (why): a kernel replaces copy() in a size class only when its
// geometric-mean speedup over the class's sizes and settings is at least
// MinGain, so that noise does not flip choices, and when no single size and
// setting is slower than copy() by more than MaxLoss, so that the profile is
// never noticeably worse than copy() anywhere it was measured.
//
// A cell's speedup is the median of its per-round ratios when the run kept
// its samples (Options.KeepSamples; tune and perf do): kernel and copy() ran
// in the same round, within milliseconds, so a slow spell of a shared machine
// hits both and cancels out of the ratio. The ratio of the two medians, used
// otherwise, takes each median from different moments: on a shared VM two or
// three such cells per run vetoed kernels in classes where they were faster
// in most cells.
const (
	MinGain = 1.03
	MaxLoss = 0.98
)

// ClassScore is one candidate's standing in one size class.
type ClassScore struct {
	Kernel  string
	Geomean float64 // geometric mean of the cells' speedups over copy() (see cellRatio)
	Worst   float64 // smallest such speedup
}

// Scores returns, per size class measured, every non-baseline candidate's
// score, in candidate order.
func Scores(r *Result) map[int][]ClassScore {
	out := map[int][]ClassScore{}
	for _, k := range r.Candidates[1:] {
		type acc struct {
			logSum float64
			n      int
			worst  float64
		}
		byClass := map[int]*acc{}
		for _, c := range r.Cells {
			if c.Kernel != k {
				continue
			}
			base, ok := r.Cell(c.Setting, c.Bytes, r.Candidates[0])
			if !ok || c.MedianNs <= 0 {
				continue
			}
			ratio := cellRatio(base, c)
			cls := memcopy.ClassOf(c.Bytes)
			a := byClass[cls]
			if a == nil {
				a = &acc{worst: math.Inf(1)}
				byClass[cls] = a
			}
			a.logSum += math.Log(ratio)
			a.n++
			a.worst = min(a.worst, ratio)
		}
		for cls, a := range byClass {
			out[cls] = append(out[cls], ClassScore{Kernel: k, Geomean: math.Exp(a.logSum / float64(a.n)), Worst: a.worst})
		}
	}
	return out
}

// cellRatio is a cell's speedup over the baseline cell of the same setting and
// size: the median per-round ratio when both kept their samples, else the
// ratio of the medians.
func cellRatio(base, c Cell) float64 {
	if len(base.Samples) > 0 && len(base.Samples) == len(c.Samples) {
		r := make([]float64, len(c.Samples))
		for i := range r {
			if base.Samples[i] <= 0 || c.Samples[i] <= 0 {
				return base.MedianNs / c.MedianNs
			}
			r[i] = base.Samples[i] / c.Samples[i]
		}
		return median(r)
	}
	return base.MedianNs / c.MedianNs
}

// Choose turns a run into a profile: for each size class measured, the
// candidate with the best geometric-mean speedup among those passing MinGain
// and MaxLoss, else copy(). Candidates that are not memcopy kernels (a tuned
// Copier in perf) are never chosen.
func Choose(r *Result) *memcopy.Profile {
	p := &memcopy.Profile{
		Version: memcopy.ProfileVersion, CPU: r.CPU, CPUName: r.CPUName, GoVersion: runtime.Version(), Created: r.Date,
	}
	scores := Scores(r)
	measured := map[int]bool{}
	for _, size := range r.Sizes {
		measured[memcopy.ClassOf(size)] = true
	}
	for cls := 1; cls < 64; cls++ {
		if !measured[cls] {
			continue
		}
		ss := scores[cls]
		lo, hi := memcopy.ClassRange(cls)
		choice := memcopy.ClassChoice{MinBytes: lo, MaxBytes: hi, Kernel: r.Candidates[0], Speedup: 1}
		for _, s := range ss {
			if memcopy.KernelByName(s.Kernel) == nil || s.Geomean < MinGain || s.Worst < MaxLoss {
				continue
			}
			if s.Geomean > choice.Speedup {
				choice.Kernel, choice.Speedup = s.Kernel, s.Geomean
			}
		}
		p.Classes = append(p.Classes, choice)
	}
	for _, c := range r.Cells {
		p.Measurements = append(p.Measurements, memcopy.Measurement{Setting: c.Setting, Bytes: int64(c.Bytes), Kernel: c.Kernel, GBps: c.GBps})
	}
	return p
}

// WriteTable prints GB/s per candidate for each setting and size, then the
// choice per size class (when p is not nil).
func WriteTable(w io.Writer, r *Result, p *memcopy.Profile) error {
	fmt.Fprintf(w, "CPU: %s (%v), %s, median of %d\n", r.CPUName, r.CPU, r.Date.Format("2006-01-02 15:04 UTC"), r.Reps)
	for _, st := range r.Settings {
		fmt.Fprintf(w, "\n%s (GB/s)\n", st)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "size\t")
		for _, k := range r.Candidates {
			fmt.Fprintf(tw, "%s\t", k)
		}
		fmt.Fprintln(tw)
		for _, size := range r.Sizes {
			fmt.Fprintf(tw, "%s\t", sizeLabel(size))
			for _, k := range r.Candidates {
				if c, ok := r.Cell(st, size, k); ok {
					fmt.Fprintf(tw, "%.1f\t", c.GBps)
				} else {
					fmt.Fprint(tw, "-\t")
				}
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if p == nil {
		return nil
	}
	fmt.Fprintf(w, "\nchoice per size class (a kernel replaces copy() at >= %.0f%% gain, none worse than %.0f%% anywhere)\n",
		(MinGain-1)*100, (1-MaxLoss)*100)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "class\tkernel\tspeedup vs copy()")
	for _, c := range p.Classes {
		fmt.Fprintf(tw, "%s..%s\t%s\t%.2fx\n", sizeLabel(int(c.MinBytes)), sizeLabel(int(c.MaxBytes)), c.Kernel, c.Speedup)
	}
	return tw.Flush()
}

// Confirm measures each class where p chose a kernel once more, that kernel
// against copy() alone, and puts copy() back where the second run does not
// pass MinGain and MaxLoss too. On a busy machine single runs are noisy (the
// same code measured twice can differ by tens of percent); a choice that
// holds up twice is far less likely to be noise. opts gives reps, the child
// arguments and progress; its sizes and candidates are replaced. Classes keep
// the smaller of the two speedups.
func Confirm(p *memcopy.Profile, r *Result, opts Options) error {
	byClass := map[int][]int{}
	for _, size := range r.Sizes {
		byClass[memcopy.ClassOf(size)] = append(byClass[memcopy.ClassOf(size)], size)
	}
	for i := range p.Classes {
		cc := &p.Classes[i]
		k := memcopy.KernelByName(cc.Kernel)
		if k == nil || cc.Kernel == r.Candidates[0] {
			continue
		}
		o := opts
		o.Sizes = byClass[memcopy.ClassOf(int(cc.MinBytes))]
		o.Candidates = []Candidate{BuiltinCandidate(), {Name: k.Name(), Copy: k.Copy}}
		o.Progress = nil
		r2, err := Run(o)
		if err != nil {
			return err
		}
		ss := Scores(r2)[memcopy.ClassOf(int(cc.MinBytes))]
		if len(ss) != 1 || ss[0].Geomean < MinGain || ss[0].Worst < MaxLoss {
			cc.Kernel, cc.Speedup = r.Candidates[0], 1
			continue
		}
		cc.Speedup = min(cc.Speedup, ss[0].Geomean)
	}
	return nil
}
