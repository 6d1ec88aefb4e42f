// Package elastic is the elasticity of tenant pools: a deterministic policy that
// turns one interval's observations of a pool (its cgroup's CPU and memory use,
// its service's cache hit ratio, latency and queue) into decisions that move the
// pool's service workers and cache size within configured bounds, a bounded ring
// of recent decisions, and the driver that runs the policy for each pool of a
// serve every interval.
//
// It is not the pools themselves (package pool) nor the service's control socket
// (package service): the driver reads observations through two small interfaces
// (Observer, Actuator) that serve implements with them.
//
// # Invariants
//
//   - Decide is a pure function of (Policy, State, Observation): no clock, no I/O,
//     no randomness; the driver owns time and passes the interval's tick.
//   - Every decision's To lies within the policy's bounds, and a knob outside its
//     bounds is brought inside them first (once per Cooldown, like any move).
//   - Under a steady observation a knob moves in one direction only: the grow
//     and shrink conditions of each knob are disjoint (hysteresis: separate low
//     and high thresholds), and a knob changes at most once per Cooldown ticks.
//
// # Lock order
//
// Ring.mu is a leaf. Driver.mu guards the per-pool state and is released before
// the driver calls an Actuator or the logger.
package elastic

import (
	"fmt"
	"math"
)

// Knobs the policy moves.
const (
	KnobWorkers    = "workers"
	KnobCacheBytes = "cache_bytes"
)

// Policy is one pool's elasticity configuration (the `elasticity:` block of a
// pool), checked by Validate.
type Policy struct {
	// WorkersMin and WorkersMax bound the service's workers.
	WorkersMin int
	WorkersMax int
	// CacheMinBytes and CacheMaxBytes bound the service's page cache (each cache
	// store of the service gets this budget).
	CacheMinBytes int64
	CacheMaxBytes int64
	// Cooldown is how many intervals a knob stays put after it moved.
	Cooldown int
	// MinOps is how many requests an interval must have served for its latency
	// to count; below it the pool is idle.
	MinOps int64
	// LatencyHighUs and LatencyLowUs: a mean request latency above High (with
	// CPU headroom) adds a worker; below Low (or an idle interval) retires one.
	LatencyHighUs float64
	LatencyLowUs  float64
	// QueueWaitHighUs and QueueWaitLowUs bound the estimated queue wait, the
	// mean queue a request found times the mean service time over the workers:
	// above High (with CPU headroom) a worker is added; a worker is retired for
	// low latency only while the wait is also below Low.
	QueueWaitHighUs float64
	QueueWaitLowUs  float64
	// CPUHighFrac: no worker is added while the pool's CPU use over the interval,
	// as a fraction of its cores, is at or above it (more workers than the cores
	// can run only add contention).
	CPUHighFrac float64
	// MinLookups is how many cache lookups an interval needs for its hit ratio to
	// count.
	MinLookups int64
	// HitRatioLow: a hit ratio below it grows the cache (doubling), if memory
	// allows.
	HitRatioLow float64
	// MemoryHighFrac: memory use above this fraction of the pool's limit halves
	// the cache; the cache grows only while the grown cache would stay below it.
	MemoryHighFrac float64
}

// DefaultPolicy returns the defaults for the thresholds (bounds have none).
func DefaultPolicy() Policy {
	return Policy{Cooldown: 3, MinOps: 100, LatencyHighUs: 200, LatencyLowUs: 50, QueueWaitHighUs: 200, QueueWaitLowUs: 20, CPUHighFrac: 0.9,
		MinLookups: 100, HitRatioLow: 0.8, MemoryHighFrac: 0.9}
}

