package elastic

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func testPolicy() Policy {
	p := DefaultPolicy()
	p.WorkersMin, p.WorkersMax = 1, 4
	p.CacheMinBytes, p.CacheMaxBytes = 1<<20, 16<<20
	return p
}

func TestDecideTable(t *testing.T) {
	busySlow := Observation{Workers: 2, CacheBytes: 4 << 20, Ops: 1000, MeanLatencyUs: 500, CPUFrac: 0.3}
	for _, tc := range []struct {
		name string
		st   State
		ob   Observation
		want []Decision // Reason compared by prefix
	}{
		{"slow with CPU headroom: add a worker", State{}, busySlow,
			[]Decision{{Knob: KnobWorkers, From: 2, To: 3, Reason: "mean latency 500us (high 200us)"}}},
		{"slow but CPU saturated: no worker", State{}, with(busySlow, func(o *Observation) { o.CPUFrac = 0.95 }), nil},
		{"slow at workers.max: no worker", State{}, with(busySlow, func(o *Observation) { o.Workers = 4 }), nil},
		{"cooling down", State{Tick: 4, LastWorkers: 4, MovedWorkers: true}, busySlow, nil},
		{"cooldown over", State{Tick: 6, LastWorkers: 2, MovedWorkers: true}, busySlow,
			[]Decision{{Knob: KnobWorkers, From: 2, To: 3, Reason: "mean latency"}}},
		{"idle: retire a worker", State{}, Observation{Workers: 3, Ops: 5},
			[]Decision{{Knob: KnobWorkers, From: 3, To: 2, Reason: "idle"}}},
		{"idle at workers.min: nothing", State{}, Observation{Workers: 1}, nil},
		{"fast: retire a worker", State{}, Observation{Workers: 2, Ops: 1000, MeanLatencyUs: 10},
			[]Decision{{Knob: KnobWorkers, From: 2, To: 1, Reason: "mean latency 10us < 50us"}}},
		{"fast but queued: add a worker", State{}, Observation{Workers: 1, Ops: 1000, MeanLatencyUs: 10, MeanQueue: 30},
			[]Decision{{Knob: KnobWorkers, From: 1, To: 2, Reason: "mean latency 10us (high 200us), queue wait ~300us"}}},
		{"fast, some queue: keep the workers", State{}, Observation{Workers: 2, Ops: 1000, MeanLatencyUs: 10, MeanQueue: 8}, nil},
		{"between thresholds: nothing", State{}, Observation{Workers: 2, Ops: 1000, MeanLatencyUs: 100}, nil},
		{"above workers.max", State{}, Observation{Workers: 9},
			[]Decision{{Knob: KnobWorkers, From: 9, To: 4, Reason: "above workers.max"}}},
		{"above workers.max while cooling: asked again after the cooldown", State{Tick: 1, LastWorkers: 1, MovedWorkers: true},
			Observation{Workers: 9}, nil},
		{"unknown workers: nothing", State{}, Observation{Ops: 1000, MeanLatencyUs: 900}, nil},
		{"misses: double the cache", State{}, Observation{Workers: 1, CacheBytes: 2 << 20, Lookups: 1000, Hits: 100},
			[]Decision{{Knob: KnobCacheBytes, From: 2 << 20, To: 4 << 20, Reason: "hit ratio 0.10 < 0.80"}}},
		{"misses: growth capped at cache.max", State{}, Observation{Workers: 1, CacheBytes: 12 << 20, Lookups: 1000},
			[]Decision{{Knob: KnobCacheBytes, From: 12 << 20, To: 16 << 20, Reason: "hit ratio"}}},
		{"misses but the grown cache would not fit", State{},
			Observation{Workers: 1, CacheBytes: 8 << 20, Lookups: 1000, MemoryBytes: 60 << 20, MemoryLimitBytes: 70 << 20}, nil},
		{"few lookups: nothing", State{}, Observation{Workers: 1, CacheBytes: 2 << 20, Lookups: 10}, nil},
		{"memory pressure: halve the cache", State{},
			Observation{Workers: 1, CacheBytes: 8 << 20, MemoryBytes: 95 << 20, MemoryLimitBytes: 100 << 20},
			[]Decision{{Knob: KnobCacheBytes, From: 8 << 20, To: 4 << 20, Reason: "memory"}}},
		{"memory pressure at cache.min: nothing", State{},
			Observation{Workers: 1, CacheBytes: 1 << 20, MemoryBytes: 95 << 20, MemoryLimitBytes: 100 << 20}, nil},
		{"cache below cache.min", State{}, Observation{Workers: 1, CacheBytes: 64 << 10},
			[]Decision{{Knob: KnobCacheBytes, From: 64 << 10, To: 1 << 20, Reason: "below cache.min"}}},
		{"no cache in the service: nothing", State{}, Observation{Workers: 1, Lookups: 1000}, nil},
		{"both knobs at once", State{}, with(busySlow, func(o *Observation) { o.Lookups, o.Hits = 1000, 0 }),
			[]Decision{{Knob: KnobWorkers, From: 2, To: 3, Reason: "mean"}, {Knob: KnobCacheBytes, From: 4 << 20, To: 8 << 20, Reason: "hit"}}},
		{"NaN latency counts as none", State{}, Observation{Workers: 2, Ops: 1000, MeanLatencyUs: math.NaN()},
			[]Decision{{Knob: KnobWorkers, From: 2, To: 1, Reason: "mean latency 0us"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy()
			tick := tc.st.Tick + 1
			st, got := Decide(&p, tc.st, tick, tc.ob)
			if len(got) != len(tc.want) {
				t.Fatalf("decisions %+v, want %+v", got, tc.want)
			}
			for i, g := range got {
				w := tc.want[i]
				if g.Knob != w.Knob || g.From != w.From || g.To != w.To || !strings.HasPrefix(g.Reason, w.Reason) {
					t.Fatalf("decision %d: %+v, want %+v", i, g, w)
				}
				if g.Knob == KnobWorkers && (!st.MovedWorkers || st.LastWorkers != tick) ||
					g.Knob == KnobCacheBytes && (!st.MovedCache || st.LastCache != tick) {
					t.Fatalf("state not updated: %+v", st)
				}
			}
		})
	}
}

func with(o Observation, f func(*Observation)) Observation { f(&o); return o }

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		f     func(*Policy)
	}{
		{"workers.min", func(p *Policy) { p.WorkersMin = 0 }},
		{"workers.max", func(p *Policy) { p.WorkersMax = 0 }},
		{"workers.max", func(p *Policy) { p.WorkersMax = 300 }},
		{"cache.min", func(p *Policy) { p.CacheMinBytes = -1 }},
		{"cache.max", func(p *Policy) { p.CacheMaxBytes = 1 }},
		{"cache.min", func(p *Policy) { p.CacheMinBytes = 0 }},
		{"cooldown", func(p *Policy) { p.Cooldown = -1 }},
		{"latency_high_us", func(p *Policy) { p.LatencyHighUs = 10 }},
		{"latency_low_us", func(p *Policy) { p.LatencyLowUs = math.NaN() }},
		{"cpu_high", func(p *Policy) { p.CPUHighFrac = 0 }},
		{"hit_ratio_low", func(p *Policy) { p.HitRatioLow = 2 }},
		{"memory_high", func(p *Policy) { p.MemoryHighFrac = 1.5 }},
		{"min_ops", func(p *Policy) { p.MinOps = -1 }},
		{"queue_wait_high_us", func(p *Policy) { p.QueueWaitHighUs = 1 }},
		{"queue_wait_low_us", func(p *Policy) { p.QueueWaitLowUs = -1 }},
	} {
		p := testPolicy()
		tc.f(&p)
		err := p.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
	p := testPolicy()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}

