package shm

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestCreateSealsAndMaps(t *testing.T) {
	r, err := Create("test", 10000, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 3*4096 && r.Size() < 10000 {
		t.Fatalf("size %d, want 10000 rounded up to pages", r.Size())
	}
	seals, err := unix.FcntlInt(uintptr(r.Fd()), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals&RequiredSeals != RequiredSeals {
		t.Fatalf("seals %#x lack %#x", seals, RequiredSeals)
	}
	if err := unix.Ftruncate(r.Fd(), 1<<20); err == nil {
		t.Fatal("ftruncate grew a sealed memfd")
	}
	if err := unix.Ftruncate(r.Fd(), 0); err == nil {
		t.Fatal("ftruncate shrank a sealed memfd")
	}
	if _, err := unix.FcntlInt(uintptr(r.Fd()), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); err == nil {
		t.Fatal("a seal was added after F_SEAL_SEAL")
	}
}

func TestCreateRejectsBadSize(t *testing.T) {
	for _, n := range []int{0, -1, MaxSize + 1} {
		if _, err := Create("bad", n, Options{}); err == nil {
			t.Errorf("Create(%d) succeeded", n)
		}
	}
}

func TestHugePagesFallBack(t *testing.T) {
	// Whatever the hugetlb pool holds, a huge request must give a usable region.
	r, err := Create("huge", 3<<20, Options{HugePages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() < 3<<20 {
		t.Fatalf("size %d", r.Size())
	}
	mem := r.Bytes()
	mem[0], mem[len(mem)-1] = 1, 2
	t.Logf("huge pages: %v", r.Huge())
}

func TestPassAndOpenSharesMemory(t *testing.T) {
	a, b := socketPair(t)
	r, err := Create("pass", 8192, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := SendFds(a, []byte("hello"), r.Fd()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, fds, err := RecvFds(b, buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello" || len(fds) != 1 {
		t.Fatalf("got %q with %d fds", buf[:n], len(fds))
	}
	peer, err := Open(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if peer.Size() != r.Size() {
		t.Fatalf("peer size %d, want %d", peer.Size(), r.Size())
	}
	CopyData(r.Bytes()[100:], []byte("shared"))
	if !bytes.Equal(peer.Bytes()[100:106], []byte("shared")) {
		t.Fatal("a write through one mapping is not visible through the other")
	}
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
	if err := peer.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestOpenRefusesUnsealed(t *testing.T) {
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(fd); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("Open(unsealed) = %v, want ErrNotSealed", err)
	}
	// Open took ownership and closed it.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Fatal("Open left the refused fd open")
	}
}

func TestSendTooManyFds(t *testing.T) {
	a, _ := socketPair(t)
	fds := make([]int, MaxFds+1)
	if err := SendFds(a, []byte("x"), fds...); err == nil {
		t.Fatal("SendFds accepted too many fds")
	}
}

func TestUint32AtBounds(t *testing.T) {
	r, err := Create("words", 4096, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, off := range []int{-4, 1, 4094, 4096} {
		if _, err := Uint32At(r.Bytes(), off); err == nil {
			t.Errorf("Uint32At(%d) accepted", off)
		}
	}
	for _, off := range []int{-8, 4, 4090, 4096} {
		if _, err := Uint64At(r.Bytes(), off); err == nil {
			t.Errorf("Uint64At(%d) accepted", off)
		}
	}
	if _, err := Uint64At(r.Bytes(), 4088); err != nil {
		t.Error(err)
	}
}

func TestFutexWaitWake(t *testing.T) {
	r, err := Create("futex", 4096, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := Uint32At(r.Bytes(), 64)
	if err != nil {
		t.Fatal(err)
	}
	// Value already changed: returns at once.
	if err := FutexWait(w, 7, 0); err != nil {
		t.Fatal(err)
	}
	if err := FutexWait(w, 0, time.Millisecond); !errors.Is(err, unix.ETIMEDOUT) && !errors.Is(err, unix.EINTR) {
		t.Fatalf("FutexWait with nobody waking = %v, want ETIMEDOUT", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for atomic.LoadUint32(w) == 0 {
			_ = FutexWait(w, 0, time.Second)
		}
	}()
	time.Sleep(10 * time.Millisecond)
	atomic.StoreUint32(w, 1)
	if _, err := FutexWake(w, 1); err != nil {
		t.Fatal(err)
	}
	<-done
}

func BenchmarkCopyData4K(b *testing.B) {
	r, err := Create("bench", 1<<20, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	src := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		CopyData(r.Bytes()[4096:], src)
	}
}

// TestReadOnlyPeers: the creator's mapping of a ReadOnlyPeers region is writable
// and the only one: a peer's fd (passed over a socket, or the memfd reopened
// through /proc) maps read-only only, cannot be made writable with mprotect,
// written, resized or hole-punched, and sees the creator's writes.
func TestReadOnlyPeers(t *testing.T) {
	r, err := Create("ro", 4096, Options{ReadOnlyPeers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seals, err := unix.FcntlInt(uintptr(r.Fd()), unix.F_GET_SEALS, 0)
	if err != nil || seals&ReadOnlySeals != ReadOnlySeals {
		t.Fatalf("seals %#x, %v; want %#x", seals, err, ReadOnlySeals)
	}
	a, b := socketPair(t)
	if err := SendFds(a, []byte("x"), r.Fd()); err != nil {
		t.Fatal(err)
	}
	_, fds, err := RecvFds(b, make([]byte, 8))
	if err != nil || len(fds) != 1 {
		t.Fatalf("recv: %v, %d fds", err, len(fds))
	}
	reopened, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fds[0]), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(reopened)
	for name, fd := range map[string]int{"received": fds[0], "reopened": reopened} {
		if _, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != unix.EPERM {
			t.Errorf("%s fd: writable shared mapping: %v, want EPERM", name, err)
		}
		if _, err := unix.Pwrite(fd, []byte{1}, 0); err != unix.EPERM {
			t.Errorf("%s fd: pwrite: %v, want EPERM", name, err)
		}
		if err := unix.Ftruncate(fd, 0); err != unix.EPERM {
			t.Errorf("%s fd: ftruncate: %v, want EPERM", name, err)
		}
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != unix.EPERM {
			t.Errorf("%s fd: punch hole: %v, want EPERM", name, err)
		}
	}
	peer, err := OpenReadOnly(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := unix.Mprotect(peer.Bytes(), unix.PROT_READ|unix.PROT_WRITE); err != unix.EACCES {
		t.Fatalf("mprotect of the peer's mapping to writable: %v, want EACCES", err)
	}
	r.Bytes()[100] = 42 // the creator's mapping stays writable
	if peer.Bytes()[100] != 42 {
		t.Fatal("the peer does not see the creator's write")
	}
	// An ordinary region is writable for peers (the seal is what stops them).
	plain, err := Create("rw", 4096, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	m, err := unix.Mmap(plain.Fd(), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("writable mapping of an ordinary region: %v", err)
	}
	unix.Munmap(m)
}

func TestDropFdKeepsMapping(t *testing.T) {
	r, err := Create("drop", 8192, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fd := r.Fd()
	if err := r.DropFd(); err != nil {
		t.Fatal(err)
	}
	if r.Fd() != -1 {
		t.Fatalf("Fd after DropFd: %d", r.Fd())
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("the memfd is still open: %v", err)
	}
	r.Bytes()[8191] = 7 // still mapped
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWords64AndEventfd(t *testing.T) {
	r, err := Create("words", 4096, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := Words64(r.Bytes(), 64, 8)
	if err != nil || len(w) != 8 {
		t.Fatalf("Words64: %d words, %v", len(w), err)
	}
	atomic.StoreUint64(&w[7], 0x0102030405060708)
	if r.Bytes()[64+7*8] != 0x08 {
		t.Fatal("word 7 is not at offset 120, little-endian")
	}
	for _, bad := range [][2]int{{4, 1}, {4096 - 8, 2}, {-8, 1}, {0, 0}, {8, 1 << 40}} {
		if _, err := Words64(r.Bytes(), bad[0], bad[1]); err != ErrMisaligned {
			t.Errorf("Words64(off %d, n %d): %v, want ErrMisaligned", bad[0], bad[1], err)
		}
	}
	efd, err := NewEventfd()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if !IsEventfd(efd) || IsEventfd(r.Fd()) {
		t.Fatal("IsEventfd does not tell an eventfd from a memfd")
	}
	if _, err := EventfdRead(efd); err != unix.EAGAIN {
		t.Fatalf("read of a zero eventfd: %v, want EAGAIN", err)
	}
	for range 3 {
		if err := EventfdWrite(efd); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := EventfdRead(efd); v != 3 || err != nil {
		t.Fatalf("eventfd read %d, %v; want 3", v, err)
	}
	if n := testing.AllocsPerRun(100, func() { EventfdWrite(efd); EventfdRead(efd) }); n != 0 {
		t.Fatalf("eventfd write and read: %v allocations", n)
	}
}
