package pathperf

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/svcproc"
	"github.com/polytropon/polytropon/service"
)

// The service runs in a child process, as in the CLI: the test binary re-executed
// with roleEnv set, which TestMain turns into service.Run.
const (
	roleEnv = "POLYTROPON_PATHPERF_TEST_ROLE"
	pidEnv  = "POLYTROPON_PATHPERF_TEST_PIDFILE"
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "service":
		cfg, err := service.LoadConfig(os.Args[len(os.Args)-1])
		if f := os.Getenv(pidEnv); f != "" && err == nil {
			err = os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o644)
		}
		if err == nil {
			err = service.Run(*cfg, nil, func(*service.Service) { fmt.Println("ready") })
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "service:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "fail":
		fmt.Fprintln(os.Stderr, "service: cannot start: the disk is on fire")
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "unknown role")
		os.Exit(2)
	}
}

// services starts the test binary in role and remembers every command it made.
type services struct {
	role    string
	pidFile string // where the service writes its pid, when set
	mu      sync.Mutex
	cmds    []*exec.Cmd
}

func (s *services) command(cfgPath string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$", cfgPath)
	cmd.Env = append(os.Environ(), roleEnv+"="+s.role, pidEnv+"="+s.pidFile)
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	s.mu.Unlock()
	return cmd
}

// gone checks that every service process was waited for and no longer exists,
// and that nothing under dir is mounted or left behind.
func (s *services) gone(t *testing.T, dir string, wantExit0 bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cmds) == 0 {
		t.Fatal("no service was started")
	}
	for _, cmd := range s.cmds {
		if cmd.Process == nil {
			continue // never started
		}
		if cmd.ProcessState == nil {
			t.Fatalf("service %d was not waited for", cmd.Process.Pid)
		}
		if wantExit0 && !cmd.ProcessState.Success() {
			t.Fatalf("service exited with %v, want 0", cmd.ProcessState)
		}
		if err := syscall.Kill(cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("service %d still exists (kill 0: %v)", cmd.Process.Pid, err)
		}
	}
	noMountUnder(t, dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("%s holds %d entries after Run, want none (%s...)", dir, len(ents), ents[0].Name())
	}
}

func noMountUnder(t *testing.T, dir string) {
	t.Helper()
	mps, err := svcproc.MountPoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			t.Fatalf("%s is still mounted", mp)
		}
	}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// TestRunAllPathsAllOps runs every operation on every path with tiny counts: the
// service starts, mounts, serves both paths and stops with status 0, the report
// has every cell and finite ratios and survives JSON, and nothing is left behind.
// It checks function, not speed.
func TestRunAllPathsAllOps(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	dir := t.TempDir()
	svcs := &services{role: "service"}
	const iters, keys = 50, 300
	rep, err := Run(Options{Dir: dir, Duration: time.Millisecond, Iterations: iters, PebbleKeys: keys, Seed: 7,
		ServiceCommand: svcs.command})
	if err != nil {
		t.Fatal(err)
	}
	svcs.gone(t, dir, true)

	if len(rep.Results) != len(Ops)*len(Paths) {
		t.Fatalf("%d results, want %d", len(rep.Results), len(Ops)*len(Paths))
	}
	for _, op := range Ops {
		for _, p := range Paths {
			r := rep.Result(op, p)
			if r == nil {
				t.Fatalf("no result for %s on %s", op, p)
			}
			want := int64(iters)
			if op == OpPebblePut {
				want = keys
			}
			if op == OpPebblePut && r.N != want || r.N < want {
				t.Errorf("%s on %s: %d operations, want %d", op, p, r.N, want)
			}
			if r.P50Ns <= 0 || r.P99Ns < r.P50Ns || r.P999Ns < r.P99Ns || !finite(r.MeanNs) || r.MeanNs <= 0 ||
				!finite(r.OpsPerSec) || r.OpsPerSec <= 0 {
				t.Errorf("%s on %s: %+v", op, p, *r)
			}
			if (op == OpPebblePut) != (r.CloseNs > 0) {
				t.Errorf("%s on %s: close time %d ns", op, p, r.CloseNs)
			}
		}
		q := rep.Ratio(op)
		if q == nil {
			t.Fatalf("no ratios for %s", op)
		}
		for _, v := range []float64{q.FUSEOverDirectP50, q.KernelOverDirectP50, q.DirectOverFUSEOpsPerSec, q.DirectOverKernelOpsPerSec,
			q.FUSEUncachedOverDirectP50, q.DirectOverFUSEUncachedOpsPerSec} {
			if !finite(v) || v <= 0 {
				t.Errorf("%s: ratios %+v", op, *q)
			}
		}
	}
	m := rep.Machine
	if m.CPU == "" || m.Cores <= 0 || !strings.HasPrefix(m.Kernel, "Linux ") || !strings.HasPrefix(m.Go, "go") || m.Backing == "" {
		t.Errorf("machine %+v", m)
	}
	if _, err := time.Parse(time.RFC3339, m.Date); err != nil {
		t.Errorf("date: %v", err)
	}
	if !strings.Contains(rep.Settings.ServiceConfig, "fuse: ") || !strings.Contains(rep.Settings.ServiceConfig, "union") {
		t.Errorf("service config:\n%s", rep.Settings.ServiceConfig)
	}

	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*rep, back) {
		t.Fatalf("JSON round trip changed the report:\n%+v\n%+v", *rep, back)
	}
}

