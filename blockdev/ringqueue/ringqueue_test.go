package ringqueue

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/drivers/uring"
	"github.com/polytropon/polytropon/internal/testenv"
)

// fileOps is the smallest real device: buffered reads and writes on a regular
// file through the ring (block size 1), with OpFlush as a NOP so that the
// benchmark measures the core and the ring, not a disk.
type fileOps struct {
	size   int64
	closed atomic.Bool
	preps  int // Prep calls
}

func (o *fileOps) Check(i int, r *blockdev.Request) (int, uint8, error) {
	switch r.Op {
	case blockdev.OpRead:
		n, err := blockdev.ClampRead(r.Buf, r.Off, 1, o.size)
		return n, 0, err
	case blockdev.OpWrite:
		return len(r.Buf), 0, blockdev.CheckWrite(r.Buf, r.Off, 1, o.size)
	case blockdev.OpFlush:
		return 0, 0, nil
	}
	return 0, 0, fmt.Errorf("test: request %d has unknown %v", i, r.Op)
}

func (o *fileOps) Prep(_ *uring.Ring, s *uring.SQE, r *blockdev.Request, sl *Slot, ud uint64) {
	o.preps++
	switch r.Op {
	case blockdev.OpRead:
		s.PrepRead(0, r.Buf[:sl.N], r.Off, ud)
	case blockdev.OpWrite:
		s.PrepWrite(0, r.Buf, r.Off, ud)
	default:
		s.PrepNop(ud)
		return
	}
	s.UseFixedFile()
}

func (o *fileOps) Complete(res int32, _ *Slot) blockdev.Completion {
	return blockdev.Completion{N: int(res)}
}
func (o *fileOps) Closed() bool { return o.closed.Load() }

const fileSize = 64 << 10

