package back

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/wire"
)

// hostileEnv picks what a "hostile" helper process does.
const hostileEnv = "POLYTROPON_IPC_TEST_HOSTILE"

// out prints one result line of a helper.
func out(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// helperHostile is a client that attacks its own service in one way, prints
// what happened, then holds what it took until its stdin closes.
func helperHostile() int {
	sock := os.Getenv(sockEnv)
	var hold []*rawClient
	var err error
	switch mode := os.Getenv(hostileEnv); mode {
	case "scribble":
		err = hostileScribble(sock)
	case "forge":
		err = hostileForge(sock)
	case "flood":
		err = hostileFlood(sock)
	case "handles":
		err = hostileHandles(sock)
	case "slots":
		hold, err = hostileSlots(sock)
	case "pending":
		err = hostilePending(sock)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		return 1
	}
	out("done")
	io.Copy(io.Discard, os.Stdin)
	for _, r := range hold {
		r.close()
	}
	return 0
}

// errnoName is how helpers report an error: its errno, or the error text.
func errnoName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	if err == nil {
		return "ok"
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// hostileScribble tries to write the status page every way it can, then fills
// every byte of its arena (header, ring, descriptors, data) with garbage, floods
// its eventfd, and finally publishes an entry that names no descriptor.
func hostileScribble(sock string) error {
	r, err := rawDial(sock)
	if err != nil {
		return err
	}
	if err := r.nop(0); err != nil {
		return fmt.Errorf("honest first call: %w", err)
	}
	size := len(r.status)
	_, err = unix.Mmap(r.statusFd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	out("statuspage mmap-write %s", errnoName(err))
	out("statuspage mprotect-write %s", errnoName(unix.Mprotect(r.status, unix.PROT_READ|unix.PROT_WRITE)))
	_, err = unix.Pwrite(r.statusFd, []byte{0xff, 0xff, 0xff, 0xff}, wire.StatusOffSleepers)
	out("statuspage pwrite %s", errnoName(err))
	out("statuspage ftruncate %s", errnoName(unix.Ftruncate(r.statusFd, 0)))
	out("statuspage punch-hole %s", errnoName(unix.Fallocate(r.statusFd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, int64(size))))
	// A new open of the same memfd: the seals are the inode's.
	if fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", r.statusFd), unix.O_RDWR, 0); err != nil {
		out("statuspage reopen-mmap-write %s", errnoName(err))
	} else {
		_, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		out("statuspage reopen-mmap-write %s", errnoName(err))
		unix.Close(fd)
	}
	// A private copy may be written, and changes nothing for anybody else.
	if m, err := unix.Mmap(r.statusFd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE); err == nil {
		for i := range m {
			m[i] = 0xff
		}
		unix.Munmap(m)
	}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	for round := range 20 {
		for i := range r.arena {
			r.arena[i] = byte(rng.Uint32())
		}
		_ = unixWriteEventfd(r.efd, uint64(round)+1)
		time.Sleep(time.Millisecond)
	}
	_ = unixWriteEventfd(r.efd, 0xfffffffffffffffe-2)
	// The service's head is 1 (after the honest call): publish a well-formed
	// entry for it that names no descriptor.
	r.put(1, wire.RingEntry(wire.RingSeq(1), r.numDesc+7))
	out("scribbled disconnected=%v", r.hungUp(20*time.Second))
	r.close()
	return nil
}

func unixWriteEventfd(fd int, v uint64) error {
	var b [8]byte
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	_, err := unix.Write(fd, b[:])
	return err
}

// hostileForge publishes entries a service must not act on, one connection each.
func hostileForge(sock string) error {
	for _, tc := range []struct {
		name string
		// entry returns what to publish at position p of a client with n
		// descriptors; disconnect is whether the service should hang up.
		entry      func(p uint64, n uint32) uint64
		disconnect bool
	}{
		{"ahead", func(p uint64, _ uint32) uint64 { return wire.RingEntry(wire.RingSeq(p+1000), 0) }, false},
		{"behind", func(p uint64, _ uint32) uint64 { return wire.RingEntry(wire.RingSeq(p-1), 0) }, false},
		{"zero", func(uint64, uint32) uint64 { return 0 }, false},
		{"out-of-range", func(p uint64, n uint32) uint64 { return wire.RingEntry(wire.RingSeq(p), n) }, true},
		// Protocol 2's reference named a client by slot and generation in the
		// high bits; now the index is the whole low word and the high word is
		// the sequence: a "slot" can only make the index out of range.
		{"other-slot", func(p uint64, _ uint32) uint64 { return wire.RingEntry(wire.RingSeq(p), 1<<16|0) }, true},
		{"not-submitted", func(p uint64, n uint32) uint64 { return wire.RingEntry(wire.RingSeq(p), n-1) }, true},
	} {
		r, err := rawDial(sock)
		if err != nil {
			return err
		}
		if err := r.nop(0); err != nil {
			return fmt.Errorf("%s: honest first call: %w", tc.name, err)
		}
		r.put(r.tail, tc.entry(r.tail, r.numDesc))
		if tc.disconnect {
			out("forge %s disconnected=%v", tc.name, r.hungUp(20*time.Second))
		} else {
			// Not taken: the client's own entry for that position replaces it.
			time.Sleep(20 * time.Millisecond)
			out("forge %s disconnected=%v after=%s", tc.name, r.hungUp(0), errnoName(r.nop(1)))
		}
		r.close()
	}
	return nil
}

// hostileFlood sends requests as fast as it can from many goroutines, and spams
// its eventfd, for a while.
func hostileFlood(sock string) error {
	c, err := front.Dial(front.Config{SocketPath: sock, SpinIters: 1 << 20, SpinTime: -1})
	if err != nil {
		return err
	}
	defer c.Close()
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	for range 2 * c.Descriptors() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := c.Nop(); err != nil {
					fmt.Fprintln(os.Stderr, "flood:", err)
					return
				}
				n.Add(1)
			}
		}()
	}
	r, err := rawDial(sock)
	if err != nil {
		return err
	}
	spins := 0
	for ; time.Now().Before(stop); spins++ {
		_ = unixWriteEventfd(r.efd, 1)
	}
	wg.Wait()
	out("flood %d requests %d wakes", n.Load(), spins)
	r.close()
	return nil
}

