// Package harness is the latency harness behind `polytropon perf run` and `perf
// paper`: it measures a workload's operations through the three paths an
// application reaches its files by (kernel: system calls on the backing directory;
// fuse: the same calls on the service's FUSE mount; direct: fslib over shared
// memory), with one to many tenants at once, and writes a report (results.json, a
// results.Run; summary.csv; a terminal table; plots through Options.Plots).
//
// For each tenant count N, Run starts N independent filesystem services, one per
// tenant, each with the default stack of perf/svcproc (write-back cache over a
// union of an upper and a lower passthrough branch) on backing directories of its
// own in the work area (OUT/work), FUSE-mounted when the fuse path is asked. Then,
// for each path and each operation of each workload, it starts N worker processes
// (Launcher.Worker: `polytropon perf worker`, one per tenant, each on its tenant's
// files) that prepare, report ready, and are given one start time: every worker
// warms up from that moment for Warmup and measures for Duration, so the tenants
// measure at the same moments. Each worker times every operation into one
// results.Histogram per thread, merges them and sends the snapshot back; Run
// merges the workers' (exactly: HdrHistogram merge) into one results.Cell per
// (workload, op, path, tenants). CPU: client is the workers' own user+system time
// over the measurement (getrusage in each), service the growth of every service
// process's utime+stime (/proc/PID/stat) between the measurement's start and end,
// 0 on the kernel path (the services are idle then, and the kernel's own work is
// in the client's system time).
//
// Workloads are the built-in micro and Pebble ones (Workloads) and external
// programs given through the External interface (Options.Externals;
// perf/external: fio, db_bench). Processes are started by a Launcher: plain
// child processes, or, wrapped by perf/tenantpool, each tenant's service and
// workers inside a pool of its own with a reserved core.
//
// It asserts nothing about speed. It is careful with the machine: whatever fails
// or interrupts (ctx canceled on ^C or SIGTERM), workers are stopped (SIGTERM,
// then SIGKILL), services stopped in order (svcproc.Service.Stop: SIGTERM, exit
// 0 expected, SIGKILL after a timeout, a left mount detached), mounts left by an
// earlier crashed run in the same work area detached, the work area removed; and
// what was measured is still written, marked Partial.
//
// Invariants: a Run owns its work area, its services, workers and mounts; none
// outlives Run. The package holds no state between runs. Lock order: the only
// lock is tailbuf.Buffer's, a leaf.
//
// Measure: `polytropon perf run --workload micro --paths kernel,fuse,direct
// --tenants 1,2 --out DIR` (Table, results.json, summary.csv, plots), `perf
// paper` for the seeds' Fig. 5, `perf compare A.json B.json` (PrintCompare).
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/internal/tailbuf"
	"github.com/polytropon/polytropon/perf/results"
	"github.com/polytropon/polytropon/perf/svcproc"
)

// Launcher starts the processes of a run. A pool-aware launcher
// (perf/tenantpool) starts tenant i's service and workers inside that tenant's
// pool.
type Launcher interface {
	// Service returns the command running tenant's filesystem service on the
	// configuration file cfgPath; it must print a line containing the word
	// "ready" on its stdout once it serves (`polytropon service --config FILE`)
	// and exit 0 on SIGTERM.
	Service(tenant int, cfgPath string) *exec.Cmd
	// Worker returns the command running one worker process of tenant (RunWorker:
	// `polytropon perf worker`), which speaks the worker protocol on its stdin
	// and stdout.
	Worker(tenant int) *exec.Cmd
}

// Defaults of Options.
const (
	DefaultDuration = 30 * time.Second
	DefaultWarmup   = 5 * time.Second
	DefaultKeys     = 100_000
	DefaultThreads  = 1
)

const (
	// maxTenants bounds the tenant count: each is a service and a mount.
	maxTenants = 256
	// startSlack is the time between the start barrier being sent and the start:
	// every worker must have read its start time before it comes.
	startSlack = 100 * time.Millisecond
	// setupTimeout bounds a worker's preparation (a Pebble fill included).
	setupTimeout = 10 * time.Minute
	// finishGrace is how long after the measurement's end a worker may take to
	// finish its last operation, clean up and answer before it is killed.
	finishGrace = 2 * time.Minute
	// termGrace is how long a worker told to stop (SIGTERM) has before SIGKILL.
	termGrace = 10 * time.Second
)

