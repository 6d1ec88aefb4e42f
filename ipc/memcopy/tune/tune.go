package tune

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/memcopy"
)

// A Setting is one situation of the direct path a copy is measured in.
type Setting struct {
	Name string
	// ToShared: private source -> shared (memfd MAP_SHARED) destination that
	// the reader child reads next. Otherwise shared source the child just
	// wrote -> private destination.
	ToShared bool
	// Cold: every copy goes to a destination not touched for a long time
	// (rotating through a region several times the last-level cache), rather
	// than reusing the same destination buffers.
	Cold bool
}

// Settings are the four the tuner measures.
var Settings = []Setting{
	{Name: "priv->shared/warm", ToShared: true},
	{Name: "priv->shared/cold", ToShared: true, Cold: true},
	{Name: "shared->priv/warm"},
	{Name: "shared->priv/cold", Cold: true},
}

// A Candidate is something that copies: a memcopy kernel or, for perf, a
// tuned Copier.
//
// Copy is called once per copy through a function value, as a Copier calls a
// kernel (an indirect call through its table). Batch, when set, runs a whole
// sample's copies itself (dsts[i] <- srcs[i]) in a loop compiled with the
// copy inside it, as a caller of copy() or of Copier.Copy (inlined) runs
// them: at 64 bytes the indirect call alone is several percent of a copy, and
// putting it on the baseline and the tuned copier made both look slower than
// their callers see them, and the copier's one compare look bigger than it is.
type Candidate struct {
	Name  string
	Copy  func(dst, src []byte) int
	Batch func(dsts, srcs [][]byte)
}

// KernelCandidates returns every kernel this CPU runs, copy() first. The
// baseline runs the built-in copy inline (Batch) rather than through its
// Kernel: Kernel.Copy adds a call and an indirect call, which at 64 bytes made
// copy() look 1.4x slower than it is and every candidate look better.
func KernelCandidates() []Candidate {
	var cs []Candidate
	for _, k := range memcopy.Kernels() {
		switch {
		case !k.Available():
		case k.Name() == "copy":
			cs = append(cs, BuiltinCandidate())
		default:
			cs = append(cs, Candidate{Name: k.Name(), Copy: k.Copy})
		}
	}
	return cs
}

// BuiltinCandidate is the baseline: the built-in copy, inline in its loop.
func BuiltinCandidate() Candidate {
	return Candidate{Name: "copy", Copy: builtinCopy, Batch: builtinBatch}
}

// CopierCandidate is a tuned Copier as its callers run it: Copy inlined in
// their loop. The loop is a function of its own, not the closure's body: in a
// closure the compiler keeps the Copier and the slices' capacities on the
// stack across the copy and reloads them each time, which made the Copier's
// one compare cost 1.2 ns at 64 B instead of about 0.3.
func CopierCandidate(name string, c *memcopy.Copier) Candidate {
	return Candidate{Name: name, Copy: c.Copy, Batch: func(dsts, srcs [][]byte) { copierBatch(c, dsts, srcs) }}
}

func copierBatch(c *memcopy.Copier, dsts, srcs [][]byte) {
	for i := range dsts {
		c.Copy(dsts[i], srcs[i])
	}
}

func builtinCopy(dst, src []byte) int { return copy(dst, src) }

func builtinBatch(dsts, srcs [][]byte) {
	for i := range dsts {
		copy(dsts[i], srcs[i])
	}
}

// Options of a measurement run. Zero values mean the defaults.
type Options struct {
	// Quick: fewer sizes (every fourth power of two to 4 MiB) and 3 repetitions.
	Quick bool
	// Sizes overrides the sizes measured (bytes, each 1..MaxSize).
	Sizes []int
	// Reps is the number of samples per kernel, size and setting (median
	// taken); default 7, 3 with Quick.
	Reps int
	// Candidates to measure; default KernelCandidates. The first is the
	// baseline and must be copy().
	Candidates []Candidate
	// ChildArgs are the arguments /proc/self/exe is started with to become
	// the reader child (which must call ServeChild when IsChild).
	ChildArgs []string
	// Progress, when not nil, gets a progress bar (carriage-return updated).
	Progress io.Writer
	// KeepSamples keeps every round's time in Cell.Samples, for paired
	// comparisons (PairRatios).
	KeepSamples bool
}

// MaxSize is the largest copy measured.
const MaxSize = 64 << 20

// batchBytes is the least a sample copies (several copies of small sizes), so
// that a sample lasts microseconds and the clock's resolution does not matter.
const batchBytes = 256 << 10

