package rcqb

import "errors"

// SPSC mode (WithSPSC): one producer and one consumer at a time.
//
// With a single enqueuer and a single dequeuer nobody contends for a ticket or
// a slot, and in a New queue without stall reclaim nobody but the ticket's
// holder moves a slot. So each side keeps its
// own counter with plain loads and stores (tail for the producer, head for the
// consumer) and moves its slot through the same states as the multi-party
// protocol with plain stores: no locked instruction per value at all, where
// the MPMC queue's release mode has two per side (the ticket's fetch-and-add
// and the CAS into the pending state).
//
// Two things still need ordering, and both are paid for by the rare side
// with membarrier(2) (heavyFence: a barrier on every CPU that runs a thread
// of the process, or a context switch on the others):
//
//   - Wake-ups. A party reads the waiters count after the plain store that
//     leaves its pending state, and a load may pass an earlier store on x86.
//     A sleeper registers (a locked add) and then runs heavyFence before it
//     re-reads the word (sleeperFence): either the party's store is visible
//     to that re-read, or the barrier ran on the party's CPU before its load
//     of the count, which then sees the registration. A sleep costs one more
//     system call, and only a sleep.
//   - Close. After Close, a consumer whose slot is FREE for its lap must know
//     whether the producer is about to publish there. The producer re-reads
//     the closed flag after its plain store of ENQPND, and Close runs
//     heavyFence between raising the flag (closedSet) and declaring it
//     settled (closedFenced): a producer whose ENQPND the barrier did not make
//     visible sees the flag and puts the slot back to FREE (a CAS, then a
//     wake-up check) without publishing. A consumer that sees closedFenced
//     and a FREE slot knows no value is coming and returns ErrClosed without
//     touching the slot; one that sees ENQPND waits for the producer to
//     publish or back out.
//
// Without membarrier (asymmetricFenceReady false, fenced unset) the producer
// enters ENQPND by CAS and both sides leave their pending states by CAS,
// which the locked instructions of sleepers and Close order as in the MPMC
// protocol. TryEnqueue and TryDequeue always leave by CAS, which is right in
// both cases.
//
// The plain stores are the point and cannot be tested for: what a missing
// fence would lose is a store still in a store buffer for a few nanoseconds
// while a futex system call starts, which no test here reproduces. The
// argument above is the proof; TestMembarrier checks that the barrier exists.

// testHookDeqWait, when set by a test, runs in a waiting SPSC consumer right
// after it read its slot's word: the test can then change the world under
// that stale word.
var testHookDeqWait func()

// Values of the closed word in SPSC mode. The MPMC queue stores closedSet
// only.
const (
	closedSet    = 1 // producers refuse new values
	closedFenced = 2 // and every producer that did not see that has published
)

// ErrConcurrentUse is returned by an SPSC queue (WithSPSC) that caught two
// producers or two consumers working at once. It is a check on the caller's
// promise, not a guarantee to catch every breach of it: values may already
// have been lost or duplicated when it is returned.
var ErrConcurrentUse = errors.New("rcqb: SPSC queue used by two producers or two consumers at once")

// enqSPSC is Enqueue in SPSC mode.
func (q *Queue) enqSPSC(v uint64) error {
	t := q.r.u64(offTail).Load() // ours: only this producer writes tail
	off := q.slotOff(t)
	free := seqOf(t>>q.capShift, stFree)
	seq := q.r.u64(off + slotSeq)
	if seq.Load() != free {
		if err := q.enqWaitSPSC(off, free); err != nil {
			return err
		}
	}
	// The membarrier protocol, written out here (a call less on the path
	// that sets the rate, 24 -> 14 ns per value); publishSPSC leaves by CAS.
	if !q.fenced {
		return q.publishSPSC(t, off, free, v)
	}
	q.r.storeSeq(off, free+1)
	if q.closed() {
		return q.backOutSPSC(off, free)
	}
	q.r.setData(off, v)
	q.r.storeSeq(off, free+2)
	q.r.storePlain(offTail, t+1)
	if q.waiting(off) {
		q.wakeAll(off)
	}
	return nil
}

// enqWaitSPSC waits until the slot at off is FREE for the lap of free.
func (q *Queue) enqWaitSPSC(off int, free uint64) error {
	if q.closed() {
		return ErrClosed
	}
	return q.awaitSPSC(off, free, false)
}

// awaitSPSC is await for an SPSC party: in this mode the word can only reach
// target exactly, unless the promise was broken.
func (q *Queue) awaitSPSC(off int, target uint64, deq bool) error {
	w, r := q.await(off, target, deq)
	if r != done {
		return ErrClosed
	}
	if w != target {
		return ErrConcurrentUse
	}
	return nil
}

// publishSPSC moves the slot of ticket t, seen FREE for its lap, through
// ENQPND to OCCUPIED with v, and wakes its sleepers. It leaves ENQPND by CAS,
// which the protocol without membarrier needs and the one with it allows
// (TryEnqueue uses it in both).
func (q *Queue) publishSPSC(t uint64, off int, free, v uint64) error {
	seq := q.r.u64(off + slotSeq)
	if q.fenced {
		q.r.storeSeq(off, free+1)
	} else if !seq.CompareAndSwap(free, free+1) {
		return ErrConcurrentUse
	}
	if q.closed() {
		return q.backOutSPSC(off, free)
	}
	q.r.setData(off, v)
	if !seq.CompareAndSwap(free+1, free+2) {
		return ErrConcurrentUse
	}
	q.r.storePlain(offTail, t+1)
	if q.waiting(off) {
		q.wakeAll(off)
	}
	return nil
}

