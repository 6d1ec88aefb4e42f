//go:build amd64 && !race

package rcqb

import "unsafe"

// storeSeq writes a slot's sequence word with a plain store. It is used only
// in release mode, by the party that owns the slot in a pending state (ENQPND
// or DEQPND), whose own locked CAS put it there: release mode is only for
// queues without stall reclaim, so no other party writes the word meanwhile
// (see "Pending states" in the package doc). On amd64 (TSO) a plain MOV is a
// release store: the value written before it is visible first. Go's
// atomic.Store would be an XCHG, a second locked instruction per operation;
// this removes it. The race detector cannot see the ordering, so race builds
// use storeSeq's atomic version.
func (r region) storeSeq(off int, v uint64) {
	*(*uint64)(unsafe.Add(r.base, off+slotSeq)) = v
}
