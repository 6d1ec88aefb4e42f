package elastic

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// scripted is the driver's I/O seam played from a script: the samples a pool
// gives, and a service that sets what it is asked up to a ceiling (as a cache
// clamps to its max_size) or fails. serve's real seam is tested end to end in
// cmd/polytropon (TestServeElasticity).
type scripted struct {
	samples   []Sample
	i         int
	workers   int
	cache     int64
	cacheCeil int64
	fail      bool
}

func (s *scripted) Sample(string) (Sample, error) {
	if s.i >= len(s.samples) {
		return Sample{}, errors.New("no more samples")
	}
	smp := s.samples[s.i]
	s.i++
	smp.Workers, smp.CacheBytes = s.workers, s.cache
	return smp, nil
}

func (s *scripted) SetWorkers(_ string, n int) (int, error) {
	if s.fail {
		return 0, errors.New("service gone")
	}
	s.workers = n
	return n, nil
}

func (s *scripted) SetCacheBytes(_ string, b int64) (int64, error) {
	s.cache = min(b, s.cacheCeil)
	return s.cache, nil
}

func TestDriverSteps(t *testing.T) {
	p := DefaultPolicy()
	p.WorkersMin, p.WorkersMax = 1, 3
	p.CacheMinBytes, p.CacheMaxBytes = 1<<20, 8<<20
	p.Cooldown = 1
	// Busy and slow, with cache misses: one more worker and a bigger cache at
	// every tick until the bounds (workers) and the service's ceiling (cache).
	var samples []Sample
	for i := range 8 {
		samples = append(samples, Sample{Cores: 1, ServicePID: 1, Ops: int64(i) * 1000, LatencySumUs: float64(i) * 1000 * 500,
			Lookups: int64(i) * 1000, CPUSeconds: float64(i) * 0.1})
	}
	io := &scripted{samples: samples, workers: 1, cache: 1 << 20, cacheCeil: 4 << 20}
	core, logs := observer.New(zap.InfoLevel)
	dir := t.TempDir()
	d := NewDriver([]PoolPolicy{{Pool: "a", Policy: p, Interval: time.Second}}, io, io, zap.New(core), dir)
	t0 := time.Unix(0, 0)
	for i := range 8 {
		d.Step(t0.Add(time.Duration(i) * time.Second))
	}
	if io.workers != 3 || io.cache != 4<<20 {
		t.Fatalf("workers %d cache %d, want 3 and the 4 MiB ceiling", io.workers, io.cache)
	}
	recs := d.Decisions("a")
	file, err := ReadDecisions(dir, "a")
	if err != nil || len(file) != len(recs) {
		t.Fatalf("decisions file: %d records, %v; ring %d", len(file), err, len(recs))
	}
	for _, r := range recs {
		if r.To < 1 || r.Knob == KnobWorkers && r.To > 3 || r.Knob == KnobCacheBytes && r.To > 8<<20 {
			t.Fatalf("out of bounds: %+v", r)
		}
	}
	if n := logs.FilterMessage("elasticity decision").Len(); n != len(recs) {
		t.Fatalf("%d decisions logged, %d recorded", n, len(recs))
	}
	e := logs.FilterMessage("elasticity decision").All()[0].ContextMap()
	for _, k := range []string{"pool", "knob", "from", "to", "reason"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("log entry lacks %s: %v", k, e)
		}
	}
	// A failed apply is recorded and logged as such; an unobservable pool moves
	// nothing.
	io.fail, io.i, io.workers = true, 0, 3
	io.samples = []Sample{{ServicePID: 2}, {ServicePID: 2, Time: t0}}
	d2 := NewDriver([]PoolPolicy{{Pool: "b", Policy: p, Interval: time.Second}}, io, io, zap.New(core), "")
	d2.Step(t0.Add(time.Second))
	d2.Step(t0.Add(3 * time.Second))
	d2.Step(t0.Add(5 * time.Second)) // no sample left
	recs = d2.Decisions("b")
	// Cooldown 1: asked again at the next tick, failing again.
	if len(recs) != 2 || recs[0].Error == "" || recs[1].Error == "" || logs.FilterMessage("elasticity decision failed").Len() != 2 {
		t.Fatalf("failed apply: %+v", recs)
	}
	if logs.FilterMessage("elasticity: cannot observe the pool").Len() != 1 {
		t.Fatal("unobservable pool not logged")
	}
	if d2.Decisions("nope") != nil {
		t.Fatal("decisions of an unknown pool")
	}
}
