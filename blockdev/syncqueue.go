package blockdev

import (
	"errors"
	"fmt"
	"io"
)

// SyncQueue is a Queue that performs each request inside Submit through a Device's
// synchronous methods and holds the completions until Poll. Devices with no
// asynchronous path of their own (memory, wrappers, buffered files where io_uring
// would only punt to worker threads) use it. Its completion ring is fixed at depth.
type SyncQueue struct {
	dev    Device
	ring   []Completion
	head   int // next completion to return
	n      int // completions held
	closed bool
}

var _ Queue = (*SyncQueue)(nil)

// NewSyncQueue returns a queue of depth requests over dev.
func NewSyncQueue(dev Device, depth int) (*SyncQueue, error) {
	if depth < 1 || depth > 1<<16 {
		return nil, fmt.Errorf("blockdev: queue depth %d: want 1..65536", depth)
	}
	return &SyncQueue{dev: dev, ring: make([]Completion, depth)}, nil
}

// Submit implements Queue.
func (q *SyncQueue) Submit(reqs []Request) (int, error) {
	if q.closed {
		return 0, ErrClosed
	}
	bs := q.dev.BlockSize()
	for i, r := range reqs {
		if q.n == len(q.ring) {
			return i, nil
		}
		c := Completion{Cookie: r.Cookie}
		switch r.Op {
		case OpRead:
			if err := CheckAligned(r.Buf, r.Off, bs); err != nil {
				return i, err
			}
			c.N, c.Err = q.dev.ReadAt(r.Buf, r.Off)
			if c.Err == io.EOF {
				c.Err = nil
			}
		case OpWrite:
			if err := CheckWrite(r.Buf, r.Off, bs, q.dev.Size()); err != nil {
				return i, err
			}
			c.N, c.Err = q.dev.WriteAt(r.Buf, r.Off)
		case OpFlush:
			c.Err = q.dev.Flush()
		default:
			return i, fmt.Errorf("blockdev: request %d has unknown %v", i, r.Op)
		}
		if errors.Is(c.Err, ErrClosed) && i == 0 {
			return 0, ErrClosed
		}
		q.ring[(q.head+q.n)%len(q.ring)] = c
		q.n++
	}
	return len(reqs), nil
}

// Poll implements Queue; every accepted request has already completed.
func (q *SyncQueue) Poll(min int, out []Completion) (int, error) {
	k := 0
	for k < len(out) && q.n > 0 {
		out[k] = q.ring[q.head]
		q.ring[q.head] = Completion{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		k++
	}
	return k, nil
}

// Depth implements Queue.
func (q *SyncQueue) Depth() int { return len(q.ring) }

// InFlight implements Queue.
func (q *SyncQueue) InFlight() int { return q.n }

// Close implements Queue.
func (q *SyncQueue) Close() error {
	if q.closed {
		return ErrClosed
	}
	q.closed = true
	q.n = 0
	return nil
}

// AlignedScratch returns an n-byte buffer whose address is aligned to n (a power of
// two up to the page size), for wrappers that copy blocks to an inner device.
func AlignedScratch(n int) []byte {
	b := make([]byte, 2*n)
	off := int(addr(b) & uintptr(n-1))
	if off != 0 {
		off = n - off
	}
	return b[off : off+n : off+n]
}
