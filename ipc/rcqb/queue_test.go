package rcqb

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustNew(t testing.TB, capacity int, opts ...Option) *Queue {
	t.Helper()
	q, err := New(capacity, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (q *Queue) seqAt(t uint64) uint64 { return q.r.u64(q.slotOff(t) + slotSeq).Load() }

func (q *Queue) waitersAt(t uint64) uint32 { return q.r.u32(q.slotOff(t) + slotWaiters).Load() }

func stateName(w uint64) string {
	return fmt.Sprintf("%s(%d)", [...]string{"FREE", "ENQPND", "OCCUPIED", "DEQPND"}[w&3], w>>2)
}

func wantSeq(t *testing.T, q *Queue, ticket uint64, lap, state uint64) {
	t.Helper()
	if got, want := q.seqAt(ticket), seqOf(lap, state); got != want {
		t.Fatalf("slot of ticket %d is %s, want %s", ticket, stateName(got), stateName(want))
	}
}

// waitFor polls cond until it holds; the test's own timeout bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestStateMachineSteps(t *testing.T) {
	for _, layout := range []Layout{Padded, Packed} {
		t.Run(layout.String(), func(t *testing.T) {
			q := mustNew(t, 4, WithSpin(0), WithLayout(layout))
			tail, head := q.r.u64(offTail), q.r.u64(offHead)
			for i := uint64(0); i < 4; i++ {
				wantSeq(t, q, i, 0, stFree)
			}
			// Two enqueue tickets; the second completes first (parallel completion).
			t0, t1 := tail.Add(1)-1, tail.Add(1)-1
			if r := q.enqTicket(t1, 11); r != done {
				t.Fatalf("enqTicket(1) = %v", r)
			}
			wantSeq(t, q, t1, 0, stOccupied)
			wantSeq(t, q, t0, 0, stFree)
			if _, ok := q.TryDequeue(); ok {
				t.Fatal("TryDequeue took a value while the head ticket's value is unpublished")
			}
			// Dequeue tickets 0 and 1; ticket 1 completes while ticket 0 waits.
			h0, h1 := head.Add(1)-1, head.Add(1)-1
			got := make(chan uint64, 1)
			go func() {
				v, r := q.deqTicket(h0)
				if r != done {
					t.Errorf("deqTicket(0) = %v", r)
				}
				got <- v
			}()
			waitFor(t, "dequeuer of ticket 0 to sleep", func() bool { return q.waitersAt(h0) == 1 })
			if v, r := q.deqTicket(h1); r != done || v != 11 {
				t.Fatalf("deqTicket(1) = %d, %v", v, r)
			}
			wantSeq(t, q, h1, 1, stFree)
			if r := q.enqTicket(t0, 10); r != done {
				t.Fatalf("enqTicket(0) = %v", r)
			}
			if v := <-got; v != 10 {
				t.Fatalf("dequeuer of ticket 0 got %d, want 10", v)
			}
			wantSeq(t, q, h0, 1, stFree)
			if n := q.waitersAt(h0); n != 0 {
				t.Fatalf("waiters = %d after wake", n)
			}

			// Lapping: fill all four slots (tickets 2..5), so slot 0 and 1 are in lap 1.
			for v := uint64(2); v < 6; v++ {
				if !q.TryEnqueue(v) {
					t.Fatalf("TryEnqueue(%d) failed on a queue with room", v)
				}
			}
			wantSeq(t, q, 4, 1, stOccupied)
			wantSeq(t, q, 2, 0, stOccupied)
			if q.TryEnqueue(99) {
				t.Fatal("TryEnqueue succeeded on a full queue")
			}
			// An enqueuer of lap 1 on slot 2 (ticket 6) must wait for lap 0's dequeuer.
			t6 := tail.Add(1) - 1
			enqDone := make(chan result, 1)
			go func() { enqDone <- q.enqTicket(t6, 6) }()
			waitFor(t, "enqueuer of ticket 6 to sleep", func() bool { return q.waitersAt(t6) == 1 })
			wantSeq(t, q, t6, 0, stOccupied)
			// A dequeuer of lap 1 on slot 2 (ticket 6) must not take lap 0's value.
			h6 := uint64(6)
			deqDone := make(chan uint64, 1)
			go func() {
				v, r := q.deqTicket(h6)
				if r != done {
					t.Errorf("deqTicket(6) = %v", r)
				}
				deqDone <- v
			}()
			waitFor(t, "two sleepers on slot 2", func() bool { return q.waitersAt(t6) == 2 })
			// Lap 0's dequeuer of slot 2 (ticket 2) frees it; the lap-1 enqueuer then
			// publishes and the lap-1 dequeuer takes 6.
			if v, r := q.deqTicket(2); r != done || v != 2 {
				t.Fatalf("deqTicket(2) = %d, %v", v, r)
			}
			if r := <-enqDone; r != done {
				t.Fatalf("enqueuer of ticket 6: %v", r)
			}
			if v := <-deqDone; v != 6 {
				t.Fatalf("dequeuer of ticket 6 got %d", v)
			}
			wantSeq(t, q, 6, 2, stFree)
			for _, h := range []uint64{3, 4, 5} {
				if v, r := q.deqTicket(h); r != done || v != h {
					t.Fatalf("deqTicket(%d) = %d, %v", h, v, r)
				}
			}
			head.Store(7)
			if _, ok := q.TryDequeue(); ok {
				t.Fatal("TryDequeue on an empty queue succeeded")
			}
		})
	}
}

func TestFIFOOneProducerOneConsumer(t *testing.T) {
	q := mustNew(t, 8)
	const n = 20000
	go func() {
		for i := uint64(0); i < n; i++ {
			if err := q.Enqueue(i); err != nil {
				t.Errorf("Enqueue: %v", err)
				return
			}
		}
	}()
	for i := uint64(0); i < n; i++ {
		v, err := q.Dequeue()
		if err != nil {
			t.Fatal(err)
		}
		if v != i {
			t.Fatalf("value %d out of order: got %d", i, v)
		}
	}
}

// runMPMC runs producers x consumers over q; producer p enqueues p<<32|i for i <
// perProducer. It checks no loss, no duplication and FIFO per producer-consumer
// pair, which is what the ticket protocol guarantees.
func runMPMC(t *testing.T, q *Queue, producers, consumers, perProducer int) {
	t.Helper()
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Go(func() {
			for i := 0; i < perProducer; i++ {
				if err := q.Enqueue(uint64(p)<<32 | uint64(i)); err != nil {
					t.Errorf("producer %d: %v", p, err)
					return
				}
			}
		})
	}
	received := make([][]uint64, consumers)
	var cwg sync.WaitGroup
	for c := 0; c < consumers; c++ {
		cwg.Go(func() {
			for {
				v, err := q.Dequeue()
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("consumer %d: %v", c, err)
					return
				}
				received[c] = append(received[c], v)
			}
		})
	}
	wg.Wait()
	q.Close()
	cwg.Wait()
	checkStreams(t, received, producers, perProducer, 0)
}

