package back

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// lowFDLimit is the helper service's RLIMIT_NOFILE in TestAcceptEMFILE: enough
// for the runtime, the listener, epoll and a few connections, then EMFILE.
const lowFDLimit = 48

// helperLowFD is a service whose file descriptors run out after a few
// connections; it logs to stderr (JSON) until its stdin closes.
func helperLowFD() int {
	lim := syscall.Rlimit{Cur: lowFDLimit, Max: lowFDLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 1
	}
	s, err := Listen(Config{SocketPath: os.Getenv(sockEnv), Handler: newMemStore(), SpinBudget: -1,
		MaxPendingPerUID: 4096, MaxPending: 4096, HandshakeTimeout: time.Minute,
		Logger: zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(os.Stderr), zap.InfoLevel))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	fmt.Println(readyLine)
	io.Copy(io.Discard, os.Stdin)
	s.Close()
	return 0
}

// TestAcceptEMFILE: a service out of file descriptors does not spin on accept
// or flood its log: connections that cannot be accepted wait, and the failure is
// logged about once a second with a count (main's build logged ~100 a second).
func TestAcceptEMFILE(t *testing.T) {
	sock := sockPath(t)
	h := startHelper(t, "lowfd", sockEnv+"="+sock)
	h.expect(t, readyLine)
	var conns []*net.UnixConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Silent connections: each the service accepts holds one of its fds until
	// the (long) handshake timeout. More than it can have.
	for range 2 * lowFDLimit {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	const watch = 3 * time.Second
	time.Sleep(watch)
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("service: %v\n%s", err, h.stderr.String())
	}
	logs := h.stderr.String()
	n := strings.Count(logs, "ipc accept failed")
	if n == 0 {
		t.Fatalf("the service never ran out of fds (the test proves nothing):\n%s", logs)
	}
	// One a second, plus one at each end of the window.
	if n > int(watch/time.Second)+2 {
		t.Fatalf("%d accept failures logged in %v, want about one a second", n, watch)
	}
	if !strings.Contains(logs, "too many open files") || !bytes.Contains([]byte(logs), []byte(`"suppressed"`)) {
		t.Fatalf("log lines do not say why or how many were suppressed:\n%s", logs)
	}
}
