package rcqb

import (
	"fmt"
	"sync"
	"time"
)

// Queue kinds MeasureThroughput compares.
const (
	KindRCQB       = "rcqb"        // this package, DefaultLayout
	KindRCQBPacked = "rcqb-packed" // this package, Packed layout
	KindRCQBPadded = "rcqb-padded" // this package, Padded layout
	KindRCQBSPSC   = "rcqb-spsc"   // this package, WithSPSC: 1P1C only
	KindChannel    = "chan"        // a buffered Go channel
	KindMutexRing  = "mutex-ring"  // a ring behind a sync.Mutex with sync.Cond waits
	KindVyukov     = "vyukov"      // Vyukov's bounded MPMC queue, polling with yields
)

// ThroughputKinds lists the kinds MeasureThroughput accepts, RCQB first.
func ThroughputKinds() []string {
	return []string{KindRCQB, KindRCQBPacked, KindRCQBPadded, KindRCQBSPSC, KindChannel, KindMutexRing, KindVyukov}
}

// KindFits reports whether a queue of the given kind may run with that many
// producers and consumers: an SPSC queue takes one of each.
func KindFits(kind string, producers, consumers int) bool {
	return kind != KindRCQBSPSC || producers == 1 && consumers == 1
}

// ThroughputCapacity is the queue capacity MeasureThroughput uses for every kind.
const ThroughputCapacity = 1024

// maxThroughputOps bounds one measurement.
const maxThroughputOps = 1 << 30

// ThroughputResult is one in-process throughput measurement.
type ThroughputResult struct {
	Kind      string
	Producers int
	Consumers int
	Capacity  int
	Ops       int // values passed from producers to consumers
	Elapsed   time.Duration
	OpsPerSec float64
}

// MeasureThroughput passes ops values through a queue of the given kind (see
// ThroughputKinds) from producers goroutines to consumers goroutines and returns
// values per second. The queue holds ThroughputCapacity values.
func MeasureThroughput(kind string, producers, consumers int, ops int) (opsPerSec float64, err error) {
	r, err := MeasureThroughputResult(kind, producers, consumers, ops, ThroughputCapacity)
	return r.OpsPerSec, err
}

// MeasureThroughputResult is MeasureThroughput with the capacity as an argument
// and the whole result.
func MeasureThroughputResult(kind string, producers, consumers, ops, capacity int) (ThroughputResult, error) {
	res := ThroughputResult{Kind: kind, Producers: producers, Consumers: consumers, Capacity: capacity, Ops: ops}
	if producers < 1 || consumers < 1 || producers > 1024 || consumers > 1024 {
		return res, fmt.Errorf("rcqb: producers %d and consumers %d must be in [1, 1024]", producers, consumers)
	}
	if !KindFits(kind, producers, consumers) {
		return res, fmt.Errorf("rcqb: a %s queue takes one producer and one consumer, not %d and %d", kind, producers, consumers)
	}
	if ops < 1 || ops > maxThroughputOps {
		return res, fmt.Errorf("rcqb: ops %d out of range [1, %d]", ops, maxThroughputOps)
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
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	switch kind {
	case KindRCQB, KindRCQBPacked, KindRCQBPadded, KindRCQBSPSC:
		var opts []Option
		switch kind {
		case KindRCQBSPSC:
			opts = append(opts, WithSPSC())
		case KindRCQBPacked:
			opts = append(opts, WithLayout(Packed))
		case KindRCQBPadded:
			opts = append(opts, WithLayout(Padded))
		}
		q, err := New(capacity, opts...)
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
	return nil, fmt.Errorf("rcqb: unknown queue kind %q (want one of %v)", kind, ThroughputKinds())
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
