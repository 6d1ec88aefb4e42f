// Package blockdev is polytropon's block device contract: Device, block-granular
// reads and writes of aligned buffers with a synchronous form (ReadAt, WriteAt) and an
// asynchronous form for queue depth (Queue: Submit and Poll), plus the errors and
// checks every implementation shares.
//
// Implementations live elsewhere: file (regular files, loop and raw block devices
// through io_uring), mem (memory, for tests), rbd (a Ceph RBD image), and
// drivers/nvme (NVMe passthrough and a user-level VFIO driver); wrappers crash,
// faulty and cache stack on any Device and expose Unwrap. Queues come from one of
// two cores: SyncQueue (here) performs each request inside Submit through the
// Device's synchronous methods, and ringqueue runs them on io_uring for file and
// the NVMe passthrough device. blockdevtest is the conformance suite every
// implementation passes; alignedbuf allocates the buffers O_DIRECT and io_uring
// need.
//
// # Rules every implementation keeps
//
//   - Alignment: the offset, the length and the buffer's address of every read and
//     write are multiples of BlockSize(); anything else fails with an *AlignmentError
//     that names the required alignment (and matches unix.EINVAL), before any I/O.
//   - Range: Size() is fixed when the device is opened. A read that starts at or past
//     the end, or runs over it, is short, as pread is: ReadAt returns the bytes it read
//     with io.EOF, a Queue completion carries the short count and no error. A write
//     that runs past the end fails with a *RangeError (matching unix.ENOSPC) and writes
//     nothing.
//   - Concurrency: ReadAt, WriteAt, Flush, Size, BlockSize, OptimalIOSize and NewQueue
//     are safe for concurrent use. A Queue is owned by one goroutine at a time (it maps
//     onto one io_uring, which has one owner); give each goroutine its own. Concurrent
//     writes to overlapping blocks leave either one's data, block by block.
//   - Ownership: a buffer passed to Submit belongs to the device until its completion
//     has been returned by Poll; it must be heap or mmap memory (alignedbuf), never a
//     stack array, because the kernel holds only its address.
//   - Close: after Close every call fails with ErrClosed, never hangs, and a Queue's
//     Poll still returns the completions of requests it had in flight. Close the
//     device's queues too; a queue outliving its device only drains.
//   - Durability: a completed write may sit in a volatile cache until Flush (or an
//     OpFlush request) completes.
//
// There are no locks in this package.
//
// Measure a device with `polytropon perf blockdev --dev PATH --vs-fio` (a file,
// a block device, /dev/ngXnY or nvme:PCIADDR, beside fio), or in process with
// `go test -run '^$' -bench . -benchmem ./blockdev/...`.
package blockdev

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// Device is a block device. See the package doc for alignment, range, concurrency and
// ownership rules.
type Device interface {
	// ReadAt reads len(p) bytes at off, short with io.EOF at the end of the device.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes p at off.
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes completed writes durable.
	Flush() error
	// Size is the device's size in bytes, a multiple of BlockSize.
	Size() int64
	// BlockSize is the alignment of offsets, lengths and buffer addresses: a power of
	// two from 512 to the page size.
	BlockSize() int
	// OptimalIOSize is the request size the device prefers, a multiple of BlockSize.
	OptimalIOSize() int
	// NewQueue returns a queue that keeps up to depth requests in flight.
	NewQueue(depth int) (Queue, error)
	// Close releases the device. It is an error to close twice.
	Close() error
}

// Op is what a Request does.
type Op uint8

