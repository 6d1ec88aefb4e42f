package main

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/pool"
)

// The serve tests' view of the host's cgroups, read at run time: serve nests
// its pools' parent in its own cgroup (the test's, which starts it), and what
// else lives on the host (Docker's cpuset, systemd slices, other tests) is
// found, never assumed.

// cpusetMount is where pool.Cgroups (containerd/cgroups' v1 hierarchy) finds
// the cpuset controller.
const cpusetMount = "/sys/fs/cgroup/cpuset"

// ownCpuset is the v1 cpuset cgroup this process runs in, relative to the
// hierarchy's root ("/" at the root), as /proc/self/cgroup names it.
func ownCpuset(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "cpuset") {
			return f[2]
		}
	}
	testenv.SkipOrFail(t, "no cgroup v1 cpuset hierarchy (/proc/self/cgroup has no cpuset line): on a cgroup v2-only host serve uses pool's v2 path, "+
		"which these tests do not cover (they read v1 files such as cpuset.cpu_exclusive)")
	return ""
}

// cpusetDir is the directory of the cpuset cgroup elems below this process's own.
func cpusetDir(t testing.TB, elems ...string) string {
	t.Helper()
	return filepath.Join(append([]string{cpusetMount, ownCpuset(t)}, elems...)...)
}

// cpusetPath is cgroup elems below this process's own as /proc/PID/cgroup
// names it.
func cpusetPath(t testing.TB, elems ...string) string {
	t.Helper()
	return path.Join(append([]string{ownCpuset(t)}, elems...)...)
}

func readCPUList(t testing.TB, file string) []int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cpus, err := pool.ParseCPUList(string(b))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cpus
}

// poolCPU is a CPU a pool of the tests may reserve: the first of this
// process's cpuset (the host may have confined the tests away from CPU 0).
func poolCPU(t testing.TB) int {
	t.Helper()
	cpus := readCPUList(t, cpusetDir(t, "cpuset.effective_cpus"))
	if len(cpus) == 0 {
		t.Fatalf("%s: no CPUs", cpusetDir(t, "cpuset.effective_cpus"))
	}
	return cpus[0]
}

// exclusiveCPUs returns n CPUs that pools under parent (a cgroup below this
// process's own) can hold exclusively, or fails (skips without
// POLYTROPON_REQUIRE_PRIVILEGED) saying why this host cannot. The kernel
// (cgroup v1 cpuset.cpu_exclusive) makes a cpuset exclusive only when its
// parent is, and never when a sibling shares one of its CPUs: so every
// ancestor of parent must already be exclusive, and the CPUs must be ones no
// other cgroup beside parent has. A test does not change cgroups it did not
// create, so it picks such CPUs or names who holds them.
func exclusiveCPUs(t *testing.T, parent string, n int) []int {
	t.Helper()
	own := ownCpuset(t)
	for dir := own; dir != "/"; dir = path.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(cpusetMount, dir, "cpuset.cpu_exclusive"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(b)) != "1" {
			testenv.SkipOrFail(t, fmt.Sprintf("exclusive cpusets are impossible here: serve nests its pools in the test's cpuset cgroup %s, "+
				"and its ancestor %s is not exclusive (cpuset.cpu_exclusive 0); the kernel makes a cpuset exclusive only under exclusive "+
				"ancestors, and a test does not change cgroups it did not create (run the tests in the root cpuset)", own, dir))
			return nil
		}
	}
	// Another test process (a second suite, another checkout) may hold the
	// cpuset lock's shared side no longer but still be removing its cgroups:
	// give cgroups named like the tests' own a while to go.
	var free []int
	var holders []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var waitFor bool
		free, holders, waitFor = freeCPUs(t, parent)
		if len(free) >= n || !waitFor || time.Now().After(deadline) {
			break
		}
	}
	if len(free) < n {
		testenv.SkipOrFail(t, fmt.Sprintf("this case needs %d CPU(s) that no other cpuset beside the pools' parent has; this host leaves %d (%s): "+
			"%s; the kernel refuses an exclusive cpuset that shares a CPU with a sibling (a host running Docker or cpuset slices on every CPU "+
			"cannot run this case; a polytropon- cgroup left by a killed test can be removed with rmdir)",
			n, len(free), pool.FormatCPUList(free), strings.Join(holders, "; ")))
		return nil
	}
	return free[:n]
}

// freeCPUs lists the CPUs of this process's cpuset that no cgroup beside
// parent has, who has the others, and whether any of those is a polytropon
// test's (which goes away when its test ends).
func freeCPUs(t *testing.T, parent string) (free []int, holders []string, testHolder bool) {
	t.Helper()
	free = readCPUList(t, cpusetDir(t, "cpuset.cpus"))
	ents, err := os.ReadDir(cpusetDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == parent {
			continue
		}
		b, err := os.ReadFile(cpusetDir(t, e.Name(), "cpuset.cpus"))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		cpus, err := pool.ParseCPUList(string(b))
		if err != nil {
			t.Fatalf("%s: %v", cpusetDir(t, e.Name(), "cpuset.cpus"), err)
		}
		if len(cpus) == 0 {
			continue
		}
		free = slices.DeleteFunc(free, func(c int) bool { return slices.Contains(cpus, c) })
		holders = append(holders, fmt.Sprintf("%s has %s", cpusetDir(t, e.Name()), pool.FormatCPUList(cpus)))
		testHolder = testHolder || strings.HasPrefix(e.Name(), "polytropon-")
	}
	return free, holders, testHolder
}
