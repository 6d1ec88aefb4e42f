package results

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// distributions are known latency distributions, in nanoseconds.
var distributions = []struct {
	name string
	draw func(*rand.Rand) int64
}{
	{"uniform 1µs-1ms", func(r *rand.Rand) int64 { return 1000 + r.Int64N(999_000) }},
	{"exponential mean 20µs", func(r *rand.Rand) int64 { return 1 + int64(r.ExpFloat64()*20_000) }},
	{"bimodal 2µs/300µs", func(r *rand.Rand) int64 {
		if r.IntN(100) < 95 {
			return 1500 + r.Int64N(1000)
		}
		return 250_000 + r.Int64N(100_000)
	}},
}

// precision is the relative error HdrHistogram allows with SigFigs 3: values
// share a bucket within 1/1024 of each other (2048 sub-buckets per power of two).
const precision = 1.0 / 1024

// TestQuantilesMatchOrderStatistics checks every quantile against the exact order
// statistic of the values recorded.
func TestQuantilesMatchOrderStatistics(t *testing.T) {
	for _, d := range distributions {
		t.Run(d.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			const n = 200_000
			vals := make([]int64, n)
			h := NewHistogram()
			var sum float64
			for i := range vals {
				vals[i] = d.draw(rng)
				sum += float64(vals[i])
				h.Record(vals[i])
			}
			slices.Sort(vals)
			if h.Count() != n {
				t.Fatalf("count %d, want %d", h.Count(), n)
			}
			for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				exact := vals[int(math.Ceil(q*n))-1]
				got := h.Quantile(q)
				if rel := math.Abs(float64(got-exact)) / float64(exact); rel > precision {
					t.Errorf("q%v: %d, exact %d (relative error %.5f > %.5f)", q, got, exact, rel, precision)
				}
			}
			if rel := math.Abs(h.Mean()-sum/n) / (sum / n); rel > precision {
				t.Errorf("mean %.1f, exact %.1f", h.Mean(), sum/n)
			}
			if rel := math.Abs(float64(h.Max()-vals[n-1])) / float64(vals[n-1]); rel > precision {
				t.Errorf("max %d, exact %d", h.Max(), vals[n-1])
			}
			s := Summarize(h, 2)
			if s.Count != n || s.OpsPerSec != n/2 || s.P50 != h.Quantile(0.5) || s.P999 != h.Quantile(0.999) {
				t.Errorf("summary %+v", s)
			}
			ns, frac := h.CDF()
			if len(ns) == 0 || frac[len(frac)-1] != 1 || !slices.IsSorted(ns) || !slices.IsSorted(frac) {
				t.Errorf("CDF: %d points, last fraction %v", len(ns), frac[len(frac)-1])
			}
		})
	}
}

// TestMergeEqualsOneHistogram spreads the values over k histograms, as threads and
// processes record them, sends them through JSON as a worker does, merges them,
// and compares with one histogram of every value: the same buckets exactly.
func TestMergeEqualsOneHistogram(t *testing.T) {
	for _, d := range distributions {
		t.Run(d.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			const k, n = 7, 100_000
			parts := make([]*Histogram, k)
			for i := range parts {
				parts[i] = NewHistogram()
			}
			all := NewHistogram()
			for range n {
				v := d.draw(rng)
				all.Record(v)
				parts[rng.IntN(k)].Record(v)
			}
			merged := NewHistogram()
			for _, p := range parts {
				b, err := json.Marshal(p)
				if err != nil {
					t.Fatal(err)
				}
				var back Histogram
				if err := json.Unmarshal(b, &back); err != nil {
					t.Fatal(err)
				}
				merged.Merge(&back)
			}
			if merged.Count() != all.Count() || merged.Max() != all.Max() || merged.Mean() != all.Mean() {
				t.Fatalf("merged count %d max %d mean %v, one histogram %d %d %v", merged.Count(), merged.Max(),
					merged.Mean(), all.Count(), all.Max(), all.Mean())
			}
			if !reflect.DeepEqual(merged.h.Distribution(), all.h.Distribution()) {
				t.Fatal("merged buckets differ from one histogram's")
			}
			for _, q := range []float64{0.5, 0.99, 0.999} {
				if merged.Quantile(q) != all.Quantile(q) {
					t.Errorf("q%v: merged %d, one histogram %d", q, merged.Quantile(q), all.Quantile(q))
				}
			}
		})
	}
}

func TestRecordClamps(t *testing.T) {
	h := NewHistogram()
	h.Record(0)
	h.Record(-5)
	h.Record(HighestNs * 2)
	ns, frac := h.CDF()
	if h.Count() != 3 || ns[0] != LowestNs || frac[0] != 2.0/3 || float64(h.Max()) < float64(HighestNs)*(1-precision) {
		t.Fatalf("count %d, CDF %v %v, max %d", h.Count(), ns, frac, h.Max())
	}
}

func TestBadSnapshot(t *testing.T) {
	var h Histogram
	for _, s := range []string{`{"LowestTrackableValue":0,"HighestTrackableValue":10,"SignificantFigures":3}`,
		`{"LowestTrackableValue":1,"HighestTrackableValue":1000,"SignificantFigures":9}`, `[1,2]`} {
		if err := json.Unmarshal([]byte(s), &h); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}

func TestLoadRoundTrip(t *testing.T) {
	h := NewHistogram()
	for i := range 1000 {
		h.Record(int64(1000 + i))
	}
	run := Run{Machine: Machine{CPU: "x", Cores: 2}, Params: map[string]string{"a": "b"}, Partial: true,
		Cells: []Cell{{Workload: "micro", Op: "stat", Path: "direct", Tenants: 2, Seconds: 1, Summary: Summarize(h, 1), Hist: h, Source: "polytropon"}}}
	b, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	c := back.Find("micro", "stat", "direct", 2)
	if !back.Partial || c == nil || c.Hist.Count() != 1000 || c.Summary != run.Cells[0].Summary || back.Find("micro", "stat", "fuse", 2) != nil {
		t.Fatalf("loaded %+v", back)
	}
	if err := os.WriteFile(p, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil {
		t.Fatal("a torn file loaded")
	}
}
