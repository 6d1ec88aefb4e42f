package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/invariants"
)

// Setup flags (IORING_SETUP_*), as io_uring_setup takes them.
const (
	SetupIOPoll       uint32 = 1 << 0
	SetupSQPoll       uint32 = 1 << 1
	SetupSQAff        uint32 = 1 << 2
	SetupCQSize       uint32 = 1 << 3
	SetupClamp        uint32 = 1 << 4
	SetupSubmitAll    uint32 = 1 << 7
	SetupCoopTaskrun  uint32 = 1 << 8
	SetupTaskrunFlag  uint32 = 1 << 9
	SetupSQE128       uint32 = 1 << 10
	SetupCQE32        uint32 = 1 << 11
	SetupSingleIssuer uint32 = 1 << 12
	SetupDeferTaskrun uint32 = 1 << 13
)

// Features reported by the kernel (IORING_FEAT_*).
const (
	FeatSingleMmap    uint32 = 1 << 0
	FeatNoDrop        uint32 = 1 << 1
	FeatSubmitStable  uint32 = 1 << 2
	FeatFastPoll      uint32 = 1 << 5
	FeatExtArg        uint32 = 1 << 8
	FeatNativeWorkers uint32 = 1 << 9
)

// SQE flags (IOSQE_*).
const (
	SQEFixedFile      uint8  = 1 << 0
	SQEIODrain        uint8  = 1 << 1
	SQEIOLink         uint8  = 1 << 2
	SQEIOHardlink     uint8  = 1 << 3
	SQEAsync          uint8  = 1 << 4
	SQEBufferSelect   uint8  = 1 << 5
	SQECQESkipSuccess uint8  = 1 << 6
	FsyncDatasync     uint32 = 1 << 0 // IORING_FSYNC_DATASYNC, for PrepFsync
	defaultMaxRetries        = 1 << 16
)

// io_uring_enter flags and SQ ring flags.
const (
	enterGetEvents = 1 << 0
	enterSQWakeup  = 1 << 1

	sqNeedWakeup = 1 << 0
	sqCQOverflow = 1 << 1
	sqTaskrun    = 1 << 2
)

// io_uring_register opcodes.
const (
	registerBuffers   = 0
	unregisterBuffers = 1
	registerFiles     = 2
	unregisterFiles   = 3
	registerProbe     = 8
)

// mmap offsets.
const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// Errors. Kernel errors keep their syscall.Errno type inside the wrapping.
var (
	ErrClosed = errors.New("uring: ring closed")
	// ErrBusy means the kernel had no room for more completions: reap, then submit
	// again. The entries that were not submitted stay queued in order.
	ErrBusy = errors.New("uring: completion queue busy, reap before submitting more")
	// ErrSQFull is returned by helpers that need a free submission entry.
	ErrSQFull = errors.New("uring: submission queue full")
)

// UnsupportedOpError names an operation this kernel's io_uring does not offer.
type UnsupportedOpError struct{ Op Op }

func (e *UnsupportedOpError) Error() string {
	return fmt.Sprintf("uring: kernel does not support %s (opcode %d)", e.Op, uint8(e.Op))
}

// params mirrors struct io_uring_params (120 bytes).
type params struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32
	features     uint32
	wqFd         uint32
	resv         [3]uint32
	sqOff        sqringOffsets
	cqOff        cqringOffsets
}

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// SQE is one submission queue entry (struct io_uring_sqe, 64 bytes). With
// SetupSQE128 each entry is followed by 64 more bytes that Ring.Cmd exposes.
type SQE struct {
	Opcode      Op
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64 // offset; addr2 for some ops; cmd_op for URING_CMD (low 32 bits)
	Addr        uint64 // buffer or iovec address; splice_off_in
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, open_flags, statx_flags, msg_flags ...
	UserData    uint64
	BufIndex    uint16 // registered buffer index for READ_FIXED/WRITE_FIXED
	Personality uint16
	FileIndex   int32 // splice_fd_in / file_index
	Addr3       uint64
	pad         uint64
}

// CQE is a completion as the caller receives it: the kernel's io_uring_cqe copied out
// of the ring, with Big filled only on a SetupCQE32 ring.
type CQE struct {
	UserData uint64
	Res      int32 // bytes or a result, or -errno
	Flags    uint32
	Big      [2]uint64
}

// Err returns the completion's error as a syscall.Errno, or nil when Res >= 0.
func (c *CQE) Err() error {
	if c.Res < 0 {
		return unix.Errno(-c.Res)
	}
	return nil
}

type rawCQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Option configures New.
type Option func(*config)

type config struct {
	flags    uint32 // required
	optional uint32 // dropped one by one when the kernel answers EINVAL
	cqSize   uint32
	sqCPU    uint32
	sqIdle   uint32
}

// WithCQSize asks for a completion queue of n entries (IORING_SETUP_CQSIZE); the
// kernel rounds up to a power of two and requires n >= the SQ size.
func WithCQSize(n uint32) Option {
	return func(c *config) { c.flags |= SetupCQSize; c.cqSize = n }
}

// WithSQPoll starts a kernel submission thread that polls the SQ and sleeps after
// idle without work; submission then needs no system call while it is awake.
func WithSQPoll(idle time.Duration) Option {
	return func(c *config) { c.flags |= SetupSQPoll; c.sqIdle = uint32(idle / time.Millisecond) }
}

// WithSQThreadCPU pins the SQPOLL thread to cpu (IORING_SETUP_SQ_AFF).
func WithSQThreadCPU(cpu int) Option {
	return func(c *config) { c.flags |= SetupSQAff; c.sqCPU = uint32(cpu) }
}

// WithSQE128 makes entries 128 bytes, as URING_CMD for NVMe passthrough needs.
func WithSQE128() Option { return func(c *config) { c.flags |= SetupSQE128 } }

// WithCQE32 makes completions 32 bytes (the NVMe passthrough result lives in Big).
func WithCQE32() Option { return func(c *config) { c.flags |= SetupCQE32 } }

// WithCoopTaskrun asks that completions run as task work only when the ring's task
// enters the kernel (fewer interrupts); dropped on kernels without it.
func WithCoopTaskrun() Option {
	return func(c *config) { c.optional |= SetupCoopTaskrun | SetupTaskrunFlag }
}

// WithSingleIssuer promises the kernel a single submitting thread; dropped on kernels
// without it. The owner must be locked to its OS thread (see the package doc).
func WithSingleIssuer() Option { return func(c *config) { c.optional |= SetupSingleIssuer } }

// WithDeferTaskrun defers completion work until the owner waits for completions;
// implies WithSingleIssuer; dropped (with it) on kernels without it or with SQPOLL.
func WithDeferTaskrun() Option {
	return func(c *config) { c.optional |= SetupDeferTaskrun | SetupSingleIssuer | SetupTaskrunFlag }
}

// WithSubmitAll keeps submitting a batch after one entry fails; dropped on kernels
// without it.
func WithSubmitAll() Option { return func(c *config) { c.optional |= SetupSubmitAll } }

// Ring is one io_uring instance. See the package doc for the single-owner rule.
type Ring struct {
	fd       int
	flags    uint32
	features uint32
	sqe128   bool
	cqe32    bool

	sqHead, sqTail, sqFlags *uint32
	sqMask, sqEntries       uint32
	sqes                    []SQE // 2 per entry with SQE128
	sqeTail                 uint32

	cqHead, cqTail, cqOverflow *uint32
	cqMask, cqEntries          uint32
	cqes                       []rawCQE // 2 per entry with CQE32

	ringMem, sqeMem []byte
	probe           Probe
	closed          bool

	// MaxRetries bounds consecutive EINTR/EBUSY retries in one call.
	maxRetries int
}

// Flags returns the setup flags in effect (optional ones the kernel refused removed).
func (r *Ring) Flags() uint32 { return r.flags }

// Features returns the kernel's IORING_FEAT_* bits.
func (r *Ring) Features() uint32 { return r.features }

// SQEntries and CQEntries return the ring sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }

// CQEntries returns the completion queue size.
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// Fd returns the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// New sets up a ring with at least entries submission entries.
func New(entries uint32, opts ...Option) (*Ring, error) {
	if entries == 0 || entries > 32768 {
		return nil, fmt.Errorf("uring: %d entries: want 1..32768", entries)
	}
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.flags&SetupSQPoll != 0 {
		// DEFER_TASKRUN cannot be combined with SQPOLL; drop it up front rather than
		// through an EINVAL round trip.
		c.optional &^= SetupDeferTaskrun
	}
	if c.flags&SetupSQAff != 0 && c.flags&SetupSQPoll == 0 {
		return nil, errors.New("uring: WithSQThreadCPU needs WithSQPoll")
	}
	// Order in which optional flags are given up when the kernel says EINVAL.
	dropOrder := []uint32{SetupDeferTaskrun, SetupSingleIssuer, SetupCoopTaskrun | SetupTaskrunFlag, SetupSubmitAll}
	optional := c.optional
	for {
		p := params{flags: c.flags | optional, sqThreadCPU: c.sqCPU, sqThreadIdle: c.sqIdle, cqEntries: c.cqSize}
		fd, errno := setup(entries, &p)
		if errno == 0 {
			r, err := newRing(fd, &p)
			if err != nil {
				unix.Close(fd)
				return nil, err
			}
			return r, nil
		}
		if errno != unix.EINVAL || optional == 0 {
			return nil, fmt.Errorf("uring: io_uring_setup(%d entries, flags %#x): %w", entries, c.flags|optional, errno)
		}
		for _, d := range dropOrder {
			if optional&d != 0 {
				optional &^= d
				break
			}
		}
	}
}

