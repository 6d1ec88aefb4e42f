package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/pool/elastic"
	"github.com/polytropon/polytropon/service"
)

// TestServeElasticity runs serve with an elastic pool: idle, its service's
// workers go down to workers.min; a client whose working set misses the cache
// makes the cache grow within its bounds. Both are read back from the service's
// status (over the direct path) and the decisions file, and logged.
func TestServeElasticity(t *testing.T) {
	e := newServeEnv(t)
	cfg := fmt.Sprintf(`cgroup: %s
run_dir: %s
pools:
  - name: %s
    cpus: "%d"
    memory: 256MiB
    uid: %d
    gid: %d
    spin: 0
    workers: 3
    elasticity:
      interval: 150ms
      cooldown: 1
      workers: {min: 1, max: 3}
      cache: {min: 1MiB, max: 8MiB}
      min_lookups: 20
      hit_ratio_low: 0.9
    filesystems:
      - name: data
        stack:
          - cache: {size: 1MiB, max_size: 16MiB}
          - memfs: {}
`, e.parent, filepath.Join(e.dir, "run"), e.pool, e.cpu, poolUID, poolGID)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	serve := startServe(t, e)
	runDir := filepath.Join(e.dir, "run")
	status := func() service.Status {
		t.Helper()
		raw, err := fslib.ServiceStatus(fslib.DialOptions{Socket: e.socket()})
		if err != nil {
			t.Fatal(err)
		}
		var st service.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	decided := func(knob string, up bool) bool {
		recs, err := elastic.ReadDecisions(runDir, e.pool)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Knob == knob && r.Error == "" && (r.To > r.From) == up && r.Pool == e.pool {
				return true
			}
		}
		return false
	}
	waitFor(t, "idle workers retired to workers.min", func() bool { return decided(elastic.KnobWorkers, false) && status().Workers == 1 })

	// A 6 MiB file read over and over through a 1 MiB cache: misses until the
	// cache has grown past it.
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 6<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := c.WriteFile("/big", data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache to grow", func() bool {
		got, err := c.ReadFile("/big")
		if err != nil || len(got) != len(data) {
			t.Fatalf("read back %d bytes: %v", len(got), err)
		}
		st := status()
		return decided(elastic.KnobCacheBytes, true) && len(st.Caches) == 1 && st.Caches[0].SizeBytes > 1<<20
	})
	st := status()
	if sz := st.Caches[0].SizeBytes; sz > 8<<20 {
		t.Fatalf("cache grew to %d, past elasticity.cache.max", sz)
	}
	recs, _ := elastic.ReadDecisions(runDir, e.pool)
	for _, r := range recs {
		t.Logf("decision: %s %s %d -> %d (%s), applied %d", r.Pool, r.Knob, r.From, r.To, r.Reason, r.Applied)
		if r.Knob == elastic.KnobWorkers && (r.To < 1 || r.To > 3) || r.Knob == elastic.KnobCacheBytes && (r.To < 1<<20 || r.To > 8<<20) {
			t.Fatalf("decision out of bounds: %+v", r)
		}
	}
	stopServe(t, e, serve)
	if _, err := os.Stat(elastic.DecisionsPath(runDir, e.pool)); !os.IsNotExist(err) {
		t.Errorf("decisions file left after SIGTERM: %v", err)
	}
	logs, _ := filepath.Glob(filepath.Join(e.dir, "serve-*.log"))
	var all strings.Builder
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		all.Write(b)
	}
	for _, want := range []string{"elasticity decision", `"knob"`, `"reason"`, `"from"`, `"to"`} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("serve log lacks %s:\n%s", want, all.String())
		}
	}
}