// DefaultSizes are 64 B to 64 MiB: every power of two and one odd size
// between each pair (1.5x plus 13 bytes: unaligned tails).
func DefaultSizes(quick bool) []int {
	var s []int
	step := 1
	maxShift := 26
	if quick {
		step, maxShift = 4, 22
	}
	for sh := 6; sh <= maxShift; sh += step {
		s = append(s, 1<<sh)
		if !quick && sh < 26 {
			s = append(s, 1<<sh+1<<(sh-1)+13)
		}
	}
	return s
}

// Cell is one candidate's median at one size in one setting.
type Cell struct {
	Setting  string  `json:"setting"`
	Bytes    int     `json:"bytes"`
	Kernel   string  `json:"kernel"`
	MedianNs float64 `json:"median_ns"` // per copy
	GBps     float64 `json:"gbps"`
	// Samples are the time per copy of each round, in round order, with
	// Options.KeepSamples: index i of two candidates' Samples ran in the
	// same round, side by side.
	Samples []float64 `json:"samples_ns,omitempty"`
}

// Result is a whole measurement run.
type Result struct {
	CPU        memcopy.CPUKey `json:"cpu"`
	CPUName    string         `json:"cpu_name"`
	Date       time.Time      `json:"date"`
	Reps       int            `json:"reps"`
	Sizes      []int          `json:"sizes"`
	Settings   []string       `json:"settings"`
	Candidates []string       `json:"kernels"`
	Cells      []Cell         `json:"cells"`
}

// Cell returns the median of kernel at size in setting.
func (r *Result) Cell(setting string, size int, kernel string) (Cell, bool) {
	for _, c := range r.Cells {
		if c.Setting == setting && c.Bytes == size && c.Kernel == kernel {
			return c, true
		}
	}
	return Cell{}, false
}

// Run measures every candidate at every size in every setting, with a reader
// child process on another core reading what was written (or writing what
// is read). Samples of one size and setting are interleaved across candidates
// so that noise from other work on the machine falls on all of them alike.
func Run(opts Options) (*Result, error) {
	sizes := opts.Sizes
	if sizes == nil {
		sizes = DefaultSizes(opts.Quick)
	}
	maxSize := 0
	for _, s := range sizes {
		if s < 1 || s > MaxSize {
			return nil, fmt.Errorf("memcopy/tune: size %d outside 1..%d", s, MaxSize)
		}
		maxSize = max(maxSize, s)
	}
	if len(sizes) == 0 {
		return nil, errors.New("memcopy/tune: no sizes to measure")
	}
	reps := opts.Reps
	if reps == 0 {
		reps = 7
		if opts.Quick {
			reps = 3
		}
	}
	if reps < 1 || reps > 1000 {
		return nil, fmt.Errorf("memcopy/tune: %d repetitions outside 1..1000", reps)
	}
	cands := opts.Candidates
	if cands == nil {
		cands = KernelCandidates()
	}
	if len(cands) == 0 || cands[0].Name != "copy" {
		return nil, errors.New("memcopy/tune: the first candidate must be copy(), the baseline")
	}

	// Regions: the shared data holds the warm slots and a cold area; the
	// private side mirrors it. The cold area is at least 64 MiB, more than
	// any last-level cache this targets, and two of the largest copy.
	slotBytes := roundUp(max(maxSize, batchBytes)+4096, 4096)
	coldBytes := max(64<<20, 2*roundUp(maxSize, 4096))
	regionBytes := slotBytes + coldBytes

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	parentCPU, childCPU := pickCPUs()
	var oldSet unix.CPUSet
	if parentCPU >= 0 && unix.SchedGetaffinity(0, &oldSet) == nil {
		var set unix.CPUSet
		set.Set(parentCPU)
		if unix.SchedSetaffinity(0, &set) == nil {
			defer unix.SchedSetaffinity(0, &oldSet)
		}
	}

	ch, err := startChild(regionBytes, opts.ChildArgs, childCPU)
	if err != nil {
		return nil, err
	}
	defer ch.stop()
	priv := make([]byte, regionBytes)
	src := make([]byte, maxSize)
	for i := range src {
		src[i] = byte(i)
	}
	// Fault every page in now, so no sample pays for it.
	for i := 0; i < regionBytes; i += 4096 {
		priv[i] = 1
		ch.data[i] = 1
	}

	res := &Result{
		CPU: memcopy.HostCPU(), CPUName: cpuName(), Date: time.Now().UTC(), Reps: reps, Sizes: slices.Clone(sizes),
	}
	for _, s := range Settings {
		res.Settings = append(res.Settings, s.Name)
	}
	for _, c := range cands {
		res.Candidates = append(res.Candidates, c.Name)
	}
	prog := newProgress(opts.Progress, len(sizes)*len(Settings))
	defer prog.done()
	samples := make([][]float64, len(cands))
	var bufs operands
	order := make([]int, len(cands))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range sizes {
		// Small copies sit a cache line apart, as in a ring of small
		// buffers; from a page up they start on page boundaries.
		stride := roundUp(size, 64)
		if size >= 4096 {
			stride = roundUp(size, 4096)
		}
		batch := max(1, batchBytes/size)
		for batch*stride > slotBytes {
			batch--
		}
		if cap(bufs.dsts) < batch {
			bufs = operands{make([][]byte, batch), make([][]byte, batch)}
		}
		coldSlots := coldBytes / stride
		cursor := 0
		for _, st := range Settings {
			prog.step(fmt.Sprintf("%s %s", sizeLabel(size), st.Name))
			for i := range samples {
				samples[i] = samples[i][:0]
			}
			// One warm-up round, then reps measured rounds, the candidate
			// order shuffled each round (seeded, so runs repeat): what a
			// kernel leaves in the caches (a non-temporal one evicts the
			// destination) changes the next one's time, and a fixed
			// rotation gave every candidate the same predecessor in every
			// round, a bias no number of rounds removes.
			for rep := -1; rep < reps; rep++ {
				rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
				for _, ci := range order {
					ns, err := sample(ch, priv, src, st, size, stride, batch, slotBytes, coldSlots, &cursor, cands[ci], &bufs)
					if err != nil {
						return nil, err
					}
					if rep >= 0 {
						samples[ci] = append(samples[ci], ns)
					}
				}
			}
			for ci, c := range cands {
				cell := Cell{Setting: st.Name, Bytes: size, Kernel: c.Name}
				if opts.KeepSamples {
					cell.Samples = slices.Clone(samples[ci])
				}
				cell.MedianNs = median(samples[ci])
				cell.GBps = float64(size) / cell.MedianNs
				res.Cells = append(res.Cells, cell)
			}
		}
	}
	return res, nil
}

