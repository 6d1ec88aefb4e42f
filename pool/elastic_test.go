package pool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestElasticityConfig(t *testing.T) {
	fs := "\n    filesystems: [{name: d, stack: [{memfs: {}}]}]"
	c, err := ParseConfig([]byte("pools:\n  - name: a\n    workers: 2" + fs + `
    elasticity:
      interval: 2s
      workers: {min: 1, max: 3}
      cache: {min: 1MiB, max: 64MiB}
      latency_high_us: 500
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0].Elasticity.Policy()
	if c.Pools[0].Elasticity.Interval != 2*time.Second || p.WorkersMin != 1 || p.WorkersMax != 3 ||
		p.CacheMinBytes != 1<<20 || p.CacheMaxBytes != 64<<20 || p.LatencyHighUs != 500 || p.LatencyLowUs != 50 {
		t.Fatalf("policy %+v", p)
	}
	// Defaults: workers fixed at the pool's, a 5 s interval, no cache moves.
	c, err = ParseConfig([]byte("pools:\n  - name: a\n    workers: 2" + fs + "\n    elasticity: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Pools[0].Elasticity; e.Interval != 5*time.Second || e.Policy().WorkersMin != 2 || e.Policy().WorkersMax != 2 || e.Policy().ManagesCache() {
		t.Fatalf("defaults: %+v %+v", e, e.Policy())
	}
	// Absent: off.
	c, err = ParseConfig([]byte("pools:\n  - name: a" + fs + "\n"))
	if err != nil || c.Pools[0].Elasticity != nil {
		t.Fatalf("no elasticity block: %v %+v", err, c.Pools[0].Elasticity)
	}
	for _, tc := range []struct{ block, want string }{
		{"{interval: 1ms}", "pools[0].elasticity.interval:"},
		{"{interval: soon}", "into time.Duration"},
		{"{workers: {min: 3, max: 2}}", "pools[0].elasticity.workers.max:"},
		{"{workers: {min: -1}}", "pools[0].elasticity.workers.min:"},
		{"{cache: {min: 8MiB, max: 1MiB}}", "pools[0].elasticity.cache.max:"},
		{"{cache: {max: 1MiB}}", "pools[0].elasticity.cache.min: required"},
		{"{latency_high_us: 10, latency_low_us: 20}", "pools[0].elasticity.latency_high_us:"},
		{"{cpu_high: 2}", "pools[0].elasticity.cpu_high:"},
		{"{queue_wait_high_us: 5}", "pools[0].elasticity.queue_wait_high_us:"},
		{"{hit_ratio_low: -0.5}", "pools[0].elasticity.hit_ratio_low:"},
		{"{memory_high: 7}", "pools[0].elasticity.memory_high:"},
		{"{cooldown: -2}", "pools[0].elasticity.cooldown:"},
		{"{colour: red}", "field colour not found"},
	} {
		_, err := ParseConfig([]byte("pools:\n  - name: a" + fs + "\n    elasticity: " + tc.block + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.block, err, tc.want)
		}
	}
}

func TestWorkingSet(t *testing.T) {
	stat := filepath.Join(t.TempDir(), "memory.stat")
	if err := os.WriteFile(stat, []byte("cache 900\ntotal_inactive_file 600\ninactive_file 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		usage int64
		key   string
		want  int64
	}{
		{1000, "total_inactive_file", 400}, // v1
		{1000, "inactive_file", 900},       // v2
		{500, "total_inactive_file", 500},  // a stat above usage (raced): keep usage
		{1000, "nope", 1000},
	} {
		if got := workingSet(tc.usage, stat, tc.key); got != tc.want {
			t.Errorf("workingSet(%d, %s) = %d, want %d", tc.usage, tc.key, got, tc.want)
		}
	}
	if got := workingSet(7, filepath.Join(t.TempDir(), "missing"), "inactive_file"); got != 7 {
		t.Errorf("without memory.stat: %d, want 7", got)
	}
}