// checkStreams checks streams (one per consumer, in receive order) for
// duplicates, per-pair FIFO, and at most maxLost missing values.
func checkStreams(t *testing.T, streams [][]uint64, producers, perProducer, maxLost int) int {
	t.Helper()
	seen := make([][]bool, producers)
	for p := range seen {
		seen[p] = make([]bool, perProducer)
	}
	for c, s := range streams {
		last := make([]int, producers)
		for p := range last {
			last[p] = -1
		}
		for _, v := range s {
			p, i := int(v>>32), int(v&0xffffffff)
			if p >= producers || i >= perProducer {
				t.Fatalf("consumer %d received %#x, never produced", c, v)
			}
			if seen[p][i] {
				t.Fatalf("value %d of producer %d received twice", i, p)
			}
			seen[p][i] = true
			if i <= last[p] {
				t.Fatalf("consumer %d received producer %d's value %d after %d: FIFO per producer broken", c, p, i, last[p])
			}
			last[p] = i
		}
	}
	lost := 0
	for p := range seen {
		for i, ok := range seen[p] {
			if !ok {
				lost++
				if lost > maxLost {
					t.Fatalf("value %d of producer %d lost (%d lost so far, %d allowed)", i, p, lost, maxLost)
				}
			}
		}
	}
	return lost
}

func TestMPMC(t *testing.T) {
	per := 8000
	if testing.Short() {
		per = 2000
	}
	for _, tc := range []struct{ p, c int }{{1, 1}, {2, 2}, {4, 4}, {3, 1}, {1, 3}, {8, 2}} {
		for _, spin := range []int{0, DefaultSpin} {
			for _, layout := range []Layout{Padded, Packed} {
				name := fmt.Sprintf("%dP%dC/spin=%d/%s", tc.p, tc.c, spin, layout)
				t.Run(name, func(t *testing.T) {
					// A small capacity makes enqueuers lap and sleep on full.
					q := mustNew(t, 4, WithSpin(spin), WithLayout(layout))
					runMPMC(t, q, tc.p, tc.c, per/tc.p)
				})
			}
		}
	}
}

func TestTryOps(t *testing.T) {
	q := mustNew(t, 8)
	if _, ok := q.TryDequeue(); ok {
		t.Fatal("TryDequeue on empty queue succeeded")
	}
	for i := uint64(0); i < 8; i++ {
		if !q.TryEnqueue(i) {
			t.Fatalf("TryEnqueue %d failed", i)
		}
	}
	if q.TryEnqueue(8) {
		t.Fatal("TryEnqueue on full queue succeeded")
	}
	if q.Len() != 8 {
		t.Fatalf("Len = %d, want 8", q.Len())
	}
	for i := uint64(0); i < 8; i++ {
		v, ok := q.TryDequeue()
		if !ok || v != i {
			t.Fatalf("TryDequeue = %d, %v; want %d", v, ok, i)
		}
	}
	if _, ok := q.TryDequeue(); ok {
		t.Fatal("TryDequeue on drained queue succeeded")
	}
	if q.Cap() != 8 {
		t.Fatalf("Cap = %d", q.Cap())
	}
}

