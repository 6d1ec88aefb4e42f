package harness

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/results"
	"github.com/polytropon/polytropon/perf/svcproc"
	"github.com/polytropon/polytropon/service"
)

// Services and workers run in child processes, as in the CLI: the test binary
// re-executed with roleEnv set, which TestMain turns into service.Run or RunWorker.
const roleEnv = "POLYTROPON_HARNESS_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "service":
		cfg, err := service.LoadConfig(os.Args[len(os.Args)-1])
		if err == nil {
			err = service.Run(*cfg, nil, func(*service.Service) { fmt.Println("ready") })
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "service:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "burn":
		// A service that uses a known amount of CPU: ready, then burned once
		// its own user+system time reaches burnCPU, then exit 0 on SIGTERM.
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Println("ready")
		for {
			var ru syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
				os.Exit(1)
			}
			if time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= burnCPU {
				break
			}
		}
		fmt.Println("burned")
		<-term
		os.Exit(0)
	case "worker":
		if err := RunWorker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "unknown role")
		os.Exit(2)
	}
}

// burnCPU is how much CPU the "burn" role uses.
const burnCPU = 100 * time.Millisecond

// testLauncher starts the test binary in a role and remembers every command.
type testLauncher struct {
	mu   sync.Mutex
	cmds []*exec.Cmd
}

func (l *testLauncher) command(role string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	l.mu.Lock()
	l.cmds = append(l.cmds, cmd)
	l.mu.Unlock()
	return cmd
}

func (l *testLauncher) Service(_ int, cfg string) *exec.Cmd { return l.command("service", cfg) }
func (l *testLauncher) Worker(int) *exec.Cmd                { return l.command("worker") }

// gone checks that every process was waited for and no longer exists, and that
// nothing under dir is mounted and the work area is gone.
func (l *testLauncher) gone(t *testing.T, dir string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cmd := range l.cmds {
		if cmd.Process == nil {
			continue
		}
		if cmd.ProcessState == nil {
			t.Errorf("process %d (%v) was not waited for", cmd.Process.Pid, cmd.Args)
		} else if err := syscall.Kill(cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists (kill 0: %v)", cmd.Process.Pid, err)
		}
	}
	mps, err := svcproc.MountPoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if strings.HasPrefix(mp, dir+"/") {
			t.Errorf("%s is still mounted", mp)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); !os.IsNotExist(err) {
		t.Errorf("the work area is left (%v)", err)
	}
}

func (l *testLauncher) count(role string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.cmds {
		if slices.Contains(c.Env, roleEnv+"="+role) {
			n++
		}
	}
	return n
}