// open makes a file of fileSize bytes (byte i is i*7) and a queue on it.
func open(t testing.TB, depth, flag int) (*Queue, *fileOps, []byte) {
	t.Helper()
	testenv.IOUring(t)
	data := make([]byte, fileSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ops := &fileOps{size: fileSize}
	q, err := New(ops, Config{Depth: depth, File: f, Require: []uring.Op{uring.OpRead, uring.OpWrite}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !q.Closed() {
			q.Close()
		}
	})
	return q, ops, data
}

// reap polls until want completions arrived.
func reap(t testing.TB, q *Queue, want int) []blockdev.Completion {
	t.Helper()
	out := make([]blockdev.Completion, want)
	for got := 0; got < want; {
		n, err := q.Poll(1, out[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	return out
}

// TestSubmitPoll: a queue takes at most Depth requests, each completion comes
// back with its own cookie and count, slots are reused, and a read wholly past
// the end completes with 0 bytes without reaching the device.
func TestSubmitPoll(t *testing.T) {
	const depth = 4
	q, ops, data := open(t, depth, os.O_RDWR)
	bufs := make([][]byte, depth+2)
	reqs := make([]blockdev.Request, depth+2)
	for i := range reqs {
		bufs[i] = make([]byte, 4096)
		reqs[i] = blockdev.Request{Op: blockdev.OpRead, Buf: bufs[i], Off: int64(i) * 4096, Cookie: uint64(100 + i)}
	}
	n, err := q.Submit(reqs)
	if n != depth || err != nil || q.InFlight() != depth || q.Depth() != depth {
		t.Fatalf("Submit of %d into depth %d: %d, %v; in flight %d", len(reqs), depth, n, err, q.InFlight())
	}
	if n, err := q.Submit(reqs[depth:]); n != 0 || err != nil {
		t.Fatalf("Submit into a full queue: %d, %v", n, err)
	}
	for _, c := range reap(t, q, depth) {
		i := int(c.Cookie - 100)
		if c.Err != nil || c.N != 4096 || !bytes.Equal(bufs[i], data[i*4096:(i+1)*4096]) {
			t.Fatalf("completion %+v: data of request %d wrong or failed", c, i)
		}
	}
	if q.InFlight() != 0 {
		t.Fatalf("%d in flight after every completion", q.InFlight())
	}
	// Many rounds through the same slots: every cookie comes back once.
	for round := 0; round < 50; round++ {
		for i := range reqs[:depth] {
			reqs[i].Cookie = uint64(round*depth + i)
		}
		if n, err := q.Submit(reqs[:depth]); n != depth || err != nil {
			t.Fatalf("round %d: Submit %d, %v", round, n, err)
		}
		seen := map[uint64]bool{}
		for _, c := range reap(t, q, depth) {
			if c.Err != nil || seen[c.Cookie] || c.Cookie/depth != uint64(round) {
				t.Fatalf("round %d: completion %+v (seen %v)", round, c, seen)
			}
			seen[c.Cookie] = true
		}
	}
	// Over the end: short; wholly past it: 0 bytes, a NOP the device never saw.
	preps := ops.preps
	over := []blockdev.Request{
		{Op: blockdev.OpRead, Buf: bufs[0], Off: fileSize - 1000, Cookie: 1},
		{Op: blockdev.OpRead, Buf: bufs[1], Off: fileSize, Cookie: 2},
		{Op: blockdev.OpRead, Buf: bufs[2], Off: fileSize + 8192, Cookie: 3},
	}
	if n, err := q.Submit(over); n != 3 || err != nil {
		t.Fatalf("Submit over the end: %d, %v", n, err)
	}
	for _, c := range reap(t, q, 3) {
		want := map[uint64]int{1: 1000, 2: 0, 3: 0}[c.Cookie]
		if c.Err != nil || c.N != want {
			t.Fatalf("read over the end: %+v, want %d bytes", c, want)
		}
	}
	if ops.preps != preps+1 {
		t.Fatalf("the device prepared %d of 3 reads over the end, want 1", ops.preps-preps)
	}
	// Poll with nothing in flight, or no room, returns at once.
	if n, err := q.Poll(1, make([]blockdev.Completion, 1)); n != 0 || err != nil {
		t.Fatalf("Poll with nothing in flight: %d, %v", n, err)
	}
}

// TestBadRequest: a request the device refuses ends the batch; the ones
// before it are in flight and complete.
func TestBadRequest(t *testing.T) {
	q, _, _ := open(t, 8, os.O_RDWR)
	buf := make([]byte, 512)
	reqs := []blockdev.Request{
		{Op: blockdev.OpRead, Buf: buf, Cookie: 1},
		{Op: blockdev.OpFlush, Cookie: 2},
		{Op: blockdev.Op(99), Cookie: 3},
		{Op: blockdev.OpRead, Buf: buf, Cookie: 4},
	}
	n, err := q.Submit(reqs)
	if n != 2 || err == nil || q.InFlight() != 2 {
		t.Fatalf("Submit: %d, %v; in flight %d; want 2 and the device's error", n, err, q.InFlight())
	}
	write := []blockdev.Request{{Op: blockdev.OpWrite, Buf: buf, Off: fileSize - 100}}
	var re *blockdev.RangeError
	if n, err := q.Submit(write); n != 0 || !errors.As(err, &re) {
		t.Fatalf("write past the end: %d, %v", n, err)
	}
	for _, c := range reap(t, q, 2) {
		if c.Err != nil || (c.Cookie != 1 && c.Cookie != 2) {
			t.Fatalf("completion %+v", c)
		}
	}
}

// TestErrno: a negative result is the completion's syscall.Errno, with the
// request's cookie.
func TestErrno(t *testing.T) {
	q, _, _ := open(t, 2, os.O_RDONLY)
	if n, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: make([]byte, 512), Cookie: 7}}); n != 1 || err != nil {
		t.Fatalf("Submit: %d, %v", n, err)
	}
	c := reap(t, q, 1)[0]
	if c.Cookie != 7 || !errors.Is(c.Err, unix.EBADF) || c.N != 0 {
		t.Fatalf("write to a read-only file: %+v, want EBADF", c)
	}
}

// TestClose: a closed device refuses new requests while those in flight still
// complete; Close waits for what is in flight; a closed queue refuses
// everything.
func TestClose(t *testing.T) {
	q, ops, _ := open(t, 8, os.O_RDWR)
	buf := make([]byte, 4096)
	reqs := []blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Cookie: 1}, {Op: blockdev.OpFlush, Cookie: 2}}
	if n, err := q.Submit(reqs); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	ops.closed.Store(true)
	if n, err := q.Submit(reqs); n != 0 || !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("Submit on a closed device: %d, %v", n, err)
	}
	if got := reap(t, q, 2); got[0].Err != nil || got[1].Err != nil {
		t.Fatalf("completions after the device closed: %+v", got)
	}
	ops.closed.Store(false)
	if n, err := q.Submit(reqs); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if q.InFlight() != 0 || !q.Closed() {
		t.Fatalf("after Close: %d in flight, closed %v", q.InFlight(), q.Closed())
	}
	if _, err := q.Submit(reqs); !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if _, err := q.Poll(0, make([]blockdev.Completion, 1)); !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("Poll after Close: %v", err)
	}
	if err := q.Close(); !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewBadConfig(t *testing.T) {
	testenv.IOUring(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Depth: 0, File: f}, {Depth: MaxDepth + 1, File: f}, {Depth: 4}} {
		if _, err := New(&fileOps{}, c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
	f.Close()
	if _, err := New(&fileOps{}, Config{Depth: 4, File: f}); !errors.Is(err, blockdev.ErrClosed) {
		t.Errorf("New on a closed file: %v, want ErrClosed", err)
	}
}

// TestNoAllocs: a submitted and reaped batch allocates nothing.
func TestNoAllocs(t *testing.T) {
	q, _, _ := open(t, 4, os.O_RDWR)
	buf := make([]byte, 8192)
	reqs := []blockdev.Request{{Op: blockdev.OpWrite, Buf: buf[:4096], Off: 8192}, {Op: blockdev.OpRead, Buf: buf[4096:]},
		{Op: blockdev.OpFlush}}
	out := make([]blockdev.Completion, 4)
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := q.Submit(reqs); n != 3 || err != nil {
			t.Fatalf("Submit: %d, %v", n, err)
		}
		for got := 0; got < 3; {
			n, err := q.Poll(1, out)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
}

// BenchmarkNop keeps depth NOPs in flight: the core's and the ring's cost per
// request, with no device behind it.
func BenchmarkNop(b *testing.B) {
	for _, depth := range []int{1, 32} {
		b.Run(fmt.Sprintf("qd=%d", depth), func(b *testing.B) {
			q, _, _ := open(b, depth, os.O_RDWR)
			reqs := make([]blockdev.Request, depth)
			for i := range reqs {
				reqs[i] = blockdev.Request{Op: blockdev.OpFlush, Cookie: uint64(i)}
			}
			out := make([]blockdev.Completion, depth)
			pending := make([]blockdev.Request, 0, depth)
			if _, err := q.Submit(reqs); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				n, err := q.Poll(1, out)
				if err != nil {
					b.Fatal(err)
				}
				pending = pending[:0]
				for _, c := range out[:n] {
					pending = append(pending, reqs[c.Cookie])
				}
				if _, err := q.Submit(pending); err != nil {
					b.Fatal(err)
				}
				i += n
			}
		})
	}
}
