package elastic

import "time"

// Sample is what the driver reads of a pool at one moment: cumulative counters
// (CPU time, requests, latency, cache lookups) and current values. Observe turns
// two samples into one interval's Observation.
type Sample struct {
	Time time.Time
	// CPUSeconds is the pool cgroup's CPU time so far; Cores its CPUs.
	CPUSeconds float64
	Cores      int
	// MemoryBytes and MemoryLimitBytes are the cgroup's (limit 0: none).
	MemoryBytes      int64
	MemoryLimitBytes int64
	// Ops and LatencySumUs are the service's requests served so far and the sum
	// of their service-side latencies; ServicePID tells restarts apart (the
	// counters start again).
	ServicePID   int
	Ops          int64
	LatencySumUs float64
	QueueLen     int
	// Dequeued and Queued are the requests taken from the ring so far and the
	// sum of the queue each found behind it.
	Dequeued, Queued int64
	// Lookups and Hits are the cache's page lookups and hits so far.
	Lookups, Hits int64
	// Workers and CacheBytes are the knobs' current values.
	Workers    int
	CacheBytes int64
}

// Observe computes the interval from prev to cur. Counters that went backwards
// (the service restarted) or an interval that is not positive give zero deltas:
// an interval without evidence moves nothing but bounds. Pure: no clock, no I/O.
func Observe(prev, cur Sample) Observation {
	ob := Observation{Workers: cur.Workers, CacheBytes: cur.CacheBytes, MemoryBytes: cur.MemoryBytes,
		MemoryLimitBytes: cur.MemoryLimitBytes, QueueLen: cur.QueueLen}
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 || prev.Time.IsZero() {
		return ob
	}
	if d := cur.CPUSeconds - prev.CPUSeconds; d > 0 && cur.Cores > 0 {
		ob.CPUFrac = d / dt / float64(cur.Cores)
	}
	if cur.ServicePID != prev.ServicePID {
		return ob
	}
	if d := cur.Ops - prev.Ops; d > 0 {
		ob.Ops = d
		if l := cur.LatencySumUs - prev.LatencySumUs; l > 0 {
			ob.MeanLatencyUs = l / float64(d)
		}
	}
	if d := cur.Dequeued - prev.Dequeued; d > 0 {
		ob.MeanQueue = float64(max(cur.Queued-prev.Queued, 0)) / float64(d)
	}
	if d := cur.Lookups - prev.Lookups; d > 0 {
		ob.Lookups = d
		ob.Hits = min(max(cur.Hits-prev.Hits, 0), d)
	}
	return ob
}
