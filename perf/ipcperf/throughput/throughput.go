// Package throughput measures in-process queue throughput for `polytropon perf
// ipc` and the benchmarks: RCQB (ipc/rcqb, in each of its layouts and its SPSC
// mode) against the queues it is compared with, a buffered Go channel, a ring
// behind a sync.Mutex with sync.Cond waits, and Dmitry Vyukov's bounded MPMC
// queue polling with yields. Those baselines live here, next to the benchmark
// that uses them, so that package rcqb ships only the queue.
//
// Contract: Measure passes a fixed number of values from P producer to C
// consumer goroutines through one queue of Capacity slots, each consumer taking
// a fixed share, and times from one start signal to the last value taken. Every
// baseline is a correct blocking FIFO queue per producer (TestBaselines checks
// it; a comparison with a broken queue would mean nothing). It asserts nothing
// about speed.
//
// Invariants and locks: the package holds no state; mutexRing's mu guards its
// buffer and is a leaf. Vyukov's queue is lock-free.
//
// Measure: `polytropon perf ipc` (its queue table), or in process
// `go test -run '^$' -bench . -benchmem ./perf/ipcperf/throughput`.
package throughput

import (
	"fmt"
	"sync"
	"time"

	"github.com/polytropon/polytropon/ipc/rcqb"
)

// Queue kinds Measure compares.
const (
	KindRCQB       = "rcqb"        // ipc/rcqb, DefaultLayout
	KindRCQBPacked = "rcqb-packed" // ipc/rcqb, Packed layout
	KindRCQBPadded = "rcqb-padded" // ipc/rcqb, Padded layout
	KindRCQBSPSC   = "rcqb-spsc"   // ipc/rcqb, WithSPSC: 1P1C only
	KindChannel    = "chan"        // a buffered Go channel
	KindMutexRing  = "mutex-ring"  // a ring behind a sync.Mutex with sync.Cond waits
	KindVyukov     = "vyukov"      // Vyukov's bounded MPMC queue, polling with yields
)

// Kinds lists the kinds Measure accepts, RCQB first.
func Kinds() []string {
	return []string{KindRCQB, KindRCQBPacked, KindRCQBPadded, KindRCQBSPSC, KindChannel, KindMutexRing, KindVyukov}
}

// Fits reports whether a queue of the given kind may run with that many
// producers and consumers: an SPSC queue takes one of each.
func Fits(kind string, producers, consumers int) bool {
	return kind != KindRCQBSPSC || producers == 1 && consumers == 1
}

// Capacity is the queue capacity Measure uses for every kind.
const Capacity = 1024

// maxOps bounds one measurement.
const maxOps = 1 << 30

// Result is one in-process throughput measurement.
type Result struct {
	Kind      string
	Producers int
	Consumers int
	Capacity  int
	Ops       int // values passed from producers to consumers
	Elapsed   time.Duration
	OpsPerSec float64
}

// Measure passes ops values through a queue of the given kind (see Kinds) from
// producers goroutines to consumers goroutines and returns values per second.
// The queue holds Capacity values.
func Measure(kind string, producers, consumers int, ops int) (opsPerSec float64, err error) {
	r, err := MeasureResult(kind, producers, consumers, ops, Capacity)
	return r.OpsPerSec, err
}

// MeasureResult is Measure with the capacity as an argument and the whole
// result.
func MeasureResult(kind string, producers, consumers, ops, capacity int) (Result, error) {
	res := Result{Kind: kind, Producers: producers, Consumers: consumers, Capacity: capacity, Ops: ops}
	if producers < 1 || consumers < 1 || producers > 1024 || consumers > 1024 {
		return res, fmt.Errorf("throughput: producers %d and consumers %d must be in [1, 1024]", producers, consumers)
	}
	if !Fits(kind, producers, consumers) {
		return res, fmt.Errorf("throughput: a %s queue takes one producer and one consumer, not %d and %d", kind, producers, consumers)
	}
	if ops < 1 || ops > maxOps {
		return res, fmt.Errorf("throughput: ops %d out of range [1, %d]", ops, maxOps)
	}
	q, err := newBenchQueue(kind, capacity)
	if err != nil {
		return res, err
	}
	res.Elapsed, err = runThroughput(q, producers, consumers, ops)
	if err != nil {
		return res, err
	}
	res.OpsPerSec = float64(ops) / res.Elapsed.Seconds()
	return res, nil
}

func newBenchQueue(kind string, capacity int) (benchQueue, error) {
	// Every kind gets the capacities RCQB accepts: Vyukov's queue needs a
	// power of two too, and a comparison needs the same size on both sides.
	if capacity < rcqb.MinCapacity || capacity > rcqb.MaxCapacity || capacity&(capacity-1) != 0 {
		return nil, fmt.Errorf("throughput: capacity %d is not a power of two in [%d, %d]", capacity, rcqb.MinCapacity, rcqb.MaxCapacity)
	}
	switch kind {
	case KindRCQB, KindRCQBPacked, KindRCQBPadded, KindRCQBSPSC:
		var opts []rcqb.Option
		switch kind {
		case KindRCQBSPSC:
			opts = append(opts, rcqb.WithSPSC())
		case KindRCQBPacked:
			opts = append(opts, rcqb.WithLayout(rcqb.Packed))
		case KindRCQBPadded:
			opts = append(opts, rcqb.WithLayout(rcqb.Padded))
		}
		q, err := rcqb.New(capacity, opts...)
		if err != nil {
			return nil, err
		}
		return rcqbBench{q}, nil
	case KindChannel:
		return make(chanQueue, capacity), nil
	case KindMutexRing:
		return newMutexRing(capacity), nil
	case KindVyukov:
		return newVyukov(capacity), nil
	}
	return nil, fmt.Errorf("throughput: unknown queue kind %q (want one of %v)", kind, Kinds())
}

// share splits n into parts as equal as possible; part i gets share(n, parts, i).
func share(n, parts, i int) int {
	s := n / parts
	if i < n%parts {
		s++
	}
	return s
}

// runThroughput moves ops values through q and returns the time from the start
// signal until the last consumer finished. Each consumer takes a fixed share, so
// no close is needed and the run ends when every value is through. The kinds
// here fail only when closed, which nothing does during a run.
func runThroughput(q benchQueue, producers, consumers, ops int) (time.Duration, error) {
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	start := make(chan struct{})
	for p := 0; p < producers; p++ {
		n := share(ops, producers, p)
		wg.Go(func() {
			<-start
			for i := 0; i < n; i++ {
				if err := q.put(uint64(i)); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	for c := 0; c < consumers; c++ {
		n := share(ops, consumers, c)
		wg.Go(func() {
			<-start
			for i := 0; i < n; i++ {
				if _, err := q.get(); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0)
	return el, firstErr
}
