package back

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/wire"
)

// hungStore is a memStore whose stat of /hang blocks while the test holds hang:
// a service that is alive (its socket open) but does not answer.
type hungStore struct {
	*memStore
	hang sync.RWMutex
	held bool // the test holds hang; only the test goroutine and its cleanup touch it
	// hung counts the handlers waiting on hang now.
	hung atomic.Int32
}

// hungService starts a service on a hungStore whose hang is released at the end
// of the test if a failure left it held: the service's Close (registered
// earlier, so run later) waits for the hung handlers.
func hungService(t *testing.T, cfg Config) (*Service, *hungStore) {
	h := &hungStore{memStore: newMemStore()}
	cfg.Handler = h
	s, _ := startService(t, cfg)
	t.Cleanup(func() {
		if h.held {
			h.release()
		}
	})
	return s, h
}

func (h *hungStore) hold()    { h.hang.Lock(); h.held = true }
func (h *hungStore) release() { h.held = false; h.hang.Unlock() }

const hangPath = "/hang"

func (h *hungStore) Handle(c *ClientCtx, d *wire.Desc, data []byte) int32 {
	if (d.Op == wire.OpStat || d.Op == wire.OpOpen) && strings.HasPrefix(string(data[:min(int(d.Aux), len(data))]), hangPath) {
		h.hung.Add(1)
		h.hang.RLock()
		h.hang.RUnlock() // waiting for the lock was the point
		h.hung.Add(-1)
	}
	return h.memStore.Handle(c, d, data)
}

// TestCallTimeoutHungService: calls to a live service that does not answer fail
// with ETIMEDOUT after CallTimeout, other requests keep being served, the
// timed-out descriptors come back once the service answers them (none is
// reused before: the service may still write its buffer), and a Client with
// every descriptor orphaned times out in acquire instead of blocking; Close
// with answers still pending returns promptly.
func TestCallTimeoutHungService(t *testing.T) {
	s, h := hungService(t, Config{Workers: 3})
	const timeout = 500 * time.Millisecond
	c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: helperSpins, CallTimeout: timeout, WaitSlice: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Two calls hang two of the three workers.
	h.hold()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, errs[i] = c.Stat(hangPath)
			if el := time.Since(start); el > 20*timeout {
				t.Errorf("a hung call returned after %v (CallTimeout %v)", el, timeout)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("call to a hung handler: %v, want ETIMEDOUT", err)
		}
	}
	if n := c.Orphans(); n != 2 {
		t.Fatalf("%d orphaned descriptors, want 2", n)
	}
	// The third worker still serves other requests.
	if _, err := c.Stat("/"); err != nil {
		t.Fatalf("stat beside two hung calls: %v", err)
	}
	if c.Broken() {
		t.Fatal("a timeout broke the client")
	}
	h.release()
	waitFor(t, "orphaned descriptors to come back", func() bool { return c.Orphans() == 0 })

	// Every descriptor usable again: as many concurrent calls as descriptors.
	n := c.Descriptors()
	runAll := func(path string) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = c.Stat(path) }()
		}
		wg.Wait()
		return errs
	}
	for i, err := range runAll("/") {
		if err != nil {
			t.Fatalf("call %d of %d after the reap: %v", i, n, err)
		}
	}

	// Every descriptor orphaned: the next call times out waiting for one.
	h.hold()
	for _, err := range runAll(hangPath) {
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("hung call: %v, want ETIMEDOUT", err)
		}
	}
	start := time.Now()
	if _, err := c.Stat("/"); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("call with every descriptor orphaned: %v, want ETIMEDOUT", err)
	}
	if el := time.Since(start); el > 20*timeout {
		t.Errorf("acquire gave up after %v (CallTimeout %v)", el, timeout)
	}
	h.release()
	waitFor(t, "all orphans back", func() bool { return c.Orphans() == 0 })
	if err := c.Nop(); err != nil {
		t.Fatalf("after the service answered: %v", err)
	}

	// Close with an answer still pending: the reaper leaves, Close returns.
	h.hold()
	if _, err := c.Stat(hangPath); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("hung call: %v", err)
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung behind a reaper")
	}
	h.release()
}