func newRing(fd int, p *params) (*Ring, error) {
	r := &Ring{
		fd:         fd,
		flags:      p.flags,
		features:   p.features,
		sqe128:     p.flags&SetupSQE128 != 0,
		cqe32:      p.flags&SetupCQE32 != 0,
		maxRetries: defaultMaxRetries,
	}
	if p.features&FeatSingleMmap == 0 {
		return nil, errors.New("uring: kernel lacks IORING_FEAT_SINGLE_MMAP (Linux < 5.4)")
	}
	if err := r.mapRings(p); err != nil {
		return nil, err
	}
	if err := r.loadProbe(); err != nil {
		r.unmap()
		return nil, err
	}
	return r, nil
}

// Close unmaps the rings and closes the ring's descriptor. The kernel finishes or
// cancels requests still in flight; their completions are not delivered.
func (r *Ring) Close() error {
	if r.closed {
		return ErrClosed
	}
	r.closed = true
	r.unmap()
	return unix.Close(r.fd)
}

// SQSpace returns how many entries GetSQE can hand out before the next submission.
func (r *Ring) SQSpace() uint32 {
	return r.sqEntries - (r.sqeTail - atomic.LoadUint32(r.sqHead))
}

// GetSQE returns the next free submission entry, zeroed, or nil when the SQ is full
// (submit, or with SQPOLL wait for the poller, first). The entry is submitted by the
// next Submit, SubmitAndWait or WaitCQEs.
func (r *Ring) GetSQE() *SQE {
	if r.closed || r.sqeTail-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		return nil
	}
	i := r.sqeTail & r.sqMask
	r.sqeTail++
	if r.sqe128 {
		s := &r.sqes[2*i]
		*s = SQE{}
		r.sqes[2*i+1] = SQE{}
		return s
	}
	s := &r.sqes[i]
	*s = SQE{}
	return s
}

// Pending returns the number of prepared entries the kernel has not consumed yet.
func (r *Ring) Pending() uint32 { return r.sqeTail - atomic.LoadUint32(r.sqHead) }

// publish makes prepared entries visible to the kernel and returns how many it has
// not consumed yet.
func (r *Ring) publish() uint32 {
	if atomic.LoadUint32(r.sqTail) != r.sqeTail {
		atomic.StoreUint32(r.sqTail, r.sqeTail)
	}
	return r.sqeTail - atomic.LoadUint32(r.sqHead)
}

// Submit hands every prepared entry to the kernel and returns how many it consumed.
// ErrBusy means it took none for lack of completion space: reap, then submit again.
func (r *Ring) Submit() (int, error) { return r.SubmitAndWait(0) }

// SubmitAndWait submits and then blocks until at least wait completions are visible
// (it does not reap them). Interruptions by signals are retried.
func (r *Ring) SubmitAndWait(wait uint32) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	before := atomic.LoadUint32(r.sqHead)
	for retries := 0; ; retries++ {
		pending := r.publish()
		var flags uint32
		toSubmit := pending
		if r.flags&SetupSQPoll != 0 {
			toSubmit = 0 // the poller consumes them; only wake it if it sleeps
			if atomic.LoadUint32(r.sqFlags)&sqNeedWakeup != 0 {
				flags |= enterSQWakeup
			}
		}
		if wait > 0 || r.needFlush() {
			flags |= enterGetEvents
		}
		if wait > 0 && r.cqReady() >= wait {
			flags &^= enterGetEvents
			wait = 0
		}
		if toSubmit == 0 && flags == 0 {
			break
		}
		_, err := r.enter(toSubmit, wait, flags)
		if err == nil {
			break
		}
		if retries >= r.maxRetries {
			return int(atomic.LoadUint32(r.sqHead) - before), fmt.Errorf("uring: io_uring_enter: %w after %d retries", err, retries)
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EBUSY, unix.EAGAIN:
			return int(atomic.LoadUint32(r.sqHead) - before), ErrBusy
		default:
			return int(atomic.LoadUint32(r.sqHead) - before), fmt.Errorf("uring: io_uring_enter: %w", err)
		}
	}
	if r.flags&SetupSQPoll != 0 {
		return int(r.sqeTail - before), nil
	}
	return int(atomic.LoadUint32(r.sqHead) - before), nil
}

