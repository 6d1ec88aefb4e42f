package memcopy

import (
	"unsafe"

	"github.com/polytropon/polytropon/internal/invariants"
)

// checkOverlap is true in invariants builds: every Copy then checks the
// no-overlap contract, which costs two comparisons and is compiled out
// otherwise.
const checkOverlap = invariants.Enabled

// overlaps reports whether the byte ranges of a and b share any address.
// Empty slices overlap nothing.
func overlaps(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	pa := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
	pb := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return pa < pb+uintptr(len(b)) && pb < pa+uintptr(len(a))
}

func mustNotOverlap(dst, src []byte) {
	if overlaps(dst, src) {
		invariants.Failf("memcopy: dst [%p, +%d) overlaps src [%p, +%d)",
			unsafe.SliceData(dst), len(dst), unsafe.SliceData(src), len(src))
	}
}