// Options of a Run.
type Options struct {
	// Out is the report's directory (made if missing); its work area, OUT/work,
	// holds the tenants' backing directories, mounts and sockets during the run.
	Out string
	// Workloads to run (at least one; Workloads lists them).
	Workloads []string
	// Ops, when set, keeps only these operations of the workloads.
	Ops []string
	// Paths to measure (default all of Paths).
	Paths []string
	// Tenants are the tenant counts (default 1).
	Tenants []int
	// Warmup and Duration of each cell (defaults DefaultWarmup, DefaultDuration).
	Warmup, Duration time.Duration
	// Threads per worker process (default 1).
	Threads int
	// Sync makes Pebble's writes synchronous.
	Sync bool
	// Keys is the number of keys pebble-readrandom fills its store with.
	Keys int
	// Seed of the random offsets and keys.
	Seed     uint64
	Launcher Launcher
	// Progress, when set, receives a progress bar (a terminal) or one line per
	// cell (anything else).
	Progress io.Writer
	// Params are recorded in the results file with the options (the command
	// line, say).
	Params map[string]string
	// Externals are the external workloads Workloads may name, beside the
	// built-in ones (perf/external's Fio and DBBench).
	Externals []External
	// Plots, when set, draws the run's plots into the report directory after
	// results.json and summary.csv (perf/plot's WriteAll); its error fails the
	// report.
	Plots func(run *results.Run, dir string) error
}

// ErrInterrupted is returned, with the partial run, when ctx was canceled.
var ErrInterrupted = errors.New("harness: interrupted")

func pick(kind string, list, known []string) ([]string, error) {
	if len(list) == 0 {
		return slices.Clone(known), nil
	}
	seen := map[string]bool{}
	for _, n := range list {
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("harness: unknown %s %q (valid: %s)", kind, n, strings.Join(known, ", "))
		}
		if seen[n] {
			return nil, fmt.Errorf("harness: %s %q listed twice", kind, n)
		}
		seen[n] = true
	}
	return list, nil
}

// normalize checks o and fills in its defaults.
func (o *Options) normalize() error {
	if o.Out == "" {
		return errors.New("harness: no output directory")
	}
	if err := checkExternals(o.Externals); err != nil {
		return err
	}
	if len(o.Workloads) == 0 {
		return fmt.Errorf("harness: no workload (valid: %s)", strings.Join(Workloads(o.Externals...), ", "))
	}
	var allOps []string
	for _, w := range o.Workloads {
		ops, err := WorkloadOps(w, o.Externals...)
		if err != nil {
			return err
		}
		allOps = append(allOps, ops...)
	}
	if _, err := pick("workload", o.Workloads, Workloads(o.Externals...)); err != nil {
		return err
	}
	if len(o.Ops) > 0 {
		if _, err := pick("op", o.Ops, allOps); err != nil {
			return err
		}
	}
	var err error
	if o.Paths, err = pick("path", o.Paths, Paths); err != nil {
		return err
	}
	// Report order, whatever the order given.
	o.Paths = slices.DeleteFunc(slices.Clone(Paths), func(p string) bool { return !slices.Contains(o.Paths, p) })
	for _, w := range o.Workloads {
		paths := workloadPaths(w, o.Externals)
		if !slices.ContainsFunc(o.Paths, func(p string) bool { return slices.Contains(paths, p) }) {
			return fmt.Errorf("harness: workload %s runs on %s, none of the paths asked", w, strings.Join(paths, ", "))
		}
		if e := findExternal(o.Externals, w); e != nil {
			if err := e.Check(); err != nil {
				return err
			}
		}
	}
	if len(o.Tenants) == 0 {
		o.Tenants = []int{1}
	}
	seen := map[int]bool{}
	for _, n := range o.Tenants {
		if n < 1 || n > maxTenants {
			return fmt.Errorf("harness: tenant count %d (1 to %d)", n, maxTenants)
		}
		if seen[n] {
			return fmt.Errorf("harness: tenant count %d listed twice", n)
		}
		seen[n] = true
	}
	switch {
	case o.Duration < 0 || o.Warmup < 0:
		return fmt.Errorf("harness: negative duration %v or warm-up %v", o.Duration, o.Warmup)
	case o.Threads < 0 || o.Threads > maxThreads:
		return fmt.Errorf("harness: %d threads (1 to %d)", o.Threads, maxThreads)
	case o.Keys < 0:
		return fmt.Errorf("harness: %d keys is negative", o.Keys)
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Threads == 0 {
		o.Threads = DefaultThreads
	}
	if o.Keys == 0 {
		o.Keys = DefaultKeys
	}
	if o.Launcher == nil {
		return errors.New("harness: Options.Launcher is required")
	}
	if slices.Contains(o.Paths, PathFUSE) {
		f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("harness: the fuse path needs FUSE, which is not available here (%w); leave it out of --paths", err)
		}
		f.Close()
	}
	return nil
}

