package service_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/service"
)

// The fault tests run services and clients in separate processes by re-executing the
// test binary with roleEnv set; TestMain then plays that role instead of testing.
const (
	roleEnv   = "POLYTROPON_SERVICE_TEST_ROLE"
	configEnv = "POLYTROPON_SERVICE_TEST_CONFIG"
	sockEnv   = "POLYTROPON_SERVICE_TEST_SOCK"
	idEnv     = "POLYTROPON_SERVICE_TEST_ID"
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "service":
		cfg, err := service.LoadConfig(os.Getenv(configEnv))
		if err == nil {
			err = service.Run(*cfg, nil, func(*service.Service) { fmt.Println("ready") })
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "service:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "holder":
		os.Exit(roleHolder())
	case "control":
		os.Exit(roleControl())
	case "worker":
		os.Exit(roleWorker())
	default:
		fmt.Fprintln(os.Stderr, "unknown role")
		os.Exit(2)
	}
}

// roleHolder opens files, takes a lock and writes, then waits to be killed.
func roleHolder() int {
	c, err := fslib.Dial(fslib.DialOptions{Socket: os.Getenv(sockEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := range 3 {
		f, err := c.Create(fmt.Sprintf("/data/held%d", i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := f.Write([]byte("held")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if _, err := c.Lock("/data/LOCK"); err != nil {
		fmt.Fprintln(os.Stderr, "lock:", err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

// roleWorker writes, reads back and verifies its own files, then reports.
func roleWorker() int {
	id, _ := strconv.Atoi(os.Getenv(idEnv))
	c, err := fslib.Dial(fslib.DialOptions{Socket: os.Getenv(sockEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if err := workRounds(c, id, 40); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ok")
	return 0
}

func content(id, i int) []byte {
	b := make([]byte, 1+(id*7919+i*104729)%(100<<10))
	x := uint32(id*1000003 + i)
	for j := range b {
		x = x*1664525 + 1013904223
		b[j] = byte(x >> 24)
	}
	return b
}

func workRounds(c *fslib.Client, id, rounds int) error {
	dir := fmt.Sprintf("/data/w%d", id)
	if err := c.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := range rounds {
		name := fmt.Sprintf("%s/f%d", dir, i%4)
		want := content(id, i)
		if err := c.WriteFile(name, want, 0o644); err != nil {
			return err
		}
		got, err := c.ReadFile(name)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s: read back %d bytes, not what was written (%d)", name, len(got), len(want))
		}
		if _, err := c.ReadFile("/data/shared"); err != nil {
			return err
		}
	}
	return nil
}

// proc is a helper process whose stdout lines are collected.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	errb  *bytes.Buffer
}

func spawn(t *testing.T, role string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 16), errb: &bytes.Buffer{}}
	cmd.Stderr = p.errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

func (p *proc) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok || l != want {
			t.Fatalf("helper said %q (closed %v), want %q; stderr:\n%s", l, !ok, want, p.errb)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("helper silent, want %q; stderr:\n%s", want, p.errb)
	}
}

// diskConfig writes a service config whose instance "data" is a cache over
// passthrough on dir, so that its files outlive the service process.
func diskConfig(t *testing.T, dir, policy string) (cfgPath, sock string) {
	sock = filepath.Join(t.TempDir(), "s.sock")
	cfgPath = filepath.Join(t.TempDir(), "service.yaml")
	y := fmt.Sprintf(`socket: %s
spin: 0
filesystems:
  - name: data
    stack:
      - cache: {size: 8MiB, policy: %s, flush_interval: 1h}
      - passthrough: {dir: %s}
`, sock, policy, dir)
	if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, sock
}

// serviceWithClient starts a service over dir in another process and connects a
// client, closed at the end of the test.
func serviceWithClient(t *testing.T, dir, policy string) (*proc, *fslib.Client) {
	t.Helper()
	cfg, sock := diskConfig(t, dir, policy)
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return svc, c
}

func statusOf(t *testing.T, sock string) service.Status {
	raw, err := fslib.ServiceStatus(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	var st service.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestClientKilledReleasesHandlesAndLocks: a client SIGKILLed while holding open
// files and a lock leaves nothing behind in the service.
func TestClientKilledReleasesHandlesAndLocks(t *testing.T) {
	cfg, sock := diskConfig(t, t.TempDir(), "writeback")
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")
	holder := spawn(t, "holder", sockEnv+"="+sock)
	holder.expect(t, "ready")
	st := statusOf(t, sock)
	if st.Filesystems[0].Open != 4 || st.Filesystems[0].Locks != 1 {
		t.Fatalf("before the kill: %+v, want 4 open handles (3 files, 1 lock) and 1 lock", st.Filesystems[0])
	}
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Lock("/data/LOCK"); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("lock held by another client: %v, want EAGAIN", err)
	}
	holder.cmd.Process.Kill()
	holder.cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = statusOf(t, sock)
		if st.Filesystems[0].Open == 0 && st.Filesystems[0].Locks == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the kill: %+v, want nothing open", st.Filesystems[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, err := c.Lock("/data/LOCK")
	if err != nil {
		t.Fatalf("lock after its holder died: %v", err)
	}
	l.Close()
	// The killed client's writes went through the write-back cache; its handles'
	// Close flushed them.
	if b, err := c.ReadFile("/data/held2"); err != nil || string(b) != "held" {
		t.Fatalf("held2: %q %v", b, err)
	}
}

// TestServiceKilledUnderLoad: calls in flight and later fail within 1 s when the
// service is SIGKILLed (never hang), and the same Client works again once a new
// service listens on the socket.
func TestServiceKilledUnderLoad(t *testing.T) {
	dir := t.TempDir()
	cfg, sock := diskConfig(t, dir, "writethrough")
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/data/shared", []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		slowest time.Duration
		failed  int
	)
	stop := make(chan struct{})
	// The kill comes once every loader has its file: a Create still in flight
	// then (a slow machine) would fail for the right reason but uncounted.
	created := make(chan struct{}, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := c.Create(fmt.Sprintf("/data/load%d", g))
			created <- struct{}{}
			if err != nil {
				t.Error(err)
				return
			}
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				_, err := f.WriteAt(buf, 0)
				if err == nil {
					_, err = c.Stat("/data/shared")
				}
				if err != nil {
					mu.Lock()
					slowest = max(slowest, time.Since(t0))
					failed++
					mu.Unlock()
					if !errors.Is(err, syscall.ENOTCONN) {
						t.Errorf("call failed with %v, want ENOTCONN", err)
					}
					return
				}
			}
		}()
	}
	for range 4 {
		<-created
	}
	time.Sleep(200 * time.Millisecond)
	svc.cmd.Process.Kill()
	svc.cmd.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(stop)
		t.Fatal("calls still hang 10 s after the service was killed")
	}
	if failed != 4 {
		t.Fatalf("%d of 4 loaders saw the failure", failed)
	}
	// A functional bound from the issue, not a performance figure: the client polls
	// the socket every WaitSlice (20 ms), so the margin is 50x.
	if slowest > time.Second {
		t.Fatalf("a call took %v to fail after the service died, want <= 1 s", slowest)
	}
	t0 := time.Now()
	if _, err := c.Stat("/data/shared"); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("call with no service: %v, want ENOTCONN", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("call with no service took %v", d)
	}
	t.Logf("slowest in-flight call failed after %v", slowest)

	svc2 := spawn(t, "service", configEnv+"="+cfg)
	svc2.expect(t, "ready")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := c.ReadFile("/data/shared")
		if err == nil {
			if string(b) != "shared" {
				t.Fatalf("after restart: %q", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client never reconnected: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGTERMFlushesAndExits0: SIGTERM with a file still open and dirty in a
// write-back cache: the service finishes, flushes and exits 0.
func TestSIGTERMFlushesAndExits0(t *testing.T) {
	dir := t.TempDir()
	svc, c := serviceWithClient(t, dir, "writeback")
	f, err := c.Create("/data/dirty")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("polytropon"), 1000)
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "dirty")); len(got) == len(want) {
		t.Log("note: data reached the disk before SIGTERM (the cache flushed early)")
	}
	svc.cmd.Process.Signal(syscall.SIGTERM)
	if err := svc.cmd.Wait(); err != nil {
		t.Fatalf("service exit after SIGTERM: %v\n%s", err, svc.errb)
	}
	got, err := os.ReadFile(filepath.Join(dir, "dirty"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after SIGTERM the backing file has %d bytes (%v), want %d", len(got), err, len(want))
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("write after the service stopped: %v, want ENOTCONN", err)
	}
}

// TestSIGKILLKeepsWhatFsyncPromised: data fsynced through a write-back cache is on
// disk after a SIGKILL of the service.
func TestSIGKILLKeepsWhatFsyncPromised(t *testing.T) {
	dir := t.TempDir()
	svc, c := serviceWithClient(t, dir, "writeback")
	f, err := c.Create("/data/synced")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("durable!"), 2048)
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("not promised")); err != nil {
		t.Fatal(err)
	}
	svc.cmd.Process.Kill()
	svc.cmd.Wait()
	got, err := os.ReadFile(filepath.Join(dir, "synced"))
	if err != nil || len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("after SIGKILL: %d bytes (%v), want the %d fsynced bytes", len(got), err, len(want))
	}
}

// TestSeveralClientProcesses: clients in separate processes share one service.
func TestSeveralClientProcesses(t *testing.T) {
	cfg, sock := diskConfig(t, t.TempDir(), "writeback")
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/data/shared", []byte("for everyone"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ws []*proc
	for id := range 4 {
		ws = append(ws, spawn(t, "worker", sockEnv+"="+sock, idEnv+"="+strconv.Itoa(id)))
	}
	for _, w := range ws {
		w.expect(t, "ok")
		if err := w.cmd.Wait(); err != nil {
			t.Fatalf("worker: %v\n%s", err, w.errb)
		}
	}
	for id := range 4 {
		for i := 36; i < 40; i++ {
			b, err := c.ReadFile(fmt.Sprintf("/data/w%d/f%d", id, i%4))
			if err != nil || !bytes.Equal(b, content(id, i)) {
				t.Fatalf("worker %d's file %d: %d bytes, %v", id, i%4, len(b), err)
			}
		}
	}
}
