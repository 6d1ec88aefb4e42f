package pool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/pool/elastic"
	"github.com/polytropon/polytropon/service"
)

// Elasticity is a pool's `elasticity:` block: how often serve looks at the pool
// and within which bounds it moves the service's workers and cache. Absent:
// nothing moves.
type Elasticity struct {
	// Interval between observations (default 5s, at least 100ms).
	Interval time.Duration `yaml:"interval"`
	// Workers bounds the service's workers (default: the pool's workers, fixed).
	Workers struct {
		Min int `yaml:"min"`
		Max int `yaml:"max"`
	} `yaml:"workers"`
	// Cache bounds the budget of each of the service's page caches; absent, the
	// caches keep their size. A cache grows only up to its own max_size.
	Cache struct {
		Min libservices.ByteSize `yaml:"min"`
		Max libservices.ByteSize `yaml:"max"`
	} `yaml:"cache"`
	// Thresholds; zero takes elastic.DefaultPolicy's.
	Cooldown        int     `yaml:"cooldown"`
	MinOps          int64   `yaml:"min_ops"`
	LatencyHighUs   float64 `yaml:"latency_high_us"`
	LatencyLowUs    float64 `yaml:"latency_low_us"`
	QueueWaitHighUs float64 `yaml:"queue_wait_high_us"`
	QueueWaitLowUs  float64 `yaml:"queue_wait_low_us"`
	CPUHigh         float64 `yaml:"cpu_high"`
	MinLookups      int64   `yaml:"min_lookups"`
	HitRatioLow     float64 `yaml:"hit_ratio_low"`
	MemoryHigh      float64 `yaml:"memory_high"`

	policy elastic.Policy
}

// Policy is the validated policy (after Config.Validate).
func (e *Elasticity) Policy() elastic.Policy { return e.policy }

func (e *Elasticity) validate(key string, workers int) error {
	if e.Interval == 0 {
		e.Interval = 5 * time.Second
	}
	if e.Interval < 100*time.Millisecond {
		return cfgErr(key+".interval", "%v is too short (at least 100ms)", e.Interval)
	}
	p := elastic.DefaultPolicy()
	w := max(workers, 1)
	p.WorkersMin, p.WorkersMax = w, w
	if e.Workers.Min != 0 {
		p.WorkersMin = e.Workers.Min
	}
	if e.Workers.Max != 0 {
		p.WorkersMax = e.Workers.Max
	}
	p.CacheMinBytes, p.CacheMaxBytes = int64(e.Cache.Min), int64(e.Cache.Max)
	set := func(dst *float64, v float64) {
		if v != 0 {
			*dst = v
		}
	}
	seti := func(dst *int64, v int64) {
		if v != 0 {
			*dst = v
		}
	}
	if e.Cooldown != 0 {
		p.Cooldown = e.Cooldown
	}
	seti(&p.MinOps, e.MinOps)
	seti(&p.MinLookups, e.MinLookups)
	set(&p.LatencyHighUs, e.LatencyHighUs)
	set(&p.LatencyLowUs, e.LatencyLowUs)
	set(&p.QueueWaitHighUs, e.QueueWaitHighUs)
	set(&p.QueueWaitLowUs, e.QueueWaitLowUs)
	set(&p.CPUHighFrac, e.CPUHigh)
	set(&p.HitRatioLow, e.HitRatioLow)
	set(&p.MemoryHighFrac, e.MemoryHigh)
	if err := p.Validate(); err != nil {
		if fe, ok := err.(*elastic.FieldError); ok {
			return cfgErr(key+"."+fe.Field, "%s", fe.Msg)
		}
		return err
	}
	e.policy = p
	return nil
}

// controlSocket is the pool's service control socket (root only; elasticity).
func (p *Pool) controlSocket() string { return filepath.Join(p.StateDir, "control.sock") }

// Decisions returns the recent elasticity decisions of pool, oldest first (nil
// when the pool has no elasticity). `polytropon status` can read the same from
// elastic.ReadDecisions(run_dir, pool) in another process.
func (s *Server) Decisions(pool string) []elastic.Record {
	if s.elastic == nil {
		return nil
	}
	return s.elastic.Decisions(pool)
}

// startElasticity runs the driver for the pools that have an elasticity block.
func (s *Server) startElasticity() {
	var pps []elastic.PoolPolicy
	for _, r := range s.pools {
		if e := r.p.Elasticity; e != nil {
			pps = append(pps, elastic.PoolPolicy{Pool: r.p.Name, Policy: e.policy, Interval: e.Interval})
		}
	}
	if len(pps) == 0 {
		return
	}
	pc := &poolControl{s: s}
	s.elastic = elastic.NewDriver(pps, pc, pc, s.log, s.cfg.RunDir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.elastic.Run(ctx)
	}()
	s.stopElastic = func() {
		cancel()
		<-done
	}
}

// poolControl is serve's Observer and Actuator: the pool's cgroup files and its
// service's control socket.
type poolControl struct{ s *Server }