// backOutSPSC returns the slot at off from ENQPND to FREE for the lap of
// free: Close may have settled without seeing our ENQPND. A CAS, so that a
// consumer asleep on ENQPND is seen and woken.
func (q *Queue) backOutSPSC(off int, free uint64) error {
	if q.r.u64(off+slotSeq).CompareAndSwap(free+1, free) {
		q.wake(off)
	}
	return ErrClosed
}

// deqSPSC is Dequeue in SPSC mode.
func (q *Queue) deqSPSC() (uint64, error) {
	h := q.r.u64(offHead).Load() // ours: only this consumer writes head
	off := q.slotOff(h)
	occ := seqOf(h>>q.capShift, stOccupied)
	seq := q.r.u64(off + slotSeq)
	if seq.Load() != occ {
		if err := q.deqWaitSPSC(off, occ); err != nil {
			return 0, err
		}
	}
	if !q.fenced {
		return q.takeSPSC(h, off, occ)
	}
	// The membarrier protocol, written out (see enqSPSC); takeSPSC leaves by
	// CAS.
	q.r.storeSeq(off, occ+1)
	v := q.r.u64(off + slotData).Load()
	q.r.storeSeq(off, nextFree(occ))
	q.r.storePlain(offHead, h+1)
	if q.waiting(off) {
		q.wakeAll(off)
	}
	return v, nil
}

// deqWaitSPSC waits until the slot at off is OCCUPIED for the lap of occ.
func (q *Queue) deqWaitSPSC(off int, occ uint64) error {
	w := q.r.u64(off + slotSeq).Load()
	if testHookDeqWait != nil {
		testHookDeqWait()
	}
	if w > occ {
		return ErrConcurrentUse
	}
	if w == occ-(stOccupied-stFree) && q.drainedSPSC(off, occ) {
		return ErrClosed
	}
	return q.awaitSPSC(off, occ, true)
}

// takeSPSC moves the slot of ticket h, seen OCCUPIED for its lap, through
// DEQPND to the next lap's FREE, and returns its value.
func (q *Queue) takeSPSC(h uint64, off int, occ uint64) (uint64, error) {
	// Nobody else moves an OCCUPIED slot in SPSC mode (no reclaim, and the
	// consumer is us), so DEQPND needs no CAS.
	q.r.storeSeq(off, occ+1)
	v := q.r.u64(off + slotData).Load()
	if !q.r.u64(off+slotSeq).CompareAndSwap(occ+1, nextFree(occ)) {
		return 0, ErrConcurrentUse
	}
	q.r.storePlain(offHead, h+1)
	if q.waiting(off) {
		q.wakeAll(off)
	}
	return v, nil
}

// drainedSPSC reports whether the consumer holding the ticket of the slot
// at off, waiting for occ, has nothing more coming: Close has settled and the
// slot is still FREE for its lap. The word must be read after the flag: a
// FREE read before it may predate a producer's ENQPND that the settling
// barrier made visible, and that producer, having seen the queue open, will
// publish.
func (q *Queue) drainedSPSC(off int, occ uint64) bool {
	return q.r.u32(offClosed).Load() == closedFenced &&
		q.r.u64(off+slotSeq).Load() == occ-(stOccupied-stFree)
}

// tryEnqSPSC is TryEnqueue in SPSC mode.
func (q *Queue) tryEnqSPSC(v uint64) bool {
	if q.closed() {
		return false
	}
	t := q.r.u64(offTail).Load()
	off := q.slotOff(t)
	free := seqOf(t>>q.capShift, stFree)
	if q.r.u64(off+slotSeq).Load() != free {
		return false
	}
	return q.publishSPSC(t, off, free, v) == nil
}

// tryDeqSPSC is TryDequeue in SPSC mode.
func (q *Queue) tryDeqSPSC() (uint64, bool) {
	h := q.r.u64(offHead).Load()
	off := q.slotOff(h)
	occ := seqOf(h>>q.capShift, stOccupied)
	if q.r.u64(off+slotSeq).Load() != occ {
		return 0, false
	}
	v, err := q.takeSPSC(h, off, occ)
	return v, err == nil
}

// closeSPSC is Close in SPSC mode: tail carries no closed bit (the producer
// writes it with plain stores), the flag goes through closedSet and
// closedFenced around the fence.
func (q *Queue) closeSPSC() {
	c := q.r.u32(offClosed)
	c.CompareAndSwap(0, closedSet)
	if q.fenced && !heavyFence() {
		// Settling without the barrier could report a value lost that a
		// producer is publishing. Stop instead of losing it quietly.
		panic("rcqb: Close of an SPSC queue: membarrier failed, cannot settle")
	}
	c.Store(closedFenced)
	for i := 0; i < q.capacity; i++ {
		q.wake(HeaderSize + i<<q.slotShift)
	}
}
