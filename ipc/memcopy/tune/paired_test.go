package tune

import (
	"errors"
	"math"
	"testing"
)

func TestMedianCIRank(t *testing.T) {
	// Known values: for n = 9 the interval is [x(2), x(8)] with coverage
	// 1 - 2*10/512; n = 5 has none at 95 %; n = 31 uses [x(10), x(22)].
	for _, tc := range []struct {
		n, k int
		conf float64
	}{
		{5, 0, 0}, {6, 1, 1 - 2.0/64}, {9, 2, 1 - 20.0/512}, {31, 10, 0.9706},
	} {
		k, conf := medianCIRank(tc.n, 0.95)
		if k != tc.k || math.Abs(conf-tc.conf) > 1e-4 {
			t.Errorf("n=%d: k=%d conf=%.5f, want k=%d conf=%.5f", tc.n, k, conf, tc.k, tc.conf)
		}
	}
}

func TestPairRatios(t *testing.T) {
	// Round i: the baseline took b[i], the candidate c[i]; a shared slow
	// spell (round 3) doubles both and must not move the ratio.
	b := []float64{100, 100, 100, 200, 100, 100, 100, 100, 100}
	c := []float64{50, 50, 50, 100, 50, 50, 50, 50, 50}
	p, err := PairRatios(b, c)
	if err != nil {
		t.Fatal(err)
	}
	if p.Median != 2 || p.Lo != 2 || p.Hi != 2 || p.N != 9 {
		t.Errorf("constant ratio 2: got %+v", p)
	}
	if v := p.Verdict(0.98); v != VerdictHolds {
		t.Errorf("verdict %s, want holds", v)
	}

	// Ratios 0.90 .. 1.06: the interval straddles 0.98.
	b = []float64{90, 92, 94, 96, 98, 100, 102, 104, 106}
	c = []float64{100, 100, 100, 100, 100, 100, 100, 100, 100}
	p, _ = PairRatios(b, c)
	if p.Lo != 0.92 || p.Hi != 1.04 || p.Median != 0.98 {
		t.Errorf("got %+v, want lo 0.92 median 0.98 hi 1.04", p)
	}
	if v := p.Verdict(0.98); v != VerdictUnclear {
		t.Errorf("verdict %s, want unclear", v)
	}
	p, _ = PairRatios([]float64{90, 90, 90, 90, 90, 90}, []float64{100, 100, 100, 100, 100, 100})
	if v := p.Verdict(0.98); v != VerdictFails {
		t.Errorf("verdict %s, want fails", v)
	}
}

func TestPairRatiosBadInput(t *testing.T) {
	if _, err := PairRatios([]float64{1, 2}, []float64{1}); err == nil {
		t.Error("different lengths accepted")
	}
	if _, err := PairRatios([]float64{1, 0, 1, 1, 1, 1}, []float64{1, 1, 1, 1, 1, 1}); err == nil {
		t.Error("a zero time accepted")
	}
	if _, err := PairRatios([]float64{1, 1, 1}, []float64{1, 1, 1}); !errors.Is(err, ErrTooFewRounds) {
		t.Errorf("3 rounds: %v, want ErrTooFewRounds", err)
	}
}