// operands are a sample's copies, reused from sample to sample.
type operands struct{ dsts, srcs [][]byte }

// sample times batch copies of size bytes in setting st and returns the
// nanoseconds per copy. The child's pass (reading what was written, or writing
// what will be read) is not timed.
func sample(ch *child, priv, src []byte, st Setting, size, stride, batch, slotBytes, coldSlots int, cursor *int,
	c Candidate, bufs *operands) (float64, error) {
	if st.Cold && *cursor%coldSlots+batch > coldSlots {
		// Start over rather than wrap inside a batch: the batch's slots stay
		// one contiguous range for the child to read.
		*cursor = 0
	}
	dstOff := func(i int) int {
		if !st.Cold {
			return i * stride
		}
		off := slotBytes + (*cursor%coldSlots)*stride
		*cursor++
		return off
	}
	if !st.ToShared {
		if err := ch.do(opWrite, 0, batch*stride); err != nil {
			return 0, err
		}
	}
	// The operands are laid out before the clock starts, so that every
	// candidate's loop does the same work around its copies.
	bufs.dsts, bufs.srcs = bufs.dsts[:batch], bufs.srcs[:batch]
	first, last := 0, 0
	for i := range batch {
		off := dstOff(i)
		if i == 0 {
			first = off
		}
		last = off
		if st.ToShared {
			bufs.dsts[i], bufs.srcs[i] = ch.data[off:off+size], src[:size]
		} else {
			bufs.dsts[i], bufs.srcs[i] = priv[off:off+size], ch.data[i*stride:i*stride+size]
		}
	}
	t0 := time.Now()
	if c.Batch != nil {
		c.Batch(bufs.dsts, bufs.srcs)
	} else {
		for i, d := range bufs.dsts {
			c.Copy(d, bufs.srcs[i])
		}
	}
	ns := float64(time.Since(t0).Nanoseconds()) / float64(batch)
	if st.ToShared {
		// The consumer reads what was just written; in the warm setting
		// the next sample then writes lines the other core holds.
		lo, hi := first, last+size
		if err := ch.do(opRead, lo, hi-lo); err != nil {
			return 0, err
		}
	}
	return max(ns, 0.1), nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func roundUp(n, a int) int { return (n + a - 1) / a * a }

// pickCPUs returns two different CPUs this process may run on, for the parent
// and the reader child, or -1, -1 when there is only one.
func pickCPUs() (int, int) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return -1, -1
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return -1, -1
	}
	return cpus[0], cpus[1]
}

// cpuName is the CPU's marketing name from /proc/cpuinfo, for reports.
func cpuName() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
