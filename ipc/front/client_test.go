package front

import (
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// fakeService answers one handshake with welcome and fds, then does what hold
// says with the connection (nil: keeps it until the client gives up), so that the
// client's checks of a confused or hostile service can be driven directly.
func fakeService(t *testing.T, welcome []byte, fds []int, hold func(*net.UnixConn)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		var b [64]byte
		if _, err := c.Read(b[:]); err != nil {
			return
		}
		_ = shm.SendFds(c, welcome, fds...)
		if hold != nil {
			hold(c)
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(b[:]) // until the client gives up
	}()
	return sock
}

func welcomeBytes(w wire.Welcome) []byte {
	b := make([]byte, wire.WelcomeSize)
	w.Put(b)
	return b
}

// fakeLayout is a well-formed set of regions for a Welcome: the status page, an
// arena formatted as a service formats it, and an eventfd.
type fakeLayout struct {
	w                           wire.Welcome
	status, arena               *shm.Region
	efd                         int
	ringOff, descOff, dataOff   int
	numDesc, ringCap, slotBytes int
}

func newFakeLayout(t *testing.T) *fakeLayout {
	t.Helper()
	f := &fakeLayout{numDesc: 4, ringCap: 4, slotBytes: 8192}
	f.ringOff = wire.ArenaHeaderSize
	f.descOff = 2 * wire.DescSize // past the ring, DescSize-aligned
	f.dataOff = 4096
	size := f.dataOff + f.numDesc*f.slotBytes
	var err error
	if f.status, err = shm.Create("fake-status", wire.StatusPageSize, shm.Options{ReadOnlyPeers: true}); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(f.status.Bytes()[wire.StatusOffMagic:], wire.StatusMagic)
	binary.LittleEndian.PutUint32(f.status.Bytes()[wire.StatusOffVersion:], wire.Version)
	if f.arena, err = shm.Create("fake-arena", size, shm.Options{}); err != nil {
		t.Fatal(err)
	}
	if f.efd, err = shm.NewEventfd(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.status.Close(); f.arena.Close(); unix.Close(f.efd) })
	m := f.arena.Bytes()
	put := func(off int, v uint32) { binary.LittleEndian.PutUint32(m[off:], v) }
	put(wire.ArenaOffMagic, wire.ArenaMagic)
	put(wire.ArenaOffVersion, wire.Version)
	put(wire.ArenaOffNumDesc, uint32(f.numDesc))
	put(wire.ArenaOffDescOff, uint32(f.descOff))
	put(wire.ArenaOffDataOff, uint32(f.dataOff))
	put(wire.ArenaOffSlotBytes, uint32(f.slotBytes))
	binary.LittleEndian.PutUint64(m[wire.ArenaOffSize:], uint64(size))
	put(wire.ArenaOffRingOff, uint32(f.ringOff))
	put(wire.ArenaOffRingCap, uint32(f.ringCap))
	f.w = wire.Welcome{Version: wire.Version, Gen: 1, RingCap: uint32(f.ringCap), NumDesc: uint32(f.numDesc),
		SlotBytes: uint32(f.slotBytes), StatusSize: wire.StatusPageSize, ArenaSize: uint64(size)}
	return f
}

func (f *fakeLayout) fds() []int { return []int{f.status.Fd(), f.arena.Fd(), f.efd} }

func TestDialNoService(t *testing.T) {
	if _, err := Dial(Config{SocketPath: filepath.Join(t.TempDir(), "none.sock")}); err == nil {
		t.Fatal("Dial to a missing socket succeeded")
	}
}

func TestDialRefused(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.EACCES, syscall.EAGAIN, syscall.EPROTONOSUPPORT} {
		sock := fakeService(t, welcomeBytes(wire.Welcome{Version: wire.Version, Status: int32(e)}), nil, nil)
		_, err := Dial(Config{SocketPath: sock})
		if !errors.Is(err, ErrRefused) || !errors.Is(err, e) {
			t.Fatalf("Dial = %v, want ErrRefused wrapping %v", err, e)
		}
	}
}

