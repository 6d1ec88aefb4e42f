package external

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
)

func golden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func needProgram(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		testenv.SkipOrFail(t, name+" is not installed (apt-get install "+pkg+")")
	}
}

func within(got, want int64, frac float64) bool {
	return math.Abs(float64(got-want)) <= frac*float64(want)
}

func findCell(t *testing.T, cells []results.Cell, op string) *results.Cell {
	t.Helper()
	for i := range cells {
		if cells[i].Op == op {
			return &cells[i]
		}
	}
	var ops []string
	for _, c := range cells {
		ops = append(ops, c.Op)
	}
	t.Fatalf("no cell %q in %v", op, ops)
	return nil
}

func parseGoldenFio(t *testing.T, name string) *fioReport {
	t.Helper()
	rep, err := parseFio(golden(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// The golden file is fio 3.33's json+ output of a 1 s 4 KiB randrw psync job;
// the expected figures are read off it.
func TestFioGoldenOneTenant(t *testing.T) {
	rep := parseGoldenFio(t, "fio-3.33-randrw-jsonplus.json")
	cells, err := fioCells([]*fioReport{rep}, "kernel", 1, "randrw")
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 2 {
		t.Fatalf("%d cells, want read and write", len(cells))
	}
	for _, w := range []struct {
		op                       string
		count                    int64
		iops, mean               float64
		p50, p90, p99, p999, max int64
	}{
		{"fio-randrw-read", 7613, 7605.394605, 111540.653356, 87552, 144384, 403456, 1777664, 41967413},
		{"fio-randrw-write", 7651, 7643.356643, 7654.269377, 6432, 10304, 40192, 118272, 158515},
	} {
		c := findCell(t, cells, w.op)
		s := c.Summary
		if c.Workload != "fio" || c.Source != "fio" || c.Path != "kernel" || c.Tenants != 1 || c.Seconds != 1.001 {
			t.Errorf("%s: cell %+v", w.op, c)
		}
		// One tenant: exactly what fio printed.
		if s.Count != w.count || s.OpsPerSec != w.iops || s.Mean != w.mean || s.P50 != w.p50 || s.P90 != w.p90 ||
			s.P99 != w.p99 || s.P999 != w.p999 || s.Max != w.max {
			t.Errorf("%s: summary %+v, want %+v", w.op, s, w)
		}
		// The histogram built from fio's bins agrees with fio's own percentiles
		// to within fio's bin width (1/64 of a power of two) and HdrHistogram's;
		// at p99.9 of ~7600 samples the two round the rank differently by one
		// sample, which in the sparse tail moves the value by a few per cent.
		if c.Hist == nil || c.Hist.Count() != w.count {
			t.Fatalf("%s: histogram %v", w.op, c.Hist)
		}
		for q, want := range map[float64]int64{0.5: w.p50, 0.9: w.p90, 0.99: w.p99, 0.999: w.p999} {
			tol := 0.02
			if q == 0.999 {
				tol = 0.1
			}
			if got := c.Hist.Quantile(q); !within(got, want, tol) {
				t.Errorf("%s: histogram q%v = %d, fio says %d", w.op, q, got, want)
			}
		}
	}
}

func TestFioGoldenMergedTenants(t *testing.T) {
	rep := parseGoldenFio(t, "fio-3.33-randrw-jsonplus.json")
	one, err := fioCells([]*fioReport{rep}, "fuse", 1, "randrw")
	if err != nil {
		t.Fatal(err)
	}
	three, err := fioCells([]*fioReport{rep, rep, rep}, "fuse", 3, "randrw")
	if err != nil {
		t.Fatal(err)
	}
	for i := range one {
		a, b := one[i].Summary, three[i].Summary
		// Three identical tenants: three times the operations and throughput,
		// the same distribution.
		if b.Count != 3*a.Count || math.Abs(b.OpsPerSec-3*a.OpsPerSec) > 1e-6 || math.Abs(b.Mean-a.Mean) > 1e-6 || b.Max != a.Max {
			t.Errorf("%s: 1 tenant %+v, 3 tenants %+v", one[i].Op, a, b)
		}
		if three[i].Hist.Count() != b.Count || b.P50 != three[i].Hist.Quantile(0.5) || !within(b.P99, a.P99, 0.02) {
			t.Errorf("%s: merged percentiles %+v vs one tenant's %+v", one[i].Op, b, a)
		}
		if three[i].Tenants != 3 {
			t.Errorf("tenants %d", three[i].Tenants)
		}
	}
}

// fio interrupted by SIGINT writes a note before the JSON; fsync latencies come
// in the "sync" block.
func TestFioGoldenInterruptedWithFsync(t *testing.T) {
	b := golden(t, "fio-3.33-randwrite-fsync-interrupted.json")
	if !strings.HasPrefix(string(b), "\nfio: terminating") {
		t.Fatal("golden file lost its leading note")
	}
	rep := parseGoldenFio(t, "fio-3.33-randwrite-fsync-interrupted.json")
	cells, err := fioCells([]*fioReport{rep}, "kernel", 1, "randwrite")
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 2 {
		t.Fatalf("%d cells, want write and sync", len(cells))
	}
	w, s := findCell(t, cells, "fio-randwrite-write"), findCell(t, cells, "fio-randwrite-sync")
	if w.Summary.Count != 312 || s.Summary.Count != 78 || s.Summary.P50 != 692224 || s.Seconds != 1.137 || s.Hist.Count() != 78 {
		t.Errorf("write %+v, sync %+v (seconds %v)", w.Summary, s.Summary, s.Seconds)
	}
	if want := 78 / 1.137; math.Abs(s.Summary.OpsPerSec-want) > 1e-9 {
		t.Errorf("fsyncs/s %v, want %v", s.Summary.OpsPerSec, want)
	}
}

// Plain json (no bins): one tenant keeps fio's percentiles and has no
// histogram; several cannot be merged, and say so.
func TestFioGoldenWithoutBins(t *testing.T) {
	rep := parseGoldenFio(t, "fio-3.33-randread-json.json")
	cells, err := fioCells([]*fioReport{rep}, "kernel", 1, "randread")
	if err != nil {
		t.Fatal(err)
	}
	c := findCell(t, cells, "fio-randread-read")
	if c.Hist != nil || c.Summary.Count != 11644 || c.Summary.P50 != 70144 || c.Summary.P999 != 4046848 || c.Summary.OpsPerSec != 11632.367632 {
		t.Errorf("cell %+v", c)
	}
	if _, err := fioCells([]*fioReport{rep, rep}, "kernel", 2, "randread"); err == nil || !strings.Contains(err.Error(), "json+") {
		t.Errorf("merging without bins: %v", err)
	}
}

func TestParseFioBad(t *testing.T) {
	good := golden(t, "fio-3.33-randrw-jsonplus.json")
	for name, in := range map[string]string{
		"empty":      "",
		"text":       "fio: pid=1, err=2/file:filesetup.c:1, func=open, error=No such file\n",
		"truncated":  string(good[:len(good)/2]),
		"no jobs":    `{"fio version": "fio-3.33", "jobs": []}`,
		"job error":  `{"jobs": [{"jobname": "x", "error": 5}]}`,
		"wrong type": `{"jobs": "x"}`,
	} {
		if _, err := parseFio([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	noIO := `{"jobs": [{"jobname": "x", "error": 0, "read": {"total_ios": 0}}]}`
	rep, err := parseFio([]byte(noIO))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fioCells([]*fioReport{rep}, "kernel", 1, "read"); !errors.Is(err, errNoOutput) {
		t.Errorf("no I/O: %v", err)
	}
	badBin := `{"jobs": [{"jobname": "x", "read": {"total_ios": 1, "clat_ns": {"N": 1, "bins": {"abc": 1}}}}]}`
	if rep, err = parseFio([]byte(badBin)); err != nil {
		t.Fatal(err)
	}
	if _, err := fioCells([]*fioReport{rep}, "kernel", 1, "read"); err == nil || !strings.Contains(err.Error(), "abc") {
		t.Errorf("bad bin: %v", err)
	}
}

func TestRwOf(t *testing.T) {
	for want, args := range map[string][]string{
		"read":      nil,
		"randread":  {"--bs=4k", "--rw=randread"},
		"randwrite": {"--readwrite=randwrite:8"},
		"write":     {"--rw=read", "--rw=write"},
	} {
		if got := rwOf(args); got != want {
			t.Errorf("rwOf(%q) = %q, want %q", args, got, want)
		}
	}
}

func fioArgs(runtime string) []string {
	return []string{"--rw=randrw", "--bs=4k", "--size=4M", "--runtime=" + runtime, "--time_based", "--ioengine=psync"}
}

// The real fio, two tenants for one second each, on the local filesystem.
func TestRunFio(t *testing.T) {
	needProgram(t, "fio", "fio")
	dir := t.TempDir()
	cells, err := RunFio(context.Background(), FioSpec{Dir: dir, Path: "kernel", Tenants: 2, Args: fioArgs("1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"fio-randrw-read", "fio-randrw-write"} {
		c := findCell(t, cells, op)
		s := c.Summary
		if c.Tenants != 2 || c.Path != "kernel" || c.Seconds < 0.9 || s.Count <= 0 || c.Hist == nil || c.Hist.Count() != s.Count ||
			s.P50 <= 0 || s.P50 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max || s.OpsPerSec <= 0 || c.CPU.Client <= 0 {
			t.Errorf("%s: %+v summary %+v", op, c, s)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("tenant directories left behind: %v", ents)
	}
}

// ^C during a run: fio reports what it measured, and the error says the run was
// interrupted.
func TestRunFioInterrupted(t *testing.T) {
	needProgram(t, "fio", "fio")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	// Interrupt once fio's job has read: laying out its file only writes, so
	// reads are the job's own. A fixed delay after the layout stopped it before
	// its first read on a loaded machine (load average 27 on 2 cores).
	go func() {
		defer cancel()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if fioReadBytes(os.Getpid()) >= 256<<10 {
				return
			}
		}
	}()
	start := time.Now()
	cells, err := RunFio(ctx, FioSpec{Dir: dir, Path: "fuse", Tenants: 1, Args: fioArgs("60")})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want one wrapping context.Canceled", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("fio took %v to stop", time.Since(start))
	}
	if len(cells) == 0 || cells[0].Summary.Count == 0 {
		t.Errorf("no partial results: %+v", cells)
	}
}

// fioReadBytes sums the bytes read (rchar of /proc/PID/io) by the fio
// processes descended from pid: fio runs each job in a child of its own.
func fioReadBytes(pid int) int64 {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	comm := map[int]string{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		i := bytes.LastIndexByte(b, ')')
		j := bytes.IndexByte(b, '(')
		f := strings.Fields(string(b[i+1:]))
		if i < 0 || j < 0 || len(f) < 2 {
			continue
		}
		parent[p], _ = strconv.Atoi(f[1])
		comm[p] = string(b[j+1 : i])
	}
	var sum int64
	for p, c := range comm {
		if c != "fio" {
			continue
		}
		descends := false
		for q, n := parent[p], 0; q > 1 && n < 64; q, n = parent[q], n+1 {
			if q == pid {
				descends = true
				break
			}
		}
		if !descends {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "rchar: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				sum += n
			}
		}
	}
	return sum
}

func TestRunFioBadInput(t *testing.T) {
	needProgram(t, "fio", "fio")
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, c := range map[string]struct {
		spec FioSpec
		want string
	}{
		"positional": {FioSpec{Dir: dir, Tenants: 1, Args: []string{"job.fio"}}, "not a flag"},
		"directory":  {FioSpec{Dir: dir, Tenants: 1, Args: []string{"--directory=/"}}, "--directory is set by the harness"},
		"format":     {FioSpec{Dir: dir, Tenants: 1, Args: []string{"--output-format", "normal"}}, "--output-format"},
		"tenants":    {FioSpec{Dir: dir, Tenants: 0}, "0 tenants"},
		"dirs":       {FioSpec{Dirs: []string{dir}, Tenants: 2}, "1 tenant directories for 2 tenants"},
		"no dir":     {FioSpec{Tenants: 1}, "no directory"},
		"missing":    {FioSpec{Dir: filepath.Join(dir, "nope"), Tenants: 1}, "no such file"},
		"file":       {FioSpec{Dir: file, Tenants: 1}, "not a directory"},
		"bad rw":     {FioSpec{Dir: dir, Tenants: 1, Args: []string{"--rw=sideways", "--size=1M"}}, "sideways"},
	} {
		_, err := RunFio(ctx, c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("bad input lost %s: %v", file, err)
	}
}

func TestNotInstalled(t *testing.T) {
	ctx := context.Background()
	_, err := RunFio(ctx, FioSpec{Dir: t.TempDir(), Tenants: 1, Binary: "/nonexistent/fio"})
	var ni *NotInstalledError
	if !errors.As(err, &ni) || !strings.Contains(err.Error(), "apt-get install fio") {
		t.Errorf("fio: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	_, err = RunDBBench(ctx, DBBenchSpec{Dir: t.TempDir(), Tenants: 1, Benchmarks: "fillrandom", Num: 10})
	if !errors.As(err, &ni) || !strings.HasPrefix(err.Error(), "db_bench not found: apt-get install rocksdb-tools") {
		t.Errorf("db_bench: %v", err)
	}
	err = Fio{}.Check()
	if !errors.As(err, &ni) || !strings.HasPrefix(err.Error(), "fio not found: apt-get install fio") {
		t.Errorf("fio from PATH: %v", err)
	}
	err = DBBench{}.Check()
	if !errors.As(err, &ni) || !strings.HasPrefix(err.Error(), "db_bench not found: apt-get install rocksdb-tools") {
		t.Errorf("db_bench from PATH: %v", err)
	}
}

func TestWorkloadPaths(t *testing.T) {
	for _, w := range []harness.External{Fio{}, DBBench{Num: 10}} {
		if !slices.Equal(w.Paths(), []string{"kernel", "fuse"}) {
			t.Errorf("%s: paths %v", w.Name(), w.Paths())
		}
		w.Paths()[0] = "x" // callers get a copy
		if w.Paths()[0] != "kernel" {
			t.Errorf("%s: Paths shares its slice", w.Name())
		}
		_, err := w.Run(context.Background(), harness.ExternalSpec{Path: "direct", Dirs: []string{t.TempDir()}})
		if err == nil || !strings.Contains(err.Error(), "LD_PRELOAD") {
			t.Errorf("%s direct: %v", w.Name(), err)
		}
		_, err = w.Run(context.Background(), harness.ExternalSpec{Path: "nfs", Dirs: []string{t.TempDir()}})
		if err == nil || !strings.Contains(err.Error(), "valid paths: kernel, fuse") {
			t.Errorf("%s nfs: %v", w.Name(), err)
		}
		_, err = w.Run(context.Background(), harness.ExternalSpec{Path: "kernel"})
		if err == nil || !strings.Contains(err.Error(), "no tenant directory") {
			t.Errorf("%s without directories: %v", w.Name(), err)
		}
	}
	if _, err := (DBBench{Benchmarks: "fillseq"}).Run(context.Background(), harness.ExternalSpec{Path: "kernel", Dirs: []string{t.TempDir()}}); err == nil || !strings.Contains(err.Error(), "--num 0") {
		t.Errorf("db_bench without --num: %v", err)
	}
}

// TestFioOps: the operations a job reports are named from its --rw and
// --fsync as RunFio names its cells.
func TestFioOps(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"fio-read-read"}},
		{[]string{"--rw=randread"}, []string{"fio-randread-read"}},
		{[]string{"--rw=write", "--fsync=1"}, []string{"fio-write-write", "fio-write-sync"}},
		{[]string{"--rw=randrw", "--fsync=0"}, []string{"fio-randrw-read", "fio-randrw-write"}},
		{[]string{"--readwrite=randtrim"}, []string{"fio-randtrim-trim"}},
	} {
		if got := (Fio{Args: c.args}).Ops(); !slices.Equal(got, c.want) {
			t.Errorf("Ops(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// TestFioJobTiming: the harness's duration and warm-up become fio's, in whole
// seconds, unless the job times itself.
func TestFioJobTiming(t *testing.T) {
	spec := harness.ExternalSpec{Duration: 1400 * time.Millisecond, Warmup: 200 * time.Millisecond}
	got := strings.Join(Fio{Args: []string{"--rw=read"}}.job(spec), " ")
	if got != "--rw=read --time_based --runtime=1s --ramp_time=1s" {
		t.Errorf("job %q", got)
	}
	own := []string{"--rw=read", "--runtime=9"}
	if got := (Fio{Args: own}).job(spec); !slices.Equal(got, own) {
		t.Errorf("a job with its own --runtime became %q", got)
	}
}
