package file

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/drivers/uring"
)

// maxRegions bounds the registered buffer regions a queue looks requests up in.
const maxRegions = 16

// ringQueue is a blockdev.Queue on one io_uring. The file is registered as fixed
// file 0, so the ring keeps it open for requests in flight.
type ringQueue struct {
	dev      *File
	ring     *uring.Ring
	depth    int
	inflight int
	cqes     []uring.CQE
	regions  []region
	closed   bool
}

type region struct {
	base, end uintptr
	index     uint16
}

var (
	_ blockdev.Queue           = (*ringQueue)(nil)
	_ blockdev.BufferRegistrar = (*ringQueue)(nil)
)

func newRingQueue(d *File, depth int) (*ringQueue, error) {
	ring, err := uring.New(uint32(depth), uring.WithCoopTaskrun(), uring.WithSubmitAll())
	if err != nil {
		return nil, err
	}
	if err := ring.Require(uring.OpRead, uring.OpWrite, uring.OpReadFixed, uring.OpWriteFixed, uring.OpFsync, uring.OpNop); err != nil {
		ring.Close()
		return nil, err
	}
	rc, err := d.f.SyscallConn()
	if err != nil {
		ring.Close()
		return nil, fileErr(err)
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) { rerr = ring.RegisterFiles([]int32{int32(fd)}) }); err != nil {
		ring.Close()
		return nil, fileErr(err)
	}
	if rerr != nil {
		ring.Close()
		return nil, rerr
	}
	return &ringQueue{dev: d, ring: ring, depth: depth, cqes: make([]uring.CQE, depth)}, nil
}

// RegisterBuffers implements blockdev.BufferRegistrar: requests whose buffer lies
// inside one of bufs then use READ_FIXED/WRITE_FIXED. It replaces earlier ones.
func (q *ringQueue) RegisterBuffers(bufs [][]byte) error {
	if q.closed {
		return blockdev.ErrClosed
	}
	if len(bufs) > maxRegions {
		return fmt.Errorf("file: %d buffer regions, at most %d", len(bufs), maxRegions)
	}
	if q.inflight > 0 {
		return errors.New("file: RegisterBuffers with requests in flight")
	}
	if len(q.regions) > 0 {
		if err := q.ring.UnregisterBuffers(); err != nil {
			return err
		}
		q.regions = q.regions[:0]
	}
	if err := q.ring.RegisterBuffers(bufs); err != nil {
		return err
	}
	for i, b := range bufs {
		base := addrOf(b)
		q.regions = append(q.regions, region{base: base, end: base + uintptr(len(b)), index: uint16(i)})
	}
	return nil
}

func (q *ringQueue) fixedIndex(b []byte) (uint16, bool) {
	if len(q.regions) == 0 || len(b) == 0 {
		return 0, false
	}
	a := addrOf(b)
	for _, r := range q.regions {
		if a >= r.base && a+uintptr(len(b)) <= r.end {
			return r.index, true
		}
	}
	return 0, false
}

// Submit implements blockdev.Queue.
func (q *ringQueue) Submit(reqs []blockdev.Request) (int, error) {
	if q.closed || q.dev.closed.Load() {
		return 0, blockdev.ErrClosed
	}
	d := q.dev
	accepted := 0
	var reqErr error
	for i := range reqs {
		if q.inflight == q.depth {
			break
		}
		r := &reqs[i]
		var s *uring.SQE
		switch r.Op {
		case blockdev.OpRead:
			n, err := blockdev.ClampRead(r.Buf, r.Off, d.bs, d.size)
			if err != nil {
				reqErr = err
				break
			}
			s = q.ring.GetSQE()
			if n == 0 {
				// Entirely past the end: complete with 0 bytes, as pread would.
				s.PrepNop(r.Cookie)
			} else if idx, ok := q.fixedIndex(r.Buf); ok {
				s.PrepReadFixed(0, r.Buf[:n], r.Off, idx, r.Cookie)
				s.UseFixedFile()
			} else {
				s.PrepRead(0, r.Buf[:n], r.Off, r.Cookie)
				s.UseFixedFile()
			}
		case blockdev.OpWrite:
			if err := blockdev.CheckWrite(r.Buf, r.Off, d.bs, d.size); err != nil {
				reqErr = err
				break
			}
			s = q.ring.GetSQE()
			if idx, ok := q.fixedIndex(r.Buf); ok {
				s.PrepWriteFixed(0, r.Buf, r.Off, idx, r.Cookie)
			} else {
				s.PrepWrite(0, r.Buf, r.Off, r.Cookie)
			}
			s.UseFixedFile()
		case blockdev.OpFlush:
			s = q.ring.GetSQE()
			s.PrepFsync(0, uring.FsyncDatasync, r.Cookie)
			s.UseFixedFile()
		default:
			reqErr = fmt.Errorf("file: request %d has unknown %v", i, r.Op)
		}
		if reqErr != nil {
			break
		}
		q.inflight++
		accepted++
	}
	if accepted > 0 {
		if _, err := q.ring.Submit(); err != nil && !errors.Is(err, uring.ErrBusy) {
			// The kernel refused the batch: withdraw what it did not take, so Poll
			// never waits for completions that cannot come.
			n := q.ring.CancelPending()
			q.inflight -= n
			return accepted - n, err
		}
	}
	return accepted, reqErr
}

// Poll implements blockdev.Queue.
func (q *ringQueue) Poll(min int, out []blockdev.Completion) (int, error) {
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
		if c.Res < 0 {
			out[i] = blockdev.Completion{Cookie: c.UserData, Err: unix.Errno(-c.Res)}
		} else {
			out[i] = blockdev.Completion{Cookie: c.UserData, N: int(c.Res)}
		}
	}
	q.inflight -= n
	return n, err
}

// Depth implements blockdev.Queue.
func (q *ringQueue) Depth() int { return q.depth }

// InFlight implements blockdev.Queue.
func (q *ringQueue) InFlight() int { return q.inflight }

// Close implements blockdev.Queue.
func (q *ringQueue) Close() error {
	if q.closed {
		return blockdev.ErrClosed
	}
	for q.inflight > 0 {
		n, err := q.ring.WaitCQEs(1, q.cqes)
		if err != nil {
			break
		}
		q.inflight -= n
	}
	q.closed = true
	return q.ring.Close()
}