// TestDialGoodLayout: the fake regions pass the client's checks (so that the
// mutations below are what fails), and a service that then closes the socket
// makes the call waiting on it fail with ENOTCONN, and every later call at once.
func TestDialGoodLayout(t *testing.T) {
	f := newFakeLayout(t)
	closeNow := make(chan struct{})
	var once sync.Once
	hangUp := func() { once.Do(func() { close(closeNow) }) }
	sock := fakeService(t, welcomeBytes(f.w), f.fds(), func(c *net.UnixConn) { <-closeNow })
	t.Cleanup(hangUp) // before fakeService's cleanup, which waits for it
	c, err := Dial(Config{SocketPath: sock, SpinIters: -1, WaitSlice: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Descriptors() != f.numDesc || c.MaxIO() != f.slotBytes || c.CallTimeout() != DefaultCallTimeout {
		t.Fatalf("client %d descriptors, %d bytes per request, timeout %v", c.Descriptors(), c.MaxIO(), c.CallTimeout())
	}
	res := make(chan error, 1)
	go func() { res <- c.Nop() }() // nobody answers
	time.Sleep(20 * time.Millisecond)
	hangUp()
	select {
	case err := <-res:
		if !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("call when the service went away: %v, want ENOTCONN", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a call on a closed service hung")
	}
	// The fake service's ring holds what the client published: one entry for
	// position 0.
	ring := f.arena.Bytes()[f.ringOff:]
	if seq, idx := wire.SplitRingEntry(binary.LittleEndian.Uint64(ring)); seq != wire.RingSeq(0) || idx >= uint32(f.numDesc) {
		t.Fatalf("ring entry 0: seq %d index %d", seq, idx)
	}
	start := time.Now()
	if err := c.Nop(); !errors.Is(err, syscall.ENOTCONN) || !c.Broken() {
		t.Fatalf("later call: %v (broken %v), want ENOTCONN", err, c.Broken())
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("a call on a broken client took %v", el)
	}
}

func TestDialBadWelcome(t *testing.T) {
	f := newFakeLayout(t)
	bad := welcomeBytes(f.w)
	bad[0] ^= 0xff
	cases := []struct {
		name    string
		welcome []byte
		fds     []int
	}{
		{"wrong magic", bad, f.fds()},
		{"truncated", welcomeBytes(f.w)[:wire.WelcomeSize-1], f.fds()},
		{"negative status", welcomeBytes(wire.Welcome{Version: wire.Version, Status: -1}), nil},
		{"status 0 without regions", welcomeBytes(wire.Welcome{Version: wire.Version}), nil},
		{"two fds", welcomeBytes(f.w), f.fds()[:2]},
		{"other version", welcomeBytes(wire.Welcome{Version: wire.Version + 1, RingCap: f.w.RingCap, NumDesc: f.w.NumDesc,
			SlotBytes: f.w.SlotBytes, StatusSize: f.w.StatusSize, ArenaSize: f.w.ArenaSize}), f.fds()},
	}
	for _, tc := range cases {
		if _, err := Dial(Config{SocketPath: fakeService(t, tc.welcome, tc.fds, nil)}); !errors.Is(err, ErrBadWelcome) {
			t.Errorf("%s: %v, want ErrBadWelcome", tc.name, err)
		}
	}
}

// TestDialRefusesUnsealedRegion: a region the service could shrink under the client
// (SIGBUS on the next access) is refused.
func TestDialRefusesUnsealedRegion(t *testing.T) {
	f := newFakeLayout(t)
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(f.w.ArenaSize)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		fds := f.fds()
		fds[i] = fd // the status page, then the arena
		if _, err := Dial(Config{SocketPath: fakeService(t, welcomeBytes(f.w), fds, nil)}); !errors.Is(err, shm.ErrNotSealed) {
			t.Fatalf("Dial with fd %d unsealed = %v, want ErrNotSealed", i, err)
		}
	}
}

// TestDialRejectsBadLayout: sealed regions whose contents do not describe a
// usable arena, status page or eventfd are refused rather than indexed.
func TestDialRejectsBadLayout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(f *fakeLayout, fds []int, w *wire.Welcome)
	}{
		{"zeroed arena", func(f *fakeLayout, _ []int, _ *wire.Welcome) { clear(f.arena.Bytes()) }},
		{"ring smaller than the descriptors", func(f *fakeLayout, _ []int, w *wire.Welcome) {
			binary.LittleEndian.PutUint32(f.arena.Bytes()[wire.ArenaOffRingCap:], 2)
			w.RingCap = 2
		}},
		{"ring not a power of two", func(f *fakeLayout, _ []int, w *wire.Welcome) {
			binary.LittleEndian.PutUint32(f.arena.Bytes()[wire.ArenaOffRingCap:], 6)
			w.RingCap = 6
		}},
		{"ring over the descriptors", func(f *fakeLayout, _ []int, _ *wire.Welcome) {
			binary.LittleEndian.PutUint32(f.arena.Bytes()[wire.ArenaOffRingOff:], uint32(f.descOff-8))
		}},
		{"ring inside the header", func(f *fakeLayout, _ []int, _ *wire.Welcome) {
			binary.LittleEndian.PutUint32(f.arena.Bytes()[wire.ArenaOffRingOff:], 8)
		}},
		{"welcome and arena disagree on the ring", func(_ *fakeLayout, _ []int, w *wire.Welcome) { w.RingCap = 8 }},
		{"data area past the end", func(f *fakeLayout, _ []int, _ *wire.Welcome) {
			binary.LittleEndian.PutUint32(f.arena.Bytes()[wire.ArenaOffDataOff:], uint32(f.w.ArenaSize))
		}},
		{"status page without its magic", func(f *fakeLayout, _ []int, _ *wire.Welcome) {
			// The service's own mapping is the only writable one.
			clear(f.status.Bytes()[:8])
		}},
		{"status size disagrees", func(_ *fakeLayout, _ []int, w *wire.Welcome) { w.StatusSize = 8192 }},
		{"wake-up fd not an eventfd", func(f *fakeLayout, fds []int, _ *wire.Welcome) { fds[wire.WelcomeFdEvent] = f.arena.Fd() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeLayout(t)
			fds, w := f.fds(), f.w
			tc.mutate(f, fds, &w)
			_, err := Dial(Config{SocketPath: fakeService(t, welcomeBytes(w), fds, nil)})
			if !errors.Is(err, ErrBadWelcome) {
				t.Fatalf("Dial = %v, want ErrBadWelcome", err)
			}
		})
	}
}

// TestStatusPageReadOnly: the client maps the status page read-only, and could
// not do otherwise: neither a writable mapping nor mprotect nor write(2) works on
// the fd it received.
func TestStatusPageReadOnly(t *testing.T) {
	f := newFakeLayout(t)
	sock := fakeService(t, welcomeBytes(f.w), f.fds(), nil)
	c, err := Dial(Config{SocketPath: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fd := c.statusReg.Fd()
	if _, err := unix.Mmap(fd, 0, wire.StatusPageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		t.Fatal("the client mapped the status page writable")
	}
	if err := unix.Mprotect(c.statusReg.Bytes(), unix.PROT_READ|unix.PROT_WRITE); err == nil {
		t.Fatal("the client made its status page mapping writable")
	}
	if _, err := unix.Pwrite(fd, []byte{1}, wire.StatusOffSleepers); err == nil {
		t.Fatal("the client wrote the status page through its fd")
	}
}