func TestTryOpsConcurrent(t *testing.T) {
	q := mustNew(t, 4)
	const producers, per = 3, 2000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Go(func() {
			for i := 0; i < per; {
				if q.TryEnqueue(uint64(p)<<32 | uint64(i)) {
					i++
				} else {
					time.Sleep(time.Microsecond)
				}
			}
		})
	}
	streams := make([][]uint64, 2)
	var got atomic.Int64
	var cwg sync.WaitGroup
	for c := range streams {
		cwg.Go(func() {
			for got.Load() < producers*per {
				if v, ok := q.TryDequeue(); ok {
					streams[c] = append(streams[c], v)
					got.Add(1)
				}
			}
		})
	}
	wg.Wait()
	cwg.Wait()
	checkStreams(t, streams, producers, per, 0)
}

func TestDequeueTimeout(t *testing.T) {
	q := mustNew(t, 4, WithSpin(0))
	start := time.Now()
	if _, err := q.DequeueTimeout(20 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("DequeueTimeout on empty queue: %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("DequeueTimeout returned after %v, before its timeout", el)
	}
	// A timed-out DequeueTimeout holds no ticket: the next value is not lost.
	for i := 0; i < 3; i++ {
		if _, err := q.DequeueTimeout(time.Millisecond); !errors.Is(err, ErrTimeout) {
			t.Fatal(err)
		}
	}
	if err := q.Enqueue(7); err != nil {
		t.Fatal(err)
	}
	if v, err := q.DequeueTimeout(time.Second); err != nil || v != 7 {
		t.Fatalf("DequeueTimeout = %d, %v; want 7", v, err)
	}
	// A value that arrives while it sleeps wakes it.
	go func() {
		time.Sleep(10 * time.Millisecond)
		q.Enqueue(8)
	}()
	if v, err := q.DequeueTimeout(time.Minute); err != nil || v != 8 {
		t.Fatalf("DequeueTimeout = %d, %v; want 8", v, err)
	}
	// Mixed with blocking dequeuers, every value is delivered exactly once.
	q2 := mustNew(t, 4, WithSpin(4))
	const n = 5000
	streams := make([][]uint64, 3)
	var wg sync.WaitGroup
	for c := range streams {
		wg.Go(func() {
			for {
				var v uint64
				var err error
				if c == 0 {
					v, err = q2.Dequeue()
				} else {
					v, err = q2.DequeueTimeout(50 * time.Microsecond)
					if errors.Is(err, ErrTimeout) {
						continue
					}
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				streams[c] = append(streams[c], v)
			}
		})
	}
	for i := uint64(0); i < n; i++ {
		if err := q2.Enqueue(i); err != nil {
			t.Fatal(err)
		}
	}
	q2.Close()
	wg.Wait()
	checkStreams(t, streams, 1, n, 0)
}

func TestCloseWakesDequeuers(t *testing.T) {
	for _, spin := range []int{0, 1000} {
		q := mustNew(t, 4, WithSpin(spin))
		const n = 6
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() {
				_, err := q.Dequeue()
				errs <- err
			}()
		}
		// 6 dequeuers on 4 slots: slots 0 and 1 have two sleepers each.
		waitFor(t, "all dequeuers to sleep", func() bool {
			s := uint32(0)
			for i := uint64(0); i < 4; i++ {
				s += q.waitersAt(i)
			}
			return s == n
		})
		q.Close()
		for i := 0; i < n; i++ {
			if err := <-errs; !errors.Is(err, ErrClosed) {
				t.Fatalf("blocked Dequeue after Close: %v, want ErrClosed", err)
			}
		}
		if _, err := q.DequeueTimeout(time.Hour); !errors.Is(err, ErrClosed) {
			t.Fatalf("DequeueTimeout after Close: %v", err)
		}
	}
}

func TestCloseWakesEnqueuers(t *testing.T) {
	q := mustNew(t, 2, WithSpin(0))
	q.Enqueue(1)
	q.Enqueue(2)
	const n = 3
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- q.Enqueue(9) }()
	}
	waitFor(t, "enqueuers to sleep", func() bool { return q.waitersAt(0)+q.waitersAt(1) == n })
	q.Close()
	for i := 0; i < n; i++ {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Enqueue after Close: %v", err)
		}
	}
	if err := q.Enqueue(3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
	if q.TryEnqueue(3) {
		t.Fatal("TryEnqueue after Close succeeded")
	}
	// The two values published before Close are drained; then ErrClosed, even
	// though the blocked enqueuers took tickets 2..4 (cancelled by the drain).
	for _, want := range []uint64{1, 2} {
		if v, err := q.Dequeue(); err != nil || v != want {
			t.Fatalf("drain: %d, %v; want %d", v, err, want)
		}
	}
	if _, err := q.Dequeue(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Dequeue on drained closed queue: %v", err)
	}
	if !q.Closed() {
		t.Fatal("Closed() = false")
	}
	q.Close() // idempotent
}

