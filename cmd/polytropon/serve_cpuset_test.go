package main

import (
	"fmt"
	"os"
	"path/filepath"
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

// Two pools on disjoint cores get exclusive cpusets (cgroup v1 here), and a
// third sharing a core does not, for a reason serve logs.
func TestServeExclusiveCpusets(t *testing.T) {
	testenv.Root(t)
	// No other test may create a cpuset meanwhile: ours would take its CPUs.
	testenv.Cpusets(t, true)
	online := readTrim(t, "/sys/devices/system/cpu/online")
	cpus, err := pool.ParseCPUList(online)
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		testenv.SkipOrFail(t, "exclusive cpusets for two pools need 2 CPUs; this machine has "+online)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &serveEnv{dir: dir, parent: fmt.Sprintf("polytropon-cmdtest-excl-%d", os.Getpid()), pool: "a"}
	e.stateDir = filepath.Join(dir, "run", "a")
	e.cfg = filepath.Join(dir, "serve.yaml")
	fs := fmt.Sprintf("    uid: %d\n    gid: %d\n    spin: 0\n    filesystems: [{name: data, stack: [{memfs: {}}]}]\n", poolUID, poolGID)
	cfg := fmt.Sprintf("cgroup: %s\nrun_dir: %s\nexclusive_cpus: true\npools:\n  - name: a\n    cpus: \"%d\"\n%s  - name: b\n    cpus: \"%d\"\n%s  - name: c\n    cpus: \"%d\"\n%s",
		e.parent, filepath.Join(dir, "run"), cpus[0], fs, cpus[1], fs, cpus[1], fs)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// b and c share a CPU: neither is exclusive. Without c, a and b are.
	for _, tc := range []struct {
		cfg  string
		excl map[string]bool
	}{
		{strings.Replace(cfg, "  - name: c\n", "  - name: c\n", 1), map[string]bool{"a": true, "b": false, "c": false}},
		{cfg[:strings.Index(cfg, "  - name: c\n")], map[string]bool{"a": true, "b": true}},
	} {
		if err := os.WriteFile(e.cfg, []byte(tc.cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		serve := startServe(t, e)
		parentDir := filepath.Join("/sys/fs/cgroup/cpuset", e.parent)
		if got := readTrim(t, filepath.Join(parentDir, "cpuset.cpu_exclusive")); got != "1" {
			t.Errorf("parent cpuset.cpu_exclusive %s, want 1 (serve's log says why); cpusets beside it: %v", got, siblingCpusets(e.parent))
		}
		rep, err := pool.Status(filepath.Join(dir, "run"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Pools {
			got := readTrim(t, filepath.Join(parentDir, p.Name, "cpuset.cpu_exclusive"))
			if want := tc.excl[p.Name]; (got == "1") != want || p.Reservation.CPUsExclusive != want {
				t.Errorf("pool %s (cpus %s): cpuset.cpu_exclusive %s, status says %v; want %v", p.Name, p.Reservation.CPUs, got, p.Reservation.CPUsExclusive, want)
			}
		}
		stopServe(t, e, serve)
	}
}

// siblingCpusets lists the cpusets beside parent at the hierarchy's root with
// their CPUs: one that overlaps makes the kernel refuse exclusivity, so a
// failure names who held the CPUs (a test that leaked its cgroup, say).
func siblingCpusets(parent string) []string {
	var out []string
	ents, _ := os.ReadDir("/sys/fs/cgroup/cpuset")
	for _, e := range ents {
		if !e.IsDir() || e.Name() == parent {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuset", e.Name(), "cpuset.cpus"))
		out = append(out, e.Name()+"="+strings.TrimSpace(string(b)))
	}
	return out
}