// hostileHandles opens files until the service refuses.
func hostileHandles(sock string) error {
	c, err := front.Dial(front.Config{SocketPath: sock, SpinIters: 200})
	if err != nil {
		return err
	}
	defer c.Close()
	n := 0
	for ; n < 1<<20; n++ {
		if _, err = c.Open(fmt.Sprintf("/hostile-%d-%d", os.Getpid(), n), syscall.O_RDWR|syscall.O_CREAT, 0o600); err != nil {
			break
		}
	}
	out("handles %d %s", n, errnoName(err))
	return nil
}

// hostileSlots connects until refused, and keeps the connections.
func hostileSlots(sock string) ([]*rawClient, error) {
	var held []*rawClient
	var err error
	for len(held) < 1000 {
		var r *rawClient
		if r, err = rawDial(sock); err != nil {
			break
		}
		held = append(held, r)
	}
	out("slots %d %s", len(held), errnoName(err))
	return held, nil
}

// hostilePending opens connections and never says hello: past the uid's
// allowance they are refused at once; the others end at the handshake timeout.
func hostilePending(sock string) error {
	var silent []*rawClient
	refused := 0
	for range 6 {
		r, err := rawConnect(sock)
		if err != nil {
			return err
		}
		// A refusal comes without our Hello; a pending connection says
		// nothing until the service gives up on it.
		if _, err := r.welcomeWithin(200 * time.Millisecond); errors.Is(err, syscall.EAGAIN) {
			refused++
			r.close()
			continue
		}
		silent = append(silent, r)
	}
	out("pending silent=%d refused=%d", len(silent), refused)
	ended := 0
	for _, r := range silent {
		if r.hungUp(20 * time.Second) {
			ended++
		}
		r.close()
	}
	out("pending ended=%d", ended)
	return nil
}

// welcomeWithin reads a welcome if one comes within d.
func (r *rawClient) welcomeWithin(d time.Duration) ([]int, error) {
	fds := []unix.PollFd{{Fd: int32(r.sock), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, int(d/time.Millisecond)); n == 0 {
		return nil, syscall.ETIMEDOUT
	}
	return r.welcome()
}

// helperHonest makes verified rounds until its stdin closes; any failure ends it
// with an error.
func helperHonest() int {
	id, _ := strconv.Atoi(os.Getenv(idEnv))
	c, err := front.Dial(front.Config{SocketPath: os.Getenv(sockEnv), SpinIters: helperSpins, CallTimeout: 20 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "honest dial:", err)
		return 1
	}
	defer c.Close()
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	rounds := 0
	for ; ; rounds++ {
		select {
		case <-stop:
			out("ok %d", rounds)
			return 0
		default:
		}
		if err := clientRounds(c, id, 1, nil); err != nil {
			fmt.Fprintf(os.Stderr, "honest round %d: %v\n", rounds, err)
			return 1
		}
		if rounds == 0 {
			out(readyLine)
		}
	}
}

// otherUIDBinary returns a directory other uids can traverse and a copy of the
// test binary in it they can run.
func otherUIDBinary(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "polytropon-ipc-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "helper")
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// startHelperAs is startHelper for the binary bin running as uid.
func startHelperAs(t *testing.T, bin string, uid uint32, kind string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	h := startHelperCmd(t, cmd, kind, env...)
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			h.kill()
		}
	})
	return h
}