// TestCloseRace closes while producers and consumers run. The guarantee: a value
// is delivered exactly once if and only if its Enqueue returned nil.
func TestCloseRace(t *testing.T) {
	for round := 0; round < 20; round++ {
		q := mustNew(t, 4, WithSpin(round%3*50))
		const producers, consumers = 3, 3
		accepted := make([][]uint64, producers)
		var wg sync.WaitGroup
		for p := 0; p < producers; p++ {
			wg.Go(func() {
				for i := uint64(0); ; i++ {
					v := uint64(p)<<32 | i
					if err := q.Enqueue(v); err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Errorf("Enqueue: %v", err)
						}
						return
					}
					accepted[p] = append(accepted[p], v)
				}
			})
		}
		streams := make([][]uint64, consumers)
		for c := 0; c < consumers; c++ {
			wg.Go(func() {
				for {
					v, err := q.Dequeue()
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Errorf("Dequeue: %v", err)
						}
						return
					}
					streams[c] = append(streams[c], v)
				}
			})
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		q.Close()
		wg.Wait()
		got := map[uint64]bool{}
		for _, s := range streams {
			for _, v := range s {
				if got[v] {
					t.Fatalf("%#x delivered twice", v)
				}
				got[v] = true
			}
		}
		n := 0
		for _, a := range accepted {
			for _, v := range a {
				if !got[v] {
					t.Fatalf("round %d: %#x accepted by Enqueue but never delivered", round, v)
				}
				n++
			}
		}
		if n != len(got) {
			t.Fatalf("round %d: %d values delivered, %d accepted", round, len(got), n)
		}
	}
}

// TestStallReclaimDeadDequeuer simulates a consumer that died holding a dequeue
// ticket: exactly that ticket's value is lost and nobody hangs.
func TestStallReclaimDeadDequeuer(t *testing.T) {
	q := mustNew(t, 4, WithSpin(0), WithStallTimeout(20*time.Millisecond))
	q.r.u64(offHead).Add(1) // the dead consumer's ticket 0
	const n = 40
	go func() {
		for i := uint64(0); i < n; i++ {
			if err := q.Enqueue(i); err != nil {
				t.Errorf("Enqueue: %v", err)
			}
		}
		q.Close()
	}()
	var got []uint64
	for {
		v, err := q.Dequeue()
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if len(got) != n-1 || got[0] != 1 {
		t.Fatalf("got %d values starting %v; want the %d after the dead ticket's", len(got), got[:min(3, len(got))], n-1)
	}
	for i, v := range got {
		if v != uint64(i+1) {
			t.Fatalf("value %d is %d", i, v)
		}
	}
}

// TestStallReclaimDeadEnqueuer simulates a producer that died holding an enqueue
// ticket (before and in the middle of its write): nothing is lost or duplicated.
func TestStallReclaimDeadEnqueuer(t *testing.T) {
	for _, midWrite := range []bool{false, true} {
		q := mustNew(t, 4, WithSpin(0), WithStallTimeout(20*time.Millisecond))
		dead := q.r.u64(offTail).Add(1) - 1
		if midWrite {
			if !q.r.u64(q.slotOff(dead)+slotSeq).CompareAndSwap(0, seqOf(0, stEnqPnd)) {
				t.Fatal("CAS")
			}
		}
		const n = 40
		go func() {
			for i := uint64(0); i < n; i++ {
				if err := q.Enqueue(i); err != nil {
					t.Errorf("Enqueue: %v", err)
				}
			}
			q.Close()
		}()
		var got []uint64
		for {
			v, err := q.Dequeue()
			if errors.Is(err, ErrClosed) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, v)
		}
		for i, v := range got {
			if v != uint64(i) {
				t.Fatalf("midWrite=%v: value %d is %d (got %d values)", midWrite, i, v, len(got))
			}
		}
		if len(got) != n {
			t.Fatalf("midWrite=%v: got %d values, want %d", midWrite, len(got), n)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	spsc := mustNew(t, 64, WithSPSC())
	q := mustNew(t, 64)
	for _, q := range []*Queue{spsc, q} {
		allocs := testing.AllocsPerRun(1000, func() {
			if err := q.Enqueue(1); err != nil {
				t.Fatal(err)
			}
			if _, err := q.Dequeue(); err != nil {
				t.Fatal(err)
			}
			q.TryEnqueue(2)
			q.TryDequeue()
		})
		if allocs != 0 {
			t.Fatalf("SPSC %v: %v allocations per Enqueue+Dequeue", q.spsc, allocs)
		}
		// The sleeping path (futex with a timeout, and membarrier in
		// SPSC mode) must not allocate either.
		allocs = testing.AllocsPerRun(20, func() {
			q.DequeueTimeout(50 * time.Microsecond)
		})
		if allocs != 0 {
			t.Fatalf("SPSC %v: %v allocations per timed-out DequeueTimeout", q.spsc, allocs)
		}
	}
}

func TestConstructorErrors(t *testing.T) {
	for _, c := range []int{-1, 0, 1, 3, 6, MaxCapacity * 2} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%d) succeeded", c)
		}
		if _, err := Size(c); err == nil {
			t.Errorf("Size(%d) succeeded", c)
		}
	}
	if _, err := New(4, WithSpin(-1)); err == nil {
		t.Error("negative spin accepted")
	}
	if _, err := New(4, WithSpinTime(-1)); err == nil {
		t.Error("negative spin time accepted")
	}
	if _, err := New(4, WithSpinTime(2*time.Second)); err == nil {
		t.Error("spin time of 2s accepted")
	}
	if _, err := New(4, WithStallTimeout(-1)); err == nil {
		t.Error("negative stall accepted")
	}
	if _, err := New(4, WithWaitSlice(0)); err == nil {
		t.Error("zero wait slice accepted")
	}
	if _, err := New(4, WithLayout(Layout(9))); err == nil {
		t.Error("unknown layout accepted")
	}
	if n, err := Size(8); err != nil || n != HeaderSize+8*SlotSizePadded {
		t.Errorf("Size(8) = %d, %v", n, err)
	}
	if n, err := SizeLayout(8, Packed); err != nil || n != HeaderSize+8*SlotSizePacked {
		t.Errorf("SizeLayout(8, Packed) = %d, %v", n, err)
	}
	mem := alignedBuf(4096 + 64)
	if _, err := Init(mem[:HeaderSize], 8); err == nil {
		t.Error("Init on a too small region succeeded")
	}
	if _, err := Init(mem[8:], 8); err == nil {
		t.Error("Init on a misaligned region succeeded")
	}
	if _, err := Init(mem, 8, WithSpin(-5)); err == nil {
		t.Error("Init with bad option succeeded")
	}
}

