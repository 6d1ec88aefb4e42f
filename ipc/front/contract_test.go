package front_test

import (
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/wire"
)

// gateHandler answers stat with a record whose inode number is a hash of the
// path (so every caller can check it got its own answer), opens with a handle,
// and makes a request for a path starting with "/gate" wait while the test holds
// the gate: a live service that does not answer.
type gateHandler struct {
	gate sync.RWMutex
	held bool // the test holds gate (test goroutine and its cleanup only)
	open atomic.Int64
}

func pathIno(p []byte) uint64 {
	h := fnv.New64a()
	h.Write(p)
	return h.Sum64()
}

func (g *gateHandler) Handle(c *back.ClientCtx, d *wire.Desc, data []byte) int32 {
	switch d.Op {
	case wire.OpStat, wire.OpOpen:
		p := data[:d.Aux]
		if len(p) >= 5 && string(p[:5]) == "/gate" {
			g.gate.RLock()
			g.gate.RUnlock()
		}
		if d.Op == wire.OpOpen {
			h, e := c.NewHandle(1)
			if e != 0 {
				return -int32(e)
			}
			g.open.Add(1)
			d.Result = h
			return 0
		}
		st := wire.Stat{Ino: pathIno(p), Mode: syscall.S_IFREG | 0o644}
		st.Put(data)
		return 0
	case wire.OpClose:
		if _, ok := c.ReleaseHandle(d.Handle); !ok {
			return -int32(syscall.EBADF)
		}
		g.open.Add(-1)
		return 0
	}
	return -int32(syscall.ENOSYS)
}

func (g *gateHandler) ClientGone(c *back.ClientCtx) {
	c.Handles(func(h, obj uint64) { g.open.Add(-1) })
}

func (g *gateHandler) hold()    { g.gate.Lock(); g.held = true }
func (g *gateHandler) release() { g.held = false; g.gate.Unlock() }

// service starts a back driver with a gateHandler; the gate is released at the
// end of a failed test before the service's Close waits for the handlers.
func service(t *testing.T, cfg back.Config) (*back.Service, *gateHandler) {
	t.Helper()
	g := &gateHandler{}
	cfg.Handler = g
	cfg.SocketPath = filepath.Join(t.TempDir(), "s.sock")
	if cfg.SpinBudget == 0 {
		cfg.SpinBudget = 100
	}
	s, err := back.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() {
		if g.held {
			g.release()
		}
	})
	return s, g
}

