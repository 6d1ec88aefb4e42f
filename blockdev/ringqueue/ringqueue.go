// Package ringqueue is the one blockdev.Queue core on io_uring: the submit,
// poll and close protocol that every io_uring block device shares, over one
// drivers/uring.Ring with the device's file registered as fixed file 0.
// blockdev/file (reads, writes and fsync on a file or block device) and
// drivers/nvme's passthrough device (NVMe commands through URING_CMD) are
// both a Device here: what is theirs is only how a request is checked and
// becomes a submission entry, and how a completion's result becomes a
// blockdev.Completion.
//
// # Contract
//
// Queue implements blockdev.Queue with the package doc of blockdev as its
// contract, for one owning goroutine (it owns one Ring). Each request in
// flight holds a slot: user_data is the slot's index, and the slot keeps the
// caller's cookie, the byte count a successful completion reports and a tag of
// the device's, so that a completion never depends on what the kernel echoes
// beyond the index. The queue, not the device:
//
//   - refuses Submit after Close or once Device.Closed reports the device
//     closed (blockdev.ErrClosed), and accepts no more than Depth in flight;
//   - completes a read that lies entirely past the end (Device.Check returns
//     0 bytes) with 0 bytes through a NOP, as pread does, without asking the
//     device to prepare it;
//   - submits a batch with one io_uring_enter; if the kernel refuses it for
//     good, withdraws what it did not take (their slots freed, InFlight
//     lowered) and reports how many it did take, so Poll never waits for
//     completions that cannot come; on ErrBusy (no completion space) keeps
//     them queued and submits them again at the next Poll;
//   - reports a negative result as its syscall.Errno, whatever the device;
//   - on Close waits for every request in flight, discards their completions
//     and closes the ring, which drops its reference to the file.
//
// Invariants (checked after every Submit and Poll with -tags invariants):
// 0 <= InFlight <= Depth; InFlight + free slots == Depth; the ring's pending
// entries are among those in flight; a completion names a slot below Depth.
// Submit and Poll allocate nothing: slots, the free stack and the completion
// scratch are sized at New.
// There are no locks; the owner's goroutine is the only one that touches a
// Queue.
//
// Measure: `go test -run '^$' -bench . -benchmem ./blockdev/ringqueue` (the
// core's own cost per request, on NOPs), `polytropon perf blockdev --dev PATH`
// (a file or /dev/ngXnY through it, beside fio).
package ringqueue

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/drivers/uring"
	"github.com/polytropon/polytropon/internal/invariants"
)

// MaxDepth bounds a queue's depth: the ring's entries and the slots.
const MaxDepth = 4096

// Slot is what a request in flight keeps until its completion.
type Slot struct {
	Cookie uint64 // the caller's, returned in the Completion
	N      int    // the byte count Device.Check returned
	Tag    uint8  // the device's own (drivers/nvme: the command's opcode)
}

// Device is the device's half of a queue.
type Device interface {
	// Check validates request i of a batch before anything of it is queued
	// and returns what its slot keeps: the byte count a successful
	// completion reports (for a read, how much of it lies before the end; 0
	// when it starts past the end) and a tag. An error refuses the request
	// and ends the batch: Submit returns the requests accepted before it and
	// the error.
	Check(i int, r *blockdev.Request) (n int, tag uint8, err error)
	// Prep fills s, taken from ring, for the request r that Check accepted,
	// with sl its slot and ud its user_data. It cannot fail.
	Prep(ring *uring.Ring, s *uring.SQE, r *blockdev.Request, sl *Slot, ud uint64)
	// Complete turns the non-negative result res of the request in sl into
	// its completion (Cookie set from sl by the queue).
	Complete(res int32, sl *Slot) blockdev.Completion
	// Closed reports whether the device was closed: Submit then fails.
	Closed() bool
}

// Config is how New sets up the ring.
type Config struct {
	// Depth is the queue's capacity, 1..MaxDepth: the ring's SQ entries and
	// the slots.
	Depth int
	// File is registered as fixed file 0 (Prep uses index 0 with
	// SQE.UseFixedFile), so requests in flight keep it open after the device
	// closes it.
	File *os.File
	// Ring are the ring's setup options (SQE128, CQE32, CQ size, ...).
	Ring []uring.Option
	// Require are the opcodes the device's Prep uses; New fails with the
	// ring's *uring.UnsupportedOpError when the kernel lacks one. NOP is
	// always required (reads past the end use it).
	Require []uring.Op
}

// Queue is a blockdev.Queue on one io_uring.
type Queue struct {
	dev      Device
	ring     *uring.Ring
	depth    int
	inflight int
	cqes     []uring.CQE
	slots    []Slot
	free     []uint32 // a stack of free slot indices
	closed   bool
}

var _ blockdev.Queue = (*Queue)(nil)

// New makes a queue for dev: a ring set up as cfg says, with cfg.File
// registered. A closed file gives blockdev.ErrClosed; a kernel without
// io_uring or without an opcode, the ring's error.
func New(dev Device, cfg Config) (*Queue, error) {
	if cfg.Depth < 1 || cfg.Depth > MaxDepth {
		return nil, fmt.Errorf("ringqueue: queue depth %d: want 1..%d", cfg.Depth, MaxDepth)
	}
	if cfg.File == nil {
		return nil, errors.New("ringqueue: no file to register")
	}
	ring, err := uring.New(uint32(cfg.Depth), cfg.Ring...)
	if err != nil {
		return nil, err
	}
	if err := ring.Require(append([]uring.Op{uring.OpNop}, cfg.Require...)...); err != nil {
		ring.Close()
		return nil, err
	}
	if err := registerFile(ring, cfg.File); err != nil {
		ring.Close()
		return nil, err
	}
	q := &Queue{dev: dev, ring: ring, depth: cfg.Depth, cqes: make([]uring.CQE, cfg.Depth),
		slots: make([]Slot, cfg.Depth), free: make([]uint32, cfg.Depth)}
	for i := range q.free {
		q.free[i] = uint32(cfg.Depth - 1 - i)
	}
	return q, nil
}

