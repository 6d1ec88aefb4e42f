package rcqb

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// TestMembarrier: SPSC mode's plain-store protocol needs membarrier's
// private expedited command; where it is missing the queue falls back to
// CAS, which CI must not do unnoticed.
func TestMembarrier(t *testing.T) {
	if !asymmetricFenceReady() {
		// internal/testenv's rule, by hand: this package may import only
		// the standard library and x/sys (internal/lint), tests included.
		const why = "membarrier MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED failed: SPSC queues use their CAS protocol"
		if v := os.Getenv("POLYTROPON_REQUIRE_PRIVILEGED"); v != "" && v != "0" {
			t.Fatal(why + ", and POLYTROPON_REQUIRE_PRIVILEGED forbids skipping")
		}
		t.Skip(why)
	}
	if err := membarrierExpedited(); err != nil {
		t.Fatalf("registered, yet MEMBARRIER_CMD_PRIVATE_EXPEDITED: %v", err)
	}
	if q := mustNew(t, 2, WithSPSC()); !q.fenced {
		t.Fatal("an SPSC queue did not take the plain-store protocol")
	}
	if q := mustNew(t, 2); q.fenced {
		t.Fatal("an MPMC queue runs the SPSC sleepers' fence")
	}
}

func TestSPSCOrderAndNoLoss(t *testing.T) {
	n := 200000
	if testing.Short() {
		n = 20000
	}
	for _, c := range []struct {
		name     string
		capacity int
		opts     []Option
		wakeups  bool // every sleep must be woken (a 1s slice never runs out)
		cas      bool // the protocol without membarrier
	}{
		{"cap2-sleep", 2, []Option{WithSpin(0), WithWaitSlice(time.Second)}, true, false},
		{"cap2-sleep-cas", 2, []Option{WithSpin(0), WithWaitSlice(time.Second)}, true, true},
		{"cap4", 4, nil, false, false},
		{"cap1024", 1024, nil, false, false},
		{"cap8-spin64", 8, []Option{WithSpin(64), WithSpinTime(0), WithWaitSlice(time.Second)}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := mustNew(t, c.capacity, append(c.opts, WithSPSC())...)
			if c.cas {
				q.fenced = false
			}
			errc := make(chan error, 1)
			go func() {
				for i := 0; i < n; i++ {
					if err := q.Enqueue(uint64(i)); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			for i := 0; i < n; i++ {
				v, err := q.Dequeue()
				if err != nil {
					t.Fatalf("Dequeue %d: %v", i, err)
				}
				if v != uint64(i) {
					t.Fatalf("value %d: got %d", i, v)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if got := q.sleepTimeouts.Load(); got != 0 && c.wakeups {
				t.Fatalf("%d sleeps ran out their slice: lost wake-ups", got)
			}
			if q.Len() != 0 {
				t.Fatalf("Len %d after draining", q.Len())
			}
		})
	}
}

func TestSPSCOptionErrors(t *testing.T) {
	if _, err := New(8, WithSPSC(), WithStallTimeout(time.Second)); err == nil {
		t.Error("WithSPSC with a stall timeout accepted")
	}
	mem := alignedBuf(HeaderSize + 8*SlotSizePadded)
	if _, err := Init(mem, 8, WithSPSC()); err == nil {
		t.Error("Init with WithSPSC accepted")
	}
	if _, err := Init(mem, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(mem, WithSPSC()); err == nil {
		t.Error("Attach with WithSPSC accepted")
	}
}

func TestSPSCTryOpsAndTimeout(t *testing.T) {
	q := mustNew(t, 2, WithSPSC())
	if _, ok := q.TryDequeue(); ok {
		t.Fatal("TryDequeue on an empty queue succeeded")
	}
	if _, err := q.DequeueTimeout(time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("DequeueTimeout on an empty queue: %v", err)
	}
	if !q.TryEnqueue(1) || !q.TryEnqueue(2) {
		t.Fatal("TryEnqueue on a queue with room failed")
	}
	if q.TryEnqueue(3) {
		t.Fatal("TryEnqueue on a full queue succeeded")
	}
	if q.Len() != 2 {
		t.Fatalf("Len %d, want 2", q.Len())
	}
	if v, ok := q.TryDequeue(); !ok || v != 1 {
		t.Fatalf("TryDequeue: %d %v", v, ok)
	}
	if v, err := q.DequeueTimeout(time.Millisecond); err != nil || v != 2 {
		t.Fatalf("DequeueTimeout: %d %v", v, err)
	}
	// A DequeueTimeout asleep on the empty queue is woken by the enqueue.
	got := make(chan uint64)
	go func() {
		v, err := q.DequeueTimeout(10 * time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	time.Sleep(5 * time.Millisecond)
	if err := q.Enqueue(7); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != 7 {
		t.Fatalf("DequeueTimeout got %d", v)
	}
}

// TestSPSCClose: values enqueued before Close come out, then ErrClosed, and
// it stays so; blocked parties are woken.
func TestSPSCClose(t *testing.T) {
	q := mustNew(t, 4, WithSPSC())
	for i := 1; i <= 3; i++ {
		if err := q.Enqueue(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	q.Close()
	if err := q.Enqueue(9); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
	if q.TryEnqueue(9) {
		t.Fatal("TryEnqueue after Close succeeded")
	}
	for i := 1; i <= 3; i++ {
		if v, err := q.Dequeue(); err != nil || v != uint64(i) {
			t.Fatalf("drain %d: %d %v", i, v, err)
		}
	}
	for range 3 {
		if _, err := q.Dequeue(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Dequeue of a drained closed queue: %v", err)
		}
		if _, err := q.DequeueTimeout(time.Second); !errors.Is(err, ErrClosed) {
			t.Fatalf("DequeueTimeout of a drained closed queue: %v", err)
		}
	}

	// A sleeper caught between registering and FUTEX_WAIT misses Close's
	// wake-up and notices at the end of its slice (the package doc's Close
	// section): so three tries, and a failure only if every one slept its
	// slice out.
	closeWakes := func(t *testing.T, what string, start func() (*Queue, uint64, chan error)) *Queue {
		t.Helper()
		for try := 0; ; try++ {
			q, ticket, errc := start()
			waitFor(t, what+" to sleep", func() bool { return q.waitersAt(ticket) == 1 })
			time.Sleep(20 * time.Millisecond)
			begin := time.Now()
			q.Close()
			if err := <-errc; !errors.Is(err, ErrClosed) {
				t.Fatalf("%s: %v", what, err)
			}
			if time.Since(begin) < 500*time.Millisecond {
				return q
			}
			if try == 2 {
				t.Fatalf("%s woken only at the end of its 1s slice three times: Close does not wake it", what)
			}
		}
	}
	t.Run("wakes a sleeping consumer", func(t *testing.T) {
		closeWakes(t, "the consumer", func() (*Queue, uint64, chan error) {
			q := mustNew(t, 4, WithSPSC(), WithSpin(0), WithWaitSlice(time.Second))
			errc := make(chan error)
			go func() { _, err := q.Dequeue(); errc <- err }()
			return q, 0, errc
		})
	})
	t.Run("wakes a blocked producer", func(t *testing.T) {
		q := closeWakes(t, "the producer", func() (*Queue, uint64, chan error) {
			q := mustNew(t, 2, WithSPSC(), WithSpin(0), WithWaitSlice(time.Second))
			q.Enqueue(1)
			q.Enqueue(2)
			errc := make(chan error)
			go func() { errc <- q.Enqueue(3) }()
			return q, 2, errc
		})
		for i := 1; i <= 2; i++ {
			if v, err := q.Dequeue(); err != nil || v != uint64(i) {
				t.Fatalf("drain %d: %d %v", i, v, err)
			}
		}
		if v, err := q.Dequeue(); !errors.Is(err, ErrClosed) {
			t.Fatalf("the refused value came out: %d %v", v, err)
		}
	})
}

// TestSPSCCloseWhileEntering puts the producer between its plain store of
// ENQPND and the rest of its step by hand, then settles Close: the consumer
// must wait for it rather than conclude that nothing is coming, and get the
// value if the producer goes on (it saw the queue open before) or ErrClosed
// if it backs out.
func TestSPSCCloseWhileEntering(t *testing.T) {
	for _, backOut := range []bool{false, true} {
		q := mustNew(t, 4, WithSPSC(), WithSpin(0), WithWaitSlice(time.Second))
		off, free := q.slotOff(0), seqOf(0, stFree)
		q.r.storeSeq(off, free+1) // the producer's entry into ENQPND
		type res struct {
			v   uint64
			err error
		}
		got := make(chan res)
		go func() { v, err := q.Dequeue(); got <- res{v, err} }()
		waitFor(t, "the consumer to sleep", func() bool { return q.waitersAt(0) == 1 })
		q.Close()
		select {
		case r := <-got:
			t.Fatalf("back out %v: the consumer returned (%d, %v) while the producer held ENQPND", backOut, r.v, r.err)
		case <-time.After(20 * time.Millisecond):
		}
		if backOut {
			if err := q.backOutSPSC(off, free); !errors.Is(err, ErrClosed) {
				t.Fatal(err)
			}
		} else {
			q.r.setData(off, 42)
			if !q.r.u64(off+slotSeq).CompareAndSwap(free+1, free+2) {
				t.Fatal("slot moved under the producer")
			}
			q.r.storePlain(offTail, 1)
			q.wake(off)
		}
		select {
		case r := <-got:
			if backOut && !errors.Is(r.err, ErrClosed) || !backOut && (r.err != nil || r.v != 42) {
				t.Fatalf("back out %v: Dequeue returned (%d, %v)", backOut, r.v, r.err)
			}
		case <-time.After(500 * time.Millisecond):
			t.Fatalf("back out %v: the consumer was not woken", backOut)
		}
	}
}

// TestSPSCCloseRace closes the queue at a random point while values flow:
// every value the producer's calls accepted comes out, in order, and nothing
// else. Rounds vary the producer's call (Enqueue, TryEnqueue), the
// consumer's (Dequeue, DequeueTimeout, TryDequeue until closed and then
// Dequeue), the protocol (membarrier or CAS) and whether two goroutines
// close at once.
func TestSPSCCloseRace(t *testing.T) {
	rounds := 400
	if testing.Short() {
		rounds = 60
	}
	for round := range rounds {
		q := mustNew(t, 4<<(round%3), WithSPSC(), WithSpin(round%2*100))
		if round%4 == 3 {
			q.fenced = false // the protocol without membarrier
		}
		tryEnq, consumer, twoCloses := round%5 == 1, round%3, round%7 == 2
		var accepted uint64
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := uint64(0); ; {
				if tryEnq {
					if q.TryEnqueue(i) {
						i++
					} else if q.Closed() {
						accepted = i
						return
					}
					continue
				}
				if err := q.Enqueue(i); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Enqueue: %v", err)
					}
					accepted = i
					return
				}
				i++
			}
		})
		var delivered uint64
		wg.Go(func() {
			for i := uint64(0); ; {
				var v uint64
				var err error
				switch consumer {
				case 0:
					v, err = q.Dequeue()
				case 1:
					if v, err = q.DequeueTimeout(50 * time.Microsecond); errors.Is(err, ErrTimeout) {
						continue
					}
				case 2:
					var ok bool
					if v, ok = q.TryDequeue(); !ok {
						if !q.Closed() {
							continue
						}
						v, err = q.Dequeue()
					}
				}
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("consumer %d: %v", consumer, err)
					}
					delivered = i
					return
				}
				if v != i {
					t.Errorf("round %d: value %d came out as %d", round, i, v)
					return
				}
				i++
			}
		})
		time.Sleep(time.Duration(round%7) * 100 * time.Microsecond)
		if twoCloses {
			wg.Go(q.Close)
		}
		q.Close()
		wg.Wait()
		if accepted != delivered {
			t.Fatalf("round %d (TryEnqueue %v, consumer %d, fenced %v): %d values accepted, %d delivered",
				round, tryEnq, consumer, q.fenced, accepted, delivered)
		}
	}
}

// TestSPSCCloseSettles: while Close is raising the flag but has not
// settled it (closedSet), a consumer on a FREE slot must not conclude that
// nothing is coming; once settled (closedFenced), it must.
func TestSPSCCloseSettles(t *testing.T) {
	q := mustNew(t, 4, WithSPSC(), WithSpin(0), WithWaitSlice(time.Second))
	q.r.u32(offClosed).Store(closedSet)
	errc := make(chan error)
	go func() { _, err := q.Dequeue(); errc <- err }()
	select {
	case err := <-errc:
		t.Fatalf("Dequeue returned %v before Close settled", err)
	case <-time.After(20 * time.Millisecond):
	}
	q.r.u32(offClosed).Store(closedFenced)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Dequeue after Close settled: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Dequeue still waiting after Close settled")
	}
}

// TestSPSCStaleFree is the interleaving a reviewer found: the consumer reads
// its slot FREE; the producer enters ENQPND and finds the queue open; Close
// settles; only then does the consumer look at the flag. It must re-read the
// slot after the flag, see ENQPND and wait for the value, which Enqueue will
// report accepted.
func TestSPSCStaleFree(t *testing.T) {
	q := mustNew(t, 4, WithSPSC(), WithSpin(0), WithWaitSlice(time.Second))
	read, resume := make(chan struct{}), make(chan struct{})
	testHookDeqWait = func() {
		testHookDeqWait = nil // the first wait only
		close(read)
		<-resume
	}
	defer func() { testHookDeqWait = nil }()
	type res struct {
		v   uint64
		err error
	}
	got := make(chan res, 1)
	go func() { v, err := q.Dequeue(); got <- res{v, err} }()
	<-read // the consumer has read FREE(0)
	off, free := q.slotOff(0), seqOf(0, stFree)
	q.r.storeSeq(off, free+1) // the producer's ENQPND; it saw the queue open
	q.Close()
	close(resume)
	select {
	case r := <-got:
		t.Fatalf("Dequeue returned (%d, %v) while the producer was publishing", r.v, r.err)
	case <-time.After(20 * time.Millisecond):
	}
	q.r.setData(off, 42) // the producer goes on and publishes
	q.r.storeSeq(off, free+2)
	q.r.storePlain(offTail, 1)
	q.wake(off)
	select {
	case r := <-got:
		if r.err != nil || r.v != 42 {
			t.Fatalf("Dequeue: (%d, %v), want 42", r.v, r.err)
		}
	case <-time.After(time.Second):
		t.Fatal("the consumer was not woken by the publish")
	}
	if _, err := q.Dequeue(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Dequeue: %v", err)
	}
}

// TestSPSCConcurrentUse: a queue that sees its promise broken says so
// instead of waiting forever or overwriting a value.
func TestSPSCConcurrentUse(t *testing.T) {
	q := mustNew(t, 2, WithSPSC())
	for i := 0; i < 3; i++ {
		q.Enqueue(uint64(i))
		q.Dequeue()
	}
	// Another producer ran ahead: tail here says ticket 1, the slot is
	// past its lap.
	q.r.storePlain(offTail, 1)
	if err := q.Enqueue(5); !errors.Is(err, ErrConcurrentUse) {
		t.Fatalf("Enqueue behind another producer: %v", err)
	}
	q.r.storePlain(offHead, 1)
	if _, err := q.Dequeue(); !errors.Is(err, ErrConcurrentUse) {
		t.Fatalf("Dequeue behind another consumer: %v", err)
	}
}