// alignedBuf returns a 64-byte aligned heap buffer of n bytes.
func alignedBuf(n int) []byte {
	b := make([]byte, n+64)
	off := 0
	for !addrAligned(b[off:], 64) {
		off += 8
	}
	return b[off : off+n]
}

func TestInitAttachInProcessMemory(t *testing.T) {
	for _, layout := range []Layout{Padded, Packed} {
		size, _ := SizeLayout(16, layout)
		mem := alignedBuf(size)
		a, err := Init(mem, 16, WithLayout(layout))
		if err != nil {
			t.Fatal(err)
		}
		b, err := Attach(mem)
		if err != nil {
			t.Fatal(err)
		}
		if b.Cap() != 16 || b.Layout() != layout {
			t.Fatalf("Attach: cap %d layout %v", b.Cap(), b.Layout())
		}
		other := Padded
		if layout == Padded {
			other = Packed
		}
		if _, err := Attach(mem, WithLayout(other)); err == nil {
			t.Fatal("Attach with the wrong layout succeeded")
		}
		if err := a.Enqueue(5); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Dequeue(); err != nil || v != 5 {
			t.Fatalf("Dequeue through second handle = %d, %v", v, err)
		}
		b.Close()
		if err := a.Enqueue(1); !errors.Is(err, ErrClosed) {
			t.Fatalf("Enqueue on the first handle after Close on the second: %v", err)
		}
	}
}

func TestAttachRejectsBadHeaders(t *testing.T) {
	size, _ := Size(8)
	fresh := func() []byte {
		mem := alignedBuf(size + 64)
		if _, err := Init(mem, 8); err != nil {
			t.Fatal(err)
		}
		return mem
	}
	cases := []struct {
		name   string
		mutate func(mem []byte) []byte
	}{
		{"short", func(m []byte) []byte { return m[:HeaderSize-1] }},
		{"misaligned", func(m []byte) []byte { return m[8:] }},
		{"magic", func(m []byte) []byte { m[offMagic] ^= 1; return m }},
		{"zeroed", func(m []byte) []byte { clear(m); return m }},
		{"version", func(m []byte) []byte { m[offVersion] = 7; return m }},
		{"header size", func(m []byte) []byte { m[offHeaderSize] = 1; return m }},
		{"capacity not power of two", func(m []byte) []byte { m[offCapacity] = 6; return m }},
		{"capacity zero", func(m []byte) []byte { clear(m[offCapacity : offCapacity+4]); return m }},
		{"capacity huge", func(m []byte) []byte { m[offCapacity+3] = 0x80; return m }},
		{"capacity beyond region", func(m []byte) []byte { m[offCapacity] = 64; return m }},
		{"slot size", func(m []byte) []byte { m[offSlotSize] = 48; return m }},
		{"region shorter than slots", func(m []byte) []byte { return m[:size-1] }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Attach(tc.mutate(fresh())); err == nil {
				t.Fatal("Attach accepted a bad region")
			} else {
				t.Log(err)
			}
		})
	}
}