func outDir(t *testing.T) string {
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkReport reads the report files back and checks them against run.
func checkReport(t *testing.T, dir string, run *results.Run) *results.Run {
	t.Helper()
	back, err := results.Load(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Cells) != len(run.Cells) || back.Machine != run.Machine || back.Partial != run.Partial {
		t.Fatalf("results file: %d cells, machine %+v, partial %v; run: %d, %+v, %v", len(back.Cells), back.Machine,
			back.Partial, len(run.Cells), run.Machine, run.Partial)
	}
	f, err := os.Open(filepath.Join(dir, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(run.Cells)+1 || !slices.Equal(rows[0], CSVHeader) {
		t.Fatalf("summary.csv: %d rows, header %v", len(rows), rows[0])
	}
	for i, c := range back.Cells {
		if c.Error != "" {
			t.Errorf("cell %s/%s %s x%d failed: %s", c.Workload, c.Op, c.Path, c.Tenants, c.Error)
			continue
		}
		if c.Hist == nil || c.Hist.Count() != c.Summary.Count || c.Summary.Count == 0 || c.Seconds <= 0 ||
			c.Summary.OpsPerSec <= 0 || c.Summary.P50 > c.Summary.P99 || c.Summary.P99 > c.Summary.P999 || c.CPU.Client <= 0 {
			t.Errorf("cell %d: %+v", i, c)
		}
		if c.Path == PathKernel && c.CPU.Service != 0 {
			t.Errorf("kernel path cell with service CPU %v", c.CPU.Service)
		}
		if rows[i+1][0] != c.Workload || rows[i+1][1] != c.Op || rows[i+1][2] != c.Path {
			t.Errorf("csv row %d: %v, cell %s/%s/%s", i+1, rows[i+1], c.Workload, c.Op, c.Path)
		}
	}
	return back
}

// TestRunOneTenant is the short end-to-end run: every micro op and a tiny Pebble
// fill and read on all three paths, with one tenant.
func TestRunOneTenant(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	dir, l := outDir(t), &testLauncher{}
	var prog strings.Builder
	workloads := []string{WorkloadMicro, WorkloadPebbleFillRandom, WorkloadPebbleReadRandom}
	var ops []string
	if raceEnabled {
		// Every process is instrumented, services included: a cell costs
		// seconds, so fewer of them (the full set runs without -race).
		ops = []string{OpStat, OpRead4KRand, OpAppendFsync, OpPut, OpGet}
	}
	run, err := Run(context.Background(), Options{Out: dir, Workloads: workloads, Ops: ops, Tenants: []int{1},
		Warmup: 10 * time.Millisecond, Duration: 40 * time.Millisecond, Keys: 2000, Seed: 1, Launcher: l, Progress: &prog})
	l.gone(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	back := checkReport(t, dir, run)
	want := 0
	for _, p := range Paths {
		for _, w := range workloads {
			wops, _ := WorkloadOps(w)
			for _, op := range wops {
				if len(ops) > 0 && !slices.Contains(ops, op) {
					continue
				}
				want++
				if back.Find(w, op, p, 1) == nil {
					t.Errorf("no cell %s/%s on %s", w, op, p)
				}
			}
		}
	}
	if len(back.Cells) != want || back.Partial || back.Params["keys"] != "2000" || back.Machine.Cores == 0 {
		t.Errorf("%d cells, partial %v, params %v, machine %+v", len(back.Cells), back.Partial, back.Params, back.Machine)
	}
	if n := strings.Count(prog.String(), "\n"); n != len(back.Cells) {
		t.Errorf("progress: %d lines for %d cells:\n%s", n, len(back.Cells), prog.String())
	}
	var table strings.Builder
	if err := Table(&table, back); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99.9", "ops/s", "fuse/direct p50", "append-fsync", "pebble-readrandom"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	// A second run into the same directory would lose the first.
	if _, err := Run(context.Background(), Options{Out: dir, Workloads: []string{WorkloadMicro}, Paths: []string{PathKernel},
		Launcher: l}); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("second run into %s: %v", dir, err)
	}
}

// TestRunTwoTenants runs two tenants at once: one worker per tenant per cell,
// their histograms merged.
func TestRunTwoTenants(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	dir, l := outDir(t), &testLauncher{}
	var plotted []string
	plots := func(r *results.Run, d string) error {
		// Drawn after the results file, from the run written.
		if _, err := os.Stat(filepath.Join(d, ResultsFile)); err != nil || len(r.Cells) == 0 {
			return fmt.Errorf("plots before the report: %v, %d cells", err, len(r.Cells))
		}
		plotted = append(plotted, d)
		return nil
	}
	run, err := Run(context.Background(), Options{Out: dir, Workloads: []string{WorkloadMicro, WorkloadPebbleFillSeq},
		Ops: []string{OpStat, OpPut}, Tenants: []int{2}, Warmup: 10 * time.Millisecond, Duration: 40 * time.Millisecond,
		Threads: 2, Sync: true, Seed: 2, Launcher: l, Plots: plots})
	l.gone(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(plotted) != 1 {
		t.Errorf("plots drawn %d times (%v), want once", len(plotted), plotted)
	}
	back := checkReport(t, dir, run)
	if len(back.Cells) != 6 {
		t.Fatalf("%d cells, want 6", len(back.Cells))
	}
	// Service CPU is counted in clock ticks (10 ms): a cell the kernel's caches
	// answer (stat on fuse) may see none, but the direct path's cells use the
	// services for every operation.
	var direct float64
	for _, c := range back.Cells {
		if c.Tenants != 2 {
			t.Errorf("cell with %d tenants", c.Tenants)
		}
		if c.CPU.Service < 0 {
			t.Errorf("%s/%s on %s: service CPU %v", c.Workload, c.Op, c.Path, c.CPU.Service)
		}
		if c.Path == PathDirect {
			direct += c.CPU.Service
		}
	}
	// How much CPU the services got in 40 ms depends on the machine's load
	// (none, in ticks of 10 ms, at a load average of 27 on 2 cores):
	// TestServicesCPU checks the accounting itself.
	t.Logf("service CPU on the direct path: %.2f s", direct)
	if got := l.count("service"); got != 2 {
		t.Errorf("%d services started, want 2", got)
	}
	if got := l.count("worker"); got != 12 {
		t.Errorf("%d workers started, want 12 (2 per cell)", got)
	}
}

// TestRunInterrupted cancels a run in the middle of a long measurement: it stops
// at once, tears down, and writes the cell measured so far, marked partial.
func TestRunInterrupted(t *testing.T) {
	testenv.Root(t)
	dir, l := outDir(t), &testLauncher{}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	start := time.Now()
	run, err := Run(ctx, Options{Out: dir, Workloads: []string{WorkloadMicro}, Ops: []string{OpStat, OpRead4KRand},
		Paths: []string{PathKernel, PathDirect}, Warmup: 10 * time.Millisecond, Duration: time.Minute, Launcher: l})
	l.gone(t, dir)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("error %v, want ErrInterrupted", err)
	}
	if took := time.Since(start); took > 45*time.Second {
		t.Errorf("the interrupted run took %v", took)
	}
	back := checkReport(t, dir, run)
	if !back.Partial || len(back.Cells) != 1 || back.Cells[0].Seconds >= 60 {
		t.Fatalf("partial %v, cells %+v", back.Partial, back.Cells)
	}
}

func TestBadInput(t *testing.T) {
	l := &testLauncher{}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Workloads: []string{"tpcc"}}, "valid: micro, pebble-fillseq, pebble-fillrandom, pebble-readrandom"},
		{Options{Workloads: []string{WorkloadMicro}, Paths: []string{"nfs"}}, "valid: kernel, fuse, direct"},
		{Options{Workloads: []string{WorkloadMicro}, Ops: []string{"fsync"}}, `unknown op "fsync"`},
		{Options{Workloads: []string{WorkloadMicro}, Tenants: []int{0}}, "tenant count 0"},
		{Options{Workloads: []string{WorkloadMicro}, Tenants: []int{2, 2}}, "twice"},
		{Options{Workloads: []string{WorkloadMicro}, Duration: -time.Second}, "negative"},
		{Options{}, "no workload"},
		{Options{Workloads: []string{"tpcc"}, Externals: []External{named("zz", PathKernel), named("aa", PathFUSE)}},
			"valid: micro, pebble-fillseq, pebble-fillrandom, pebble-readrandom, aa, zz"},
		{Options{Workloads: []string{WorkloadMicro}, Externals: []External{named(WorkloadMicro, PathKernel)}}, "is built in"},
		{Options{Workloads: []string{"e"}, Externals: []External{named("e", PathKernel), named("e", PathFUSE)}}, "given twice"},
		{Options{Workloads: []string{"e"}, Externals: []External{named("e", PathDirect)}}, `claims path "direct"`},
		{Options{Workloads: []string{"e"}, Externals: []External{named("e", PathKernel)}, Paths: []string{PathDirect}},
			"runs on kernel, none of the paths asked"},
	} {
		c.o.Launcher = l
		c.o.Out = filepath.Join(t.TempDir(), "out")
		_, err := Run(context.Background(), c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one saying %q", c.o, err, c.want)
		}
		if _, serr := os.Stat(c.o.Out); !os.IsNotExist(serr) {
			t.Errorf("bad input made %s", c.o.Out)
		}
	}
	if len(l.cmds) != 0 {
		t.Errorf("bad input started %d processes", len(l.cmds))
	}
}