// TestKernelOnlyNeedsNoServiceNorFUSE: the kernel path alone starts no service,
// needs no ServiceCommand, and runs where FUSE is missing.
func TestKernelOnlyNeedsNoServiceNorFUSE(t *testing.T) {
	defer func(d string) { fuseDevice = d }(fuseDevice)
	fuseDevice = "/nonexistent/fuse"
	dir := t.TempDir()
	rep, err := Run(Options{Dir: dir, Paths: []string{PathKernel}, Ops: []string{OpCreateUnlink, OpStat},
		Duration: time.Millisecond, Iterations: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || rep.Results[0].Op != OpStat || rep.Results[1].Op != OpCreateUnlink {
		t.Fatalf("results %+v, want stat then create-unlink", rep.Results)
	}
	if len(rep.Ratios) != 0 || rep.Settings.ServiceConfig != "" {
		t.Fatalf("kernel-only run has ratios %+v or a service %q", rep.Ratios, rep.Settings.ServiceConfig)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d entries left in %s", len(ents), dir)
	}
}

func TestBadOptions(t *testing.T) {
	svcs := &services{role: "service"}
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{Paths: []string{"kernel", "nfs"}, ServiceCommand: svcs.command},
			`unknown path "nfs" (valid: kernel, fuse, fuse-uncached, direct)`},
		{Options{Ops: []string{"stat", "fsync"}, ServiceCommand: svcs.command},
			`unknown op "fsync" (valid: stat, read4k, write4k, open-close, create-unlink, pebble-put)`},
		{Options{Ops: []string{"stat", "stat"}, ServiceCommand: svcs.command}, `op "stat" listed twice`},
		{Options{Duration: -time.Second, ServiceCommand: svcs.command}, "duration -1s is negative"},
		{Options{Iterations: -1, ServiceCommand: svcs.command}, "iterations -1 is negative"},
		{Options{PebbleKeys: -5, ServiceCommand: svcs.command}, "pebble keys -5 is negative"},
		{Options{Backend: "nfs", ServiceCommand: svcs.command}, `unknown backend "nfs"`},
		{Options{Backend: BackendCephFS, ServiceCommand: svcs.command}, "needs the cluster's ceph.conf"},
		{Options{Backend: BackendCephFS, Ceph: CephOptions{Conf: "/c"}, Paths: []string{"kernel"}, ServiceCommand: svcs.command}, "no kernel path"},
		{Options{Paths: []string{"direct"}}, "ServiceCommand is required"},
		{Options{Dir: "/nonexistent/dir", Paths: []string{"kernel"}}, "work directory"},
		{Options{Dir: longDir(t), Paths: []string{"direct"}, ServiceCommand: svcs.command}, "longer than a Unix socket path"},
	} {
		_, err := Run(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one saying %q", c.opts, err, c.want)
		}
	}
	if len(svcs.cmds) != 0 {
		t.Fatalf("bad options started %d services", len(svcs.cmds))
	}
}