// TestNoLostWakeups hands values back and forth with no spinning at all, so
// every wait is a futex sleep, and with the longest wait slice, so a wake-up
// that never came shows as a timed-out sleep (on a queue whose peer answers in
// microseconds, nothing else times out). It covers the release-store
// transitions: their owner reads the sleepers right after its locked CAS and
// a sleeper must never sleep untimed on a word the owner is about to change.
func TestNoLostWakeups(t *testing.T) {
	rounds := 20000
	if testing.Short() {
		rounds = 2000
	}
	opts := []Option{WithSpin(0), WithWaitSlice(time.Second)}
	t.Run("ping-pong", func(t *testing.T) {
		req, resp := mustNew(t, 4, opts...), mustNew(t, 4, opts...)
		go func() {
			for {
				v, err := req.Dequeue()
				if err != nil {
					return
				}
				if resp.Enqueue(v+1) != nil {
					return
				}
			}
		}()
		defer req.Close()
		for i := 0; i < rounds; i++ {
			if err := req.Enqueue(uint64(i)); err != nil {
				t.Fatal(err)
			}
			v, err := resp.Dequeue()
			if err != nil {
				t.Fatal(err)
			}
			if v != uint64(i)+1 {
				t.Fatalf("round %d: got %d", i, v)
			}
			if n := req.sleepTimeouts.Load() + resp.sleepTimeouts.Load(); n != 0 {
				t.Fatalf("%d sleeps ran out their 1s slice by round %d: lost wake-ups", n, i)
			}
		}
	})
	// Two producers and two consumers on a two-slot queue: enqueuers sleep on
	// full slots and dequeuers on empty ones, both while the other side is in
	// its pending state.
	t.Run("2P2C-small", func(t *testing.T) {
		q := mustNew(t, 2, opts...)
		var wg sync.WaitGroup
		var sum atomic.Uint64
		// lost checks for a timed-out sleep after each operation and closes
		// the queue on the first, so that a broken wake-up fails the test in
		// about a second instead of sleeping a second per operation.
		lost := func() bool {
			if n := q.sleepTimeouts.Load(); n != 0 {
				q.Close()
				return true
			}
			return false
		}
		for p := 0; p < 2; p++ {
			wg.Go(func() {
				for i := 1; i <= rounds && !lost(); i++ {
					if q.Enqueue(uint64(i)) != nil {
						return
					}
				}
			})
			wg.Go(func() {
				for i := 0; i < rounds && !lost(); i++ {
					v, err := q.Dequeue()
					if err != nil {
						return
					}
					sum.Add(v)
				}
			})
		}
		wg.Wait()
		if n := q.sleepTimeouts.Load(); n != 0 {
			t.Fatalf("%d sleeps ran out their 1s slice: lost wake-ups", n)
		}
		if want := uint64(rounds) * uint64(rounds+1); sum.Load() != want {
			t.Fatalf("sum of dequeued values %d, want %d", sum.Load(), want)
		}
	})
}