// randomPolicy is a valid policy drawn from r.
func randomPolicy(r *rand.Rand) Policy {
	p := DefaultPolicy()
	p.WorkersMin = 1 + r.IntN(4)
	p.WorkersMax = p.WorkersMin + r.IntN(8)
	p.CacheMinBytes = int64(1+r.IntN(64)) << 16
	p.CacheMaxBytes = p.CacheMinBytes + int64(r.IntN(1<<10))<<16
	p.Cooldown = r.IntN(5)
	p.MinOps = int64(r.IntN(200))
	p.LatencyLowUs = r.Float64() * 100
	p.LatencyHighUs = p.LatencyLowUs + 1 + r.Float64()*500
	p.QueueWaitLowUs = r.Float64() * 100
	p.QueueWaitHighUs = p.QueueWaitLowUs + 1 + r.Float64()*500
	p.CPUHighFrac = 0.1 + 0.9*r.Float64()
	p.MinLookups = int64(r.IntN(200))
	p.HitRatioLow = r.Float64()
	p.MemoryHighFrac = 0.1 + 0.9*r.Float64()
	return p
}

func randomObservation(r *rand.Rand) Observation {
	return Observation{Workers: r.IntN(20), CacheBytes: int64(r.IntN(1<<12)) << 14, CPUFrac: r.Float64() * 1.2,
		MemoryBytes: int64(r.IntN(1<<12)) << 16, MemoryLimitBytes: int64(r.IntN(2)*r.IntN(1<<12)) << 16,
		Ops: int64(r.IntN(400)), MeanLatencyUs: r.Float64() * 1000, MeanQueue: r.Float64() * 20, Lookups: int64(r.IntN(400)), Hits: int64(r.IntN(400))}
}

