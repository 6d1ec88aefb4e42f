package tune

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/ipc/memcopy"
)

func TestMain(m *testing.M) {
	if IsChild() {
		if err := ServeChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childArgs make the re-executed test binary run no tests: TestMain serves.
var childArgs = []string{"-test.run=^$"}

// TestRunQuick runs the real measurement with the reader child on a few sizes
// and checks the result is complete and turns into a profile this CPU accepts.
func TestRunQuick(t *testing.T) {
	var prog bytes.Buffer
	r, err := Run(Options{Sizes: []int{64, 4096, 64<<10 + 13}, Reps: 2, ChildArgs: childArgs, Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	want := len(r.Sizes) * len(Settings) * len(r.Candidates)
	if len(r.Cells) != want {
		t.Fatalf("%d cells, want %d", len(r.Cells), want)
	}
	for _, c := range r.Cells {
		if !(c.MedianNs > 0 && c.GBps > 0) {
			t.Errorf("cell %+v has no measurement", c)
		}
	}
	if !strings.Contains(prog.String(), "100%") {
		t.Errorf("progress never reached 100%%: %q", prog.String())
	}
	p := Choose(r)
	if len(p.Classes) != 3 {
		t.Errorf("%d classes chosen, want 3: %+v", len(p.Classes), p.Classes)
	}
	if _, err := memcopy.NewCopier(p); err != nil {
		t.Fatalf("profile from this CPU refused: %v", err)
	}
	var out bytes.Buffer
	if err := WriteTable(&out, r, p); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"priv->shared/cold", "shared->priv/warm", "65549B", "4KiB", "choice per size class"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

func TestRunBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"size too large": {Sizes: []int{MaxSize + 1}},
		"size zero":      {Sizes: []int{0}},
		"no sizes":       {Sizes: []int{}},
		"reps":           {Sizes: []int{64}, Reps: -1},
		"no baseline":    {Sizes: []int{64}, Candidates: []Candidate{{Name: "x", Copy: func(d, s []byte) int { return copy(d, s) }}}},
	} {
		if _, err := Run(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// synthetic builds a result where kernel k takes ns[i] per copy at sizes[i]
// in every setting and copy() takes 100 ns.
func synthetic(k string, sizes []int, ns []float64) *Result {
	r := &Result{CPU: memcopy.HostCPU(), Candidates: []string{"copy", k}, Sizes: sizes}
	for _, st := range Settings {
		r.Settings = append(r.Settings, st.Name)
		for i, s := range sizes {
			r.Cells = append(r.Cells, Cell{Setting: st.Name, Bytes: s, Kernel: "copy", MedianNs: 100},
				Cell{Setting: st.Name, Bytes: s, Kernel: k, MedianNs: ns[i]})
		}
	}
	return r
}

func TestChooseRules(t *testing.T) {
	k := memcopy.Kernels()[len(memcopy.Kernels())-1].Name()
	for _, tc := range []struct {
		name string
		ns   []float64 // at 4096 and 6157 bytes: one class
		want string
	}{
		{"clear win", []float64{70, 80}, k},
		{"below 3 %", []float64{98, 98}, "copy"},
		{"win but one size 5 % worse", []float64{60, 105}, "copy"},
		{"slower", []float64{120, 130}, "copy"},
	} {
		p := Choose(synthetic(k, []int{4096, 6157}, tc.ns))
		if len(p.Classes) != 1 || p.Classes[0].Kernel != tc.want || p.Classes[0].MinBytes != 4096 {
			t.Errorf("%s: classes %+v, want %s for [4096, 8191]", tc.name, p.Classes, tc.want)
		}
	}
	// A candidate that is not a kernel (perf's tuned copier) is never chosen.
	p := Choose(synthetic("tuned", []int{4096}, []float64{50}))
	if p.Classes[0].Kernel != "copy" {
		t.Errorf("non-kernel candidate chosen: %+v", p.Classes)
	}
}

// TestConfirm re-measures a class a kernel won and keeps it only if it wins
// again; classes kept as copy() are not re-measured or changed.
func TestConfirm(t *testing.T) {
	ks := KernelCandidates()
	if len(ks) < 2 {
		t.Log("this build has no kernel besides copy(): nothing to confirm")
		return
	}
	last := ks[len(ks)-1].Name
	r := &Result{Candidates: []string{"copy", last}, Sizes: []int{64, 100, 4096}}
	p := &memcopy.Profile{Version: memcopy.ProfileVersion, CPU: memcopy.HostCPU(), Classes: []memcopy.ClassChoice{
		{MinBytes: 64, MaxBytes: 127, Kernel: last, Speedup: 9},
		{MinBytes: 4096, MaxBytes: 8191, Kernel: "copy", Speedup: 1},
	}}
	if err := Confirm(p, r, Options{Reps: 2, ChildArgs: childArgs}); err != nil {
		t.Fatal(err)
	}
	if c := p.Classes[1]; c.Kernel != "copy" || c.Speedup != 1 {
		t.Errorf("class kept as copy() changed: %+v", c)
	}
	c := p.Classes[0]
	switch {
	case c.Kernel == "copy" && c.Speedup == 1:
		t.Logf("%s did not win again at 64..127 B: reverted to copy()", last)
	case c.Kernel == last && c.Speedup >= MinGain && c.Speedup < 9:
		t.Logf("%s won again at 64..127 B: %.2fx", last, c.Speedup)
	default:
		t.Errorf("confirmed class is neither reverted nor a re-measured win: %+v", c)
	}
	if _, err := memcopy.NewCopier(p); err != nil {
		t.Fatal(err)
	}
}

// TestChoosePaired: with samples kept, a cell's speedup is the median of its
// per-round ratios. Here the kernel is 10 % faster than copy() in every round
// but one, in which it alone hit a slow spell; the medians of the two columns
// come from different rounds and say the kernel is 3.6x slower in that cell,
// which vetoed it. The paired ratio keeps the kernel.
func TestChoosePaired(t *testing.T) {
	k := memcopy.Kernels()[len(memcopy.Kernels())-1].Name()
	r := synthetic(k, []int{4096}, []float64{90})
	for i := range r.Cells {
		c := &r.Cells[i]
		switch {
		case c.Setting != Settings[0].Name:
			c.Samples = []float64{100, 100, 100, 100, 100}
			if c.Kernel == k {
				c.Samples = []float64{90, 90, 90, 90, 90}
			}
		case c.Kernel == "copy":
			c.Samples = []float64{400, 400, 100, 100, 100}
			c.MedianNs = 100
		default:
			c.Samples = []float64{360, 360, 360, 90, 90}
			c.MedianNs = 360
		}
	}
	if got := cellRatio(r.Cells[0], r.Cells[1]); got < 1.1 || got > 1.12 {
		t.Fatalf("paired ratio of the first cell %.3f, want 1.11", got)
	}
	if p := Choose(r); p.Classes[0].Kernel != k {
		t.Errorf("paired choice %+v, want %s", p.Classes, k)
	}
	for i := range r.Cells { // without samples: the ratio of medians vetoes it
		r.Cells[i].Samples = nil
	}
	if p := Choose(r); p.Classes[0].Kernel != "copy" {
		t.Errorf("unpaired choice %+v, want copy", p.Classes)
	}
}

// TestBatchCandidates: the inline loops of the baseline and of a tuned Copier
// copy every pair they are given.
func TestBatchCandidates(t *testing.T) {
	c, err := memcopy.NewCopier(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, cand := range []Candidate{BuiltinCandidate(), CopierCandidate("tuned", c)} {
		var dsts, srcs [][]byte
		for i, n := range []int{1, 64, 100, 4096, 70000} {
			src := bytes.Repeat([]byte{byte(i + 1)}, n)
			dsts, srcs = append(dsts, make([]byte, n)), append(srcs, src)
		}
		cand.Batch(dsts, srcs)
		for i := range dsts {
			if !bytes.Equal(dsts[i], srcs[i]) {
				t.Errorf("%s: pair %d (%d bytes) not copied", cand.Name, i, len(srcs[i]))
			}
		}
	}
}