// Validate checks p; errors name the field as the configuration spells it.
func (p *Policy) Validate() error {
	switch {
	case p.WorkersMin < 1 || p.WorkersMin > 256:
		return fieldErr("workers.min", "%d, want 1..256", p.WorkersMin)
	case p.WorkersMax < p.WorkersMin || p.WorkersMax > 256:
		return fieldErr("workers.max", "%d, want workers.min (%d)..256", p.WorkersMax, p.WorkersMin)
	case p.CacheMinBytes < 0:
		return fieldErr("cache.min", "must not be negative")
	case p.CacheMaxBytes < p.CacheMinBytes:
		return fieldErr("cache.max", "%d is below cache.min (%d)", p.CacheMaxBytes, p.CacheMinBytes)
	case p.CacheMinBytes == 0 && p.CacheMaxBytes != 0:
		return fieldErr("cache.min", "required with cache.max")
	case p.Cooldown < 0 || p.Cooldown > 1000:
		return fieldErr("cooldown", "%d intervals, want 0..1000", p.Cooldown)
	case p.MinOps < 0:
		return fieldErr("min_ops", "must not be negative")
	case !(p.LatencyLowUs >= 0):
		return fieldErr("latency_low_us", "must not be negative")
	case !(p.LatencyHighUs > p.LatencyLowUs):
		return fieldErr("latency_high_us", "%v must be above latency_low_us (%v)", p.LatencyHighUs, p.LatencyLowUs)
	case !(p.QueueWaitLowUs >= 0):
		return fieldErr("queue_wait_low_us", "must not be negative")
	case !(p.QueueWaitHighUs > p.QueueWaitLowUs):
		return fieldErr("queue_wait_high_us", "%v must be above queue_wait_low_us (%v)", p.QueueWaitHighUs, p.QueueWaitLowUs)
	case !(p.CPUHighFrac > 0 && p.CPUHighFrac <= 1):
		return fieldErr("cpu_high", "%v, want (0, 1]", p.CPUHighFrac)
	case p.MinLookups < 0:
		return fieldErr("min_lookups", "must not be negative")
	case !(p.HitRatioLow >= 0 && p.HitRatioLow <= 1):
		return fieldErr("hit_ratio_low", "%v, want [0, 1]", p.HitRatioLow)
	case !(p.MemoryHighFrac > 0 && p.MemoryHighFrac <= 1):
		return fieldErr("memory_high", "%v, want (0, 1]", p.MemoryHighFrac)
	}
	return nil
}

// FieldError is a bad policy field.
type FieldError struct {
	Field, Msg string
}