func longDir(t *testing.T) string {
	d := t.TempDir() + "/" + strings.Repeat("d", 100)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNoFUSE(t *testing.T) {
	defer func(d string) { fuseDevice = d }(fuseDevice)
	fuseDevice = "/nonexistent/fuse"
	svcs := &services{role: "service"}
	_, err := Run(Options{Dir: t.TempDir(), ServiceCommand: svcs.command})
	if err == nil || !strings.Contains(err.Error(), "the fuse paths need FUSE") ||
		!strings.Contains(err.Error(), "--paths kernel,direct") {
		t.Fatalf("error %v, want one naming FUSE and the other paths", err)
	}
	if len(svcs.cmds) != 0 {
		t.Fatal("a service was started without FUSE")
	}
}

// TestServiceFailsToStart: the service's own message reaches the error.
func TestServiceFailsToStart(t *testing.T) {
	dir := t.TempDir()
	svcs := &services{role: "fail"}
	_, err := Run(Options{Dir: dir, Paths: []string{PathDirect}, ServiceCommand: svcs.command})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") ||
		!strings.Contains(err.Error(), "the disk is on fire") {
		t.Fatalf("error %v, want the service's exit and its message", err)
	}
	svcs.gone(t, dir, false)

	_, err = Run(Options{Dir: dir, Paths: []string{PathDirect},
		ServiceCommand: func(string) *exec.Cmd { return exec.Command("/nonexistent/polytropon") }})
	if err == nil || !strings.Contains(err.Error(), "starting the service") {
		t.Fatalf("error %v, want one about starting the service", err)
	}
}

// TestServiceKilledMidRun: a service SIGKILLed while the paths are measured makes
// Run fail, and Run still leaves no process, no mount and no directory behind.
func TestServiceKilledMidRun(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	dir := t.TempDir()
	svcs := &services{role: "service", pidFile: t.TempDir() + "/service.pid"}
	killed := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			mps, _ := svcproc.MountPoints()
			for _, mp := range mps {
				if strings.HasPrefix(mp, dir+"/") {
					time.Sleep(300 * time.Millisecond)
					b, err := os.ReadFile(svcs.pidFile)
					if err == nil {
						var pid int
						if pid, err = strconv.Atoi(string(b)); err == nil {
							err = syscall.Kill(pid, syscall.SIGKILL)
						}
					}
					killed <- err
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		killed <- errors.New("the service never mounted")
	}()
	// No Pebble: it may panic in a background goroutine when its files vanish.
	_, err := Run(Options{Dir: dir, Ops: []string{OpStat, OpRead4K, OpWrite4K, OpOpenClose, OpCreateUnlink},
		Duration: 300 * time.Millisecond, Iterations: 10, ServiceCommand: svcs.command})
	if kerr := <-killed; kerr != nil {
		t.Fatal(kerr)
	}
	if err == nil {
		t.Fatal("Run succeeded although its service was killed")
	}
	if !strings.Contains(err.Error(), "the service died during the run") {
		t.Errorf("error %v, want one saying the service died", err)
	}
	t.Logf("Run: %v", err)
	svcs.gone(t, dir, false)
}

// TestCancel: a canceled run stops the service in order (exit 0) and cleans up.
func TestCancel(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	dir := t.TempDir()
	svcs := &services{role: "service"}
	cancel := make(chan struct{})
	go func() {
		for range 2000 {
			mps, _ := svcproc.MountPoints()
			for _, mp := range mps {
				if strings.HasPrefix(mp, dir+"/") {
					time.Sleep(200 * time.Millisecond)
					close(cancel)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(cancel)
	}()
	_, err := Run(Options{Dir: dir, Duration: time.Minute, ServiceCommand: svcs.command, Cancel: cancel})
	if !errors.Is(err, ErrCanceled) {
		t.Fatalf("Run: %v, want ErrCanceled", err)
	}
	svcs.gone(t, dir, true)
}