// namedExternal is an external workload that exists only by name and paths,
// for the checks Run makes before anything starts.
type namedExternal struct {
	name  string
	paths []string
}

func named(name string, paths ...string) External { return namedExternal{name, paths} }

func (e namedExternal) Name() string    { return e.name }
func (e namedExternal) Ops() []string   { return []string{"op"} }
func (e namedExternal) Paths() []string { return e.paths }
func (e namedExternal) Check() error    { return nil }
func (e namedExternal) Run(context.Context, ExternalSpec) ([]results.Cell, error) {
	return nil, errors.New("never run")
}

func TestWorkerBadSpec(t *testing.T) {
	for _, s := range []string{"{\n", `{"workload":"micro","op":"fsync","path":"kernel","dir":"/x","threads":1,"duration_ns":1}` + "\n",
		`{"workload":"micro","op":"stat","path":"kernel","dir":"/x","threads":0,"duration_ns":1}` + "\n", ""} {
		var out strings.Builder
		if err := RunWorker(strings.NewReader(s), &out); err == nil {
			t.Errorf("spec %q accepted", s)
		}
	}
}

// synthetic makes a run of one path whose latencies are scale times base.
func synthetic(scale float64, cells ...[3]string) *results.Run {
	run := &results.Run{Machine: results.Machine{CPU: "test", Cores: 2}}
	for _, c := range cells {
		h := results.NewHistogram()
		for i := range 1000 {
			h.Record(int64(scale * float64(1000+i)))
		}
		run.Cells = append(run.Cells, results.Cell{Workload: c[0], Op: c[1], Path: c[2], Tenants: 1, Seconds: 1,
			Summary: results.Summarize(h, scale), Hist: h})
	}
	return run
}