// TestHostileClients runs hostile clients, each in its own process as one uid,
// against a service in this process, while an honest client of another uid (also
// its own process) makes verified calls the whole time: every one of its calls
// succeeds, each hostile client that corrupted its ring is disconnected and
// reclaimed, quotas refuse only the hostile uid, and the service is never
// restarted (one Service value, never closed, serving new clients at the end).
func TestHostileClients(t *testing.T) {
	testenv.Root(t)
	dir, bin := otherUIDBinary(t)
	const honestUID, hostileUID = 54321, 54322
	const perUID, pendingPerUID, maxHandles = 4, 2, 16
	s, _ := startService(t, Config{SocketPath: filepath.Join(dir, "svc.sock"), Workers: 2, SpinBudget: 50,
		Allow: AllowUIDs(0, honestUID, hostileUID), MaxClients: 12, MaxClientsPerUID: perUID,
		MaxPendingPerUID: pendingPerUID, MaxPending: 8, MaxHandles: maxHandles, HandshakeTimeout: time.Second})
	if err := os.Chmod(s.Addr(), 0o777); err != nil {
		t.Fatal(err)
	}
	honest := startHelperAs(t, bin, honestUID, "honest", sockEnv+"="+s.Addr(), idEnv+"=77")
	honest.expect(t, readyLine)

	hostile := func(mode string) (lines []string, h *helper) {
		t.Helper()
		h = startHelperAs(t, bin, hostileUID, "hostile", sockEnv+"="+s.Addr(), hostileEnv+"="+mode)
		for {
			l := h.expect(t, "")
			if l == "done" {
				return lines, h
			}
			lines = append(lines, l)
		}
	}
	finish := func(h *helper) {
		t.Helper()
		h.stdin.Close()
		if err := h.cmd.Wait(); err != nil {
			t.Fatalf("hostile helper: %v\n%s", err, h.stderr.String())
		}
	}
	want := func(lines []string, ws ...string) {
		t.Helper()
		for _, w := range ws {
			found := false
			for _, l := range lines {
				found = found || l == w
			}
			if !found {
				t.Errorf("hostile said %q, want a line %q", lines, w)
			}
		}
	}
	corrupt := s.Stats().Corrupt

	lines, h := hostile("scribble")
	finish(h)
	want(lines, "statuspage mmap-write EPERM", "statuspage mprotect-write EACCES", "statuspage pwrite EPERM",
		"statuspage ftruncate EPERM", "statuspage punch-hole EPERM", "statuspage reopen-mmap-write EPERM",
		"scribbled disconnected=true")
	if got := s.Stats().Corrupt; got != corrupt+1 {
		t.Errorf("corrupt clients %d after the scribbler, want %d", got, corrupt+1)
	}

	lines, h = hostile("forge")
	finish(h)
	want(lines, "forge ahead disconnected=false after=ok", "forge behind disconnected=false after=ok",
		"forge zero disconnected=false after=ok", "forge out-of-range disconnected=true",
		"forge other-slot disconnected=true", "forge not-submitted disconnected=true")
	if got := s.Stats().Corrupt; got != corrupt+4 {
		t.Errorf("corrupt clients %d after the forger, want %d", got, corrupt+4)
	}

	lines, h = hostile("flood")
	finish(h)
	t.Logf("flood: %v", lines)

	lines, h = hostile("handles")
	finish(h)
	want(lines, fmt.Sprintf("handles %d EMFILE", maxHandles))

	lines, h = hostile("slots")
	want(lines, fmt.Sprintf("slots %d EAGAIN", perUID))
	// The hostile uid holds its share: root still connects.
	c := dial(t, s)
	if err := clientRounds(c, 5, 2, nil); err != nil {
		t.Fatalf("root beside a uid that holds its slots: %v", err)
	}
	finish(h)

	lines, h = hostile("pending")
	want(lines, fmt.Sprintf("pending silent=%d refused=%d", pendingPerUID, 6-pendingPerUID))
	// Meanwhile another uid completes its handshake.
	c2 := dial(t, s)
	if err := c2.Nop(); err != nil {
		t.Fatalf("root beside half-done handshakes: %v", err)
	}
	finish(h)
	want(lines, fmt.Sprintf("pending ended=%d", pendingPerUID))

	honest.stdin.Close()
	l := honest.expect(t, "ok ")
	if err := honest.cmd.Wait(); err != nil {
		t.Fatalf("honest client: %v\n%s", err, honest.stderr.String())
	}
	t.Logf("honest client: %s rounds", l)
	c.Close()
	c2.Close()
	waitFor(t, "every client reclaimed", func() bool { st := s.Stats(); return st.LiveClients == 0 && st.MappedArenas == 0 })
	if st := s.Stats(); st.Corrupt != corrupt+4 {
		t.Fatalf("stats %+v: want %d corrupt clients", st, corrupt+4)
	}
	// Same service, still serving.
	if err := clientRounds(dial(t, s), 6, 2, nil); err != nil {
		t.Fatalf("after the hostile clients: %v", err)
	}
}