func (c *poolControl) pool(name string) (*running, error) {
	for _, r := range c.s.pools {
		if r.p.Name == name {
			return r, nil
		}
	}
	return nil, fmt.Errorf("no pool %q", name)
}

func (c *poolControl) do(name string, req service.ControlRequest) (service.ControlReply, error) {
	r, err := c.pool(name)
	if err != nil {
		return service.ControlReply{}, err
	}
	cl, err := service.DialControl(r.p.controlSocket())
	if err != nil {
		return service.ControlReply{}, err
	}
	defer cl.Close()
	return cl.Do(req, 10*time.Second)
}

func (c *poolControl) SetWorkers(name string, n int) (int, error) {
	rep, err := c.do(name, service.ControlRequest{Op: service.ControlSetWorkers, Value: int64(n)})
	return int(rep.Value), err
}

func (c *poolControl) SetCacheBytes(name string, b int64) (int64, error) {
	rep, err := c.do(name, service.ControlRequest{Op: service.ControlSetCacheBytes, Value: b})
	return rep.Value, err
}

func (c *poolControl) Sample(name string) (elastic.Sample, error) {
	r, err := c.pool(name)
	if err != nil {
		return elastic.Sample{}, err
	}
	var smp elastic.Sample
	smp.Cores = len(r.p.cpuList)
	cg := cgroupStats(r.cg)
	smp.CPUSeconds, smp.MemoryBytes, smp.MemoryLimitBytes = cg.cpuSeconds, cg.memBytes, cg.memLimit
	rep, err := c.do(name, service.ControlRequest{Op: service.ControlStatus})
	if err != nil {
		return smp, err
	}
	st := rep.Status
	if st == nil {
		return smp, fmt.Errorf("pool %s: empty status", name)
	}
	smp.ServicePID, smp.Workers, smp.QueueLen = st.PID, st.Workers, st.Queue
	smp.Dequeued, smp.Queued = st.Dequeued, st.Queued
	for _, o := range st.Ops {
		smp.Ops += int64(o.Count)
		smp.LatencySumUs += o.MeanUs * float64(o.Count)
	}
	for _, k := range st.Counters {
		switch k.Name {
		case "polytropon_cache_page_hits":
			smp.Hits += int64(k.Value)
			smp.Lookups += int64(k.Value)
		case "polytropon_cache_page_misses":
			smp.Lookups += int64(k.Value)
		}
	}
	for _, ch := range st.Caches {
		smp.CacheBytes = max(smp.CacheBytes, ch.SizeBytes)
	}
	return smp, nil
}

type cgStats struct {
	cpuSeconds         float64
	memBytes, memLimit int64
}

// cgroupStats reads a pool cgroup's CPU time and memory (best effort: what it
// cannot read stays zero). The directories are those of its cgroup.procs files.
// v1 pools have no cpuacct hierarchy of their own, so their CPU time is the sum
// of their live processes' (/proc/PID/stat): the service's, mostly.
func cgroupStats(cg Cgroup) cgStats {
	var st cgStats
	readInt := func(path string) int64 {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		v, _ := strconv.ParseInt(s, 10, 64)
		return v
	}
	v2 := false
	for _, f := range cg.ProcsFiles() {
		dir := filepath.Dir(f)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err == nil {
			v2 = true
			st.memBytes = workingSet(readInt(filepath.Join(dir, "memory.current")), filepath.Join(dir, "memory.stat"), "inactive_file")
			st.memLimit = readInt(filepath.Join(dir, "memory.max"))
			if b, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
				sc := bufio.NewScanner(bytes.NewReader(b))
				for sc.Scan() {
					if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
						us, _ := strconv.ParseInt(v, 10, 64)
						st.cpuSeconds = float64(us) / 1e6
					}
				}
			}
		} else if strings.Contains(dir, "/memory/") {
			st.memBytes = workingSet(readInt(filepath.Join(dir, "memory.usage_in_bytes")), filepath.Join(dir, "memory.stat"), "total_inactive_file")
			st.memLimit = readInt(filepath.Join(dir, "memory.limit_in_bytes"))
			// v1 reports "no limit" as a huge number.
			if st.memLimit >= 1<<60 {
				st.memLimit = 0
			}
		}
	}
	if !v2 {
		pids, _ := cg.Pids()
		for _, pid := range pids {
			st.cpuSeconds += procCPUSeconds(pid)
		}
	}
	return st
}

// clockTicks is USER_HZ, which /proc/PID/stat counts in (100 on Linux).
const clockTicks = 100

func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses: fields start after the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	stt, _ := strconv.ParseFloat(f[12], 64)
	return (ut + stt) / clockTicks
}

// workingSet is a cgroup's memory use less its inactive file pages, as the
// kubelet counts it: the kernel's page cache of a pool doing buffered I/O
// fills its limit without any pressure (it is reclaimed first), and counting
// it would make the policy shrink the service's cache for nothing.
func workingSet(usage int64, statFile, key string) int64 {
	b, err := os.ReadFile(statFile)
	if err != nil {
		return usage
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil && n <= usage {
				return usage - n
			}
		}
	}
	return usage
}
