package pool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
)

// Child modes of the test binary: enterEnv makes it EnterAndExec its arguments
// into the cgroup.procs files listed in the variable; hogEnv makes it allocate
// and touch memory until killed.
const (
	enterEnv = "POOL_TEST_ENTER"
	hogEnv   = "POOL_TEST_HOG"
)

func TestMain(m *testing.M) {
	if v := os.Getenv(enterEnv); v != "" {
		os.Unsetenv(enterEnv)
		err := EnterAndExec(strings.Split(v, "\n"), "", os.Args[1:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// After the exec into the pool: enterEnv is gone by then.
	if os.Getenv(hogEnv) != "" {
		hog()
	}
	os.Exit(m.Run())
}

// hog touches 1 MiB at a time, up to 1 GiB: contained, it is OOM-killed long
// before; uncontained, it exits 0 and the test fails.
func hog() {
	var keep [][]byte
	for i := 0; i < 1024; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
	}
	fmt.Println(len(keep))
	os.Exit(0)
}

// testCgroups gives a test its own cgroup parent, removed at the end.
func testCgroups(t *testing.T) *Cgroups {
	t.Helper()
	testenv.Root(t)
	testenv.Cpusets(t, false)
	cgs, err := NewCgroups(fmt.Sprintf("polytropon-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	if err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	t.Cleanup(cgs.RemoveParent)
	return cgs
}

func createCgroup(t *testing.T, cgs *Cgroups, name string, l Limits) Cgroup {
	t.Helper()
	cg, err := cgs.Create(name, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Delete(); err != nil {
			t.Error(err)
		}
	})
	return cg
}

// inPool is a command that runs argv inside cg, entering it the way serve's
// services do (EnterAndExec).
func inPool(cg Cgroup, env []string, argv ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], argv...)
	cmd.Env = append(os.Environ(), enterEnv+"="+strings.Join(cg.ProcsFiles(), "\n"))
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

func TestCgroupCpuset(t *testing.T) {
	cgs := testCgroups(t)
	cg := createCgroup(t, cgs, "cpu0", Limits{CPUs: "0"})
	out, err := inPool(cg, nil, "/bin/cat", "/proc/self/status").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			got = strings.TrimSpace(v)
		}
	}
	if got != "0" {
		t.Fatalf("Cpus_allowed_list in the pool = %q, want 0", got)
	}
	// And outside, for contrast: the test itself may use every CPU.
	own, _ := os.ReadFile("/proc/self/status")
	if !bytes.Contains(own, []byte("Cpus_allowed_list:")) {
		t.Fatal("no Cpus_allowed_list in /proc/self/status")
	}
}

func TestCgroupMemoryHogContained(t *testing.T) {
	cgs := testCgroups(t)
	a := createCgroup(t, cgs, "a", Limits{Memory: 64 << 20})
	b := createCgroup(t, cgs, "b", Limits{Memory: 64 << 20})

	quiet := inPool(b, nil, "/bin/sleep", "60")
	if err := quiet.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = quiet.Process.Kill(); _ = quiet.Wait() }()

	var out bytes.Buffer
	h := inPool(a, []string{hogEnv + "=1"}, os.Args[0], "-test.run=^$")
	h.Stdout, h.Stderr = &out, &out
	err := h.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the hog was not stopped (err %v): %s", err, out.String())
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v, want SIGKILL by the OOM killer: %s", ws, out.String())
	}
	if n := oomKills(t, a); n < 1 {
		t.Fatalf("pool a's oom_kill count is %d", n)
	}
	// The other pool's process is untouched and still in its cgroup.
	if err := quiet.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("pool b's process died: %v", err)
	}
	pids, err := b.Pids()
	if err != nil || len(pids) != 1 || pids[0] != quiet.Process.Pid {
		t.Fatalf("pool b's pids %v (%v), want [%d]", pids, err, quiet.Process.Pid)
	}
	if n := oomKills(t, b); n != 0 {
		t.Fatalf("pool b's oom_kill count is %d", n)
	}
}

// oomKills reads the v1 memory cgroup's oom_kill counter.
func oomKills(t *testing.T, cg Cgroup) int {
	t.Helper()
	for _, f := range cg.ProcsFiles() {
		if !strings.Contains(f, "/memory/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(filepath.Dir(f), "memory.oom_control"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
				fmt.Sscan(v, &n)
			}
		}
		return n
	}
	t.Fatal("no memory cgroup")
	return 0
}