func (e *FieldError) Error() string { return "elasticity." + e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// ManagesCache reports whether the policy moves the cache.
func (p Policy) ManagesCache() bool { return p.CacheMaxBytes > 0 }

// Observation is one interval of one pool, as the driver measured it. Fields the
// driver could not read are zero (the rules that need them then do nothing).
type Observation struct {
	// Workers and CacheBytes are the knobs' current values (CacheBytes 0: the
	// service has no resizable cache).
	Workers    int
	CacheBytes int64
	// CPUFrac is the pool's CPU time over the interval divided by the interval
	// and its cores (0..1, more when its cgroup is not confined).
	CPUFrac float64
	// MemoryBytes and MemoryLimitBytes are the cgroup's usage and limit (0: no
	// limit).
	MemoryBytes      int64
	MemoryLimitBytes int64
	// Ops is the requests served in the interval and MeanLatencyUs their mean
	// service-side latency.
	Ops           int64
	MeanLatencyUs float64
	// QueueLen is the service's request ring length when sampled; MeanQueue
	// the mean number of requests a request of the interval found waiting
	// behind it when it was taken.
	QueueLen  int
	MeanQueue float64
	// Lookups and Hits are the cache's page lookups and hits in the interval.
	Lookups int64
	Hits    int64
}

// State is what the policy remembers of a pool between intervals; the zero value
// is the start.
type State struct {
	// Tick is the interval number of the last Decide.
	Tick int64
	// LastWorkers and LastCache are the ticks at which each knob last moved
	// (valid when the Moved flags are set).
	LastWorkers, LastCache   int64
	MovedWorkers, MovedCache bool
}

// Decision is one move of one knob.
type Decision struct {
	Knob   string `json:"knob"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
	Reason string `json:"reason"`
}

func (p *Policy) cooling(moved bool, last, tick int64) bool {
	return moved && tick-last < int64(p.Cooldown)
}

func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
		return 0
	}
	return x
}

// Decide is the policy: given the state after the previous interval and this
// interval's observation (tick increasing), it returns the new state and at most
// one decision per knob.
func Decide(p *Policy, st State, tick int64, ob Observation) (State, []Decision) {
	st.Tick = tick
	var out []Decision
	if d, ok := p.decideWorkers(st, tick, ob); ok {
		out = append(out, d)
		st.LastWorkers, st.MovedWorkers = tick, true
	}
	if d, ok := p.decideCache(st, tick, ob); ok {
		out = append(out, d)
		st.LastCache, st.MovedCache = tick, true
	}
	return st, out
}

func (p *Policy) decideWorkers(st State, tick int64, ob Observation) (Decision, bool) {
	w := ob.Workers
	if w <= 0 {
		return Decision{}, false // not known
	}
	mk := func(to int, reason string) (Decision, bool) {
		return Decision{Knob: KnobWorkers, From: int64(w), To: int64(to), Reason: reason}, true
	}
	// The cooldown holds bounds corrections too: a service that cannot reach a
	// bound (a cache whose max_size is below cache.min) is asked again only
	// once per cooldown, not every interval.
	if p.cooling(st.MovedWorkers, st.LastWorkers, tick) {
		return Decision{}, false
	}
	// Bounds first: a restarted service or the pool's own workers setting may
	// leave the knob outside them.
	if w < p.WorkersMin {
		return mk(p.WorkersMin, "below workers.min")
	}
	if w > p.WorkersMax {
		return mk(p.WorkersMax, "above workers.max")
	}
	lat, cpu := finite(ob.MeanLatencyUs), finite(ob.CPUFrac)
	// Queue wait, estimated: the requests a request found ahead of it, served
	// by w workers at the mean service time each.
	wait := finite(ob.MeanQueue * lat / float64(w))
	busy := ob.Ops >= p.MinOps && ob.Ops > 0
	switch {
	case busy && (lat > p.LatencyHighUs || wait > p.QueueWaitHighUs) && cpu < p.CPUHighFrac && w < p.WorkersMax:
		return mk(w+1, fmt.Sprintf("mean latency %.0fus (high %.0fus), queue wait ~%.0fus (high %.0fus), CPU %.0f%% < %.0f%%",
			lat, p.LatencyHighUs, wait, p.QueueWaitHighUs, cpu*100, p.CPUHighFrac*100))
	case !busy && w > p.WorkersMin:
		return mk(w-1, fmt.Sprintf("idle: %d requests < %d", ob.Ops, p.MinOps))
	case busy && lat < p.LatencyLowUs && w > p.WorkersMin && finite(ob.MeanQueue*lat/float64(w-1)) < p.QueueWaitLowUs:
		// The wait is judged as it would be with one worker fewer: judged at w,
		// the retirement itself could push the estimate past High and the next
		// interval would add the worker back (found by the steady-input test).
		return mk(w-1, fmt.Sprintf("mean latency %.0fus < %.0fus, queue wait with %d workers ~%.0fus < %.0fus",
			lat, p.LatencyLowUs, w-1, ob.MeanQueue*lat/float64(w-1), p.QueueWaitLowUs))
	}
	return Decision{}, false
}

func (p *Policy) decideCache(st State, tick int64, ob Observation) (Decision, bool) {
	c := ob.CacheBytes
	if !p.ManagesCache() || c <= 0 {
		return Decision{}, false
	}
	mk := func(to int64, reason string) (Decision, bool) {
		return Decision{Knob: KnobCacheBytes, From: c, To: to, Reason: reason}, true
	}
	if p.cooling(st.MovedCache, st.LastCache, tick) {
		return Decision{}, false
	}
	if c < p.CacheMinBytes {
		return mk(p.CacheMinBytes, "below cache.min")
	}
	if c > p.CacheMaxBytes {
		return mk(p.CacheMaxBytes, "above cache.max")
	}
	limit := ob.MemoryLimitBytes
	mem := max(ob.MemoryBytes, 0)
	if limit > 0 && float64(mem) > p.MemoryHighFrac*float64(limit) && c > p.CacheMinBytes {
		return mk(max(c/2, p.CacheMinBytes), fmt.Sprintf("memory %d of %d bytes > %.0f%%", mem, limit, p.MemoryHighFrac*100))
	}
	if ob.Lookups >= p.MinLookups && ob.Lookups > 0 && c < p.CacheMaxBytes {
		hits := min(max(ob.Hits, 0), ob.Lookups)
		ratio := float64(hits) / float64(ob.Lookups)
		to := min(2*c, p.CacheMaxBytes)
		// The grown cache may fill completely: it must still fit under the
		// memory threshold, so that growing can never be what triggers the
		// shrink rule above (no oscillation under a steady load).
		fits := limit <= 0 || float64(mem+(to-c)) <= p.MemoryHighFrac*float64(limit)
		if ratio < p.HitRatioLow && fits {
			return mk(to, fmt.Sprintf("hit ratio %.2f < %.2f", ratio, p.HitRatioLow))
		}
	}
	return Decision{}, false
}