func (o *Options) params() map[string]string {
	p := map[string]string{}
	for k, v := range o.Params {
		p[k] = v
	}
	ints := make([]string, len(o.Tenants))
	for i, n := range o.Tenants {
		ints[i] = strconv.Itoa(n)
	}
	p["workloads"] = strings.Join(o.Workloads, ",")
	p["ops"] = strings.Join(o.Ops, ",")
	p["paths"] = strings.Join(o.Paths, ",")
	p["tenants"] = strings.Join(ints, ",")
	p["warmup"] = o.Warmup.String()
	p["duration"] = o.Duration.String()
	p["threads"] = strconv.Itoa(o.Threads)
	p["sync"] = strconv.FormatBool(o.Sync)
	p["keys"] = strconv.Itoa(o.Keys)
	p["seed"] = strconv.FormatUint(o.Seed, 10)
	p["stack"] = svcproc.DefaultStackName
	return p
}

// cellPlan is one cell to measure.
type cellPlan struct {
	workload, op, path string
}

// plan lists the cells of one tenant count, in order: path, workload, op.
func (o *Options) plan() []cellPlan {
	var out []cellPlan
	for _, p := range o.Paths {
		for _, w := range o.Workloads {
			if !slices.Contains(workloadPaths(w, o.Externals), p) {
				continue
			}
			ops, _ := WorkloadOps(w, o.Externals...)
			if findExternal(o.Externals, w) != nil {
				// An external program measures all its operations in one call.
				out = append(out, cellPlan{workload: w, path: p})
				continue
			}
			for _, op := range ops {
				if len(o.Ops) == 0 || slices.Contains(o.Ops, op) {
					out = append(out, cellPlan{workload: w, op: op, path: p})
				}
			}
		}
	}
	return out
}

// Run measures and writes the report into opts.Out. Canceled, it stops, tears
// down, writes what it measured with Partial set and returns it with
// ErrInterrupted. A cell that fails is recorded with its Error and the run goes
// on; Run then returns the run and an error naming the failed cells.
func Run(ctx context.Context, opts Options) (run *results.Run, err error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	out, err := filepath.Abs(opts.Out)
	if err == nil {
		// The mount table names the real path, so resolve symbolic links.
		out, err = filepath.EvalSymlinks(out)
	}
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if _, err := os.Stat(filepath.Join(out, ResultsFile)); err == nil {
		return nil, fmt.Errorf("harness: %s already holds a %s: choose another output directory or remove it", out, ResultsFile)
	}
	work := filepath.Join(out, "work")
	if err := cleanWork(work); err != nil {
		return nil, err
	}
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	run = &results.Run{Params: opts.params()}
	run.Machine = results.ThisMachine(work)
	defer func() {
		if cerr := cleanWork(work); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if werr := WriteReport(run, out); werr != nil {
			err = errors.Join(err, werr)
		} else if opts.Plots != nil {
			if perr := opts.Plots(run, out); perr != nil {
				err = errors.Join(err, fmt.Errorf("harness: plots: %w", perr))
			}
		}
		var failed []string
		for _, c := range run.Cells {
			if c.Error != "" {
				failed = append(failed, fmt.Sprintf("%s/%s on %s with %d tenants", c.Workload, c.Op, c.Path, c.Tenants))
			}
		}
		if len(failed) > 0 {
			err = errors.Join(err, fmt.Errorf("harness: %d cells failed: %s (their errors are in %s)", len(failed), strings.Join(failed, "; "), ResultsFile))
		}
	}()

	plan := opts.plan()
	prog := newProgress(opts.Progress, len(plan)*len(opts.Tenants), opts.Warmup+opts.Duration)
	defer prog.finish()
	for _, n := range opts.Tenants {
		if err := runTenants(ctx, &opts, n, work, plan, run, prog); err != nil {
			if errors.Is(err, ErrInterrupted) {
				run.Partial = true
			}
			return run, err
		}
	}
	return run, nil
}