// registerFile registers f's descriptor in ring. SyscallConn and Control fail
// only for a file that is closed (or closing: internal/poll's "use of closed
// file", which matches no exported error), so their errors are ErrClosed.
func registerFile(ring *uring.Ring, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return blockdev.ErrClosed
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) { rerr = ring.RegisterFiles([]int32{int32(fd)}) }); err != nil {
		return blockdev.ErrClosed
	}
	return rerr
}

// Ring is the queue's ring, for what a device adds beside the core (blockdev/file
// registers buffers on it). Submitting or reaping on it directly breaks the
// queue's accounting.
func (q *Queue) Ring() *uring.Ring { return q.ring }

// Closed reports whether Close was called.
func (q *Queue) Closed() bool { return q.closed }

// Submit implements blockdev.Queue.
func (q *Queue) Submit(reqs []blockdev.Request) (int, error) {
	if q.closed || q.dev.Closed() {
		return 0, blockdev.ErrClosed
	}
	accepted := 0
	var reqErr error
	for i := range reqs {
		if q.inflight == q.depth {
			break
		}
		r := &reqs[i]
		n, tag, err := q.dev.Check(i, r)
		if err != nil {
			reqErr = err
			break
		}
		si := q.free[len(q.free)-1]
		q.free = q.free[:len(q.free)-1]
		sl := &q.slots[si]
		*sl = Slot{Cookie: r.Cookie, N: n, Tag: tag}
		s := q.ring.GetSQE()
		if r.Op == blockdev.OpRead && n == 0 {
			// Entirely past the end: complete with 0 bytes, as pread would.
			s.PrepNop(uint64(si))
		} else {
			q.dev.Prep(q.ring, s, r, sl, uint64(si))
		}
		q.inflight++
		accepted++
	}
	if accepted > 0 {
		if _, err := q.ring.Submit(); err != nil && !errors.Is(err, uring.ErrBusy) {
			// The kernel refused the batch: withdraw what it did not take. The
			// withdrawn entries are the last ones prepared, whose slots were
			// the last popped off the free stack: they still sit just past its
			// end.
			n := q.ring.CancelPending()
			q.free = q.free[:len(q.free)+n]
			q.inflight -= n
			return accepted - n, err
		}
	}
	if invariants.Enabled {
		q.checkAccounting()
	}
	return accepted, reqErr
}

// Poll implements blockdev.Queue.
func (q *Queue) Poll(min int, out []blockdev.Completion) (int, error) {
	if q.closed {
		return 0, blockdev.ErrClosed
	}
	if q.inflight == 0 || len(out) == 0 {
		return 0, nil
	}
	if q.ring.Pending() > 0 {
		// Entries left queued by an earlier ErrBusy.
		if _, err := q.ring.Submit(); err != nil && !errors.Is(err, uring.ErrBusy) {
			return 0, err
		}
	}
	wait, lim := blockdev.PollBounds(min, len(out), len(q.cqes), q.inflight)
	n, err := q.ring.WaitCQEs(wait, q.cqes[:lim])
	for i := 0; i < n; i++ {
		c := &q.cqes[i]
		if invariants.Enabled {
			invariants.Check(c.UserData < uint64(q.depth), "ringqueue: completion for slot %d of %d", c.UserData, q.depth)
		}
		sl := &q.slots[c.UserData]
		q.free = append(q.free, uint32(c.UserData))
		if c.Res < 0 {
			out[i] = blockdev.Completion{Err: unix.Errno(-c.Res)}
		} else {
			out[i] = q.dev.Complete(c.Res, sl)
		}
		out[i].Cookie = sl.Cookie
	}
	q.inflight -= n
	if invariants.Enabled {
		q.checkAccounting()
	}
	return n, err
}

// checkAccounting checks the slot accounting (-tags invariants).
func (q *Queue) checkAccounting() {
	invariants.Check(q.inflight >= 0 && q.inflight+len(q.free) == q.depth,
		"ringqueue: %d in flight + %d free slots != depth %d", q.inflight, len(q.free), q.depth)
	if uint32(q.inflight) < q.ring.Pending() {
		invariants.Failf("ringqueue: %d in flight but %d entries pending", q.inflight, q.ring.Pending())
	}
}

// Depth implements blockdev.Queue.
func (q *Queue) Depth() int { return q.depth }

// InFlight implements blockdev.Queue.
func (q *Queue) InFlight() int { return q.inflight }

// Close implements blockdev.Queue.
func (q *Queue) Close() error {
	if q.closed {
		return blockdev.ErrClosed
	}
	for q.inflight > 0 {
		n, err := q.ring.WaitCQEs(1, q.cqes)
		if err != nil {
			break
		}
		for i := 0; i < n; i++ {
			q.free = append(q.free, uint32(q.cqes[i].UserData))
		}
		q.inflight -= n
	}
	q.closed = true
	return q.ring.Close()
}
