package back

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// soakIters turns TestNoLossNoDupAcrossProcesses into a soak:
// go test -race -run NoLoss ./ipc/back -args -ipc.soak-iters=20000
var soakIters = flag.Int("ipc.soak-iters", 40, "rounds per client in TestNoLossNoDupAcrossProcesses")

func startService(t testing.TB, cfg Config) (*Service, *memStore) {
	t.Helper()
	m := newMemStore()
	if cfg.Handler == nil {
		cfg.Handler = m
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = filepath.Join(t.TempDir(), "svc.sock")
	}
	if cfg.SpinBudget == 0 {
		cfg.SpinBudget = 100
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, m
}

func dial(t testing.TB, s *Service) *front.Client {
	t.Helper()
	c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: helperSpins})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond for up to 20 s: the tests wait for asynchronous reclaim, and a
// slow machine must not fail them.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFilesystemOpsInProcess(t *testing.T) {
	s, m := startService(t, Config{})
	c := dial(t, s)
	if err := c.Mkdir("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir("/d", 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second mkdir: %v", err)
	}
	h, err := c.Create("/d/f", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create("/d/f", 0o600); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second create: %v", err)
	}
	data := payload(1, 3)
	if n, err := c.WriteAt(h, data, 10); err != nil || n != len(data) {
		t.Fatalf("write %d %v", n, err)
	}
	got := make([]byte, len(data)+100)
	n, err := c.ReadAt(h, got, 10)
	if err != nil || n != len(data) || !slices.Equal(got[:n], data) {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	st, err := c.Stat("/d/f")
	if err != nil || st.Size != int64(len(data)+10) || st.Mode != syscall.S_IFREG|0o600 {
		t.Fatalf("stat %+v %v", st, err)
	}
	if err := c.Truncate(h, 5); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Fstat(h); err != nil || st.Size != 5 {
		t.Fatalf("fstat after truncate %+v %v", st, err)
	}
	if err := c.Fsync(h); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename("/d/f", "/d/g"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat("/d/f"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat of renamed-away path: %v", err)
	}
	if _, err := c.Create("/d/h", 0o644); err != nil {
		t.Fatal(err)
	}
	dh, err := c.Open("/d", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := c.ReadDir(dh, func(name []byte, typ uint8, _ uint64) bool {
		names = append(names, string(name))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"g", "h"}) {
		t.Fatalf("readdir %v", names)
	}
	if err := c.Rmdir("/d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of non-empty dir: %v", err)
	}
	for _, p := range []string{"/d/g", "/d/h"} {
		if err := c.Unlink(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Rmdir("/d"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseHandle(h); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseHandle(h); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("double close: %v", err)
	}
	if _, err := c.Open(strings.Repeat("x", wire.PathMax+1), 0, 0); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("long path: %v", err)
	}
	if got := m.open.Load(); got != 2 { // the directory and /d/h stay open
		t.Fatalf("%d open handles, want 2", got)
	}
	c.Close()
	waitFor(t, "reclaim of the closed client", func() bool { return s.Stats().LiveClients == 0 })
	if got := m.open.Load(); got != 0 {
		t.Fatalf("%d handles left after the client went away", got)
	}
	if st := s.Stats(); st.MappedArenas != 0 || st.Rejected != 0 || st.Dropped != 0 || st.Corrupt != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHandlesArePerClient: a handle means nothing in another client's request.
func TestHandlesArePerClient(t *testing.T) {
	s, _ := startService(t, Config{})
	a, b := dial(t, s), dial(t, s)
	h, err := a.Create("/secret", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(h, []byte("a's data"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := b.ReadAt(h, buf, 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("client b read with a's handle: %v", err)
	}
	if err := b.CloseHandle(h); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("client b closed a's handle: %v", err)
	}
	if n, err := a.ReadAt(h, buf, 0); err != nil || string(buf[:n]) != "a's data" {
		t.Fatalf("a's handle damaged: %q %v", buf[:n], err)
	}
}

// TestNoLossNoDupAcrossProcesses runs client processes and in-process clients at once
// against one service: every client verifies its data, and the service answered
// exactly as many descriptors as the clients submitted.
func TestNoLossNoDupAcrossProcesses(t *testing.T) {
	s, m := startService(t, Config{Workers: 2})
	const procs, goroutines = 3, 2
	iters := *soakIters
	var helpers []*helper
	for i := range procs {
		helpers = append(helpers, startHelper(t, "client", sockEnv+"="+s.Addr(), idEnv+"="+strconv.Itoa(i),
			iterEnv+"="+strconv.Itoa(iters)))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total uint64
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: helperSpins})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := clientRounds(c, 100+g, iters, nil); err != nil {
				errs <- err
			}
			mu.Lock()
			total += c.Submitted()
			mu.Unlock()
		}()
	}
	for _, h := range helpers {
		// A round takes a few milliseconds (tens under -race on a busy machine).
		line := h.expectWithin(t, submitted, max(60*time.Second, time.Duration(iters)*50*time.Millisecond))
		n, err := strconv.ParseUint(strings.Fields(line)[1], 10, 64)
		if err != nil {
			t.Fatal(line)
		}
		if err := h.cmd.Wait(); err != nil {
			t.Fatalf("client process: %v\n%s", err, h.stderr.String())
		}
		mu.Lock()
		total += n
		mu.Unlock()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "every client reclaimed", func() bool { return s.Stats().LiveClients == 0 })
	st := s.Stats()
	if uint64(st.Served) != total {
		t.Fatalf("service answered %d descriptors, clients submitted %d", st.Served, total)
	}
	if st.MappedArenas != 0 || st.Dropped != 0 || st.Rejected != 0 || st.Corrupt != 0 || m.open.Load() != 0 {
		t.Fatalf("after all clients left: %+v, %d open handles", st, m.open.Load())
	}
}

// TestClientKills SIGKILLs 100 clients in the middle of their requests while other
// clients verify their data, then checks that every arena and handle was reclaimed.
func TestClientKills(t *testing.T) {
	kills := 100
	if testing.Short() {
		kills = 20
	}
	s, m := startService(t, Config{Workers: 2})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: helperSpins})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := clientRounds(c, 200+g, 1, nil); err != nil {
					errs <- fmt.Errorf("verifying client %d round %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	for i := range kills {
		h := startHelper(t, "client", sockEnv+"="+s.Addr(), idEnv+"="+strconv.Itoa(i), iterEnv+"=0")
		h.expect(t, readyLine)
		// A little later, so that some kills land mid-request.
		if i%2 == 1 {
			time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		}
		h.kill()
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "every killed client reclaimed", func() bool {
		st := s.Stats()
		return st.LiveClients == 0 && st.MappedArenas == 0
	})
	if got := m.open.Load(); got != 0 {
		t.Fatalf("%d handles of dead clients never released", got)
	}
	if st := s.Stats(); st.Admitted != int64(kills+2) || st.Corrupt != 0 {
		t.Fatalf("admitted %d clients (want %d), %d disconnected as corrupt (want 0)", st.Admitted, kills+2, st.Corrupt)
	}
	// The service still serves newcomers.
	c := dial(t, s)
	if err := clientRounds(c, 999, 3, nil); err != nil {
		t.Fatal(err)
	}
}

// TestServiceKillAndRestart kills the service process while clients wait on slow
// requests: every waiting call fails with ENOTCONN or EIO, later calls fail at once,
// and a restarted service on the same socket accepts new clients.
func TestServiceKillAndRestart(t *testing.T) {
	sock := sockPath(t)
	svc := startHelper(t, "service", sockEnv+"="+sock, fsyncEnv+"=1h")
	svc.expect(t, readyLine)
	const waiting = 3
	results := make(chan error, waiting)
	var clients []*front.Client
	for range waiting {
		c, err := front.Dial(front.Config{SocketPath: sock, SpinIters: helperSpins})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	// Open every file first: once the fsyncs start, the service's two workers
	// are busy for an hour.
	var handles []uint64
	for i, c := range clients {
		h, err := c.Create(fmt.Sprintf("/f%d", i), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, h)
	}
	for i, c := range clients {
		go func() { results <- c.Fsync(handles[i]) }() // sleeps in the service for an hour
	}
	// Two workers are stuck in fsync; the third request waits in the ring. Give
	// the calls time to reach their futex sleep.
	time.Sleep(100 * time.Millisecond)
	killed := time.Now()
	svc.kill()
	for range waiting {
		select {
		case err := <-results:
			if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.EIO) {
				t.Fatalf("waiting call returned %v, want ENOTCONN or EIO", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a call waiting on a dead service hung")
		}
	}
	t.Logf("waiting calls failed %v after the kill", time.Since(killed))
	for _, c := range clients {
		if err := c.Nop(); !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("call on a client of a dead service: %v", err)
		}
	}
	svc2 := startHelper(t, "service", sockEnv+"="+sock)
	svc2.expect(t, readyLine)
	defer func() {
		svc2.stdin.Close()
		if err := svc2.cmd.Wait(); err != nil {
			t.Errorf("restarted service exit: %v\n%s", err, svc2.stderr.String())
		}
	}()
	c, err := front.Dial(front.Config{SocketPath: sock, SpinIters: helperSpins})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := clientRounds(c, 7, 5, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeRefusedByRule(t *testing.T) {
	var seen []Credential
	var mu sync.Mutex
	s, _ := startService(t, Config{Allow: func(c Credential) error {
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
		return AllowUIDs(12345)(c)
	}})
	_, err := front.Dial(front.Config{SocketPath: s.Addr()})
	if !errors.Is(err, front.ErrRefused) || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Dial by a disallowed uid: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0].PID != int32(os.Getpid()) || seen[0].UID != uint32(os.Geteuid()) {
		t.Fatalf("allow rule saw %+v, want this process's credentials", seen)
	}
	if st := s.Stats(); st.Refused != 1 || st.Admitted != 0 || st.MappedArenas != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHandshakeRefusedRealUID connects from a child process running as nobody: the
// default rule (root or the service's uid) refuses it, with the kernel's credentials.
func TestHandshakeRefusedRealUID(t *testing.T) {
	testenv.Root(t)
	dir, bin := otherUIDBinary(t)
	s, _ := startService(t, Config{SocketPath: filepath.Join(dir, "svc.sock")})
	if err := os.Chmod(s.Addr(), 0o777); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=dial", sockEnv+"="+s.Addr())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobody, err, out)
	}
	if !strings.Contains(string(out), dialResult+" refused") {
		t.Fatalf("dial as uid %d: %s", nobody, out)
	}
	// And the same rule admits root.
	dial(t, s)
	if st := s.Stats(); st.Refused != 1 || st.Admitted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBadDescriptorsGetEINVAL(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s, _ := startService(t, Config{Logger: zap.New(core)})
	c := dial(t, s)
	other := dial(t, s)
	lo, hi := c.DataArea()
	h, err := other.Create("/theirs", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	v := uint16(wire.Version)
	cases := []struct {
		name string
		d    wire.Desc
		want syscall.Errno
	}{
		{"bad version", wire.Desc{Version: 9, Op: wire.OpNop}, syscall.EINVAL},
		{"zero op", wire.Desc{Version: v}, syscall.EINVAL},
		{"unknown op", wire.Desc{Version: v, Op: 4000}, syscall.EINVAL},
		{"buffer over descriptors", wire.Desc{Version: v, Op: wire.OpStat, BufOff: 0, Length: 64, Aux: 2}, syscall.EINVAL},
		{"buffer past the arena", wire.Desc{Version: v, Op: wire.OpWrite, Handle: 1, BufOff: hi - 8, Length: 64}, syscall.EINVAL},
		{"wrapping buffer", wire.Desc{Version: v, Op: wire.OpRead, Handle: 1, BufOff: 0xffffff00, Length: 0x200}, syscall.EINVAL},
		{"oversized read", wire.Desc{Version: v, Op: wire.OpRead, Handle: 1, BufOff: lo, Length: wire.MaxIO + 1}, syscall.EINVAL},
		{"path longer than buffer", wire.Desc{Version: v, Op: wire.OpUnlink, BufOff: lo, Length: 4, Aux: 5}, syscall.EINVAL},
		{"stray flags", wire.Desc{Version: v, Op: wire.OpFsync, Handle: 1, Flags: 2}, syscall.EINVAL},
		{"another client's handle", wire.Desc{Version: v, Op: wire.OpRead, Handle: h, BufOff: lo, Length: 16}, syscall.EBADF},
		{"made-up handle", wire.Desc{Version: v, Op: wire.OpFsync, Handle: 1<<32 | 77}, syscall.EBADF},
	}
	for _, tc := range cases {
		status, _, err := c.SubmitRaw(tc.d)
		if err != nil {
			t.Fatalf("%s: transport error %v", tc.name, err)
		}
		if status != -int32(tc.want) {
			t.Errorf("%s: status %d, want -%d (%v)", tc.name, status, tc.want, tc.want)
		}
	}
	if err := c.Nop(); err != nil {
		t.Fatalf("service unusable after bad descriptors: %v", err)
	}
	if st := s.Stats(); st.Rejected != int64(len(cases)-2) {
		t.Fatalf("rejected %d, want %d", st.Rejected, len(cases)-2)
	}
	// Rate-limited: a burst of bad descriptors gives at most a line or two.
	lines := logs.FilterMessage("ipc malformed descriptor")
	if lines.Len() == 0 || lines.Len() > 2 {
		t.Fatalf("%d log lines for %d malformed descriptors, want 1 or 2", lines.Len(), len(cases)-2)
	}
	f := lines.All()[0].ContextMap()
	if f["field"] != "version" {
		t.Fatalf("first log line names field %v", f["field"])
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []Config{
		{SocketPath: filepath.Join(dir, "a")},
		{Handler: newMemStore()},
		{SocketPath: filepath.Join(dir, "b"), Handler: newMemStore(), Workers: 1000},
		{SocketPath: filepath.Join(dir, "c"), Handler: newMemStore(), SlotBytes: 100},
		{SocketPath: filepath.Join(dir, "d"), Handler: newMemStore(), RingCap: 1000},
		{SocketPath: filepath.Join(dir, "d2"), Handler: newMemStore(), RingCap: 16, DescsPerClient: 32},
		{SocketPath: filepath.Join(dir, "d3"), Handler: newMemStore(), MaxClients: 4, MaxClientsPerUID: 5},
		{SocketPath: filepath.Join(dir, "d4"), Handler: newMemStore(), MaxPendingPerUID: 8, MaxPending: 4},
		{SocketPath: filepath.Join(dir, "e"), Handler: newMemStore(), CPUs: []int{-1}},
	} {
		if s, err := Listen(cfg); err == nil {
			s.Close()
			t.Errorf("Listen(%+v) succeeded", cfg)
		}
	}
	// A live service's socket is not stolen.
	s, _ := startService(t, Config{})
	if s2, err := Listen(Config{SocketPath: s.Addr(), Handler: newMemStore()}); err == nil {
		s2.Close()
		t.Fatal("a second service took over a live socket")
	}
}

func TestPinnedWorkers(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for i := 0; i < 1024; i++ {
		if set.IsSet(i) {
			cpu = i // the last one: on a machine with several, not every thread's mask
		}
	}
	if cpu < 0 {
		t.Fatal("no CPU in this process's affinity mask")
	}
	before, beforeNotMain := pinnedThreads(t, cpu, true), pinnedThreads(t, cpu, false)
	s, _ := startService(t, Config{Workers: 2, CPUs: []int{cpu}})
	c := dial(t, s)
	if err := clientRounds(c, 5, 3, nil); err != nil {
		t.Fatal(err)
	}
	if set.Count() > 1 {
		// Read the affinity back from the kernel: two more threads allowed only
		// this CPU.
		if n := pinnedThreads(t, cpu, true); n != before+2 {
			t.Fatalf("%d threads pinned to CPU %d, want %d", n, cpu, before+2)
		}
	}
	c.Close()
	s.Close()
	// The pinned threads ended with their workers; none went back to the scheduler.
	deadline := time.Now().Add(5 * time.Second)
	for set.Count() > 1 && pinnedThreads(t, cpu, false) != beforeNotMain {
		if time.Now().After(deadline) {
			t.Fatalf("%d threads still pinned to CPU %d after Close, want %d", pinnedThreads(t, cpu, false), cpu, beforeNotMain)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pinnedThreads counts this process's threads whose affinity is exactly cpu, the
// main thread only if withMain: a locked goroutine that exits on it leaves it
// parked for good (the runtime never ends the main thread), running nothing.
func pinnedThreads(t *testing.T, cpu int, withMain bool) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	main := strconv.Itoa(os.Getpid())
	for _, task := range tasks {
		if task.Name() == main && !withMain {
			continue
		}
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) == strconv.Itoa(cpu) {
				n++
			}
		}
	}
	return n
}

// TestForgedRingEntries writes entries into a client's ring the way a hostile
// client could (through the service's own mapping of that arena, which is the
// same memory): an entry for a later or an earlier lap is not taken, an index out
// of range or naming a descriptor that is not submitted disconnects the client,
// and nobody else notices.
func TestForgedRingEntries(t *testing.T) {
	s, _ := startService(t, Config{})
	bystander := dial(t, s)
	for _, tc := range []struct {
		name       string
		seq        func(head uint64) uint32
		idx        func(c *ClientCtx) uint32
		disconnect bool
	}{
		{"sequence a lap ahead", func(h uint64) uint32 { return wire.RingSeq(h + 1<<20) }, func(*ClientCtx) uint32 { return 0 }, false},
		{"sequence behind", func(h uint64) uint32 { return wire.RingSeq(h - 1) }, func(*ClientCtx) uint32 { return 0 }, false},
		{"index out of range", wire.RingSeq, func(c *ClientCtx) uint32 { return c.numDesc }, true},
		{"index far out of range", wire.RingSeq, func(c *ClientCtx) uint32 { return 0xffff0000 }, true},
		{"descriptor not submitted", wire.RingSeq, func(c *ClientCtx) uint32 { return c.numDesc - 1 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			c := dial(t, s)
			if err := c.Nop(); err != nil {
				t.Fatal(err)
			}
			var cc *ClientCtx
			for i := range s.clients {
				if x := s.clients[i].Load(); x != nil && x.PID == int32(os.Getpid()) && x.head.Load() == 1 {
					cc = x
				}
			}
			if cc == nil {
				t.Fatal("client not found in the service's table")
			}
			h := cc.head.Load()
			atomic.StoreUint64(&cc.ring[h&cc.mask], wire.RingEntry(tc.seq(h), tc.idx(cc)))
			// What a client does after publishing, whether a worker sleeps or not.
			if err := shm.EventfdWrite(cc.efd); err != nil {
				t.Fatal(err)
			}
			if tc.disconnect {
				waitFor(t, "the forging client disconnected", func() bool { return s.Stats().Corrupt == before.Corrupt+1 })
				if err := c.Nop(); !errors.Is(err, syscall.ENOTCONN) {
					t.Fatalf("call after the disconnect: %v, want ENOTCONN", err)
				}
				waitFor(t, "the forging client reclaimed", func() bool { return s.clients[cc.slot].Load() != cc })
			} else {
				// Not taken: the client's own next publish at that position
				// replaces it and is served.
				for range 3 {
					if err := c.Nop(); err != nil {
						t.Fatalf("client after a stray entry: %v", err)
					}
				}
				if cc.head.Load() != h+3 {
					t.Fatalf("head %d, want %d: a stray entry was taken", cc.head.Load(), h+3)
				}
			}
			if err := clientRounds(bystander, 1, 2, nil); err != nil {
				t.Fatalf("another client: %v", err)
			}
		})
	}
}

// TestSetWorkers grows and shrinks the workers while clients run rounds of
// verified requests: nothing is lost or corrupted, the workers' threads (pinned,
// so countable by their affinity) appear and end, and a retire reference forged
// at the target retires nobody.
func TestSetWorkers(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for i := 0; i < 1024; i++ {
		if set.IsSet(i) {
			cpu = i
		}
	}
	countable := set.Count() > 1
	before, beforeMain := pinnedThreads(t, cpu, false), pinnedThreads(t, cpu, true)
	s, _ := startService(t, Config{Workers: 1, CPUs: []int{cpu}})
	errs := make(chan error, 3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	for id := 0; id < 3; id++ {
		c := dial(t, s)
		// Before the client's own cleanup: a failed check must not unmap its
		// arena under a running round.
		t.Cleanup(halt)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if err := clientRounds(c, 10+id, 2, nil); err != nil {
					errs <- fmt.Errorf("client %d: %w", id, err)
					return
				}
			}
		}()
	}
	waitWorkers := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		// A worker may run on the main thread, which outlives it, pinned: so at
		// least n threads pinned counting it, at most n not counting it.
		for s.Workers() != n || countable && (pinnedThreads(t, cpu, true) < beforeMain+n || pinnedThreads(t, cpu, false) > before+n) {
			if time.Now().After(deadline) {
				t.Fatalf("workers %d, pinned threads %d (%d with the main thread): want %d", s.Workers(),
					pinnedThreads(t, cpu, false)-before, pinnedThreads(t, cpu, true)-beforeMain, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, n := range []int{4, 1, 3, 2, 2, 5, 1} {
		if got, err := s.SetWorkers(n); err != nil || got != n {
			t.Fatalf("SetWorkers(%d) = %d, %v", n, got, err)
		}
		waitWorkers(n)
	}
	// Waking the workers at the target retires nobody.
	s.wakeWorkers()
	if err := clientRounds(dial(t, s), 20, 3, nil); err != nil {
		t.Fatal(err)
	}
	if s.Workers() != 1 {
		t.Fatalf("a wake-up at the target: %d workers", s.Workers())
	}
	for _, bad := range []int{0, -1, 257} {
		if _, err := s.SetWorkers(bad); err == nil {
			t.Errorf("SetWorkers(%d) accepted", bad)
		}
	}
	halt()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Retired != 3+1+4 || st.Workers != 1 {
		t.Fatalf("stats %+v: want 8 retired, 1 worker", st)
	}
	s.Close()
	if _, err := s.SetWorkers(2); err == nil {
		t.Fatal("SetWorkers after Close accepted")
	}
}

// TestWorkersSpreadAfterShrinkAndGrow: a worker started after a retirement goes
// to the CPU that lost one, whichever worker the retire reference reached, so
// a shrink and a grow never pile the pool's workers onto one CPU. (The
// kernel's view of the pinning is TestPinnedWorkers'; a retired worker that
// ran on the main thread leaves it parked with its mask, which would blur
// thread counts here.)
func TestWorkersSpreadAfterShrinkAndGrow(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		t.Skip("needs two CPUs to spread workers over")
	}
	s, _ := startService(t, Config{Workers: 2, CPUs: cpus})
	c := dial(t, s)
	perCPU := func() []int {
		s.workersMu.Lock()
		defer s.workersMu.Unlock()
		return slices.Clone(s.cpuWorkers)
	}
	if got := perCPU(); !slices.Equal(got, []int{1, 1}) {
		t.Fatalf("workers per CPU at start %v, want [1 1]", got)
	}
	for round := 0; round < 40; round++ {
		if _, err := s.SetWorkers(1); err != nil {
			t.Fatal(err)
		}
		if err := clientRounds(c, 3, 2, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a worker retired", func() bool { return s.Workers() == 1 })
		if got := perCPU(); got[0]+got[1] != 1 {
			t.Fatalf("round %d: workers per CPU after the shrink %v", round, got)
		}
		if _, err := s.SetWorkers(2); err != nil {
			t.Fatal(err)
		}
		if got := perCPU(); !slices.Equal(got, []int{1, 1}) {
			t.Fatalf("round %d: workers per CPU after shrink and grow %v, want [1 1]", round, got)
		}
	}
}

// TestGivenListener: a service can serve a listening socket made by someone else
// (a privileged parent), and Close closes it.
func TestGivenListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "given.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startService(t, Config{SocketPath: path, Listener: ln})
	if err := clientRounds(dial(t, s), 1, 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("the given listener still accepts after Close")
	}
}
