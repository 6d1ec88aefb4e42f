package rcqb

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

var (
	// ErrClosed is returned by Enqueue after Close, and by Dequeue once the queue is
	// closed and every value whose enqueue ticket was taken has been dequeued.
	ErrClosed = errors.New("rcqb: queue closed")
	// ErrTimeout is returned by DequeueTimeout when no value arrived in time.
	ErrTimeout = errors.New("rcqb: timeout")
	// ErrStalled is returned when an operation lost maxSkips tickets in a row to
	// stall reclaim (see WithStallTimeout): the peers are too slow for the
	// configured stall timeout.
	ErrStalled = errors.New("rcqb: ticket reclaimed repeatedly; peers stalled")
)

const (
	// DefaultSpin is the least number of slot-word polls before a waiter sleeps.
	DefaultSpin = 4096
	// DefaultSpinTime is the least time a waiter spins before it sleeps (see
	// the package doc: a goroutine asleep in FUTEX_WAIT keeps its P until the
	// runtime's monitor takes it back, so an early sleep stalls the goroutines
	// queued behind it, and 4096 polls alone last about a microsecond).
	DefaultSpinTime = 200 * time.Microsecond
	// DefaultWaitSlice bounds every futex sleep, so a lost wake-up (a waker that
	// died, or Close racing a sleeper's registration) costs at most this much.
	DefaultWaitSlice = 5 * time.Millisecond
	// DefaultSharedStallTimeout is the stall timeout of queues made by Init and
	// Attach: a peer process may die holding a ticket.
	DefaultSharedStallTimeout = time.Second

	// spinBlock: during a spin, yield the P every 64 polls so that, with more
	// goroutines than cores, the peer we wait for can run.
	spinBlock = 64
	// maxSkips bounds the retries of one operation whose ticket was reclaimed.
	maxSkips = 64
	// pendingSlice bounds a sleep on a slot seen in ENQPND or DEQPND: the
	// party that will finish it may have checked for sleepers before this one
	// registered, so no wake-up is promised (see fill).
	pendingSlice = 100 * time.Microsecond
	// tryLimit bounds the CAS attempts of TryEnqueue and TryDequeue.
	tryLimit = 64
	maxSpin  = 1 << 20
)

// Option configures a queue.
type Option func(*config)

type config struct {
	spin     int
	spinTime time.Duration
	layout   Layout
	stall    time.Duration
	stallSet bool
	slice    time.Duration
	spsc     bool
}

// WithSpin sets the least number of polls of the slot word before a waiter
// sleeps on the futex (0 = sleep at once, whatever WithSpinTime says); the
// spin ends at a multiple of 64 polls. Values above 1<<20 are rejected.
func WithSpin(n int) Option { return func(c *config) { c.spin = n } }

// WithSpinTime sets the least time a waiter spins before it sleeps, on top of
// the polls WithSpin asks for (default DefaultSpinTime; 0 = polls only). The
// clock is read, and the goroutine yields, every 64 polls. Values above one
// second are rejected.
func WithSpinTime(d time.Duration) Option { return func(c *config) { c.spinTime = d } }

// WithLayout selects the slot layout for New and Init. Attach reads the layout
// from the header and rejects a different explicit choice.
func WithLayout(l Layout) Option { return func(c *config) { c.layout = l } }

// WithStallTimeout sets how long a waiter lets a slot stay unchanged, while the
// peer that must act on it has taken its ticket, before it reclaims the slot
// (0 disables reclaim). Reclaim is what keeps a queue shared with a process that
// died holding a ticket usable; its price is that a peer stalled longer than d
// (stopped, not dead) loses the value of the reclaimed ticket. Default: 0 for
// New (goroutines cannot die holding a ticket), DefaultSharedStallTimeout for
// Init and Attach.
func WithStallTimeout(d time.Duration) Option {
	return func(c *config) { c.stall, c.stallSet = d, true }
}

// WithWaitSlice bounds each futex sleep (default DefaultWaitSlice): the longest a
// lost wake-up can delay a sleeper.
func WithWaitSlice(d time.Duration) Option { return func(c *config) { c.slice = d } }