// Request operations.
const (
	OpRead Op = iota + 1
	OpWrite
	OpFlush
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Request is one asynchronous operation. Buf and Off are ignored for OpFlush.
type Request struct {
	Op     Op
	Buf    []byte
	Off    int64
	Cookie uint64 // returned unchanged in the Completion
}

// Completion reports one finished Request.
type Completion struct {
	Cookie uint64
	N      int   // bytes transferred; short for a read over the end
	Err    error // nil, or a syscall.Errno, ErrClosed or an injected fault
}

// Queue keeps up to Depth requests in flight for one owning goroutine.
type Queue interface {
	// Submit starts reqs in order and returns how many it accepted: all of them, or
	// fewer when the queue is full (InFlight == Depth). A request that breaks the
	// alignment or range rules is not accepted; Submit returns the count before it
	// and the error. After the device or queue is closed Submit returns ErrClosed.
	Submit(reqs []Request) (int, error)
	// Poll waits until at least min requests have completed (min is clamped to
	// InFlight and len(out)), writes up to len(out) completions into out and returns
	// how many. Poll(0, out) never blocks.
	Poll(min int, out []Completion) (int, error)
	// Depth is the queue's capacity, InFlight the number of accepted requests whose
	// completions Poll has not returned yet.
	Depth() int
	InFlight() int
	// Close waits for requests in flight, discards their completions and releases
	// the queue.
	Close() error
}

// BufferRegistrar is implemented by queues that can pin buffers in the kernel once
// (io_uring registered buffers) and then skip per-request page pinning; requests whose
// Buf lies inside a registered buffer use it automatically.
type BufferRegistrar interface {
	RegisterBuffers(bufs [][]byte) error
}

// Unwrapper is implemented by wrappers (crash, faulty, cache).
type Unwrapper interface {
	Unwrap() Device
}

// ErrClosed is returned by every operation on a closed device or queue.
var ErrClosed = errors.New("blockdev: device closed")

// AlignmentError reports an offset, length or buffer address that is not a multiple
// of the device's block size.
type AlignmentError struct {
	What  string // "offset", "length" or "buffer address"
	Value int64
	Align int
}

func (e *AlignmentError) Error() string {
	return fmt.Sprintf("blockdev: %s %d (%#x) is not a multiple of the required alignment %d", e.What, e.Value, e.Value, e.Align)
}

// Unwrap makes an AlignmentError match unix.EINVAL, as the kernel's O_DIRECT answers.
func (e *AlignmentError) Unwrap() error { return unix.EINVAL }

// RangeError reports a write that runs past the end of the device.
type RangeError struct {
	Off, Len, Size int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("blockdev: write of %d bytes at %d runs past the end of the device (%d bytes)", e.Len, e.Off, e.Size)
}

// Unwrap makes a RangeError match unix.ENOSPC, as a block device answers.
func (e *RangeError) Unwrap() error { return unix.ENOSPC }

// CheckAligned returns an *AlignmentError unless off, len(p) and p's address are
// multiples of blockSize (a power of two), or nil.
func CheckAligned(p []byte, off int64, blockSize int) error {
	mask := int64(blockSize - 1)
	if off&mask != 0 || off < 0 {
		return &AlignmentError{What: "offset", Value: off, Align: blockSize}
	}
	if int64(len(p))&mask != 0 {
		return &AlignmentError{What: "length", Value: int64(len(p)), Align: blockSize}
	}
	if a := int64(addr(p)); a&mask != 0 {
		return &AlignmentError{What: "buffer address", Value: a, Align: blockSize}
	}
	return nil
}

// CheckWrite checks a write's alignment and that it ends within size.
func CheckWrite(p []byte, off int64, blockSize int, size int64) error {
	if err := CheckAligned(p, off, blockSize); err != nil {
		return err
	}
	if off+int64(len(p)) > size {
		return &RangeError{Off: off, Len: int64(len(p)), Size: size}
	}
	return nil
}

// ClampRead checks a read's alignment and returns how many of its bytes lie within
// size (0 when it starts at or past the end).
func ClampRead(p []byte, off int64, blockSize int, size int64) (int, error) {
	if err := CheckAligned(p, off, blockSize); err != nil {
		return 0, err
	}
	if off >= size {
		return 0, nil
	}
	return int(min(int64(len(p)), size-off)), nil
}

// ShortRead turns a clamped read length into ReadAt's result: io.EOF when short.
func ShortRead(n, want int) (int, error) {
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// PollBounds returns how many completions a Queue's Poll may wait for (wait)
// and collect at most (lim), given the caller's minimum, the room in out, the
// queue's completion scratch space and its requests in flight: never more than
// fits, never a wait for completions that cannot come.
func PollBounds(minimum, outLen, scratch, inflight int) (wait, lim int) {
	lim = min(outLen, scratch)
	return max(0, min(minimum, inflight, lim)), lim
}
