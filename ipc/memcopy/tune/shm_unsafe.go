package tune

import (
	"sync/atomic"
	"unsafe"
)

// word returns the 8-byte aligned word at off in a shared mapping as an
// atomic, so that parent and reader child synchronise through it.
func word(m []byte, off int) *atomic.Uint64 {
	if off%8 != 0 || off+8 > len(m) {
		panic("memcopy/tune: control word out of range or unaligned")
	}
	return (*atomic.Uint64)(unsafe.Pointer(&m[off]))
}
