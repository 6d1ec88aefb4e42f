package memcopy

import (
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
	table   [numClasses]uint8
	profile *Profile
}

// Copy copies min(len(dst), len(src)) bytes from src to dst and returns the
// count, like the built-in copy; dst and src must not overlap (see Kernel). It
// costs a bits.Len, one table load and one indirect call over the kernel
// itself, and never allocates.
func (c *Copier) Copy(dst, src []byte) int {
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
var builtinCopier = &Copier{}

var defaultCopier atomic.Pointer[Copier]

func init() { defaultCopier.Store(builtinCopier) }

// Default returns the process-wide Copier that Copy uses.
func Default() *Copier { return defaultCopier.Load() }

// SetDefault makes c the process-wide Copier; nil restores the built-in copy.
// Copies already running finish with the Copier they started with.
func SetDefault(c *Copier) {
	if c == nil {
		c = builtinCopier
	}
	defaultCopier.Store(c)
}

// Copy copies min(len(dst), len(src)) bytes from src to dst with the
// process-wide Copier and returns the count. dst and src must not overlap.
func Copy(dst, src []byte) int { return defaultCopier.Load().Copy(dst, src) }
