package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/pool"
)

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Pools on CPUs of their own get exclusive cpusets (cgroup v1 here), and
// pools sharing a CPU do not, for a reason serve logs. The CPUs are ones no
// other cpuset on the host has (exclusiveCPUs): where the host leaves too
// few, the case fails (or skips without POLYTROPON_REQUIRE_PRIVILEGED)
// saying which cgroups hold them.
func TestServeExclusiveCpusets(t *testing.T) {
	testenv.Root(t)
	// No other test may create a cpuset meanwhile: ours would take its CPUs.
	testenv.Cpusets(t, true)
	parent := fmt.Sprintf("polytropon-cmdtest-excl-%d", os.Getpid())
	fs := fmt.Sprintf("    uid: %d\n    gid: %d\n    spin: 0\n    filesystems: [{name: data, stack: [{memfs: {}}]}]\n", poolUID, poolGID)
	for _, tc := range []struct {
		name  string
		cpus  int             // CPUs of their own the case needs
		pools map[string]int  // pool: index of its CPU among the case's
		excl  map[string]bool // want exclusive
	}{
		{name: "one pool", cpus: 1, pools: map[string]int{"a": 0}, excl: map[string]bool{"a": true}},
		{name: "two pools, one CPU each", cpus: 2, pools: map[string]int{"a": 0, "b": 1}, excl: map[string]bool{"a": true, "b": true}},
		{name: "two pools share a CPU", cpus: 2, pools: map[string]int{"a": 0, "b": 1, "c": 1}, excl: map[string]bool{"a": true, "b": false, "c": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cpus := exclusiveCPUs(t, parent, tc.cpus)
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			e := &serveEnv{dir: dir, parent: parent, pool: "a"}
			e.stateDir = filepath.Join(dir, "run", "a")
			e.cfg = filepath.Join(dir, "serve.yaml")
			cfg := fmt.Sprintf("cgroup: %s\nrun_dir: %s\nexclusive_cpus: true\npools:\n", e.parent, filepath.Join(dir, "run"))
			for _, name := range slices.Sorted(maps.Keys(tc.pools)) {
				cfg += fmt.Sprintf("  - name: %s\n    cpus: \"%d\"\n%s", name, cpus[tc.pools[name]], fs)
			}
			if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			serve := startServe(t, e)
			parentDir := cpusetDir(t, e.parent)
			if got := readTrim(t, filepath.Join(parentDir, "cpuset.cpu_exclusive")); got != "1" {
				t.Errorf("parent cpuset.cpu_exclusive %s, want 1 (serve's log says why)", got)
			}
			rep, err := pool.Status(filepath.Join(dir, "run"))
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Pools) != len(tc.pools) {
				t.Fatalf("%d pools in the status, want %d", len(rep.Pools), len(tc.pools))
			}
			for _, p := range rep.Pools {
				got := readTrim(t, filepath.Join(parentDir, p.Name, "cpuset.cpu_exclusive"))
				if want := tc.excl[p.Name]; (got == "1") != want || p.Reservation.CPUsExclusive != want {
					t.Errorf("pool %s (cpus %s): cpuset.cpu_exclusive %s, status says %v; want %v", p.Name, p.Reservation.CPUs, got, p.Reservation.CPUsExclusive, want)
				}
			}
			stopServe(t, e, serve)
		})
	}
}
