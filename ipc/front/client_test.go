package front

import (
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// fakeService answers one handshake with welcome and fds, so that the client's
// checks of a confused or hostile service can be driven directly.
func fakeService(t *testing.T, welcome []byte, fds ...int) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
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
		c.Read(b[:]) // hold the connection until the client gives up
	}()
	return sock
}

func welcomeBytes(w wire.Welcome) []byte {
	b := make([]byte, wire.WelcomeSize)
	w.Put(b)
	return b
}

func TestDialNoService(t *testing.T) {
	if _, err := Dial(Config{SocketPath: filepath.Join(t.TempDir(), "none.sock")}); err == nil {
		t.Fatal("Dial to a missing socket succeeded")
	}
}

func TestDialRefused(t *testing.T) {
	sock := fakeService(t, welcomeBytes(wire.Welcome{Version: wire.Version, Status: int32(syscall.EACCES)}))
	_, err := Dial(Config{SocketPath: sock})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Dial = %v, want ErrRefused wrapping EACCES", err)
	}
}

func TestDialBadWelcome(t *testing.T) {
	bad := welcomeBytes(wire.Welcome{Version: wire.Version})
	bad[0] ^= 0xff
	if _, err := Dial(Config{SocketPath: fakeService(t, bad)}); !errors.Is(err, ErrBadWelcome) {
		t.Fatalf("wrong magic: %v", err)
	}
	// Status 0 but no regions.
	if _, err := Dial(Config{SocketPath: fakeService(t, welcomeBytes(wire.Welcome{Version: wire.Version}))}); !errors.Is(err, ErrBadWelcome) {
		t.Fatalf("no fds: %v", err)
	}
}

// TestDialRefusesUnsealedRegion: a region the service could shrink under the client
// (SIGBUS on the next access) is refused.
func TestDialRefusesUnsealedRegion(t *testing.T) {
	mk := func(sealed bool) int {
		if sealed {
			r, err := shm.Create("ok", 1<<16, shm.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r.Fd()
		}
		fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Ftruncate(fd, 1<<16); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	w := welcomeBytes(wire.Welcome{Version: wire.Version, Gen: 1, RingCap: 64, NumDesc: 1, SlotBytes: 8192, ArenaSize: 1 << 16})
	sock := fakeService(t, w, mk(true), mk(false))
	if _, err := Dial(Config{SocketPath: sock}); !errors.Is(err, shm.ErrNotSealed) {
		t.Fatalf("Dial with an unsealed arena = %v, want ErrNotSealed", err)
	}
}

// TestDialRejectsBadArenaHeader: a sealed but unformatted ring and arena (all zeros)
// are refused rather than indexed.
func TestDialRejectsBadArenaHeader(t *testing.T) {
	var fds []int
	for range 2 {
		r, err := shm.Create("zero", 1<<16, shm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		fds = append(fds, r.Fd())
	}
	w := welcomeBytes(wire.Welcome{Version: wire.Version, Gen: 1, RingCap: 64, NumDesc: 1, SlotBytes: 8192, ArenaSize: 1 << 16})
	if _, err := Dial(Config{SocketPath: fakeService(t, w, fds...)}); !errors.Is(err, ErrBadWelcome) {
		t.Fatalf("Dial with zeroed regions = %v, want ErrBadWelcome", err)
	}
}
