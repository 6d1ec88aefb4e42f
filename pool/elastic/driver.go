package elastic

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Observer reads a pool's sample (serve: the pool's cgroup and its service's
// status over the control socket).
type Observer interface {
	Sample(pool string) (Sample, error)
}

// Actuator moves a pool's knobs (serve: the service's control socket) and returns
// the value the service set.
type Actuator interface {
	SetWorkers(pool string, n int) (int, error)
	SetCacheBytes(pool string, sizeBytes int64) (int64, error)
}

// PoolPolicy names a pool and its policy.
type PoolPolicy struct {
	Pool     string
	Policy   Policy
	Interval time.Duration
}

// Driver runs the policy of each pool every interval: sample, Observe, Decide,
// apply, record in the ring, log with zap (pool, knob, from, to, reason), and
// write the pool's recent decisions to DecisionsPath(dir, pool) when dir is set.
type Driver struct {
	obs  Observer
	act  Actuator
	log  *zap.Logger
	dir  string
	ring map[string]*Ring

	mu    sync.Mutex // guards pools' state
	pools []*poolState
}

type poolState struct {
	pp    PoolPolicy
	st    State
	tick  int64
	prev  Sample
	ready bool // prev holds a sample
}

// RingCapacity is how many recent decisions a pool keeps.
const RingCapacity = 64

// NewDriver returns a driver for pools; dir (may be empty) receives each pool's
// decisions file.
func NewDriver(pools []PoolPolicy, obs Observer, act Actuator, log *zap.Logger, dir string) *Driver {
	d := &Driver{obs: obs, act: act, log: log, dir: dir, ring: map[string]*Ring{}}
	for _, pp := range pools {
		d.pools = append(d.pools, &poolState{pp: pp})
		d.ring[pp.Pool] = NewRing(RingCapacity)
	}
	return d
}

// Decisions returns pool's recent decisions, oldest first (nil for a pool
// without elasticity).
func (d *Driver) Decisions(pool string) []Record {
	if r := d.ring[pool]; r != nil {
		return r.Records()
	}
	return nil
}

// DecisionsPath is where a driver with directory dir keeps pool's decisions (JSON
// array of Record, oldest first, replaced atomically).
func DecisionsPath(dir, pool string) string { return filepath.Join(dir, "decisions-"+pool+".json") }

// ReadDecisions reads a pool's decisions file (for `polytropon status`).
func ReadDecisions(dir, pool string) ([]Record, error) {
	data, err := os.ReadFile(DecisionsPath(dir, pool))
	if err != nil {
		return nil, err
	}
	var recs []Record
	return recs, json.Unmarshal(data, &recs)
}

// Run calls Step for each pool at its interval until ctx ends, then removes the
// decisions files.
func (d *Driver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ps := range d.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(ps.pp.Interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-t.C:
					d.step(ps, now)
				}
			}
		}()
	}
	wg.Wait()
	if d.dir != "" {
		for _, ps := range d.pools {
			_ = os.Remove(DecisionsPath(d.dir, ps.pp.Pool))
		}
	}
}

// Step runs one interval of every pool now (tests; Run calls it per pool).
func (d *Driver) Step(now time.Time) {
	for _, ps := range d.pools {
		d.step(ps, now)
	}
}

func (d *Driver) step(ps *poolState, now time.Time) {
	name := ps.pp.Pool
	cur, err := d.obs.Sample(name)
	if err != nil {
		d.log.Warn("elasticity: cannot observe the pool", zap.String("pool", name), zap.Error(err))
		return
	}
	cur.Time = now
	d.mu.Lock()
	ob := Observation{}
	if ps.ready {
		ob = Observe(ps.prev, cur)
	} else {
		// First sample: bounds only.
		ob = Observe(cur, cur)
	}
	ps.prev, ps.ready = cur, true
	ps.tick++
	var decs []Decision
	ps.st, decs = Decide(&ps.pp.Policy, ps.st, ps.tick, ob)
	tick := ps.tick
	d.mu.Unlock()
	if len(decs) == 0 {
		return
	}
	for _, dec := range decs {
		rec := Record{Time: now, Pool: name, Tick: tick, Decision: dec}
		switch dec.Knob {
		case KnobWorkers:
			n, err := d.act.SetWorkers(name, int(dec.To))
			rec.Applied = int64(n)
			if err != nil {
				rec.Error = err.Error()
			}
		case KnobCacheBytes:
			rec.Applied, err = d.act.SetCacheBytes(name, dec.To)
			if err != nil {
				rec.Error = err.Error()
			}
		}
		fields := []zap.Field{zap.String("pool", name), zap.String("knob", dec.Knob), zap.Int64("from", dec.From),
			zap.Int64("to", dec.To), zap.String("reason", dec.Reason), zap.Int64("applied", rec.Applied)}
		if rec.Error != "" {
			d.log.Warn("elasticity decision failed", append(fields, zap.String("error", rec.Error))...)
		} else {
			d.log.Info("elasticity decision", fields...)
		}
		d.ring[name].Add(rec)
	}
	if d.dir != "" {
		if err := d.writeDecisions(name); err != nil {
			d.log.Warn("elasticity: decisions file", zap.String("pool", name), zap.Error(err))
		}
	}
}

func (d *Driver) writeDecisions(pool string) error {
	data, err := json.Marshal(d.ring[pool].Records())
	if err != nil {
		return err
	}
	path := DecisionsPath(d.dir, pool)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
