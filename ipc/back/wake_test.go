package back

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/shm"
)

// TestNoLostWakeups: with workers that sleep as soon as the rings are empty,
// every request depends on the wake-up protocol. Thousands of ping-pongs from
// several clients and goroutines must all be answered: a lost wake-up leaves a
// request in its ring with every worker asleep, and its call runs out of its
// (generous) timeout. Clients that spin for their answers publish the next
// request a few hundred nanoseconds after it, just when the worker that
// answered is going to sleep: the window a broken protocol loses wake-ups in
// (counting itself a sleeper after its last look at the rings, for one, fails
// this within a few thousand round trips).
func TestNoLostWakeups(t *testing.T) {
	for _, tc := range []struct {
		workers, clients, goroutines int
		clientSpin                   int
	}{
		// One request in flight at a time: nothing else can rescue a lost
		// wake-up.
		{1, 1, 1, 1 << 20}, {2, 1, 1, 1 << 20},
		{1, 3, 2, 1 << 20}, {3, 3, 2, 1 << 20}, {1, 3, 2, -1}, {3, 3, 2, -1},
	} {
		t.Run(fmt.Sprintf("workers=%d,clients=%d,goroutines=%d,clientSpin=%d", tc.workers, tc.clients, tc.goroutines, tc.clientSpin), func(t *testing.T) {
			s, _ := startService(t, Config{Workers: tc.workers, SpinBudget: -1})
			clients, goroutines := tc.clients, tc.goroutines
			rounds := 3000
			if testing.Short() || raceEnabled {
				// The race detector makes each spin of a client tens of
				// times slower; TestWakeUpRace is the deterministic check.
				rounds = 300
			}
			var wg sync.WaitGroup
			errs := make(chan error, clients*goroutines)
			for range clients {
				c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: tc.clientSpin, CallTimeout: 10 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				for range goroutines {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range rounds {
							if err := c.Nop(); err != nil {
								errs <- fmt.Errorf("round %d: %w", i, err)
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if errors.Is(err, syscall.ETIMEDOUT) {
					t.Fatalf("a request was never answered (lost wake-up): %v", err)
				}
				t.Fatal(err)
			}
			if st := s.Stats(); st.Served != int64(clients*goroutines*rounds) {
				t.Fatalf("served %d, want %d", st.Served, clients*goroutines*rounds)
			}
		})
	}
}

// TestWakeOnlyWhenAsleep: a client makes no system call to submit while a worker
// is awake: against a service that spins, thousands of calls write its eventfd
// not once. (That a client does write it when a worker sleeps, every time, is
// TestWakeUpRace's.)
func TestWakeOnlyWhenAsleep(t *testing.T) {
	spinning, _ := startService(t, Config{SpinBudget: 1 << 30})
	c := dial(t, spinning)
	// The first call may find the worker asleep still (it started idle).
	for range 100 {
		if err := c.Nop(); err != nil {
			t.Fatal(err)
		}
	}
	base := c.Wakes()
	for range 2000 {
		if err := c.Nop(); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Wakes() - base; n != 0 {
		t.Fatalf("%d eventfd writes in 2000 calls to a spinning service, want 0", n)
	}
}

// TestRoundTripAllocs: a round trip allocates nothing on either side (client and
// service share this process, so the count covers both), spinning or asleep.
func TestRoundTripAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, spin := range []int{1 << 30, -1} {
		// A subtest each: a service spinning without end must be gone
		// before the next one measures.
		t.Run(fmt.Sprintf("spin=%d", spin), func(t *testing.T) {
			s, _ := startService(t, Config{SpinBudget: spin})
			c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: spin})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h, err := c.Create("/allocs", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			if _, err := c.WriteAt(h, buf, 0); err != nil {
				t.Fatal(err)
			}
			for name, fn := range map[string]func(){
				"Nop":     func() { c.Nop() },
				"WriteAt": func() { c.WriteAt(h, buf, 0) },
				"ReadAt":  func() { c.ReadAt(h, buf, 0) },
			} {
				// Any allocation on the request path, either side, is at
				// least one per round trip. What is left is the runtime's:
				// a thread blocked in futex or epoll_wait can make sysmon
				// start another thread (runtime.newm allocates), a few times
				// in a run on a busy machine (seen in a memory profile).
				if n := allocsPerRun(2000, fn); n >= 0.1 {
					t.Errorf("%s: %v allocations per round trip, want 0", name, n)
				}
			}
		})
	}
}

// allocsPerRun is testing.AllocsPerRun without its GOMAXPROCS(1): a worker
// locked to its thread and a client spinning for its answer need two Ps, or
// each round trip waits for a preemption.
func allocsPerRun(runs int, fn func()) float64 {
	fn() // warm-up, as AllocsPerRun
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs)
}

// TestWakeUpRace makes the race the wake-up protocol exists for happen every
// time: a client publishes after a worker's last look at the rings and before
// it blocks in epoll_wait. The worker must still be woken (the client saw it
// counted as a sleeper); a worker that counted itself only after its last look
// would sleep for ever here, and the call would time out.
func TestWakeUpRace(t *testing.T) {
	const races = 50
	var c *front.Client
	var cc *ClientCtx
	var armed, fired atomic.Int32
	results := make(chan error, races)
	hook := func() {
		if armed.Load() == 0 || fired.Load() >= races {
			return
		}
		fired.Add(1)
		h := cc.head.Load()
		go func() { results <- c.Nop() }()
		// Return (and let the worker block) only once the request is in the
		// ring: it was published after the worker's last look.
		for !cc.ready(h) {
			runtime.Gosched()
		}
	}
	testHookBeforeSleep.Store(&hook)
	t.Cleanup(func() { testHookBeforeSleep.Store(nil) })
	s, _ := startService(t, Config{Workers: 1, SpinBudget: -1})
	var err error
	c, err = front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: 100, CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc = s.clients[0].Load()
	armed.Store(1)
	// Wake the worker once to start the chain: each answered request lets it
	// go back to sleep, and the hook publishes the next one in the window.
	if err := shm.EventfdWrite(s.wakeFd); err != nil {
		t.Fatal(err)
	}
	for i := range races {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("race %d: %v (a wake-up was lost)", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("race %d: no answer", i)
		}
	}
	// Each of those publishes saw the worker counted as a sleeper.
	if c.Wakes() < races {
		t.Fatalf("%d eventfd writes for %d publishes to a sleeping worker", c.Wakes(), races)
	}
}
