//go:build amd64 && !race && gc

package rcqb

import "unsafe"

// storeSeq writes a slot's sequence word with a plain store. It is used by
// the party that owns the slot: in release mode to leave a pending state its
// own locked CAS entered (release mode is only for queues without stall
// reclaim, so no other party writes the word meanwhile; see "Pending states"
// in the package doc), and in SPSC mode for every step (spsc.go). On amd64
// (TSO) a plain MOV is a release store: the value written before it is
// visible first. Go's atomic.Store would be an XCHG, a locked instruction;
// this removes it. The race detector cannot see the ordering, so race builds
// use storeSeq's atomic version. The compiler keeps these stores in place:
// gc compiles sync/atomic loads as operations on the memory state, which no
// store may cross and which keep earlier stores alive; other compilers get
// the atomic version (the gc build tag).
func (r *region) storeSeq(off int, v uint64) {
	r.storePlain(off+slotSeq, v)
}

// storePlain writes the 64-bit word at off with a plain MOV, a release store
// on amd64. Besides storeSeq, an SPSC queue's only producer and only consumer
// use it for the words that only they write (tail, head, the entry into a
// pending state; see spsc.go).
func (r *region) storePlain(off int, v uint64) {
	*(*uint64)(unsafe.Add(r.base, off)) = v
}