// needFlush reports whether completions are parked in the kernel: overflowed past a
// full CQ, or deferred task work that only an enter with GETEVENTS runs.
func (r *Ring) needFlush() bool {
	return atomic.LoadUint32(r.sqFlags)&(sqCQOverflow|sqTaskrun) != 0
}

func (r *Ring) cqReady() uint32 {
	return atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead)
}

// PeekCQEs copies visible completions into out without entering the kernel, unless
// completions are parked there (overflow or deferred task work), and returns how
// many it copied. It never blocks.
func (r *Ring) PeekCQEs(out []CQE) int {
	if r.closed {
		return 0
	}
	n := r.copyCQEs(out)
	// Each flush moves at most a CQ's worth of parked completions; the bound keeps a
	// misbehaving kernel from spinning us forever.
	for i := 0; n < len(out) && i < len(out)/int(r.cqEntries)+2 && r.needFlush(); i++ {
		if _, err := r.enter(0, 0, enterGetEvents); err != nil && err != unix.EINTR && err != unix.EBUSY && err != unix.EAGAIN {
			break
		}
		n += r.copyCQEs(out[n:])
	}
	return n
}

func (r *Ring) copyCQEs(out []CQE) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	if invariants.Enabled {
		invariants.Check(tail-head <= r.cqEntries, "uring: CQ holds %d completions in %d entries", tail-head, r.cqEntries)
	}
	n := 0
	for head != tail && n < len(out) {
		i := head & r.cqMask
		if r.cqe32 {
			c := &r.cqes[2*i]
			big := &r.cqes[2*i+1]
			out[n] = CQE{UserData: c.UserData, Res: c.Res, Flags: c.Flags,
				Big: [2]uint64{big.UserData, uint64(uint32(big.Res)) | uint64(big.Flags)<<32}}
		} else {
			c := &r.cqes[i]
			out[n] = CQE{UserData: c.UserData, Res: c.Res, Flags: c.Flags}
		}
		head++
		n++
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}

// WaitCQEs submits prepared entries, then blocks until at least min completions have
// been copied into out (min <= len(out)), and returns how many it copied (up to
// len(out)). The caller must know that min completions are outstanding, or it waits
// for ever. Signals (Go's SIGURG preemption) interrupt the wait; it keeps waiting
// until completions are actually visible, a bounded number of times.
func (r *Ring) WaitCQEs(min int, out []CQE) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	if min > len(out) {
		return 0, fmt.Errorf("uring: WaitCQEs(min %d) with room for %d", min, len(out))
	}
	n := r.PeekCQEs(out)
	for retries := 0; n < min; retries++ {
		if retries > r.maxRetries {
			return n, fmt.Errorf("uring: no completion after %d interrupted waits: %w", retries, unix.EINTR)
		}
		pending := r.publish()
		flags := uint32(enterGetEvents)
		if r.flags&SetupSQPoll != 0 {
			pending = 0
			if atomic.LoadUint32(r.sqFlags)&sqNeedWakeup != 0 {
				flags |= enterSQWakeup
			}
		}
		_, err := r.enter(pending, uint32(min-n), flags)
		switch err {
		case nil, unix.EINTR, unix.EBUSY, unix.EAGAIN:
			// EBUSY/EAGAIN: the kernel could not take submissions because the CQ is
			// full; reaping below makes room.
		case unix.ETIME:
		default:
			return n, fmt.Errorf("uring: io_uring_enter: %w", err)
		}
		n += r.PeekCQEs(out[n:])
	}
	return n, nil
}

// CancelPending withdraws prepared entries the kernel has not consumed, for an owner
// whose submission failed for good (so it can fail those requests itself instead of
// waiting for completions that will never come). It returns how many it withdrew;
// with SQPOLL the poller may already be reading them, so it withdraws none.
func (r *Ring) CancelPending() int {
	if r.closed || r.flags&SetupSQPoll != 0 {
		return 0
	}
	head := atomic.LoadUint32(r.sqHead)
	n := r.sqeTail - head
	r.sqeTail = head
	atomic.StoreUint32(r.sqTail, head)
	return int(n)
}
