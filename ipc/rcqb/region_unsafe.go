package rcqb

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Futex operations (linux/futex.h); x/sys/unix does not export them.
const (
	futexWait        = 0
	futexWake        = 1
	futexPrivateFlag = 128
)

// region is the queue's view of its memory: a base address and a length. Every
// access goes through an offset that the queue computed from its own cached
// capacity and slot size, which were checked against size at attach time, so a
// corrupt header or hostile peer cannot make an access leave the region.
//
// The memory is either a Go byte slice (New, or Init/Attach on a heap buffer) or
// a MAP_SHARED mapping owned by the caller. mem keeps a Go slice reachable for as
// long as the queue is; for a mapping it is just the caller's slice header.
type region struct {
	base unsafe.Pointer
	size int
	mem  []byte
}

func newRegion(mem []byte) region {
	return region{base: unsafe.Pointer(unsafe.SliceData(mem)), size: len(mem), mem: mem}
}

func (r *region) u64(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(r.base, off))
}

func (r *region) u32(off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Add(r.base, off))
}

// addrAligned reports whether mem starts at a multiple of align bytes.
func addrAligned(mem []byte, align uintptr) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%align == 0
}

// lowHalf is the byte offset of the least significant 32 bits inside a native
// uint64: the futex word of a slot is the low half of its 64-bit sequence word,
// because FUTEX_WAIT compares 32 bits and every state change moves the low bits.
var lowHalf = func() int {
	x := uint64(1)
	if *(*byte)(unsafe.Pointer(&x)) == 1 {
		return 0
	}
	return 4
}()

// futexWait sleeps while the 32-bit word at off still holds val, for at most d.
// It returns on a wake, on a timeout, on a signal (EINTR) or at once when the
// word already differs (EAGAIN); the caller re-reads the state in every case.
// It reports whether the sleep ran out its time (ETIMEDOUT).
func (r *region) futexWaitOn(off int, val uint32, d time.Duration, private bool) (timedOut bool) {
	op := uintptr(futexWait)
	if private {
		op |= futexPrivateFlag
	}
	ts := unix.NsecToTimespec(int64(d))
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Add(r.base, off)), op, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
	return errno == unix.ETIMEDOUT
}

// futexWake wakes every sleeper on the 32-bit word at off. Waking is rare (only
// when a waiter is registered), so waking all keeps enqueuers and dequeuers that
// share a slot word from stealing each other's wake-ups.
func (r *region) futexWakeAll(off int, private bool) {
	op := uintptr(futexWake)
	if private {
		op |= futexPrivateFlag
	}
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Add(r.base, off)), op, uintptr(1<<31-1), 0, 0, 0)
}

// setData writes a slot's value with a plain store. The enqueuer owns the slot
// (ENQPND) while it writes, and its following release store of OCCUPIED
// (storeSeq) publishes the value; dequeuers read it only after seeing OCCUPIED
// (acquire). A plain MOV instead of Go's XCHG-based atomic store saves one
// locked instruction per enqueue.
func (r *region) setData(off int, v uint64) {
	*(*uint64)(unsafe.Add(r.base, off+slotData)) = v
}