// TestPendingStateSleepIsBounded puts a dequeuer to sleep on a slot in ENQPND
// and then finishes the enqueue the way an owner that checked for sleepers
// before this one registered does: release store, no wake-up. The dequeuer
// must notice within its short pending-state sleep, not after a whole wait
// slice.
func TestPendingStateSleepIsBounded(t *testing.T) {
	q := mustNew(t, 4, WithSpin(0), WithWaitSlice(time.Second))
	q.r.u64(offTail).Add(1) // enqueue ticket 0
	off := q.slotOff(0)
	if !q.r.u64(off+slotSeq).CompareAndSwap(seqOf(0, stFree), seqOf(0, stEnqPnd)) {
		t.Fatal("slot 0 not FREE(0)")
	}
	got := make(chan uint64, 1)
	go func() {
		v, err := q.Dequeue()
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	waitFor(t, "the dequeuer to sleep on ENQPND", func() bool { return q.waitersAt(0) == 1 })
	q.r.setData(off, 42)
	q.r.storeSeq(off, seqOf(0, stOccupied))
	if v := <-got; v != 42 {
		t.Fatalf("dequeued %d, want 42", v)
	}
	if n := q.sleepTimeouts.Load(); n != 0 {
		t.Fatalf("the dequeuer slept a whole slice on a pending state (%d timeouts)", n)
	}
}

// TestStalledPeersResumeAfterReclaim: a party stopped in a pending state past
// the stall timeout has its slot reclaimed, the slot's next lap is published,
// and then it resumes. It must learn that its ticket was skipped (a dequeuer
// drops what it read, an enqueuer retries) and leave the slot's word alone.
// That is why a queue on which stall reclaim can happen never ends pending
// states with plain stores.
func TestStalledPeersResumeAfterReclaim(t *testing.T) {
	if q := mustNew(t, 2); !q.release {
		t.Error("a New queue without stall reclaim does not use release stores")
	}
	if q := mustNew(t, 2, WithStallTimeout(time.Hour)); q.release {
		t.Error("a queue with stall reclaim uses release stores")
	}
	if q, err := Init(alignedBuf(4096), 2, WithStallTimeout(0)); err != nil || q.release {
		t.Errorf("a queue in a region uses release stores (%v): another handle may reclaim", err)
	}
	t.Run("dequeuer", func(t *testing.T) {
		q := mustNew(t, 2, WithSpin(0), WithStallTimeout(time.Hour))
		if err := q.Enqueue(10); err != nil { // ticket 0, slot 0, lap 0
			t.Fatal(err)
		}
		q.r.u64(offHead).Add(1) // the stalled dequeuer's ticket 0
		off := q.slotOff(0)
		seq := q.r.u64(off + slotSeq)
		occ := seqOf(0, stOccupied)
		if !seq.CompareAndSwap(occ, occ+1) {
			t.Fatal("slot 0 not OCCUPIED(0)")
		}
		// A waiter's stall reclaim (see await) moves the slot to the next lap.
		if !seq.CompareAndSwap(occ+1, nextFree(occ)) {
			t.Fatal("reclaim CAS failed")
		}
		for _, v := range []uint64{11, 12} { // tickets 1 and 2; 12 is slot 0, lap 1
			if err := q.Enqueue(v); err != nil {
				t.Fatal(err)
			}
		}
		wantSeq(t, q, 0, 1, stOccupied)
		if v, r := q.drain(off, occ); r != skipped {
			t.Fatalf("the resumed dequeuer got %d (result %d); want it skipped", v, r)
		}
		wantSeq(t, q, 0, 1, stOccupied)
		for _, want := range []uint64{11, 12} {
			if v, err := q.Dequeue(); err != nil || v != want {
				t.Fatalf("Dequeue = %d, %v; want %d", v, err, want)
			}
		}
	})
	t.Run("enqueuer", func(t *testing.T) {
		q, off := reclaimedEnqueuer(t)
		if r := q.fill(off, seqOf(0, stFree), 100); r != skipped {
			t.Fatalf("the resumed enqueuer's fill returned %d; want it skipped, so that it retries", r)
		}
		wantSeq(t, q, 0, 1, stFree)
		for _, v := range []uint64{200, 300} { // tickets 1 and 2 (slot 0, lap 1)
			if err := q.Enqueue(v); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []uint64{200, 300} {
			if v, err := q.Dequeue(); err != nil || v != want {
				t.Fatalf("Dequeue = %d, %v; want %d", v, err, want)
			}
		}
	})
	// The same, but the slot's next lap is published before the stopped
	// enqueuer writes: its late write replaces that value, so it must not
	// retry (the value would come out twice).
	t.Run("enqueuer-reused", func(t *testing.T) {
		q, off := reclaimedEnqueuer(t)
		for _, v := range []uint64{200, 300} { // tickets 1 and 2 (slot 0, lap 1)
			if err := q.Enqueue(v); err != nil {
				t.Fatal(err)
			}
		}
		if r := q.fill(off, seqOf(0, stFree), 100); r != done {
			t.Fatalf("the resumed enqueuer's fill returned %d; want done: a retry could deliver 100 twice", r)
		}
		got := map[uint64]int{}
		for range 2 {
			v, err := q.DequeueTimeout(time.Second)
			if err != nil {
				t.Fatal(err)
			}
			got[v]++
		}
		if got[200] != 1 || got[100]+got[300] != 1 {
			t.Fatalf("dequeued %v; want 200 and one of 100 or 300", got)
		}
	})
}

// reclaimedEnqueuer returns a queue (with stall reclaim, so in CAS mode) whose
// enqueue ticket 0 was taken by an enqueuer that moved slot 0 to ENQPND and
// stopped there until a waiter reclaimed the slot, and the slot's offset.
func reclaimedEnqueuer(t *testing.T) (*Queue, int) {
	t.Helper()
	q := mustNew(t, 2, WithSpin(0), WithStallTimeout(time.Hour))
	q.r.u64(offTail).Add(1) // the stalled enqueuer's ticket 0
	off := q.slotOff(0)
	seq := q.r.u64(off + slotSeq)
	if !seq.CompareAndSwap(seqOf(0, stFree), seqOf(0, stEnqPnd)) {
		t.Fatal("slot 0 not FREE(0)")
	}
	if !seq.CompareAndSwap(seqOf(0, stEnqPnd), seqOf(1, stFree)) { // what a waiter's reclaim does
		t.Fatal("reclaim CAS failed")
	}
	return q, off
}

// TestStallClockStartsWithTheTicket: a waiter that has watched a full slot
// must not count that time, or the time since its last check, against a live
// dequeuer that has just taken its ticket. The wait slice equals the stall
// timeout, and the dequeuer takes its ticket right after one of the waiter's
// checks: a clock started at that check (or earlier) runs out at the next
// one, while the dequeuer still holds its ticket; the right clock starts at
// the next check and runs out a whole timeout later.
func TestStallClockStartsWithTheTicket(t *testing.T) {
	const stall = 300 * time.Millisecond
	q := mustNew(t, 2, WithSpin(0), WithStallTimeout(stall), WithWaitSlice(stall))
	for _, v := range []uint64{1, 2} {
		if err := q.Enqueue(v); err != nil {
			t.Fatal(err)
		}
	}
	enq := make(chan error, 1)
	go func() { enq <- q.Enqueue(3) }() // ticket 2: waits for slot 0 on a full queue
	waitFor(t, "the enqueuer to sleep", func() bool { return q.waitersAt(0) == 1 })
	// Catch the enqueuer between two sleeps: it checks the stall clock, then
	// registers again. Poll without sleeping, the gap lasts microseconds.
	deadline := time.Now().Add(30 * time.Second)
	for q.waitersAt(0) == 1 {
		if time.Now().After(deadline) {
			t.Fatal("never saw the enqueuer wake from its slice")
		}
	}
	for q.waitersAt(0) == 0 {
	}
	h := q.r.u64(offHead).Add(1) - 1 // a dequeuer takes ticket 0 ...
	time.Sleep(stall * 3 / 2)        // ... and is slow, though not a whole timeout past the enqueuer's next check
	v, r := q.deqTicket(h)
	if r != done || v != 1 {
		t.Fatalf("the dequeuer of ticket 0 got %d (result %d): its slot was reclaimed from under it", v, r)
	}
	if err := <-enq; err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{2, 3} {
		if v, err := q.Dequeue(); err != nil || v != want {
			t.Fatalf("Dequeue = %d, %v; want %d", v, err, want)
		}
	}
}

// TestDeadEnqueuerNonBlockingConsumers: an enqueuer dies holding its ticket
// and the consumers only call DequeueTimeout. They must get every other value:
// the head slot is reclaimed (by a blocked enqueuer of its next lap, or by
// DequeueTimeout itself when producers only use TryEnqueue) and the dead
// ticket skipped.
func TestDeadEnqueuerNonBlockingConsumers(t *testing.T) {
	for _, tryEnqueue := range []bool{false, true} {
		t.Run(fmt.Sprintf("TryEnqueue=%v", tryEnqueue), func(t *testing.T) {
			q := mustNew(t, 4, WithSpin(0), WithStallTimeout(20*time.Millisecond))
			q.r.u64(offTail).Add(1) // the dead producer's ticket 0
			const n = 12
			go func() {
				for i := uint64(1); i <= n; i++ {
					for tryEnqueue && !q.TryEnqueue(i) {
						time.Sleep(time.Millisecond)
					}
					if !tryEnqueue {
						if err := q.Enqueue(i); err != nil {
							t.Errorf("Enqueue: %v", err)
						}
					}
				}
			}()
			for want := uint64(1); want <= n; want++ {
				v, err := q.DequeueTimeout(10 * time.Second)
				if err != nil {
					t.Fatalf("value %d: %v (head %d, tail %d, slot 0 %s)", want, err,
						q.r.u64(offHead).Load(), q.enqBound(), stateName(q.seqAt(0)))
				}
				if v != want {
					t.Fatalf("got %d, want %d", v, want)
				}
			}
		})
	}
}

// TestSpinnerBudget counts the polls a waiter's spin budget allows.
func TestSpinnerBudget(t *testing.T) {
	polls := func(q *Queue, sp spinner) int {
		n := 0
		for sp.next(q) {
			n++
			if n > 1<<28 {
				t.Fatal("the spin does not end")
			}
		}
		return n
	}
	for _, c := range []struct {
		spin     int
		spinTime time.Duration
		deadline time.Time
		want     int
	}{
		{0, time.Second, time.Time{}, 0},                      // spin 0: sleep at once, whatever the time
		{100, 0, time.Time{}, 127},                            // polls only, to the end of their 64-poll block
		{1, time.Second, time.Now().Add(-time.Second), 63},    // a past deadline ends it at the first yield point
		{1000, time.Second, time.Now().Add(-time.Second), 63}, // the deadline wins over the polls too
		{200, time.Nanosecond, time.Time{}, 255},              // the time is checked every 64 polls
	} {
		q := mustNew(t, 2, WithSpin(c.spin), WithSpinTime(c.spinTime))
		if got := polls(q, spinner{deadline: c.deadline}); got != c.want {
			t.Errorf("spin %d, spin time %v, deadline %v: %d polls, want %d", c.spin, c.spinTime, c.deadline, got, c.want)
		}
	}
	// A spin time keeps polling past the polls asked for.
	q := mustNew(t, 2, WithSpin(1), WithSpinTime(2*time.Millisecond))
	if got := polls(q, spinner{}); got < 64 {
		t.Errorf("spin 1, spin time 2ms: %d polls, want well past the first yield point", got)
	}
}
