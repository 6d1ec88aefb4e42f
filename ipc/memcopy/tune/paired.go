package tune

import (
	"errors"
	"math"
	"slices"
)

// Paired is the speedup of one candidate over the baseline from rounds measured
// side by side: in round i both ran within microseconds of each other, so a
// slow spell of a shared machine hits both, and the ratio of the pair keeps
// what a ratio of two medians loses.
type Paired struct {
	N      int     `json:"n"`      // rounds
	Median float64 `json:"median"` // median of baseline time / candidate time
	// Lo and Hi bound the median ratio with at least Conf confidence: order
	// statistics of the ratios, which assume nothing about their distribution
	// beyond independent rounds.
	Lo   float64 `json:"lo"`
	Hi   float64 `json:"hi"`
	Conf float64 `json:"conf"`
}

// Verdict of a paired comparison against a bound: whether the candidate is no
// slower than the baseline by more than 1-bound.
const (
	VerdictHolds   = "holds"   // Lo >= bound: shown at Conf
	VerdictFails   = "fails"   // Hi < bound: shown slower at Conf
	VerdictUnclear = "unclear" // the interval straddles the bound
)

// Verdict judges p against bound (0.98 for "at most 2 % slower").
func (p Paired) Verdict(bound float64) string {
	switch {
	case p.Lo >= bound:
		return VerdictHolds
	case p.Hi < bound:
		return VerdictFails
	default:
		return VerdictUnclear
	}
}

// ErrTooFewRounds: fewer than 6 rounds cannot bound a median at 95 %.
var ErrTooFewRounds = errors.New("memcopy/tune: a 95 % interval for a median needs at least 6 rounds")

// PairRatios compares candidate times with baseline times of the same rounds
// (nanoseconds, index i = round i) and returns the median ratio with its 95 %
// distribution-free confidence interval.
func PairRatios(baseline, candidate []float64) (Paired, error) {
	if len(baseline) != len(candidate) {
		return Paired{}, errors.New("memcopy/tune: paired samples of different lengths")
	}
	r := make([]float64, 0, len(baseline))
	for i := range baseline {
		if baseline[i] <= 0 || candidate[i] <= 0 {
			return Paired{}, errors.New("memcopy/tune: a paired sample is not positive")
		}
		r = append(r, baseline[i]/candidate[i])
	}
	n := len(r)
	k, conf := medianCIRank(n, 0.95)
	if k == 0 {
		return Paired{N: n}, ErrTooFewRounds
	}
	slices.Sort(r)
	return Paired{N: n, Median: median(r), Lo: r[k-1], Hi: r[n-k], Conf: conf}, nil
}

// medianCIRank returns the largest k such that the k-th smallest and k-th
// largest of n samples bracket the median with probability >= level, and that
// probability (1 - 2 P(Binomial(n, 1/2) < k)); k is 0 when none does.
func medianCIRank(n int, level float64) (int, float64) {
	best, bestConf := 0, 0.0
	tail := 0.0 // P(X <= k-1)
	for k := 1; 2*k <= n; k++ {
		tail += binomHalf(n, k-1)
		conf := 1 - 2*tail
		if conf < level {
			break
		}
		best, bestConf = k, conf
	}
	return best, bestConf
}

// binomHalf is P(X = j) for X ~ Binomial(n, 1/2), through logarithms so that
// large n does not overflow.
func binomHalf(n, j int) float64 {
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x + 1)); return v }
	return math.Exp(lg(n) - lg(j) - lg(n-j) - float64(n)*math.Ln2)
}