// TestCallTimeoutAllDescriptorsBusy: with the smallest ring (as many entries as
// descriptors) and every descriptor held by a call to a hung handler, one more
// call gives up after CallTimeout (ETIMEDOUT) waiting for a descriptor instead
// of waiting for ever; the ring never overruns, and once the service answers
// again everything is usable.
func TestCallTimeoutAllDescriptorsBusy(t *testing.T) {
	s, h := hungService(t, Config{Workers: 1, RingCap: 8, DescsPerClient: 8})
	// Long enough that the calls after the service answers, which must all
	// succeed, do not time out on a machine busy with -race and other tests.
	const timeout = time.Second
	c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: helperSpins, CallTimeout: timeout, WaitSlice: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h.hold()
	n := c.Descriptors()
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = c.Stat(hangPath) }()
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		h.release()
		t.Fatal("calls beside busy descriptors did not time out")
	}
	for i, err := range errs {
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Errorf("call %d: %v, want ETIMEDOUT", i, err)
		}
	}
	h.release()
	waitFor(t, "orphans back", func() bool { return c.Orphans() == 0 })
	for range 4 * n {
		if _, err := c.Stat("/"); err != nil {
			t.Fatalf("after the service answered: %v", err)
		}
	}
	if st := s.Stats(); st.Corrupt != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCallTimeoutClosesLateHandles: an open that timed out but that the
// service granted later is closed by the reaper, so the handle does not live
// until the client disconnects. (Locks take the same path; this test store
// has no locks; service's tests have.)
func TestCallTimeoutClosesLateHandles(t *testing.T) {
	s, h := hungService(t, Config{Workers: 2})
	m := h.memStore
	const timeout = 100 * time.Millisecond
	c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: helperSpins, CallTimeout: timeout, WaitSlice: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := c.Create(hangPath+"-file", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CloseHandle(f); err != nil {
		t.Fatal(err)
	}
	base := m.open.Load()
	h.hold()
	if _, err := c.Open(hangPath+"-file", 0, 0); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("open of a hung service: %v, want ETIMEDOUT", err)
	}
	h.release()
	waitFor(t, "late handles closed", func() bool { return c.Orphans() == 0 && m.open.Load() == base })
}

// TestQueueLen: requests published behind a hung one show in QueueLen (what
// elasticity samples), and when they are taken each adds what still waits behind
// it to Stats.Queued (elasticity's mean queue).
func TestQueueLen(t *testing.T) {
	s, h := hungService(t, Config{Workers: 1})
	c := dial(t, s)
	h.hold()
	const n = 4
	res := make(chan error, n)
	stat := func() { _, err := c.Stat(hangPath); res <- err }
	before := s.Stats().Queued
	// The first request alone, taken (and hung) before the others exist.
	go stat()
	waitFor(t, "the first request taken", func() bool {
		cc := s.clients[0].Load()
		return cc != nil && cc.head.Load() == 1
	})
	for range n - 1 {
		go stat()
	}
	waitFor(t, "three requests waiting behind the hung one", func() bool { return s.QueueLen() == n-1 })
	h.release()
	for range n {
		if err := <-res; !errors.Is(err, syscall.ENOENT) { // answered: there is no such file
			t.Fatal(err)
		}
	}
	if q := s.QueueLen(); q != 0 {
		t.Fatalf("QueueLen %d after every request was answered", q)
	}
	// Taken one per pass: nothing behind the first, then 2, 1 and 0.
	if got := s.Stats().Queued - before; got != 3 {
		t.Fatalf("Queued grew by %d, want 3", got)
	}
}

// TestStuckWorkers: a worker inside one request for at least the bound is
// reported once two looks that far apart found it in the same pass, the others
// (spinning, asleep, serving) never are, and it stops counting once the request
// ends.
func TestStuckWorkers(t *testing.T) {
	s, h := hungService(t, Config{Workers: 2})
	c := dial(t, s)
	const bound = 50 * time.Millisecond
	if n, _ := s.StuckWorkers(bound); n != 0 {
		t.Fatalf("%d stuck workers on an idle service", n)
	}
	// Busy but never stuck: requests end.
	for range 3 {
		for range 200 {
			if _, err := c.Stat("/"); !errors.Is(err, syscall.ENOENT) && err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(bound)
		if n, _ := s.StuckWorkers(bound); n != 0 {
			t.Fatalf("%d stuck workers on a service answering", n)
		}
	}
	h.hold()
	res := make(chan error, 1)
	go func() { _, err := c.Stat(hangPath); res <- err }()
	waitFor(t, "the hung request taken", func() bool { return h.hung.Load() == 1 })
	if n, _ := s.StuckWorkers(bound); n != 0 { // the first look only records
		t.Fatalf("%d stuck workers at the first look", n)
	}
	time.Sleep(bound)
	n, longest := s.StuckWorkers(bound)
	if n != 1 || longest < bound {
		t.Fatalf("stuck %d (longest %v), want 1 worker stuck for >= %v", n, longest, bound)
	}
	// The other worker still serves.
	if _, err := c.Stat("/"); err != nil && !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	h.release()
	if err := <-res; !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	time.Sleep(bound)
	if n, _ := s.StuckWorkers(bound); n != 0 {
		t.Fatalf("%d stuck workers after the request ended", n)
	}
}