// cleanWork removes a work area, first detaching FUSE mounts left in it by a run
// that died (its services gone, their mounts dead).
func cleanWork(work string) error {
	mps, err := svcproc.MountPoints()
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if strings.HasPrefix(mp, work+"/") {
			if err := svcproc.Detach(mp); err != nil {
				errs = append(errs, fmt.Errorf("harness: %s is mounted and could not be detached: %w", mp, err))
			}
		}
	}
	if len(errs) > 0 {
		// Never remove through a mount: that would delete through a service.
		return errors.Join(append(errs, fmt.Errorf("harness: %s left in place", work))...)
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("harness: removing the work area: %w", err)
	}
	return nil
}

// tenant is one tenant's service and directories.
type tenant struct {
	i                                int
	dir, upper, lower, mnt, sock, cf string
	svc                              *svcproc.Service
}

// runTenants starts n services, measures every cell of plan with n tenants, and
// stops the services.
func runTenants(ctx context.Context, o *Options, n int, work string, plan []cellPlan, run *results.Run, prog *progress) (err error) {
	fuse := slices.Contains(o.Paths, PathFUSE)
	ts := make([]*tenant, n)
	for i := range ts {
		d := filepath.Join(work, fmt.Sprintf("n%d-t%d", n, i))
		t := &tenant{i: i, dir: d, upper: filepath.Join(d, "upper"), lower: filepath.Join(d, "lower"),
			mnt: filepath.Join(d, "mnt"), sock: filepath.Join(d, "s.sock"), cf: filepath.Join(d, "service.yaml")}
		if len(t.sock) >= svcproc.MaxSocketPath {
			return fmt.Errorf("harness: the service socket %s would be longer than a Unix socket path may be (%d bytes): choose a shorter output directory", t.sock, svcproc.MaxSocketPath-1)
		}
		for _, dd := range []string{d, t.upper, t.lower, t.mnt} {
			if err := os.Mkdir(dd, 0o755); err != nil {
				return fmt.Errorf("harness: %w", err)
			}
		}
		mnt := ""
		if fuse {
			mnt = t.mnt
		}
		if err := os.WriteFile(t.cf, []byte(svcproc.Config{Socket: t.sock, Upper: t.upper, Lower: t.lower, FUSE: mnt}.YAML()), 0o644); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		ts[i] = t
	}
	// Started together: each builds its stack and mounts independently.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for _, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mnt := ""
			if fuse {
				mnt = t.mnt
			}
			t.svc, errs[t.i] = svcproc.Start(func(cfg string) *exec.Cmd { return o.Launcher.Service(t.i, cfg) }, t.cf, mnt)
			if errs[t.i] != nil {
				errs[t.i] = fmt.Errorf("tenant %d: %w", t.i, errs[t.i])
			}
		}()
	}
	wg.Wait()
	defer func() {
		var wg sync.WaitGroup
		serrs := make([]error, n)
		for _, t := range ts {
			if t.svc == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if serr := t.svc.Stop(); serr != nil {
					serrs[t.i] = fmt.Errorf("tenant %d: %w", t.i, serr)
				}
			}()
		}
		wg.Wait()
		err = errors.Join(append([]error{err}, serrs...)...)
	}()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, c := range plan {
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		prog.begin(c, n)
		var cells []results.Cell
		var cerr error
		if e := findExternal(o.Externals, c.workload); e != nil {
			cells, cerr = runExternal(ctx, o, e, c.path, ts)
		} else {
			var cell results.Cell
			cell, cerr = runCell(ctx, o, c, ts)
			if cell.Workload != "" {
				cells = []results.Cell{cell}
			}
		}
		if cerr != nil && !errors.Is(cerr, ErrInterrupted) {
			op := c.op
			if op == "" {
				op = "*"
			}
			cells = append(cells, results.Cell{Workload: c.workload, Op: op, Path: c.path, Tenants: n,
				Source: "polytropon", Error: cerr.Error()})
		}
		run.Cells = append(run.Cells, cells...)
		prog.end(cells)
		if errors.Is(cerr, ErrInterrupted) {
			return cerr
		}
	}
	return nil
}