// WithSPSC declares that at most one goroutine enqueues and at most one
// dequeues at any time (a side may pass from one goroutine to another if the
// hand-over synchronizes, as through a mutex or channel): the queue then runs
// its single-producer single-consumer protocol, with no locked instruction per
// value, and a sleep costs one more system call (membarrier; see spsc.go).
// Breaking the promise loses or duplicates values; ErrConcurrentUse reports
// the breaches the queue happens to notice. Only for New, and not with a
// stall timeout.
func WithSPSC() Option { return func(c *config) { c.spsc = true } }

func buildConfig(shared bool, opts []Option) (config, error) {
	c := config{spin: DefaultSpin, spinTime: DefaultSpinTime, slice: DefaultWaitSlice}
	if shared {
		c.stall = DefaultSharedStallTimeout
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.spin < 0 || c.spin > maxSpin {
		return c, fmt.Errorf("rcqb: spin %d out of range [0, %d]", c.spin, maxSpin)
	}
	if c.spinTime < 0 || c.spinTime > time.Second {
		return c, fmt.Errorf("rcqb: spin time %v out of range [0, 1s]", c.spinTime)
	}
	if c.stall < 0 {
		return c, fmt.Errorf("rcqb: negative stall timeout %v", c.stall)
	}
	if c.slice < time.Microsecond || c.slice > time.Second {
		return c, fmt.Errorf("rcqb: wait slice %v out of range [1us, 1s]", c.slice)
	}
	if c.spsc && shared {
		// Close would need a barrier across processes, and a region's
		// stall reclaim moves slots that SPSC mode assumes only their owner
		// moves.
		return c, errors.New("rcqb: WithSPSC is for queues in process memory (New), not regions")
	}
	if c.spsc && c.stall > 0 {
		return c, errors.New("rcqb: WithSPSC cannot be combined with a stall timeout")
	}
	return c, nil
}

// Queue is a handle on an RCQB queue. Its methods are safe for concurrent use by
// any number of goroutines, and by other processes through their own handles on
// the same region. The handle holds only constants; all shared state is in the
// region.
type Queue struct {
	r         region
	capacity  int
	mask      uint64
	capShift  uint
	slotShift uint
	slotSize  int
	spin      int
	spinTime  time.Duration
	stall     time.Duration
	slice     time.Duration
	private   bool // process-local memory: FUTEX_PRIVATE_FLAG is safe and cheaper
	// release: the pending states end with a release store instead of a CAS
	// (see "Pending states" in the package doc). Only for a New queue without
	// stall reclaim: nobody else can then move a slot out of a pending state.
	release    bool
	layoutName Layout
	// spsc: WithSPSC (spsc.go); fenced: its producer enters ENQPND with a
	// plain store, Close running heavyFence (else with a CAS).
	spsc, fenced bool

	// sleepTimeouts counts this handle's blocking waits (Enqueue, Dequeue)
	// that ran out a whole wait slice instead of being woken: an idle queue, a
	// dead peer, or a lost wake-up. The tests read it to catch the last. The
	// short sleeps on pending states (sleepSlice) are not counted unless the
	// wait slice itself is that short.
	sleepTimeouts atomic.Uint64
}

// New makes a queue in process memory (capacity a power of two in
// [MinCapacity, MaxCapacity]).
func New(capacity int, opts ...Option) (*Queue, error) {
	c, err := buildConfig(false, opts)
	if err != nil {
		return nil, err
	}
	layout := c.layout
	if layout == 0 {
		layout = DefaultLayout
	}
	size, err := SizeLayout(capacity, layout)
	if err != nil {
		return nil, err
	}
	// Over-allocate to start the region on a cache-line boundary.
	buf := make([]byte, size+64)
	off := 0
	for !addrAligned(buf[off:], 64) {
		off += 8
	}
	q, err := format(buf[off:off+size], capacity, layout, c)
	if err != nil {
		return nil, err
	}
	q.private = true
	q.spsc = c.spsc
	q.fenced = c.spsc && asymmetricFenceReady()
	// SPSC mode leaves pending states with a CAS (spsc.go); release mode is
	// the MPMC protocol's.
	q.release = c.stall == 0 && !c.spsc
	return q, nil
}

// Init formats mem (len >= SizeLayout(capacity, layout), start 64-byte aligned)
// as an empty queue and attaches to it. No other process may use mem until Init
// returns; Attach refuses mem until Init has written the magic number, last.
func Init(mem []byte, capacity int, opts ...Option) (*Queue, error) {
	c, err := buildConfig(true, opts)
	if err != nil {
		return nil, err
	}
	layout := c.layout
	if layout == 0 {
		layout = DefaultLayout
	}
	size, err := SizeLayout(capacity, layout)
	if err != nil {
		return nil, err
	}
	if len(mem) < size {
		return nil, fmt.Errorf("rcqb: region of %d bytes is smaller than the %d a %s queue of %d slots needs", len(mem), size, layout, capacity)
	}
	if !addrAligned(mem, 64) {
		return nil, errors.New("rcqb: region does not start on a 64-byte boundary")
	}
	return format(mem[:size], capacity, layout, c)
}

func format(mem []byte, capacity int, layout Layout, c config) (*Queue, error) {
	clear(mem)
	ss, _ := layout.slotSize()
	q := newQueue(mem, capacity, ss, layout, c)
	r := q.r
	r.u32(offVersion).Store(Version)
	r.u32(offCapacity).Store(uint32(capacity))
	r.u32(offSlotSize).Store(uint32(ss))
	r.u32(offHeaderSize).Store(HeaderSize)
	// The magic goes last: an Attach that sees it sees a formatted queue.
	r.u64(offMagic).Store(Magic)
	return q, nil
}

// Attach attaches to a queue another process formatted in mem. It validates the
// magic number, version, capacity, slot size and that mem holds the whole queue,
// and returns an error describing the first mismatch; it never panics on any
// content of mem.
func Attach(mem []byte, opts ...Option) (*Queue, error) {
	c, err := buildConfig(true, opts)
	if err != nil {
		return nil, err
	}
	if len(mem) < HeaderSize {
		return nil, fmt.Errorf("rcqb: region of %d bytes is smaller than the %d-byte header", len(mem), HeaderSize)
	}
	if !addrAligned(mem, 64) {
		return nil, errors.New("rcqb: region does not start on a 64-byte boundary")
	}
	r := newRegion(mem)
	if m := r.u64(offMagic).Load(); m != Magic {
		return nil, fmt.Errorf("rcqb: bad magic %#x (want %#x): not an RCQB queue, or not yet initialized", m, Magic)
	}
	if v := r.u32(offVersion).Load(); v != Version {
		return nil, fmt.Errorf("rcqb: layout version %d, this build speaks %d", v, Version)
	}
	if h := r.u32(offHeaderSize).Load(); h != HeaderSize {
		return nil, fmt.Errorf("rcqb: header size %d, want %d", h, HeaderSize)
	}
	capacity := int(r.u32(offCapacity).Load())
	if err := checkCapacity(capacity); err != nil {
		return nil, fmt.Errorf("rcqb: header: %w", err)
	}
	ss := int(r.u32(offSlotSize).Load())
	var layout Layout
	switch ss {
	case SlotSizePadded:
		layout = Padded
	case SlotSizePacked:
		layout = Packed
	default:
		return nil, fmt.Errorf("rcqb: header: slot size %d is neither %d nor %d", ss, SlotSizePadded, SlotSizePacked)
	}
	if c.layout != 0 && c.layout != layout {
		return nil, fmt.Errorf("rcqb: queue is %s, caller asked for %s", layout, c.layout)
	}
	size := HeaderSize + capacity*ss
	if len(mem) < size {
		return nil, fmt.Errorf("rcqb: region of %d bytes is smaller than the %d its header describes", len(mem), size)
	}
	return newQueue(mem[:size], capacity, ss, layout, c), nil
}

func newQueue(mem []byte, capacity, slotSize int, layout Layout, c config) *Queue {
	return &Queue{
		r:          newRegion(mem),
		capacity:   capacity,
		mask:       uint64(capacity - 1),
		capShift:   log2(capacity),
		slotShift:  log2(slotSize),
		slotSize:   slotSize,
		spin:       c.spin,
		spinTime:   c.spinTime,
		stall:      c.stall,
		slice:      c.slice,
		layoutName: layout,
	}
}

// Cap returns the number of slots.
func (q *Queue) Cap() int { return q.capacity }

// Layout returns the slot layout.
func (q *Queue) Layout() Layout { return q.layoutName }

// slotOff returns the offset of the slot of ticket t.
func (q *Queue) slotOff(t uint64) int {
	return HeaderSize + int(t&q.mask)<<q.slotShift
}

func (q *Queue) closed() bool { return q.r.u32(offClosed).Load() != 0 }

// enqBound is one past the last enqueue ticket that was, or may still be, taken.
func (q *Queue) enqBound() uint64 { return q.r.u64(offTail).Load() &^ closedBit }

// wake wakes the sleepers of the slot at off, if any registered. The caller has
// just changed the slot's sequence word with a sequentially consistent atomic,
// and a sleeper registers (waiters+1) before re-reading that word, so either it
// sees the change or this load sees it registered.
func (q *Queue) wake(off int) {
	if q.waiting(off) {
		q.wakeAll(off)
	}
}

// sleeperFence is what a sleeper runs between registering and re-reading the
// word; it reports whether a waker is now certain to see the sleeper or the
// sleeper its change. Where the wakers' last step is a CAS, the
// registration's own locked instruction is enough (see wake); an SPSC queue
// with membarrier leaves its pending states with plain stores, so the
// sleeper pays for the barrier instead (heavyFence: either the waker's store
// is visible to the re-read, or the waker's later load of the count sees the
// registration). Should the barrier fail, the sleeper sleeps no longer than
// pendingSlice: a lost wake-up then costs that much.
func (q *Queue) sleeperFence() bool {
	return !q.fenced || heavyFence()
}

// waiting reports whether sleepers are registered on the slot at off.
func (q *Queue) waiting(off int) bool { return q.r.u32(off+slotWaiters).Load() != 0 }

func (q *Queue) wakeAll(off int) { q.r.futexWakeAll(off+slotSeq+lowHalf, q.private) }

// result of one attempt on one ticket.
type result int

const (
	done      result = iota
	skipped          // the ticket was reclaimed or cancelled: take another
	closedOut        // the queue is closed: give up the operation
)

// Enqueue appends v, blocking (spin, then futex sleep) while the queue is full.
// It returns ErrClosed if the queue is closed before v is published.
func (q *Queue) Enqueue(v uint64) error {
	if q.spsc {
		return q.enqSPSC(v)
	}
	for skips := 0; skips < maxSkips; skips++ {
		if q.closed() {
			return ErrClosed
		}
		t := q.r.u64(offTail).Add(1) - 1
		if t&closedBit != 0 {
			return ErrClosed
		}
		switch q.enqTicket(t, v) {
		case done:
			return nil
		case closedOut:
			return ErrClosed
		}
	}
	return ErrStalled
}

// enqTicket runs the enqueue protocol for ticket t: wait for FREE of t's lap,
// FREE -> ENQPND, write, ENQPND -> OCCUPIED, wake.
func (q *Queue) enqTicket(t, v uint64) result {
	off := q.slotOff(t)
	seq := q.r.u64(off + slotSeq)
	free := seqOf(t>>q.capShift, stFree)
	// Try the transition before reading the word: when the slot is ready (the
	// common case) this fetches its cache line once, for writing, instead of a
	// shared read followed by an upgrade.
	if seq.CompareAndSwap(free, free+1) {
		return q.fill(off, free, v)
	}
	w := seq.Load()
	if w < free {
		var r result
		if w, r = q.await(off, free, false); r != done {
			return r
		}
	}
	return q.publish(off, w, free, v)
}

// publish completes an enqueue whose ticket's slot was seen at w (>= free).
func (q *Queue) publish(off int, w, free, v uint64) result {
	seq := q.r.u64(off + slotSeq)
	if w != free || !seq.CompareAndSwap(free, free+1) {
		// Cancelled by a dequeuer after Close, or reclaimed after a stall.
		if q.closed() {
			return closedOut
		}
		return skipped
	}
	return q.fill(off, free, v)
}

// fill writes v into a slot the caller moved to ENQPND and publishes it.
//
// In release mode the caller's CAS to ENQPND was the locked instruction the
// wake-up handshake needs: the sleepers to wake are read right after it, and
// ENQPND -> OCCUPIED is a release store (see "Pending states" in the package
// doc). A sleeper that registers later re-reads the word, finds ENQPND or
// OCCUPIED, and so never sleeps a whole slice on a word this call changes.
func (q *Queue) fill(off int, free, v uint64) result {
	if q.release {
		wake := q.waiting(off)
		q.r.setData(off, v)
		q.r.storeSeq(off, free+2)
		if wake {
			q.wakeAll(off)
		}
		return done
	}
	q.r.setData(off, v)
	seq := q.r.u64(off + slotSeq)
	if !seq.CompareAndSwap(free+1, free+2) {
		// Reclaimed while we were stalled between the two steps (see the
		// package doc on stall reclaim).
		if seq.Load() == nextFree(free) {
			// Not reused yet: the next lap's enqueuer writes its value after
			// ours, so v was just not published. Try another ticket.
			return skipped
		}
		// Reused: our late write may have replaced the next lap's value,
		// which its dequeuer then takes. Retrying v could deliver it twice;
		// count it as enqueued (one of the two values is lost).
		return done
	}
	q.wake(off)
	return done
}

// Dequeue removes and returns a value, blocking (spin, then futex sleep) while
// the queue is empty. Once the queue is closed it keeps returning values whose
// enqueue ticket was taken before Close, then ErrClosed.
func (q *Queue) Dequeue() (uint64, error) {
	if q.spsc {
		return q.deqSPSC()
	}
	head := q.r.u64(offHead)
	for skips := 0; skips < maxSkips; {
		var h uint64
		if q.closed() {
			// Closed: take a ticket only while enqueue tickets remain, so that
			// draining ends instead of waiting for values that cannot come.
			h = head.Load()
			if h >= q.enqBound() {
				return 0, ErrClosed
			}
			if !head.CompareAndSwap(h, h+1) {
				continue
			}
		} else {
			h = head.Add(1) - 1
		}
		v, r := q.deqTicket(h)
		switch r {
		case done:
			return v, nil
		case skipped:
			skips++
		}
		// closedOut: our ticket had no value and was cancelled; the loop above
		// takes the next ticket or reports ErrClosed once drained. Every pass
		// consumes one ticket below enqBound, so this ends.
	}
	return 0, ErrStalled
}

// deqTicket runs the dequeue protocol for ticket h: wait for OCCUPIED of h's lap,
// OCCUPIED -> DEQPND, read, DEQPND -> FREE of the next lap, wake.
func (q *Queue) deqTicket(h uint64) (uint64, result) {
	off := q.slotOff(h)
	seq := q.r.u64(off + slotSeq)
	occ := seqOf(h>>q.capShift, stOccupied)
	if seq.CompareAndSwap(occ, occ+1) { // see enqTicket
		return q.drain(off, occ)
	}
	w := seq.Load()
	if w < occ {
		var r result
		if w, r = q.await(off, occ, true); r != done {
			return 0, r
		}
	}
	return q.take(off, w, occ)
}

// take completes a dequeue whose ticket's slot was seen at w (>= occ).
func (q *Queue) take(off int, w, occ uint64) (uint64, result) {
	if w != occ || !q.r.u64(off+slotSeq).CompareAndSwap(occ, occ+1) {
		return 0, skipped // reclaimed after a stall
	}
	return q.drain(off, occ)
}

// drain reads the value of a slot the caller moved to DEQPND and frees the slot
// for the next lap, with the same two modes as fill.
func (q *Queue) drain(off int, occ uint64) (uint64, result) {
	if q.release {
		wake := q.waiting(off)
		v := q.r.u64(off + slotData).Load()
		q.r.storeSeq(off, nextFree(occ))
		if wake {
			q.wakeAll(off)
		}
		return v, done
	}
	v := q.r.u64(off + slotData).Load()
	if !q.r.u64(off+slotSeq).CompareAndSwap(occ+1, nextFree(occ)) {
		// Reclaimed while we read: the slot may already hold a later lap's value,
		// so v cannot be trusted. Drop it and take another ticket.
		return 0, skipped
	}
	q.wake(off)
	return v, done
}

// await waits until the sequence word of the slot at off reaches target (the
// FREE state of an enqueuer's lap, or the OCCUPIED state of a dequeuer's lap).
// It returns the word it saw (>= target) with done, or closedOut.
func (q *Queue) await(off int, target uint64, deq bool) (uint64, result) {
	seq := q.r.u64(off + slotSeq)
	if q.spin > 0 {
		// Poll in blocks with nothing else in the loop: a slower poll
		// (a call and a budget check each time) cost SPSC mode a sixth of
		// its 1P1C throughput.
		var sp spinner
		for {
			for range spinBlock {
				if w := seq.Load(); w >= target {
					return w, done
				}
			}
			if !sp.block(q) {
				break
			}
		}
	}
	waiters := q.r.u32(off + slotWaiters)
	var clock stallClock
	for {
		w := seq.Load()
		if w >= target {
			return w, done
		}
		closing := false
		if q.closed() {
			if !deq {
				// A blocked enqueuer gives up; its dequeuer (if any) will find the
				// slot FREE for this lap and cancel it below.
				return w, closedOut
			}
			if q.spsc {
				if q.drainedSPSC(off, target) {
					return w, closedOut
				}
				closing = true
			} else if w == target-(stOccupied-stFree) {
				// FREE for our lap and closed: no value is coming that we must
				// wait for. Cancel the lap (the enqueuer's FREE -> ENQPND CAS then
				// fails and it reports ErrClosed) and let Dequeue drain on.
				if seq.CompareAndSwap(w, nextFree(w)) {
					q.wake(off)
					return w, closedOut
				}
				continue
			}
		}
		if q.stall > 0 && clock.expired(q, off, target, w) {
			if seq.CompareAndSwap(w, nextFree(w)) {
				q.wake(off)
			}
			continue
		}
		waiters.Add(1)
		fenced := q.sleeperFence()
		if seq.Load() == w && (!q.closed() || closing) {
			d := q.sleepSlice(w, q.slice)
			if closing || !fenced {
				// Close wakes every sleeper after settling, but one that
				// registered while it ran may miss that; without the fence
				// any wake-up may be missed.
				d = min(d, pendingSlice)
			}
			if q.r.futexWaitOn(off+slotSeq+lowHalf, uint32(w), d, q.private) && d == q.slice {
				q.sleepTimeouts.Add(1)
			}
		}
		waiters.Add(^uint32(0))
	}
}

// sleepSlice bounds a sleep on a slot word w: at most d, and in release mode
// at most pendingSlice when w is a pending state, whose owner finishes it with
// a plain store and wakes only the sleepers it saw before (see fill). In CAS
// mode the owner's last step is a CAS followed by the wake-up check, which
// every sleeper registered before it gets; in SPSC mode a plain store
// followed by that check, which sleeperFence makes as good.
func (q *Queue) sleepSlice(w uint64, d time.Duration) time.Duration {
	if s := w & 3; q.release && (s == stEnqPnd || s == stDeqPnd) {
		return min(d, pendingSlice)
	}
	return d
}

// stallClock times how long a slot's word has stayed at one value while the
// party that must move it holds its ticket (actorWaiting). The clock starts at
// the first check that finds that party holding its ticket, never earlier:
// time spent on a full or empty queue before is not a stall, and counting it
// would reclaim the slot from a live peer that has just taken its ticket.
type stallClock struct {
	timing bool
	key, w uint64 // what is timed: a ticket or target, and the word
	since  time.Time
}

// expired reports whether the word w of the slot at off, watched for key,
// has been stalled for q.stall.
func (c *stallClock) expired(q *Queue, off int, key, w uint64) bool {
	if !q.actorWaiting(off, w) {
		c.timing = false
		return false
	}
	now := time.Now()
	if !c.timing || c.key != key || c.w != w {
		c.timing, c.key, c.w, c.since = true, key, w, now
		return false
	}
	return now.Sub(c.since) >= q.stall
}

// spinner is a waiter's spin budget: at least q.spin polls and, unless spin is
// 0, at least q.spinTime, yielding the P every 64 polls so that with more
// goroutines than Ps the peer being waited for can run.
type spinner struct {
	i, n     int // polls accounted for; polls since (next)
	start    time.Time
	deadline time.Time // zero: none; else the spin also ends here
}

// next reports whether the waiter should poll again.
func (s *spinner) next(q *Queue) bool {
	if q.spin == 0 {
		return false
	}
	s.n++
	if s.n < spinBlock {
		return true
	}
	s.n = 0
	return s.block(q)
}

// block accounts for spinBlock polls made since the last call and reports
// whether the waiter should poll on; if so it yields the P first.
func (s *spinner) block(q *Queue) bool {
	s.i += spinBlock
	now := time.Now()
	if s.start.IsZero() {
		s.start = now
	}
	if s.i >= q.spin && now.Sub(s.start) >= q.spinTime ||
		!s.deadline.IsZero() && !now.Before(s.deadline) {
		return false
	}
	runtime.Gosched()
	return true
}

// actorWaiting reports whether the party that must move the slot at off out of
// state w has taken its ticket (so it is alive and slow, or dead): only then may
// a stalled slot be reclaimed. A FREE slot whose enqueue ticket is not taken, or
// an OCCUPIED one whose dequeue ticket is not taken, is just an empty or a full
// queue.
func (q *Queue) actorWaiting(off int, w uint64) bool {
	ticket := (w>>2)<<q.capShift | uint64((off-HeaderSize)>>q.slotShift)
	switch w & 3 {
	case stFree:
		return q.enqBound() > ticket
	case stOccupied:
		return q.r.u64(offHead).Load() > ticket
	}
	return true // ENQPND or DEQPND: a ticket holder is mid-operation
}

// TryEnqueue appends v if a slot is free now and reports whether it did. It never
// blocks: it takes a ticket (CAS on tail) only when the slot of that ticket is
// FREE for its lap.
func (q *Queue) TryEnqueue(v uint64) bool {
	if q.spsc {
		return q.tryEnqSPSC(v)
	}
	tail := q.r.u64(offTail)
	for i := 0; i < tryLimit; i++ {
		if q.closed() {
			return false
		}
		t := tail.Load()
		if t&closedBit != 0 {
			return false
		}
		off := q.slotOff(t)
		free := seqOf(t>>q.capShift, stFree)
		w := q.r.u64(off + slotSeq).Load()
		if w < free {
			return false // full: the previous lap's value is still there
		}
		if w > free || !tail.CompareAndSwap(t, t+1) {
			continue // another enqueuer took t
		}
		switch q.publish(off, w, free, v) {
		case done:
			return true
		case closedOut:
			return false
		}
	}
	return false
}

// TryDequeue removes a value if one is published at the head now. It never
// blocks: it takes a ticket (CAS on head) only when the slot of that ticket is
// OCCUPIED for its lap.
func (q *Queue) TryDequeue() (uint64, bool) {
	if q.spsc {
		return q.tryDeqSPSC()
	}
	head := q.r.u64(offHead)
	for i := 0; i < tryLimit; i++ {
		h := head.Load()
		off := q.slotOff(h)
		occ := seqOf(h>>q.capShift, stOccupied)
		w := q.r.u64(off + slotSeq).Load()
		if w < occ {
			return 0, false // empty, or the value of ticket h is not published yet
		}
		if w > occ {
			// Past ticket h's lap: another dequeuer took h, or, if head is
			// still h, the slot was reclaimed from a stalled enqueuer and its
			// next lap has come. Nobody holds h then, and no value for it is
			// coming: skip it, or blocking dequeuers would be the only ones to
			// get past it.
			head.CompareAndSwap(h, h+1)
			continue
		}
		if !head.CompareAndSwap(h, h+1) {
			continue // another dequeuer took h
		}
		if v, r := q.take(off, w, occ); r == done {
			return v, true
		}
	}
	return 0, false
}

// DequeueTimeout is Dequeue with a time limit: it returns ErrTimeout if no value
// could be taken within d. It holds no ticket while it waits (it takes one only
// for a published value, as TryDequeue does), so a timeout loses nothing.
//
// Once the queue is closed, DequeueTimeout drains like Dequeue (which cancels the
// tickets whose value will not come) and d no longer applies.
func (q *Queue) DequeueTimeout(d time.Duration) (uint64, error) {
	if v, ok := q.TryDequeue(); ok {
		return v, nil
	}
	deadline := time.Now().Add(d)
	head := q.r.u64(offHead)
	sp := spinner{deadline: deadline}
	spinning := true
	var clock stallClock
	for {
		if v, ok := q.TryDequeue(); ok {
			return v, nil
		}
		if q.closed() {
			return q.Dequeue()
		}
		h := head.Load()
		if spinning {
			if spinning = sp.next(q); spinning {
				continue
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return 0, ErrTimeout
		}
		// Sleep on the head slot: its enqueuer wakes registered waiters when it
		// publishes. If head moves meanwhile, the slice bound re-checks.
		off := q.slotOff(h)
		seq := q.r.u64(off + slotSeq)
		w := seq.Load()
		if w >= seqOf(h>>q.capShift, stOccupied) {
			continue
		}
		// The head slot's enqueuer may have died holding its ticket; with
		// only DequeueTimeout and TryDequeue callers nobody else would notice
		// (see await; TryDequeue then skips the reclaimed ticket).
		if q.stall > 0 && clock.expired(q, off, h, w) {
			if seq.CompareAndSwap(w, nextFree(w)) {
				q.wake(off)
			}
			continue
		}
		waiters := q.r.u32(off + slotWaiters)
		waiters.Add(1)
		d := q.sleepSlice(w, min(left, q.slice))
		if !q.sleeperFence() {
			d = min(d, pendingSlice)
		}
		if seq.Load() == w && head.Load() == h && !q.closed() {
			q.r.futexWaitOn(off+slotSeq+lowHalf, uint32(w), d, q.private)
		}
		waiters.Add(^uint32(0))
	}
}

// Close closes the queue: later enqueues fail with ErrClosed, enqueuers blocked
// on a full queue return ErrClosed, and dequeuers drain the values whose enqueue
// ticket was taken and then get ErrClosed. It wakes every sleeper, in every
// process attached to the region. Close is idempotent.
func (q *Queue) Close() {
	if q.spsc {
		q.closeSPSC()
		return
	}
	old := q.r.u64(offTail).Or(closedBit)
	if old&closedBit == 0 {
		q.r.u64(offClosedTail).Store(old + 1)
	}
	q.r.u32(offClosed).Store(1)
	for i := 0; i < q.capacity; i++ {
		q.wake(HeaderSize + i<<q.slotShift)
	}
}

// Closed reports whether Close was called (by any process).
func (q *Queue) Closed() bool { return q.closed() }

// Len returns an estimate of the number of values in the queue: enqueue tickets
// minus dequeue tickets, clamped to [0, Cap]. It is exact only when quiescent.
func (q *Queue) Len() int {
	t, h := q.enqBound(), q.r.u64(offHead).Load()
	if h >= t {
		return 0
	}
	if n := t - h; n < uint64(q.capacity) {
		return int(n)
	}
	return q.capacity
}
