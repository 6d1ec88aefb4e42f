package nvme

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/internal/invariants"
)

// Queue states: the owner moves idle<->busy around every call; the unbind watcher
// moves idle->detached, after which the queue never touches the hardware again.
const (
	qIdle int32 = iota
	qBusy
	qDetached
)

// healthEvery is how many empty completion-queue checks pass between looks at
// CSTS and at command deadlines while a queue waits.
const healthEvery = 256

// vqueue is one I/O queue pair with its DMA memory: the submission and completion
// rings, one PRP list page and one bounce buffer of the maximum transfer per slot.
// Data is copied between the caller's buffer and the slot's bounce buffer, which
// lives at a fixed IOVA, so the controller never sees caller memory. A command's
// identifier is its slot index. With depth+1 ring entries and at most depth commands
// in flight the submission ring never fills, so the SQ head needs no tracking.
type vqueue struct {
	v        *VFIO
	qid      uint16
	depth    int
	entries  uint32
	mem      *dmaMem
	sq, cq   []byte
	sqDB     reg
	cqDB     reg
	efd      int // MSI-X eventfd, -1 when polled
	sqTail   uint32
	cqHead   uint32
	phase    uint32
	slots    []vslot
	free     []uint16
	inflight int
	// ready holds completions made without the controller (reads past the end,
	// failures) until Poll hands them out.
	ready  []blockdev.Completion
	broken error
	closed bool
	state  atomic.Int32
	epoch  time.Time
	// regions are caller buffers registered for zero-copy DMA (RegisterBuffers).
	regions   []dmaRegion
	zeroCopy  int64 // requests that used a registered region (tests read it)
	one       [1]blockdev.Request
	oneOut    [1]blockdev.Completion
	scratch   []blockdev.Completion
	rawCookie uint64
}

type vslot struct {
	busy     bool
	lost     bool // failed towards the caller while the controller may still own it
	aborted  bool
	op       uint8
	cookie   uint64
	n        int
	buf      []byte // caller's buffer (reads copy into it)
	start    int64  // ns since epoch
	bounce   []byte
	bIOVA    uint64
	prp      []uint64
	prpIOVA  uint64
	rawDone  bool
	rawError error
	direct   bool // data went straight to the caller's registered buffer
}

// dmaRegion is a registered caller buffer: [base, end) of process memory mapped at
// iova (the enclosing whole pages are mapped; iova corresponds to base rounded down).
type dmaRegion struct {
	base, end uintptr
	pageBase  uintptr
	iova      uint64
	size      int
}

// maxRegions bounds the buffers a queue registers.
const maxRegions = 16

var _ blockdev.BufferRegistrar = (*vqueue)(nil)

// RegisterBuffers implements blockdev.BufferRegistrar: bufs are mapped into the
// controller's address space once, and requests whose buffer lies inside one of them
// transfer straight to and from it instead of through the bounce buffers. It
// replaces earlier registrations. The memory must stay mapped until the queue closes
// or registers again.
func (q *vqueue) RegisterBuffers(bufs [][]byte) error {
	if q.closed {
		return blockdev.ErrClosed
	}
	if !q.enter() {
		return ErrGone
	}
	defer q.exit()
	if len(bufs) > maxRegions {
		return fmt.Errorf("nvme: %d buffer regions, at most %d", len(bufs), maxRegions)
	}
	if q.inflight > 0 {
		return fmt.Errorf("nvme: RegisterBuffers with %d requests in flight", q.inflight)
	}
	v := q.v
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.shutDown {
		return ErrGone
	}
	q.unregisterLocked()
	for i, b := range bufs {
		if len(b) == 0 {
			q.unregisterLocked()
			return fmt.Errorf("nvme: RegisterBuffers: buffer %d is empty", i)
		}
		base := memAddr(b)
		pb, size := pageSpan(b)
		iova := v.allocIOVA(size, pageSize)
		if err := vfioMapDMAPages(v.cfd, b, iova); err != nil {
			q.unregisterLocked()
			return err
		}
		q.regions = append(q.regions, dmaRegion{base: base, end: base + uintptr(len(b)), pageBase: pb, iova: iova, size: size})
	}
	return nil
}

// unregisterLocked unmaps the registered regions. v.mu is held.
func (q *vqueue) unregisterLocked() {
	if !q.v.shutDown {
		for _, r := range q.regions {
			vfioUnmapDMA(q.v.cfd, r.iova, r.size)
		}
	}
	q.regions = q.regions[:0]
}