// checkSteady runs the policy against a steady environment: the observation stays
// the same except for the knobs, which follow the decisions. Every decision stays
// within bounds (after a first one into them), and each knob moves in one
// direction only.
func checkSteady(t *testing.T, p Policy, ob Observation, steps int) {
	t.Helper()
	var st State
	dir := map[string]int{}
	for tick := int64(1); tick <= int64(steps); tick++ {
		var decs []Decision
		st, decs = Decide(&p, st, tick, ob)
		seen := map[string]bool{}
		for _, d := range decs {
			if seen[d.Knob] {
				t.Fatalf("tick %d: two decisions for %s", tick, d.Knob)
			}
			seen[d.Knob] = true
			switch d.Knob {
			case KnobWorkers:
				if d.To < int64(p.WorkersMin) || d.To > int64(p.WorkersMax) || d.From != int64(ob.Workers) {
					t.Fatalf("tick %d: %+v out of bounds %d..%d (policy %+v)", tick, d, p.WorkersMin, p.WorkersMax, p)
				}
				ob.Workers = int(d.To)
			case KnobCacheBytes:
				if d.To < p.CacheMinBytes || d.To > p.CacheMaxBytes || d.From != ob.CacheBytes {
					t.Fatalf("tick %d: %+v out of bounds %d..%d", tick, d, p.CacheMinBytes, p.CacheMaxBytes)
				}
				ob.CacheBytes = d.To
			default:
				t.Fatalf("unknown knob %q", d.Knob)
			}
			if d.To == d.From {
				t.Fatalf("tick %d: a decision that changes nothing: %+v", tick, d)
			}
			if strings.HasPrefix(d.Reason, "below") || strings.HasPrefix(d.Reason, "above") {
				continue // bringing a knob into bounds is not a direction
			}
			s := 1
			if d.To < d.From {
				s = -1
			}
			if dir[d.Knob] != 0 && dir[d.Knob] != s {
				t.Fatalf("tick %d: %s reversed under a steady input: %+v (policy %+v, observation %+v)", tick, d.Knob, d, p, ob)
			}
			dir[d.Knob] = s
		}
	}
}

func TestSteadyInputNoOscillation(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		checkSteady(t, randomPolicy(r), randomObservation(r), 60)
	}
}

func FuzzDecide(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(99), uint64(7))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		r := rand.New(rand.NewPCG(a, b))
		p := randomPolicy(r)
		ob := randomObservation(r)
		// Hostile values the driver should never produce, still kept in bounds.
		switch a % 4 {
		case 1:
			ob.MeanLatencyUs, ob.CPUFrac = math.Inf(1), math.NaN()
		case 2:
			ob.Hits, ob.MemoryBytes = -5, -1
		case 3:
			ob.Workers, ob.CacheBytes = 1<<30, 1<<60
		}
		checkSteady(t, p, ob, 40)
	})
}

func TestObserve(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := Sample{Time: t0, CPUSeconds: 10, Cores: 2, ServicePID: 7, Ops: 100, LatencySumUs: 1000, Lookups: 50, Hits: 40,
		Dequeued: 100, Queued: 10}
	cur := Sample{Time: t0.Add(2 * time.Second), CPUSeconds: 12, Cores: 2, ServicePID: 7, Ops: 300, LatencySumUs: 21000,
		Lookups: 150, Hits: 60, Workers: 3, CacheBytes: 5, MemoryBytes: 9, MemoryLimitBytes: 10, QueueLen: 4,
		Dequeued: 300, Queued: 310}
	ob := Observe(prev, cur)
	want := Observation{Workers: 3, CacheBytes: 5, CPUFrac: 0.5, MemoryBytes: 9, MemoryLimitBytes: 10, Ops: 200,
		MeanLatencyUs: 100, QueueLen: 4, MeanQueue: 1.5, Lookups: 100, Hits: 20}
	if ob != want {
		t.Fatalf("Observe = %+v, want %+v", ob, want)
	}
	// A restarted service: its counters start again, no evidence this interval.
	restarted := cur
	restarted.ServicePID, restarted.Ops, restarted.Lookups = 8, 3, 1
	if ob := Observe(prev, restarted); ob.Ops != 0 || ob.Lookups != 0 || ob.CPUFrac != 0.5 {
		t.Fatalf("after a restart: %+v", ob)
	}
	if ob := Observe(cur, prev); ob.Ops != 0 || ob.CPUFrac != 0 {
		t.Fatalf("time going backwards: %+v", ob)
	}
}

func TestRing(t *testing.T) {
	r := NewRing(3)
	if len(r.Records()) != 0 {
		t.Fatal("new ring not empty")
	}
	for i := 1; i <= 5; i++ {
		r.Add(Record{Tick: int64(i)})
		recs := r.Records()
		if len(recs) != min(i, 3) || recs[len(recs)-1].Tick != int64(i) || recs[0].Tick != int64(max(1, i-2)) {
			t.Fatalf("after %d adds: %+v", i, recs)
		}
	}
}
