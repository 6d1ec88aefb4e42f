package memcopy

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// numClasses is the number of size classes: class c holds the lengths n with
// bits.Len(n) == c, that is [2^(c-1), 2^c) for c >= 1 and {0} for c == 0.
const numClasses = 65

// ClassOf returns the size class of a copy of n bytes (n >= 0).
func ClassOf(n int) int { return bits.Len(uint(n)) }

// ClassRange returns the smallest and largest length in class c (1 <= c <= 63).
func ClassRange(c int) (lo, hi int64) {
	lo = int64(1) << (c - 1)
	return lo, 2*lo - 1
}

// A Copier copies with the kernel its profile chose for each size class. It is
// immutable after NewCopier, so any number of goroutines may use one at once.
// The zero Copier uses the built-in copy for every size.
type Copier struct {
	// table[c] is the registry index of the kernel for class c; 0 is the
	// built-in copy.
	table [numClasses]uint8
	// builtinBelow is the length under which every class uses the built-in
	// copy: Copy answers those without the table, in code small enough to be
	// inlined into the caller, so that the classes the profile leaves to copy()
	// pay one compare for the Copier (the 2 % goal of the tuner is about them).
	// 0 in the zero Copier, which then always takes the table path (correct,
	// only slower).
	builtinBelow int
	profile      *Profile
}

// Copy copies min(len(dst), len(src)) bytes from src to dst and returns the
// count, like the built-in copy; dst and src must not overlap (see Kernel).
// Below the smallest size the profile gives a kernel it is the built-in copy
// behind one compare, inlined into the caller; above, it costs a bits.Len, one
// table load and one indirect call over the kernel itself. It never allocates.
func (c *Copier) Copy(dst, src []byte) int {
	// len(src) alone decides: n <= len(src), so n is under the bound too.
	if !checkOverlap && len(src) < c.builtinBelow {
		return copy(dst, src)
	}
	return c.copyTable(dst, src)
}

func (c *Copier) copyTable(dst, src []byte) int {
	n := min(len(dst), len(src))
	k := c.table[bits.Len(uint(n))]
	if checkOverlap {
		mustNotOverlap(dst[:n], src[:n])
	}
	if k == 0 {
		return copy(dst, src)
	}
	registry[k].fn(dst[:n], src[:n])
	return n
}

// KernelFor returns the kernel this Copier uses for a copy of n bytes.
func (c *Copier) KernelFor(n int) *Kernel {
	if n < 0 {
		n = 0
	}
	return registry[c.table[bits.Len(uint(n))]]
}

// Profile returns the profile the Copier was built from, or nil for the
// built-in copy everywhere.
func (c *Copier) Profile() *Profile { return c.profile }

// builtinCopier uses copy() for every size: the default until a profile loads,
// so that out of the box Copy is never slower than copy().
var builtinCopier = &Copier{builtinBelow: math.MaxInt}

var (
	defaultCopier atomic.Pointer[Copier]
	// defaultBelow is defaultCopier's builtinBelow, read with the
	// atomic.LoadInt64 intrinsic: the inliner counts it as one node where
	// atomic.Int64's method would push Copy over the inlining budget.
	defaultBelow int64
)

func init() { SetDefault(nil) }

// Default returns the process-wide Copier that Copy uses.
func Default() *Copier { return defaultCopier.Load() }

// SetDefault makes c the process-wide Copier; nil restores the built-in copy.
// Copies already running finish with the Copier they started with.
func SetDefault(c *Copier) {
	if c == nil {
		c = builtinCopier
	}
	defaultCopier.Store(c)
	atomic.StoreInt64(&defaultBelow, int64(c.builtinBelow))
}

// Copy copies min(len(dst), len(src)) bytes from src to dst with the
// process-wide Copier and returns the count. dst and src must not overlap.
//
// Like Copier.Copy it is inlined; the bound of the built-in range is kept
// beside the default Copier so that the inlined part is one load and one
// compare. SetDefault stores the two separately: a copy racing with it may use
// the old bound with the new Copier or the reverse, which only picks copy() or
// the table for one call, never a wrong result.
func Copy(dst, src []byte) int {
	if !checkOverlap && int64(len(src)) < atomic.LoadInt64(&defaultBelow) {
		return copy(dst, src)
	}
	return copyDefault(dst, src)
}

// copyDefault is Copy's table path, kept out of line so that Copy stays
// within the inlining budget.
//
//go:noinline
func copyDefault(dst, src []byte) int { return defaultCopier.Load().copyTable(dst, src) }