func TestCgroupPidsAndKill(t *testing.T) {
	cgs := testCgroups(t)
	cg := createCgroup(t, cgs, "p", Limits{Pids: 8})
	// A shell that tries to start 20 sleepers: the pids limit stops it at 8
	// tasks, and Kill removes them all.
	sh := inPool(cg, nil, "/bin/sh", "-c", "for i in $(seq 20); do sleep 60 & done; wait")
	// A file, not a buffer: the test reads it while the shell writes.
	errPath := filepath.Join(t.TempDir(), "stderr")
	ef, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	sh.Stderr = ef
	shErr := func() string { b, _ := os.ReadFile(errPath); return string(b) }
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	// The shell reports the forks the limit refused; until then, wait.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && sh.ProcessState == nil; time.Sleep(20 * time.Millisecond) {
		if pids, _ := cg.Pids(); len(pids) > 8 {
			t.Fatalf("%d processes in a pool with pids: 8", len(pids))
		}
		if strings.Contains(shErr(), "fork") || strings.Contains(shErr(), "unavailable") {
			break
		}
	}
	if pids, _ := cg.Pids(); len(pids) < 2 || len(pids) > 8 {
		t.Fatalf("%d processes in a pool with pids: 8 (shell: %s)", len(pids), shErr())
	}
	if err := cg.Kill(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = sh.Wait()
	if pids, _ := cg.Pids(); len(pids) != 0 {
		t.Fatalf("after Kill: %v", pids)
	}
	names, err := cgs.List()
	if err != nil || len(names) != 1 || names[0] != "p" {
		t.Fatalf("List = %v, %v", names, err)
	}
}

// TestCgroupPidsOneMoment checks that Pids lists processes that lived at the
// same time. A shell in a pool with pids: 2 runs /bin/true in a loop, so the
// pool holds the shell and at most one child at any moment, and each child
// exits before the next is forked; Pids, called while they come and go, must
// never list more than 2 and must always list the shell. A listing that
// merges hierarchies read at different moments (cpuset's before an exit,
// pids's after the next fork) lists two children.
func TestCgroupPidsOneMoment(t *testing.T) {
	cgs := testCgroups(t)
	cg := createCgroup(t, cgs, "churn", Limits{Pids: 2})
	sh := inPool(cg, nil, "/bin/sh", "-c", "while :; do /bin/true; done")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cg.Kill(5 * time.Second); _ = sh.Wait() }()
	// Until the shell is in every hierarchy (EnterAndExec writes them one by
	// one), it may be listed alone or not at all; wait for it to have exec'd.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", sh.Process.Pid))
		if strings.HasSuffix(exe, "sh") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell did not start in 10 s (exe %q)", exe)
		}
	}
	const calls = 500
	seen := map[int]bool{}
	for i := 0; i < calls; i++ {
		pids, err := cg.Pids()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if len(pids) > 2 || !slices.Contains(pids, sh.Process.Pid) {
			t.Fatalf("call %d: Pids = %v in a pool that holds the shell %d and at most one child at a time", i, pids, sh.Process.Pid)
		}
		for _, p := range pids {
			seen[p] = true
		}
	}
	// The loop must have raced with the forks, or it proved nothing.
	if len(seen) < 10 {
		t.Fatalf("%d calls saw only %d distinct processes: the shell's children did not come and go", calls, len(seen))
	}
	t.Logf("%d calls, %d distinct processes seen", calls, len(seen))
}

func TestCgroupBlkioThrottle(t *testing.T) {
	cgs := testCgroups(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("loop devices: losetup: %v: %s", err, out))
		return
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })

	cfg := fmt.Sprintf("pools:\n  - name: io\n    io: {device: %s, read_bps: 1MiB}\n    filesystems: [{name: d, stack: [{memfs: {}}]}]\n", dev)
	c, err := ParseConfig([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	cg := createCgroup(t, cgs, "io", c.Pools[0].limits())
	// 2 MiB of O_DIRECT reads at 1 MiB/s. The throttle lets a first slice through
	// at once, so the bound is generous: at least 1 s (unthrottled, this loop
	// device reads 2 MiB in milliseconds).
	const size, rate = 2 << 20, 1 << 20
	start := time.Now()
	out, err = inPool(cg, nil, "/usr/bin/dd", "if="+dev, "of=/dev/null", "bs=64k", fmt.Sprint("count=", size/(64<<10)), "iflag=direct").CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	t.Logf("2 MiB O_DIRECT at read_bps 1MiB: %v", took)
	if min := time.Duration(size/rate) * time.Second / 2; took < min {
		t.Fatalf("read 2 MiB in %v under a 1 MiB/s throttle (want >= %v): the limit did not take effect", took, min)
	}
}

// TestCgroupCreateFailsCleanly: a pool whose limits the kernel refuses (CPUs
// its parent does not have) is an error that leaves no directory behind in
// any hierarchy, so the parent can still be removed.
func TestCgroupCreateFailsCleanly(t *testing.T) {
	cgs := testCgroups(t)
	online := readCPUs(t, "/sys/devices/system/cpu/online")
	bad := online[len(online)-1] + 1
	if _, err := cgs.Create("bad", Limits{CPUs: strconv.Itoa(bad), Pids: 8}); err == nil {
		t.Fatalf("a pool on CPU %d (online: %v) was created", bad, online)
	}
	if names, err := cgs.List(); err != nil || len(names) != 0 {
		t.Fatalf("after the failed Create, List = %v, %v; want nothing", names, err)
	}
}

func readCPUs(t *testing.T, file string) []int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cpus, err := ParseCPUList(string(b))
	if err != nil || len(cpus) == 0 {
		t.Fatalf("%s: %v %v", file, cpus, err)
	}
	return cpus
}