func dial(t *testing.T, s *back.Service, cfg front.Config) *front.Client {
	t.Helper()
	cfg.SocketPath = s.Addr()
	if cfg.SpinIters == 0 {
		cfg.SpinIters = 200
	}
	c, err := front.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestConcurrentCalls: many goroutines share one Client with fewer descriptors
// than callers; each call gets its own answer, and the service answered exactly
// what the client submitted.
func TestConcurrentCalls(t *testing.T) {
	s, _ := service(t, back.Config{Workers: 2, DescsPerClient: 4})
	c := dial(t, s, front.Config{})
	const goroutines, calls = 12, 300
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				p := fmt.Sprintf("/g%d/c%d", g, i)
				st, err := c.Stat(p)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", p, err)
					return
				}
				if st.Ino != pathIno([]byte(p)) {
					errs <- fmt.Errorf("%s: got the answer of another call (ino %#x)", p, st.Ino)
					return
				}
				if i%10 == 0 {
					if err := c.Nop(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, want := s.Stats().Served, int64(c.Submitted()); got != want {
		t.Fatalf("service answered %d, client submitted %d", got, want)
	}
}

// TestHandshakeRefusals: credentials, a full service and a uid over its share of
// client slots are refused with the errno the service gives; the client says
// ErrRefused and keeps nothing open.
func TestHandshakeRefusals(t *testing.T) {
	s, _ := service(t, back.Config{Allow: back.AllowUIDs(12345)})
	if _, err := front.Dial(front.Config{SocketPath: s.Addr()}); !errors.Is(err, front.ErrRefused) || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("disallowed uid: %v, want ErrRefused and EACCES", err)
	}
	s2, _ := service(t, back.Config{MaxClients: 4, MaxClientsPerUID: 2})
	dial(t, s2, front.Config{})
	dial(t, s2, front.Config{})
	for range 3 {
		if _, err := front.Dial(front.Config{SocketPath: s2.Addr()}); !errors.Is(err, front.ErrRefused) || !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("third client of one uid: %v, want ErrRefused and EAGAIN", err)
		}
	}
	if st := s2.Stats(); st.Refused != 3 || st.LiveClients != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDefaultCallTimeout: a zero CallTimeout becomes DefaultCallTimeout, a
// negative one waits for ever (here: well past a short timeout, until the gate
// opens), a positive one is kept.
func TestDefaultCallTimeout(t *testing.T) {
	s, g := service(t, back.Config{Workers: 2})
	if c := dial(t, s, front.Config{}); c.CallTimeout() != front.DefaultCallTimeout {
		t.Fatalf("default CallTimeout %v, want %v", c.CallTimeout(), front.DefaultCallTimeout)
	}
	if c := dial(t, s, front.Config{CallTimeout: time.Second}); c.CallTimeout() != time.Second {
		t.Fatalf("CallTimeout %v, want 1s", c.CallTimeout())
	}
	hard := dial(t, s, front.Config{CallTimeout: -1, WaitSlice: 5 * time.Millisecond})
	g.hold()
	res := make(chan error, 1)
	go func() { _, err := hard.Stat("/gate"); res <- err }()
	select {
	case err := <-res:
		t.Fatalf("a call without timeout returned %v while the service did not answer", err)
	case <-time.After(300 * time.Millisecond):
	}
	g.release()
	if err := <-res; err != nil {
		t.Fatalf("the waiting call after the service answered: %v", err)
	}
}

// TestTimeoutAndOrphanReaping: a call that times out leaves its descriptor to
// the service until it answers (with one descriptor, the next call times out
// waiting for it), then the reaper frees it; a handle granted to an open that
// timed out is closed by the reaper.
func TestTimeoutAndOrphanReaping(t *testing.T) {
	s, g := service(t, back.Config{Workers: 2, DescsPerClient: 1})
	const timeout = 500 * time.Millisecond
	c := dial(t, s, front.Config{CallTimeout: timeout, WaitSlice: 5 * time.Millisecond})
	g.hold()
	if _, err := c.Open("/gate", 0, 0); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("open of a hung service: %v, want ETIMEDOUT", err)
	}
	if c.Orphans() != 1 || c.Broken() {
		t.Fatalf("orphans %d, broken %v", c.Orphans(), c.Broken())
	}
	if err := c.Nop(); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("call while the only descriptor is orphaned: %v, want ETIMEDOUT", err)
	}
	g.release()
	waitFor(t, "the orphan reaped and its late handle closed", func() bool { return c.Orphans() == 0 && g.open.Load() == 0 })
	if err := c.Nop(); err != nil {
		t.Fatalf("after the reap: %v", err)
	}
	if got, want := s.Stats().Served, int64(c.Submitted()); got != want {
		t.Fatalf("service answered %d, client submitted %d (the reaper's close included)", got, want)
	}
}

// TestAllDescriptorsInFlight: with every descriptor held by a waiting call, one
// more call waits for a descriptor (and gets one when an answer frees it), or
// gives up after CallTimeout.
func TestAllDescriptorsInFlight(t *testing.T) {
	s, g := service(t, back.Config{Workers: 4, DescsPerClient: 2})
	c := dial(t, s, front.Config{CallTimeout: -1, WaitSlice: 5 * time.Millisecond})
	short := dial(t, s, front.Config{CallTimeout: 500 * time.Millisecond, DialTimeout: time.Second})
	g.hold()
	res := make(chan error, 3)
	for range 3 {
		go func() { _, err := c.Stat("/gate"); res <- err }()
	}
	select {
	case err := <-res:
		t.Fatalf("a call returned %v with the service hung", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Another client's descriptors are its own.
	if err := short.Nop(); err != nil {
		t.Fatalf("another client beside a full one: %v", err)
	}
	g.release()
	for range 3 {
		if err := <-res; err != nil {
			t.Fatal(err)
		}
	}
	g.hold()
	for range 2 {
		go func() { _, err := short.Stat("/gate"); res <- err }()
	}
	for range 2 {
		if err := <-res; !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("hung call: %v, want ETIMEDOUT", err)
		}
	}
	if err := short.Nop(); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("call with every descriptor orphaned: %v, want ETIMEDOUT", err)
	}
	g.release()
	waitFor(t, "orphans reaped", func() bool { return short.Orphans() == 0 })
}

// TestServiceCloseENOTCONN: calls on a client of a closed service fail with
// ENOTCONN, promptly, and keep failing.
func TestServiceCloseENOTCONN(t *testing.T) {
	s, _ := service(t, back.Config{})
	c := dial(t, s, front.Config{WaitSlice: 5 * time.Millisecond})
	if err := c.Nop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := c.Nop(); !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("call after the service closed: %v, want ENOTCONN", err)
		}
	}
	if !c.Broken() {
		t.Fatal("client not broken")
	}
}
