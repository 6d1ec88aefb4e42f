package fslib

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDialErrorsNameTheFix: what a newcomer reads when no service answers
// names the socket once and the ways to give one (--socket, the variable),
// and keeps the cause for errors.Is.
func TestDialErrorsNameTheFix(t *testing.T) {
	t.Setenv(SocketEnv, "")
	_, err := Dial(DialOptions{})
	if !errors.Is(err, ErrNoSocket) || !strings.Contains(err.Error(), "--socket") || !strings.Contains(err.Error(), "$"+SocketEnv) {
		t.Errorf("no socket: %v", err)
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	// A socket file nobody listens on: what a service killed with SIGKILL leaves.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct {
		socket string
		errno  syscall.Errno
	}{{missing, syscall.ENOENT}, {stale, syscall.ECONNREFUSED}} {
		_, err := Dial(DialOptions{Socket: tc.socket})
		if err == nil {
			t.Fatalf("%s: Dial succeeded", tc.socket)
		}
		msg := err.Error()
		if n := strings.Count(msg, tc.socket); n != 1 {
			t.Errorf("%s appears %d times in %q, want once", tc.socket, n, msg)
		}
		if !strings.Contains(msg, "--socket") || !strings.Contains(msg, "$"+SocketEnv) || !strings.Contains(msg, tc.errno.Error()) {
			t.Errorf("%q does not name --socket, $%s and the cause %q", msg, SocketEnv, tc.errno.Error())
		}
		if !errors.Is(err, tc.errno) {
			t.Errorf("%q: errors.Is(%v) is false", msg, tc.errno)
		}
	}
}