// regionIOVA returns the IOVA of b when it lies inside a registered region.
func (q *vqueue) regionIOVA(b []byte) (uint64, bool) {
	if len(q.regions) == 0 || len(b) == 0 {
		return 0, false
	}
	a := memAddr(b)
	for i := range q.regions {
		r := &q.regions[i]
		if a >= r.base && a+uintptr(len(b)) <= r.end {
			return r.iova + uint64(a-r.pageBase), true
		}
	}
	return 0, false
}

var _ blockdev.Queue = (*vqueue)(nil)

func (v *VFIO) newQueue(depth int) (*vqueue, error) {
	entries := uint32(depth + 1)
	if int(entries) > v.mqes {
		return nil, fmt.Errorf("nvme: queue depth %d exceeds the controller's %d entries per queue", depth, v.mqes-1)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gone.Load() {
		return nil, ErrGone
	}
	if v.failed.Load() {
		return nil, ErrControllerFailed
	}
	if v.closed.Load() || v.shutDown {
		return nil, blockdev.ErrClosed
	}
	if len(v.freeQIDs) == 0 {
		return nil, fmt.Errorf("nvme: all %d I/O queue pairs of %s are in use", v.nq, v.addr)
	}
	qid := v.freeQIDs[len(v.freeQIDs)-1]
	mem, err := v.allocDMA(queueBytes(depth, v.maxXfer))
	if err != nil {
		return nil, err
	}
	q := v.layoutQueue(qid, depth, mem)
	sqBytes := len(q.sq)
	cqFlags := uint32(1) // physically contiguous
	if int(qid) < len(v.efds) {
		q.efd = v.efds[qid]
		cqFlags |= 2 | uint32(qid)<<16 // interrupts enabled, vector qid
	}
	if _, err := v.adminCmd(&Command{Opcode: adminCreateCQ, PRP1: mem.iova + uint64(sqBytes), CDW10: (entries-1)<<16 | uint32(qid), CDW11: cqFlags}, false); err != nil {
		v.freeDMALocked(mem)
		return nil, fmt.Errorf("nvme: create I/O completion queue %d: %w", qid, err)
	}
	if _, err := v.adminCmd(&Command{Opcode: adminCreateSQ, PRP1: mem.iova, CDW10: (entries-1)<<16 | uint32(qid), CDW11: 1 | uint32(qid)<<16}, false); err != nil {
		v.adminCmd(&Command{Opcode: adminDeleteCQ, CDW10: uint32(qid)}, false)
		v.freeDMALocked(mem)
		return nil, fmt.Errorf("nvme: create I/O submission queue %d: %w", qid, err)
	}
	v.freeQIDs = v.freeQIDs[:len(v.freeQIDs)-1]
	v.queues[q] = struct{}{}
	return q, nil
}

// queueBytes is the DMA memory of a queue: rings, PRP list pages, bounce buffers.
func queueBytes(depth, maxXfer int) int {
	entries := depth + 1
	return roundPage(entries*sqeSize) + roundPage(entries*cqeSize) + depth*pageSize + depth*maxXfer
}

// layoutQueue carves a queue's rings, PRP lists and bounce buffers out of mem (of
// queueBytes) and points it at its doorbells; it touches no hardware.
func (v *VFIO) layoutQueue(qid uint16, depth int, mem *dmaMem) *vqueue {
	entries := uint32(depth + 1)
	sqBytes := roundPage(int(entries) * sqeSize)
	cqBytes := roundPage(int(entries) * cqeSize)
	q := &vqueue{v: v, qid: qid, depth: depth, entries: entries, mem: mem, efd: -1, phase: 1,
		sq: mem.mem[:sqBytes], cq: mem.mem[sqBytes : sqBytes+cqBytes],
		slots: make([]vslot, depth), free: make([]uint16, depth), ready: make([]blockdev.Completion, 0, depth),
		scratch: make([]blockdev.Completion, depth), epoch: time.Now()}
	off := sqBytes + cqBytes
	for i := range q.slots {
		s := &q.slots[i]
		s.prp = u64s(mem.mem[off : off+pageSize])
		s.prpIOVA = mem.iova + uint64(off)
		off += pageSize
	}
	for i := range q.slots {
		s := &q.slots[i]
		s.bounce = mem.mem[off : off+v.maxXfer]
		s.bIOVA = mem.iova + uint64(off)
		off += v.maxXfer
		q.free[i] = uint16(depth - 1 - i)
	}
	sqOff, cqOff := DoorbellOffsets(int(qid), v.dstrd)
	q.sqDB, q.cqDB = barReg(v.bar, sqOff), barReg(v.bar, cqOff)
	return q
}

func roundPage(n int) int { return (n + pageSize - 1) / pageSize * pageSize }

// enter starts a call of the owner; false means the queue was detached.
func (q *vqueue) enter() bool { return q.state.CompareAndSwap(qIdle, qBusy) }

func (q *vqueue) exit() { q.state.Store(qIdle) }

// detach is the watcher's side: true once the queue is (or already was) detached.
func (q *vqueue) detach() bool {
	return q.state.CompareAndSwap(qIdle, qDetached) || q.state.Load() == qDetached
}

func (q *vqueue) now() int64 { return int64(time.Since(q.epoch)) }

// Submit implements blockdev.Queue.
func (q *vqueue) Submit(reqs []blockdev.Request) (int, error) {
	if q.closed || q.v.closed.Load() {
		return 0, blockdev.ErrClosed
	}
	if !q.enter() {
		return 0, ErrGone
	}
	defer q.exit()
	if q.broken != nil {
		return 0, q.broken
	}
	if err := q.v.healthFast(); err != nil {
		return 0, err
	}
	v := q.v
	accepted := 0
	tail := q.sqTail
	var reqErr error
	for i := range reqs {
		if q.inflight == q.depth {
			break
		}
		r := &reqs[i]
		c := Command{NSID: v.nsid}
		n := 0
		switch r.Op {
		case blockdev.OpRead:
			n, reqErr = blockdev.ClampRead(r.Buf, r.Off, v.bs, v.size)
			c.Opcode = ioRead
		case blockdev.OpWrite:
			reqErr = blockdev.CheckWrite(r.Buf, r.Off, v.bs, v.size)
			n = len(r.Buf)
			c.Opcode = ioWrite
		case blockdev.OpFlush:
			c.Opcode = ioFlush
		default:
			reqErr = fmt.Errorf("nvme: request %d has unknown %v", i, r.Op)
		}
		if reqErr == nil && n > v.maxXfer {
			reqErr = &TransferTooLargeError{Len: len(r.Buf), Max: v.maxXfer}
		}
		if reqErr != nil {
			break
		}
		if r.Op == blockdev.OpRead && n == 0 {
			q.ready = append(q.ready, blockdev.Completion{Cookie: r.Cookie})
			q.inflight++
			accepted++
			continue
		}
		cid := q.free[len(q.free)-1]
		q.free = q.free[:len(q.free)-1]
		s := &q.slots[cid]
		s.busy, s.aborted, s.op, s.cookie, s.n, s.buf, s.start = true, false, c.Opcode, r.Cookie, n, r.Buf[:n], q.now()
		if n > 0 {
			iova, direct := q.regionIOVA(r.Buf[:n])
			s.direct = direct
			if direct {
				q.zeroCopy++
			} else {
				iova = s.bIOVA
				if r.Op == blockdev.OpWrite {
					copy(s.bounce, r.Buf)
				}
			}
			prp, err := BuildPRP(iova, n, s.prp, s.prpIOVA)
			if err != nil { // cannot happen: n <= maxXfer and buffers are block aligned
				panic(err)
			}
			c.PRP1, c.PRP2 = prp.PRP1, prp.PRP2
			c.rw(uint64(r.Off)/uint64(v.bs), uint32(n/v.bs))
		}
		c.CID = cid
		c.Encode(q.sq[int(tail)*sqeSize:])
		if tail++; tail == q.entries {
			tail = 0
		}
		q.inflight++
		accepted++
	}
	if tail != q.sqTail {
		q.sqTail = tail
		q.sqDB.store(tail)
	}
	return accepted, reqErr
}

// healthFast is the check on every submission: flags only, no register read.
func (v *VFIO) healthFast() error {
	if v.gone.Load() {
		return ErrGone
	}
	if v.failed.Load() {
		return ErrControllerFailed
	}
	return nil
}

// Poll implements blockdev.Queue.
func (q *vqueue) Poll(min int, out []blockdev.Completion) (int, error) {
	if q.closed {
		return 0, blockdev.ErrClosed
	}
	if !q.enter() {
		// Detached: the controller is gone; whatever was in flight fails.
		q.failAll(ErrGone)
		return q.deliver(0, out), nil
	}
	defer q.exit()
	return q.poll(min, out), nil
}

func (q *vqueue) poll(min int, out []blockdev.Completion) int {
	min = max(0, min)
	if min > q.inflight {
		min = q.inflight
	}
	if min > len(out) {
		min = len(out)
	}
	n := 0
	for spins := 0; ; spins++ {
		n = q.deliver(n, out)
		n += q.reap(out[n:])
		if n >= min || len(out) == n {
			if invariants.Enabled {
				q.checkAccounting()
			}
			return n
		}
		if spins%healthEvery == healthEvery-1 {
			q.check()
		}
		q.wait(spins)
	}
}

// deliver moves ready completions into out[n:].
func (q *vqueue) deliver(n int, out []blockdev.Completion) int {
	k := copy(out[n:], q.ready)
	if k > 0 {
		m := copy(q.ready, q.ready[k:])
		q.ready = q.ready[:m]
		q.inflight -= k
	}
	return n + k
}

// reap takes completions off the completion ring into out.
func (q *vqueue) reap(out []blockdev.Completion) int {
	n := 0
	head := q.cqHead
	for n < len(out) {
		st := cqStatus(q.cq, int(head))
		if (st>>16)&1 != q.phase {
			break
		}
		if head++; head == q.entries {
			head, q.phase = 0, q.phase^1
		}
		cid := uint16(st)
		if int(cid) >= len(q.slots) {
			continue
		}
		s := &q.slots[cid]
		if !s.busy {
			continue
		}
		s.busy = false
		err := statusError(s.op, uint16(st>>17))
		if s.lost {
			// Already failed towards the caller; the slot is safe to reuse now.
			s.lost = false
			q.free = append(q.free, cid)
			continue
		}
		q.free = append(q.free, cid)
		if s.op == 0xff { // raw command of the driver itself
			s.rawDone, s.rawError = true, err
			q.inflight--
			continue
		}
		if err == nil && s.op == ioRead && !s.direct {
			copy(s.buf, s.bounce[:s.n])
		}
		c := blockdev.Completion{Cookie: s.cookie, N: s.n, Err: err}
		if err != nil {
			c.N = 0
		}
		s.buf = nil
		out[n] = c
		n++
		q.inflight--
	}
	if head != q.cqHead {
		q.cqHead = head
		q.cqDB.store(head)
	}
	return n
}

// wait pauses between looks at the completion ring: on the MSI-X eventfd when
// interrupts are on, else spinning briefly and then sleeping in short steps.
func (q *vqueue) wait(spins int) {
	if q.efd >= 0 {
		fds := [1]unix.PollFd{{Fd: int32(q.efd), Events: unix.POLLIN}}
		if k, _ := unix.Poll(fds[:], 10); k > 0 {
			var b [8]byte
			unix.Read(q.efd, b[:])
		}
		return
	}
	// Spin (yielding to other goroutines) for roughly the latency of a fast SSD
	// before sleeping: a sleep costs at least the timer slack, tens of microseconds.
	if spins < 1024 {
		runtime.Gosched()
		return
	}
	time.Sleep(20 * time.Microsecond)
}

// check looks at the controller's status and at the deadlines of commands in
// flight: a failed or vanished controller fails them all; a command past its
// deadline is aborted, and fails with ErrTimeout if the abort does not finish it.
func (q *vqueue) check() {
	if err := q.v.checkHealth(); err != nil {
		q.failAll(err)
		q.broken = err
		return
	}
	now := q.now()
	limit := int64(q.v.opts.CommandTimeout)
	for i := range q.slots {
		s := &q.slots[i]
		if !s.busy || s.lost || now-s.start < limit {
			continue
		}
		if !s.aborted {
			s.aborted, s.start = true, now
			q.v.aborts.Add(1)
			q.v.adminCmd(&Command{Opcode: adminAbort, CDW10: uint32(q.qid) | uint32(i)<<16}, false)
			continue
		}
		q.v.timeouts.Add(1)
		q.failSlot(s, ErrTimeout)
	}
}

// failSlot completes a slot's command with err towards the caller while the
// controller may still own it: the slot is reused only after its late completion.
func (q *vqueue) failSlot(s *vslot, err error) {
	s.lost = true
	if s.op == 0xff {
		s.rawDone, s.rawError = true, err
		q.inflight--
		return
	}
	q.ready = append(q.ready, blockdev.Completion{Cookie: s.cookie, Err: err})
	s.buf = nil
}

// failAll fails every command in flight.
func (q *vqueue) failAll(err error) {
	for i := range q.slots {
		s := &q.slots[i]
		if s.busy && !s.lost {
			q.failSlot(s, err)
		}
	}
}

// raw runs one driver command (Write Zeroes, DSM, tests) on slot 0 of an idle
// queue and waits for it; data, when given, must be slot 0's bounce buffer.
func (q *vqueue) raw(c *Command, data []byte) error {
	if !q.enter() {
		return ErrGone
	}
	defer q.exit()
	if q.broken != nil {
		return q.broken
	}
	if q.inflight != 0 || len(q.free) != q.depth {
		return fmt.Errorf("nvme: raw command on a busy queue")
	}
	s := &q.slots[0]
	c.CID = 0
	if len(data) > 0 {
		c.PRP1 = s.bIOVA
	}
	return q.rawSlot(c)
}

// rawSlot submits c (whose PRPs are set) on slot c.CID and waits for it.
func (q *vqueue) rawSlot(c *Command) error {
	s := &q.slots[c.CID]
	for i, f := range q.free {
		if f == c.CID {
			q.free = append(q.free[:i], q.free[i+1:]...)
			break
		}
	}
	s.busy, s.aborted, s.op, s.start, s.rawDone, s.rawError = true, false, 0xff, q.now(), false, nil
	c.Encode(q.sq[int(q.sqTail)*sqeSize:])
	if q.sqTail++; q.sqTail == q.entries {
		q.sqTail = 0
	}
	q.inflight++
	q.sqDB.store(q.sqTail)
	for spins := 0; !s.rawDone; spins++ {
		q.reap(q.scratch)
		if s.rawDone {
			break
		}
		if spins%healthEvery == healthEvery-1 {
			q.check()
		}
		q.wait(spins)
	}
	if q.broken != nil && s.rawError == nil {
		return q.broken
	}
	return s.rawError
}

// Depth implements blockdev.Queue.
func (q *vqueue) Depth() int { return q.depth }

// InFlight implements blockdev.Queue.
func (q *vqueue) InFlight() int { return q.inflight }

// Close implements blockdev.Queue: it waits for the commands in flight (bounded by
// the command timeout), deletes the queue pair and frees its memory.
func (q *vqueue) Close() error {
	if q.closed {
		return blockdev.ErrClosed
	}
	q.closed = true
	v := q.v
	attached := q.enter()
	if attached {
		for q.inflight > 0 {
			q.poll(1, q.scratch)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.queues, q)
	q.unregisterLocked()
	if attached && !v.shutDown && !v.gone.Load() && !v.failed.Load() && q.lostCount() == 0 {
		v.adminCmd(&Command{Opcode: adminDeleteSQ, CDW10: uint32(q.qid)}, false)
		v.adminCmd(&Command{Opcode: adminDeleteCQ, CDW10: uint32(q.qid)}, false)
		v.freeQIDs = append(v.freeQIDs, q.qid)
	}
	if q.lostCount() == 0 || v.shutDown {
		v.freeDMALocked(q.mem)
	}
	q.mem = nil
	q.state.Store(qDetached)
	if v.closed.Load() && len(v.queues) == 0 {
		v.shutdownLocked()
	}
	if v.shutDown && len(v.queues) == 0 && len(v.efds) > 0 {
		v.closeEventfds()
	}
	return nil
}

func (q *vqueue) lostCount() int {
	n := 0
	for i := range q.slots {
		if q.slots[i].lost {
			n++
		}
	}
	return n
}

// checkAccounting verifies (invariants builds) that every request in flight is a
// busy slot or a ready completion, and that every slot is busy, lost or free.
func (q *vqueue) checkAccounting() {
	busy, lost := 0, 0
	for i := range q.slots {
		s := &q.slots[i]
		switch {
		case s.busy && s.lost:
			lost++
		case s.busy:
			busy++
		}
	}
	invariants.Check(q.inflight == busy+len(q.ready), "nvme: queue %d has %d in flight but %d busy slots and %d ready completions", q.qid, q.inflight, busy, len(q.ready))
	invariants.Check(busy+lost+len(q.free) == q.depth, "nvme: queue %d: %d busy + %d lost + %d free slots != depth %d", q.qid, busy, lost, len(q.free), q.depth)
}
