// Package invariants holds the switch for expensive self-checks.
//
// polytropon has two tiers of assertions: cheap invariants are ordinary code and
// always run; expensive ones (walking a whole queue, comparing a cache against its
// backing store, checking copy ranges for overlap) are guarded by Enabled, which
// is a constant so that the compiler removes the checks entirely from normal
// builds: they cost nothing there, which is why there is nothing to measure. CI
// runs the whole test suite a second time with `-tags invariants`.
//
// This package is not a public contract, holds no state and no locks, and
// imports nothing outside the standard library.
package invariants

import "fmt"

// Failf reports a broken invariant. It panics: an invariant that does not hold means
// memory or protocol state can no longer be trusted, and continuing could lose data.
// Operating errors (bad input, dead peers, full disks) are never reported this way.
func Failf(format string, args ...any) {
	panic(fmt.Sprintf("invariant violated: "+format, args...))
}

// Check panics with Failf when cond is false. Callers of expensive checks guard the
// whole computation with Enabled rather than relying on Check alone, so that the
// computation itself is compiled out.
func Check(cond bool, format string, args ...any) {
	if !cond {
		Failf(format, args...)
	}
}
