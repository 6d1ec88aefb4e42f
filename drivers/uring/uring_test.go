package uring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/testenv"
)

func testRing(t *testing.T, entries uint32, opts ...Option) *Ring {
	t.Helper()
	testenv.IOUring(t)
	r, err := New(entries, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestNopBatch(t *testing.T) {
	r := testRing(t, 8)
	for i := 0; i < 8; i++ {
		r.GetSQE().PrepNop(uint64(100 + i))
	}
	if s := r.GetSQE(); s != nil {
		t.Fatal("GetSQE on a full SQ returned an entry")
	}
	n, err := r.Submit()
	if err != nil || n != 8 {
		t.Fatalf("Submit = %d, %v; want 8", n, err)
	}
	out := make([]CQE, 16)
	got, err := r.WaitCQEs(8, out)
	if err != nil || got != 8 {
		t.Fatalf("WaitCQEs = %d, %v", got, err)
	}
	seen := map[uint64]bool{}
	for _, c := range out[:got] {
		if c.Res != 0 {
			t.Fatalf("nop res %d", c.Res)
		}
		seen[c.UserData] = true
	}
	for i := 0; i < 8; i++ {
		if !seen[uint64(100+i)] {
			t.Fatalf("missing completion for cookie %d", 100+i)
		}
	}
}

// TestCQOverflowLosesNothing submits 64 NOPs through a 4-entry SQ and a 4-entry CQ
// without reaping, so 60 completions overflow into the kernel's backlog, and checks
// every one comes back exactly once.
func TestCQOverflowLosesNothing(t *testing.T) {
	r := testRing(t, 4, WithCQSize(4))
	if r.CQEntries() != 4 {
		t.Logf("kernel chose a CQ of %d entries", r.CQEntries())
	}
	if r.Features()&FeatNoDrop == 0 {
		testenv.SkipOrFail(t, "kernel lacks IORING_FEAT_NODROP")
	}
	const total = 64
	next := 0
	busy := 0
	for next < total {
		for r.SQSpace() > 0 && next < total {
			r.GetSQE().PrepNop(uint64(next))
			next++
		}
		if _, err := r.Submit(); err != nil {
			if !errors.Is(err, ErrBusy) {
				t.Fatal(err)
			}
			busy++
			break // older kernels refuse submissions while overflowed: reap below
		}
	}
	if r.cqReady() != r.CQEntries() || !r.needFlush() {
		t.Fatalf("after %d unreaped NOPs: %d visible, overflow flagged %v; the test did not overflow the CQ", next, r.cqReady(), r.needFlush())
	}
	seen := make([]int, total)
	out := make([]CQE, 3) // smaller than the CQ, so reaping interleaves with flushing
	got := 0
	for got < total {
		if next < total && r.SQSpace() > 0 {
			r.GetSQE().PrepNop(uint64(next))
			next++
		}
		want := min(len(out), next-got)
		n, err := r.WaitCQEs(want, out)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range out[:n] {
			seen[c.UserData]++
		}
		got += n
	}
	for i, s := range seen {
		if s != 1 {
			t.Fatalf("cookie %d completed %d times", i, s)
		}
	}
	if r.Overflowed() != 0 {
		t.Fatalf("kernel dropped %d completions", r.Overflowed())
	}
	t.Logf("64 NOPs through CQ of %d, %d busy submits", r.CQEntries(), busy)
}

func tempFile(t *testing.T, size int) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	return f
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func TestReadWriteVariants(t *testing.T) {
	r := testRing(t, 16)
	f := tempFile(t, 1<<16)
	fd := int32(f.Fd())
	w := pattern(8192, 1)
	r.GetSQE().PrepWrite(fd, w, 4096, 1)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	out := make([]CQE, 4)
	waitOne(t, r, out, 1, 8192)

	got := make([]byte, 8192)
	r.GetSQE().PrepRead(fd, got, 4096, 2)
	waitOne(t, r, out, 2, 8192)
	if !bytes.Equal(got, w) {
		t.Fatal("read back differs")
	}

	// readv/writev
	a, b := pattern(100, 2), pattern(300, 3)
	iov := []unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	r.GetSQE().PrepWritev(fd, iov, 50000, 3)
	waitOne(t, r, out, 3, 400)
	ra, rb := make([]byte, 100), make([]byte, 300)
	riov := []unix.Iovec{{Base: &ra[0]}, {Base: &rb[0]}}
	riov[0].SetLen(100)
	riov[1].SetLen(300)
	r.GetSQE().PrepReadv(fd, riov, 50000, 4)
	waitOne(t, r, out, 4, 400)
	if !bytes.Equal(ra, a) || !bytes.Equal(rb, b) {
		t.Fatal("readv back differs")
	}

	// fixed buffers and fixed files
	reg := make([]byte, 1<<14)
	if err := r.RegisterBuffers([][]byte{reg}); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterFiles([]int32{fd}); err != nil {
		t.Fatal(err)
	}
	copy(reg[4096:], pattern(4096, 9))
	s := r.GetSQE()
	s.PrepWriteFixed(0, reg[4096:8192], 0, 0, 5)
	s.UseFixedFile()
	waitOne(t, r, out, 5, 4096)
	s = r.GetSQE()
	s.PrepReadFixed(0, reg[8192:12288], 0, 0, 6)
	s.UseFixedFile()
	waitOne(t, r, out, 6, 4096)
	if !bytes.Equal(reg[8192:12288], pattern(4096, 9)) {
		t.Fatal("fixed read back differs")
	}
	if err := r.UnregisterFiles(); err != nil {
		t.Fatal(err)
	}
	if err := r.UnregisterBuffers(); err != nil {
		t.Fatal(err)
	}

	r.GetSQE().PrepFsync(fd, FsyncDatasync, 7)
	waitOne(t, r, out, 7, 0)
	r.GetSQE().PrepFallocate(fd, 0, 1<<16, 1<<16, 8)
	waitOne(t, r, out, 8, 0)
	if st, _ := f.Stat(); st.Size() != 1<<17 {
		t.Fatalf("size after fallocate %d", st.Size())
	}
}

func TestOpenatStatxClose(t *testing.T) {
	r := testRing(t, 4)
	f := tempFile(t, 12345)
	path, _ := unix.BytePtrFromString(f.Name())
	out := make([]CQE, 2)
	r.GetSQE().PrepOpenat(unix.AT_FDCWD, path, unix.O_RDONLY, 0, 1)
	fd := waitOne(t, r, out, 1, -1)
	var stx unix.Statx_t
	r.GetSQE().PrepStatx(unix.AT_FDCWD, path, 0, unix.STATX_SIZE, &stx, 2)
	waitOne(t, r, out, 2, 0)
	if stx.Size != 12345 {
		t.Fatalf("statx size %d", stx.Size)
	}
	r.GetSQE().PrepClose(int32(fd), 3)
	waitOne(t, r, out, 3, 0)
	if err := unix.Close(fd); err != unix.EBADF {
		t.Fatalf("fd still open after IORING_OP_CLOSE: %v", err)
	}
	runtime.KeepAlive(path)
}

func TestSocketOps(t *testing.T) {
	r := testRing(t, 8)
	if err := r.Require(OpAccept, OpConnect, OpSend, OpRecv); err != nil {
		t.Fatal(err)
	}
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(ln, 1)
	sa, _ := unix.Getsockname(ln)
	port := sa.(*unix.SockaddrInet4).Port
	c, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	defer unix.Close(c)
	raw := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	raw.Port = uint16(port>>8) | uint16(port&0xff)<<8
	out := make([]CQE, 4)
	r.GetSQE().PrepAccept(int32(ln), nil, nil, 0, 1)
	r.GetSQE().PrepConnect(int32(c), unsafePointer(raw), uint32(unix.SizeofSockaddrInet4), 2)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	var acc int
	for got := 0; got < 2; {
		n, err := r.WaitCQEs(1, out)
		if err != nil {
			t.Fatal(err)
		}
		for _, cq := range out[:n] {
			if cq.Res < 0 {
				t.Fatalf("cookie %d: %v", cq.UserData, cq.Err())
			}
			if cq.UserData == 1 {
				acc = int(cq.Res)
			}
		}
		got += n
	}
	defer unix.Close(acc)
	msg := []byte("hello ring")
	r.GetSQE().PrepSend(int32(c), msg, 0, 3)
	waitOne(t, r, out, 3, len(msg))
	buf := make([]byte, 64)
	r.GetSQE().PrepRecv(int32(acc), buf, 0, 4)
	n := waitOne(t, r, out, 4, -1)
	if string(buf[:n]) != string(msg) {
		t.Fatalf("recv %q", buf[:n])
	}
	runtime.KeepAlive(raw)
}

// waitOne submits and waits for one completion with cookie ud; want < 0 accepts any
// non-negative result. It returns Res.
func waitOne(t *testing.T, r *Ring, out []CQE, ud uint64, want int) int {
	t.Helper()
	n, err := r.WaitCQEs(1, out[:1])
	if err != nil || n != 1 {
		t.Fatalf("WaitCQEs = %d, %v", n, err)
	}
	c := out[0]
	if c.UserData != ud {
		t.Fatalf("cookie %d, want %d", c.UserData, ud)
	}
	if c.Res < 0 {
		t.Fatalf("cookie %d failed: %v", ud, c.Err())
	}
	if want >= 0 && int(c.Res) != want {
		t.Fatalf("cookie %d res %d, want %d", ud, c.Res, want)
	}
	return int(c.Res)
}

// TestWaitSurvivesSignals blocks in WaitCQEs on a pipe read while another goroutine
// floods the process with SIGURG (Go's preemption signal), then writes the pipe: the
// wait must return exactly that completion, not an early EINTR.
func TestWaitSurvivesSignals(t *testing.T) {
	r := testRing(t, 4)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 8)
	r.GetSQE().PrepRead(int32(p[0]), buf, -1, 42)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.After(100 * time.Millisecond)
		for {
			select {
			case <-deadline:
				unix.Write(p[1], []byte("x"))
				<-stop
				return
			default:
				syscall.Kill(os.Getpid(), syscall.SIGURG)
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	out := make([]CQE, 1)
	n, err := r.WaitCQEs(1, out)
	close(stop)
	wg.Wait()
	if err != nil || n != 1 || out[0].UserData != 42 || out[0].Res != 1 {
		t.Fatalf("WaitCQEs = %d, %v, %+v", n, err, out[0])
	}
}

func TestSQPollWakeup(t *testing.T) {
	testenv.Root(t)
	// A 1 ms idle time makes the poller fall asleep between batches, so the test
	// exercises IORING_ENTER_SQ_WAKEUP (the flag iceber/iouring-go gets wrong).
	r := testRing(t, 8, WithSQPoll(time.Millisecond))
	if r.Flags()&SetupSQPoll == 0 {
		t.Fatal("SQPOLL not in effect")
	}
	out := make([]CQE, 8)
	for round := 0; round < 5; round++ {
		time.Sleep(5 * time.Millisecond)
		for i := 0; i < 4; i++ {
			r.GetSQE().PrepNop(uint64(round*10 + i))
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		got := 0
		for got < 4 {
			n, err := r.WaitCQEs(4-got, out)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
}

func TestOptionalFlagsAndBigEntries(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := testRing(t, 8, WithCoopTaskrun(), WithDeferTaskrun(), WithSubmitAll(), WithSQE128(), WithCQE32())
	t.Logf("flags in effect %#x", r.Flags())
	if r.Flags()&(SetupSQE128|SetupCQE32) != SetupSQE128|SetupCQE32 {
		t.Fatal("SQE128/CQE32 not in effect")
	}
	if len(r.Cmd(r.GetSQE())) != 80 {
		t.Fatal("cmd area is not 80 bytes on an SQE128 ring")
	}
	// The entry above is a zeroed NOP; add more and reap them through CQE32 slots.
	for i := 0; i < 7; i++ {
		r.GetSQE().PrepNop(uint64(i + 1))
	}
	out := make([]CQE, 8)
	got := 0
	for got < 8 {
		n, err := r.WaitCQEs(8-got, out[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if err := r.Require(OpURingCmd); err != nil {
		t.Logf("no URING_CMD: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	testenv.IOUring(t)
	if _, err := New(0); err == nil {
		t.Fatal("New(0) succeeded")
	}
	if _, err := New(4, WithSQThreadCPU(0)); err == nil {
		t.Fatal("SQ CPU without SQPOLL succeeded")
	}
	r := testRing(t, 4)
	if _, err := r.WaitCQEs(3, make([]CQE, 2)); err == nil {
		t.Fatal("WaitCQEs with min > len(out) succeeded")
	}
	var e *UnsupportedOpError
	err := r.Require(Op(250))
	if !errors.As(err, &e) || e.Op != 250 {
		t.Fatalf("Require(250) = %v", err)
	}
	if got := err.Error(); got != "uring: kernel does not support IORING_OP_250 (opcode 250)" {
		t.Fatalf("message %q", got)
	}
	if !r.Probe().Supported(OpRead) {
		t.Fatal("probe says no IORING_OP_READ")
	}
	r.Close()
	if r.GetSQE() != nil {
		t.Fatal("GetSQE on a closed ring")
	}
	if _, err := r.Submit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if err := r.RegisterFiles([]int32{0}); !errors.Is(err, ErrClosed) {
		t.Fatalf("RegisterFiles after Close: %v", err)
	}
}

func BenchmarkNop(b *testing.B) {
	testenv.IOUring(b)
	r, err := New(32)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	out := make([]CQE, 32)
	b.ReportAllocs()
	for i := 0; i < b.N; i += 32 {
		for j := 0; j < 32; j++ {
			r.GetSQE().PrepNop(uint64(j))
		}
		got := 0
		for got < 32 {
			n, err := r.WaitCQEs(32-got, out)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

func TestOptionalFlagsDroppedCleanly(t *testing.T) {
	testenv.Root(t)
	// DEFER_TASKRUN cannot go with SQPOLL: the ring must come up without it rather
	// than fail.
	r := testRing(t, 4, WithSQPoll(10*time.Millisecond), WithDeferTaskrun())
	if r.Flags()&SetupDeferTaskrun != 0 || r.Flags()&SetupSQPoll == 0 {
		t.Fatalf("flags %#x: want SQPOLL without DEFER_TASKRUN", r.Flags())
	}
	r.GetSQE().PrepNop(1)
	out := make([]CQE, 1)
	waitOne(t, r, out, 1, 0)
}
