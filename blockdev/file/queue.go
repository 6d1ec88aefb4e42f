package file

import (
	"errors"
	"fmt"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/ringqueue"
	"github.com/polytropon/polytropon/drivers/uring"
)

// maxRegions bounds the registered buffer regions a queue looks requests up in.
const maxRegions = 16

// ringQueue is a blockdev.Queue on one io_uring (ringqueue's core): reads,
// writes and fdatasync on the file, registered as fixed file 0, with
// READ_FIXED/WRITE_FIXED for buffers inside registered regions.
type ringQueue struct {
	*ringqueue.Queue
	ops *fileOps
}

// fileOps is the file's half of a ringQueue (ringqueue.Device).
type fileOps struct {
	dev     *File
	regions []region // registered buffers; changed only with nothing in flight
}

type region struct {
	base, end uintptr
	index     uint16
}

var (
	_ blockdev.Queue           = (*ringQueue)(nil)
	_ blockdev.BufferRegistrar = (*ringQueue)(nil)
	_ ringqueue.Device         = (*fileOps)(nil)
)

func newRingQueue(d *File, depth int) (*ringQueue, error) {
	ops := &fileOps{dev: d}
	rq, err := ringqueue.New(ops, ringqueue.Config{Depth: depth, File: d.f,
		Ring:    []uring.Option{uring.WithCoopTaskrun(), uring.WithSubmitAll()},
		Require: []uring.Op{uring.OpRead, uring.OpWrite, uring.OpReadFixed, uring.OpWriteFixed, uring.OpFsync}})
	if err != nil {
		return nil, err
	}
	return &ringQueue{Queue: rq, ops: ops}, nil
}

// RegisterBuffers implements blockdev.BufferRegistrar: requests whose buffer lies
// inside one of bufs then use READ_FIXED/WRITE_FIXED. It replaces earlier ones.
func (q *ringQueue) RegisterBuffers(bufs [][]byte) error {
	if q.Closed() {
		return blockdev.ErrClosed
	}
	if len(bufs) > maxRegions {
		return fmt.Errorf("file: %d buffer regions, at most %d", len(bufs), maxRegions)
	}
	if q.InFlight() > 0 {
		return errors.New("file: RegisterBuffers with requests in flight")
	}
	ring := q.Ring()
	if len(q.ops.regions) > 0 {
		if err := ring.UnregisterBuffers(); err != nil {
			return err
		}
		q.ops.regions = q.ops.regions[:0]
	}
	if err := ring.RegisterBuffers(bufs); err != nil {
		return err
	}
	for i, b := range bufs {
		base := addrOf(b)
		q.ops.regions = append(q.ops.regions, region{base: base, end: base + uintptr(len(b)), index: uint16(i)})
	}
	return nil
}

func (o *fileOps) fixedIndex(b []byte) (uint16, bool) {
	if len(o.regions) == 0 || len(b) == 0 {
		return 0, false
	}
	a := addrOf(b)
	for _, r := range o.regions {
		if a >= r.base && a+uintptr(len(b)) <= r.end {
			return r.index, true
		}
	}
	return 0, false
}

// Check implements ringqueue.Device: alignment and range, as pread and pwrite
// on the device would see them.
func (o *fileOps) Check(i int, r *blockdev.Request) (int, uint8, error) {
	d := o.dev
	switch r.Op {
	case blockdev.OpRead:
		n, err := blockdev.ClampRead(r.Buf, r.Off, d.bs, d.size)
		return n, 0, err
	case blockdev.OpWrite:
		return len(r.Buf), 0, blockdev.CheckWrite(r.Buf, r.Off, d.bs, d.size)
	case blockdev.OpFlush:
		return 0, 0, nil
	}
	return 0, 0, fmt.Errorf("file: request %d has unknown %v", i, r.Op)
}

// Prep implements ringqueue.Device.
func (o *fileOps) Prep(_ *uring.Ring, s *uring.SQE, r *blockdev.Request, sl *ringqueue.Slot, ud uint64) {
	switch r.Op {
	case blockdev.OpRead:
		if idx, ok := o.fixedIndex(r.Buf); ok {
			s.PrepReadFixed(0, r.Buf[:sl.N], r.Off, idx, ud)
		} else {
			s.PrepRead(0, r.Buf[:sl.N], r.Off, ud)
		}
	case blockdev.OpWrite:
		if idx, ok := o.fixedIndex(r.Buf); ok {
			s.PrepWriteFixed(0, r.Buf, r.Off, idx, ud)
		} else {
			s.PrepWrite(0, r.Buf, r.Off, ud)
		}
	case blockdev.OpFlush:
		s.PrepFsync(0, uring.FsyncDatasync, ud)
	}
	s.UseFixedFile()
}

// Complete implements ringqueue.Device: the bytes the kernel transferred.
func (o *fileOps) Complete(res int32, _ *ringqueue.Slot) blockdev.Completion {
	return blockdev.Completion{N: int(res)}
}

// Closed implements ringqueue.Device.
func (o *fileOps) Closed() bool { return o.dev.closed.Load() }
