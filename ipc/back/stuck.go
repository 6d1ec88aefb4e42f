package back

import (
	"slices"
	"sync"
	"time"
)

// stuckWatch is what StuckWorkers remembers between calls: for each worker,
// the pass it was last seen in and since when.
type stuckWatch struct {
	mu   sync.Mutex // a leaf: held while reading workers' epochs, never with workersMu
	seen map[*workerState]stuckSeen
}

type stuckSeen struct {
	epoch uint64
	since time.Time
}

// StuckWorkers reports the workers that have stayed inside one pass over the
// clients for at least bound, and the longest such stay seen. A pass serves at
// most one request per client, so a worker stuck in one is a request that does
// not end: a deadlock in a stack, or I/O that never returns. It reads the
// epoch each worker already publishes at every pass (see workerState), so the
// request path pays nothing for it.
//
// It works by comparing calls: a worker counts once two calls at least bound
// apart found it in the same pass; the first call only records. Called every
// interval, it reports a stuck worker within bound + interval of it sticking.
// A sleeping or spinning worker is never stuck. Concurrent callers share one
// record; a health checker is expected to be the only one.
func (s *Service) StuckWorkers(bound time.Duration) (stuck int, longest time.Duration) {
	s.workersMu.Lock()
	workers := slices.Clone(s.wstates)
	s.workersMu.Unlock()
	now := time.Now()
	w := &s.stuck
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := make(map[*workerState]stuckSeen, len(workers))
	for _, ws := range workers {
		e := ws.epoch.Load()
		prev, ok := w.seen[ws]
		if e&1 == 0 || !ok || prev.epoch != e {
			seen[ws] = stuckSeen{epoch: e, since: now}
			continue
		}
		seen[ws] = prev
		d := now.Sub(prev.since)
		longest = max(longest, d)
		if d >= bound {
			stuck++
		}
	}
	w.seen = seen // workers gone since the last call are forgotten
	return stuck, longest
}
