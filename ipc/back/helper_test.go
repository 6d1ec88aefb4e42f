package back

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/ipc/front"
)

// The tests start helper processes by re-executing the test binary with helperEnv
// set; TestMain then runs the helper instead of the tests.
const (
	helperEnv   = "POLYTROPON_IPC_TEST_HELPER"
	sockEnv     = "POLYTROPON_IPC_TEST_SOCK"
	iterEnv     = "POLYTROPON_IPC_TEST_ITER"
	idEnv       = "POLYTROPON_IPC_TEST_ID"
	fsyncEnv    = "POLYTROPON_IPC_TEST_FSYNC_DELAY"
	readyLine   = "ready"
	submitted   = "submitted"
	dialResult  = "dial"
	helperSpins = 200
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "client":
		os.Exit(helperClient())
	case "service":
		os.Exit(helperService())
	case "dial":
		os.Exit(helperDial())
	case "hostile":
		os.Exit(helperHostile())
	case "honest":
		os.Exit(helperHonest())
	case "lowfd":
		os.Exit(helperLowFD())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// payload is the deterministic content client id writes in round i.
func payload(id, i int) []byte {
	n := 1 + (id*7919+i*104729)%(150<<10) // crosses the 64 KiB slot size
	b := make([]byte, n)
	x := uint32(id*1000003 + i)
	for j := range b {
		x = x*1664525 + 1013904223
		b[j] = byte(x >> 24)
	}
	return b
}

// clientRounds runs rounds of create, write, read back, verify, stat, close, unlink on
// c; iters <= 0 runs until an error. ready is called after the first round trip.
func clientRounds(c *front.Client, id, iters int, ready func()) error {
	if err := c.Nop(); err != nil {
		return fmt.Errorf("nop: %w", err)
	}
	if ready != nil {
		ready()
	}
	got := make([]byte, 160<<10)
	for i := 0; iters <= 0 || i < iters; i++ {
		path := fmt.Sprintf("/c%d-%d-%d", id, os.Getpid(), i%3)
		want := payload(id, i)
		h, err := c.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		if n, err := c.WriteAt(h, want, 0); err != nil || n != len(want) {
			return fmt.Errorf("write %s: %d, %v", path, n, err)
		}
		n, err := c.ReadAt(h, got, 0)
		if err != nil || n != len(want) || !bytes.Equal(got[:n], want) {
			return fmt.Errorf("read %s: %d bytes (want %d), equal %v, %v", path, n, len(want), bytes.Equal(got[:min(n, len(want))], want[:min(n, len(want))]), err)
		}
		st, err := c.Fstat(h)
		if err != nil || st.Size != int64(len(want)) {
			return fmt.Errorf("fstat %s: size %d want %d, %v", path, st.Size, len(want), err)
		}
		if err := c.CloseHandle(h); err != nil {
			return fmt.Errorf("close %s: %w", path, err)
		}
		if i%3 == 2 {
			if err := c.Unlink(path); err != nil {
				return fmt.Errorf("unlink %s: %w", path, err)
			}
		}
	}
	return nil
}

func helperClient() int {
	id, _ := strconv.Atoi(os.Getenv(idEnv))
	iters, _ := strconv.Atoi(os.Getenv(iterEnv))
	c, err := front.Dial(front.Config{SocketPath: os.Getenv(sockEnv), SpinIters: helperSpins})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	err = clientRounds(c, id, iters, func() { fmt.Println(readyLine) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	fmt.Println(submitted, c.Submitted())
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}

func helperService() int {
	m := newMemStore()
	if d, err := time.ParseDuration(os.Getenv(fsyncEnv)); err == nil {
		m.fsyncDelay = d
	}
	s, err := Listen(Config{SocketPath: os.Getenv(sockEnv), Handler: m, SpinBudget: 100, Workers: 2})
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	fmt.Println(readyLine)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	stdin := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdin) }()
	select {
	case <-sig:
	case <-stdin:
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}

func helperDial() int {
	c, err := front.Dial(front.Config{SocketPath: os.Getenv(sockEnv)})
	switch {
	case err == nil:
		fmt.Println(dialResult, "ok")
		c.Close()
	case errors.Is(err, front.ErrRefused) && errors.Is(err, syscall.EACCES):
		fmt.Println(dialResult, "refused")
	default:
		fmt.Println(dialResult, "error", err)
	}
	return 0
}

// helper is a running helper process.
type helper struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	stdin  io.WriteCloser
}

func startHelper(t *testing.T, kind string, env ...string) *helper {
	t.Helper()
	return startHelperCmd(t, exec.Command(os.Args[0], "-test.run=^$"), kind, env...)
}

func startHelperCmd(t *testing.T, cmd *exec.Cmd, kind string, env ...string) *helper {
	t.Helper()
	h := &helper{lines: make(chan string, 16), cmd: cmd}
	h.cmd.Env = append(append(os.Environ(), helperEnv+"="+kind), env...)
	h.cmd.Stderr = &h.stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.stdin, err = h.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	return h
}

// expect waits for the next output line starting with prefix.
func (h *helper) expect(t *testing.T, prefix string) string {
	t.Helper()
	return h.expectWithin(t, prefix, 60*time.Second)
}

// expectWithin is expect with a bound of its own (a soak's helpers run long).
func (h *helper) expectWithin(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				err := h.cmd.Wait()
				t.Fatalf("helper exited (%v) before %q; stderr:\n%s", err, prefix, h.stderr.String())
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			h.cmd.Process.Kill()
			t.Fatalf("no %q from helper in %v; stderr:\n%s", prefix, d, h.stderr.String())
		}
	}
}

func (h *helper) kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	h.cmd.Wait()
}

func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "svc.sock")
}