func TestCompare(t *testing.T) {
	a := synthetic(1, [3]string{"micro", "stat", "direct"}, [3]string{"micro", "stat", "kernel"})
	b := synthetic(2, [3]string{"micro", "stat", "direct"}, [3]string{"micro", "stat", "fuse"})
	b.Cells[0].Summary.OpsPerSec = a.Cells[0].Summary.OpsPerSec * 1.5
	d := Compare(a, b)
	if len(d) != 3 || d[0].Path != "direct" || d[0].OnlyIn != "" || d[1].OnlyIn != "A" || d[2].OnlyIn != "B" {
		t.Fatalf("diffs %+v", d)
	}
	if r := d[0].P50; r < 1.99 || r > 2.01 || d[0].OpsPerSec != 1.5 {
		t.Fatalf("direct: p50 B/A %v, ops/s B/A %v", r, d[0].OpsPerSec)
	}
	// Through files, as perf compare reads them.
	dir := t.TempDir()
	for n, r := range map[string]*results.Run{"a": a, "b": b} {
		if err := os.Mkdir(filepath.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := WriteReport(r, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	la, err := results.Load(filepath.Join(dir, "a", ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	lb, err := results.Load(filepath.Join(dir, "b", ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := PrintCompare(&out, la, lb, "a.json", "b.json"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2.00x", "worse", "1.50x", "better", "only in A: micro/stat kernel x1", "only in B: micro/stat fuse x1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("compare lacks %q:\n%s", want, out.String())
		}
	}
}

// TestServicesCPU: a service's CPU time is counted, whatever else runs: a
// service that burns burnCPU is seen to have used at least most of it.
func TestServicesCPU(t *testing.T) {
	l := &testLauncher{}
	svc, err := svcproc.Start(func(string) *exec.Cmd { return l.command("burn") }, "unused")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := svc.Stop(); err != nil {
			t.Error(err)
		}
	}()
	ts := []*tenant{{svc: svc}}
	cpu0, err := servicesCPU(ts)
	if err != nil {
		t.Fatal(err)
	}
	// A guard against a hang, not a timing: the service burns CPU, not time.
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(svc.Output(), "burned"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the service did not burn %v of CPU in 2 minutes; its output:\n%s", burnCPU, svc.Output())
		}
	}
	cpu1, err := servicesCPU(ts)
	if err != nil {
		t.Fatal(err)
	}
	// /proc/PID/stat counts user and system time each in whole ticks of
	// 10 ms: each may lose most of one.
	if want := burnCPU.Seconds() - 0.025; cpu1 < want || cpu1 < cpu0 {
		t.Fatalf("service CPU %.3f s then %.3f s, want at least %.3f s", cpu0, cpu1, want)
	}
}

func TestProcCPU(t *testing.T) {
	v, err := procCPU(os.Getpid())
	if err != nil || v < 0 {
		t.Fatalf("%v %v", v, err)
	}
	if _, err := procCPU(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