// worker is one running worker process.
type worker struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	errOut *tailbuf.Buffer
	once   sync.Once
	done   chan struct{} // closed when Wait returned; werr is set then
	werr   error
}

func (w *worker) describe(err error) error {
	return fmt.Errorf("%w; worker output:\n%s", err, w.errOut)
}

func startWorker(o *Options, tenant int, spec *Spec) (*worker, error) {
	cmd := o.Launcher.Worker(tenant)
	if cmd == nil {
		return nil, errors.New("harness: Launcher.Worker returned no command")
	}
	w := &worker{cmd: cmd, errOut: &tailbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = w.errOut
	if cmd.SysProcAttr == nil {
		// Its own process group keeps a terminal's ^C away from it (the run
		// stops it in order); the kernel kills it if the run dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	var err error
	if w.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w.out = bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: starting a worker (%s): %w", cmd.Path, err)
	}
	b, _ := json.Marshal(spec)
	if _, err := w.in.Write(append(b, '\n')); err != nil {
		w.kill()
		return nil, w.describe(fmt.Errorf("harness: sending the worker its spec: %w", err))
	}
	return w, nil
}

// wait reaps the worker once its stdout was read (or it was killed).
func (w *worker) wait() {
	w.once.Do(func() {
		w.werr = w.cmd.Wait()
		close(w.done)
	})
}

func (w *worker) kill() {
	_ = w.cmd.Process.Kill()
	_ = w.in.Close()
	w.wait()
}

// runCell measures one built-in cell with every tenant at once.
func runCell(ctx context.Context, o *Options, c cellPlan, ts []*tenant) (results.Cell, error) {
	ws := make([]*worker, 0, len(ts))
	defer func() {
		for _, w := range ws {
			select {
			case <-w.done:
			default:
				w.kill()
			}
		}
	}()
	for _, t := range ts {
		s := &Spec{Workload: c.workload, Op: c.op, Path: c.path, Threads: o.Threads, WarmupNs: int64(o.Warmup),
			DurationNs: int64(o.Duration), Seed: o.Seed + uint64(t.i), Sync: o.Sync, Keys: o.Keys}
		name := c.workload + "-" + c.op + "-" + c.path
		switch c.path {
		case PathKernel:
			s.Dir = filepath.Join(t.upper, name)
		case PathFUSE:
			s.Dir = filepath.Join(t.mnt, name)
		case PathDirect:
			s.Dir, s.Socket = "/"+name, t.sock
		}
		w, err := startWorker(o, t.i, s)
		if err != nil {
			return results.Cell{}, fmt.Errorf("tenant %d: %w", t.i, err)
		}
		ws = append(ws, w)
	}
	// Every worker prepared (the barrier's first half).
	ready := make(chan error, len(ws))
	for i, w := range ws {
		go func() {
			line, err := w.out.ReadString('\n')
			if err == nil && strings.TrimSpace(line) != readyLine {
				err = fmt.Errorf("worker said %q", strings.TrimSpace(line))
			}
			if err != nil {
				w.wait()
				err = fmt.Errorf("tenant %d: %w", i, w.describe(fmt.Errorf("harness: preparing the worker: %v (%v)", err, w.werr)))
			}
			ready <- err
		}()
	}
	timeout := time.NewTimer(setupTimeout)
	defer timeout.Stop()
	var errs []error
	for range ws {
		select {
		case err := <-ready:
			errs = append(errs, err)
		case <-ctx.Done():
			return results.Cell{}, ErrInterrupted
		case <-timeout.C:
			return results.Cell{}, fmt.Errorf("harness: workers not ready after %v", setupTimeout)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return results.Cell{}, err
	}
	start := time.Now().Add(startSlack)
	mstart, mend := start.Add(o.Warmup), start.Add(o.Warmup+o.Duration)
	for i, w := range ws {
		if _, err := fmt.Fprintf(w.in, "%s %d\n", goWord, start.UnixNano()); err != nil {
			return results.Cell{}, fmt.Errorf("tenant %d: %w", i, w.describe(fmt.Errorf("harness: starting the worker: %w", err)))
		}
	}
	answers := make(chan error, len(ws))
	got := make([]WorkerResult, len(ws))
	for i, w := range ws {
		go func() {
			err := json.NewDecoder(w.out).Decode(&got[i])
			w.wait()
			if err == nil && w.werr != nil {
				err = w.werr
			}
			if err != nil {
				err = fmt.Errorf("tenant %d: %w", i, w.describe(fmt.Errorf("harness: the worker's result: %v (%v)", err, w.werr)))
			}
			answers <- err
		}()
	}
	svcCPU := c.path != PathKernel
	var cpu0, cpu1 float64
	var cpuErr error
	interrupted := false
	if sleepUntil(ctx, mstart) {
		if svcCPU {
			cpu0, cpuErr = servicesCPU(ts)
		}
		interrupted = !sleepUntil(ctx, mend)
	} else {
		interrupted = true
	}
	if interrupted {
		for _, w := range ws {
			_ = w.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	if svcCPU && cpuErr == nil {
		cpu1, cpuErr = servicesCPU(ts)
	}
	grace := time.NewTimer(finishGrace)
	if interrupted {
		grace.Reset(termGrace)
	}
	defer grace.Stop()
	errs = errs[:0]
	for range ws {
		select {
		case err := <-answers:
			errs = append(errs, err)
		case <-grace.C:
			return results.Cell{}, fmt.Errorf("harness: workers did not finish within %v of the end", finishGrace)
		}
	}
	err := errors.Join(errs...)
	if interrupted {
		// A worker stopped in its warm-up measured nothing; the cell is whatever
		// the others measured, if anything.
		if err != nil && len(errs) == len(ws) {
			return results.Cell{}, ErrInterrupted
		}
		err = nil
	}
	if err != nil {
		return results.Cell{}, err
	}
	if cpuErr != nil {
		return results.Cell{}, fmt.Errorf("harness: service CPU: %w", cpuErr)
	}
	cell := results.Cell{Workload: c.workload, Op: c.op, Path: c.path, Tenants: len(ts), Source: "polytropon",
		Hist: results.NewHistogram()}
	for _, r := range got {
		if r.Hist == nil {
			continue
		}
		cell.Hist.Merge(r.Hist)
		cell.Seconds = max(cell.Seconds, r.Seconds)
		cell.CPU.Client += r.CPU
	}
	cell.CPU.Service = cpu1 - cpu0
	cell.Summary = results.Summarize(cell.Hist, cell.Seconds)
	if interrupted {
		return cell, ErrInterrupted
	}
	return cell, nil
}

// sleepUntil sleeps until t, or returns false when ctx is done first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// runExternal runs an external workload on every tenant at once.
func runExternal(ctx context.Context, o *Options, e External, path string, ts []*tenant) ([]results.Cell, error) {
	spec := ExternalSpec{Path: path, Warmup: o.Warmup, Duration: o.Duration, Params: o.params()}
	for _, t := range ts {
		base := t.upper
		if path == PathFUSE {
			base = t.mnt
		}
		d := filepath.Join(base, e.Name()+"-"+path)
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
		spec.Dirs = append(spec.Dirs, d)
	}
	cpu0, err := servicesCPU(ts)
	if err != nil {
		return nil, err
	}
	cells, err := e.Run(ctx, spec)
	cpu1, cerr := servicesCPU(ts)
	for _, d := range spec.Dirs {
		err = errors.Join(err, os.RemoveAll(d))
	}
	if err == nil && cerr != nil {
		err = cerr
	}
	if path == PathFUSE {
		for i := range cells {
			cells[i].CPU.Service = cpu1 - cpu0
		}
	}
	if ctx.Err() != nil {
		return cells, ErrInterrupted
	}
	return cells, err
}

// servicesCPU is the user+system time of every tenant's service, in seconds.
func servicesCPU(ts []*tenant) (float64, error) {
	var sum float64
	for _, t := range ts {
		s, err := procCPU(t.svc.Pid())
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every Linux
// architecture Go supports.
const userHZ = 100

// procCPU reads utime+stime (fields 14 and 15) of /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("harness: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("harness: /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("harness: /proc/%d/stat: %w", pid, err)
	}
	return float64(u+s) / userHZ, nil
}
