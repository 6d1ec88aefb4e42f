// Package pathperf measures the ways an application reaches its files, in one
// run on one machine, for `polytropon perf paths` and the first step of
// `polytropon demo`:
//
//   - kernel: plain system calls (package os) on the backing directory, the upper
//     branch of the service's stack, with no polytropon involved;
//   - fuse: the same system calls on the service's FUSE mount of the instance (the
//     legacy path: kernel -> FUSE -> service/fusegw -> stack), with the kernel's
//     default caching of names, attributes and pages;
//   - fuse-uncached: the same on a second FUSE mount of the instance with those
//     caches off, so that every call is a round trip to the service, as for
//     files that fslib clients change too;
//   - direct: fslib over shared memory to the same instance (the direct path:
//     fslib -> RCQB -> service worker -> stack).
//
// Run starts a filesystem service as a child process (perf/svcproc;
// Options.ServiceCommand, in the CLI `polytropon service --config FILE`) with the
// default stack, a write-back cache over a union of a writable upper and a
// read-only lower passthrough branch in a temporary directory (or, with
// BackendCephFS, the cephfs libservice alone, and no kernel path), mounts that
// instance with FUSE, and makes the same operations on each path through
// perf/pathfs, on files prepared the same way in a subdirectory of its own,
// caches warmed first: stat of an existing file, 4 KiB pread at random
// page-aligned offsets of a 4 MiB file, 4 KiB pwrite at random offsets of
// another, open+close, create+close+unlink, and N puts of random 16-byte keys
// without sync into a fresh Pebble store (kernel and fuse with Pebble's
// default vfs on the directory, direct with fslib/pebblevfs). Each operation
// is timed alone into an HdrHistogram (nanoseconds); the paths run one after
// the other for each operation, so only ratios taken within one run mean
// anything on a shared machine, and the report carries the machine and the
// date.
//
// It is measurement code: it asserts nothing about speed. It is also careful with
// the machine: whatever fails, the service is stopped (SIGTERM, then SIGKILL after a
// timeout), a FUSE mount it leaves is detached, and the temporary directory removed.
//
// # Measuring
//
// `polytropon perf paths` prints p50 and p99 per operation and path with the
// ratios of each path over direct (WriteTable; --json for the Report); it is
// the first step of `polytropon demo`. A recorded run with what it shows
// against the goals (stat and 4 KiB cached read on the direct path at or
// below 2 µs p50, and how a FUSE mount with the kernel's caches on answers
// those without reaching the service) is in
// docs/results/2026-11-21/README.md and perf-paths.txt.
//
// Invariants: a Run owns its work directory, its service process and its
// mounts; none outlives Run. Lock order: the package has no lock of its own.
package pathperf

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/polytropon/polytropon/perf/results"
	"github.com/polytropon/polytropon/perf/svcproc"
)

// Paths, in report order.
const (
	PathKernel = "kernel"
	PathFUSE   = "fuse"
	// PathFUSEUncached is the same instance through a second FUSE mount with the
	// kernel's caches off (names, attributes, pages): every call is a FUSE round
	// trip to the service, as for files that fslib clients change too.
	PathFUSEUncached = "fuse-uncached"
	PathDirect       = "direct"
)

// Paths are the paths Run knows, in report order.
var Paths = []string{PathKernel, PathFUSE, PathFUSEUncached, PathDirect}

// Operations, in report order.
const (
	OpStat         = "stat"
	OpRead4K       = "read4k"
	OpWrite4K      = "write4k"
	OpOpenClose    = "open-close"
	OpCreateUnlink = "create-unlink"
	OpPebblePut    = "pebble-put"
)

// Ops are the operations Run knows, in report order.
var Ops = []string{OpStat, OpRead4K, OpWrite4K, OpOpenClose, OpCreateUnlink, OpPebblePut}

const (
	fileSize  = 4 << 20 // the files read and written at random 4 KiB offsets
	blockSize = 4096
	// maxOps bounds one measurement whatever the duration.
	maxOps = 10_000_000
	// maxLatency is the histograms' top; a slower operation is recorded as this.
	maxLatency = time.Minute
	// maxWarm bounds the untimed operations made before each measurement.
	maxWarm = 1000
)

// Defaults of Options.
const (
	DefaultDuration   = time.Second
	DefaultIterations = 1000
	DefaultPebbleKeys = 100_000
)

// Options of a Run.
type Options struct {
	// Dir is where the run's temporary directory is made (default os.TempDir()).
	// The kernel path and the service's branches live there, so it is the disk
	// being measured; the directory is removed at the end.
	Dir string
	// Paths to measure (default all of Paths).
	Paths []string
	// Ops to measure (default all of Ops).
	Ops []string
	// Duration of each operation on each path (default DefaultDuration), but at
	// least Iterations operations (default DefaultIterations).
	Duration   time.Duration
	Iterations int
	// PebbleKeys is the number of puts of pebble-put (default DefaultPebbleKeys).
	PebbleKeys int
	// Seed makes the random offsets and keys; every path gets the same ones.
	Seed uint64
	// ServiceCommand returns the command that runs the filesystem service on the
	// configuration file it is given and prints a line containing the word "ready"
	// on its stdout once it serves (`polytropon service --config FILE` does). Run
	// starts it, SIGTERMs it at the end and expects exit status 0. Required unless
	// only the kernel path is measured.
	ServiceCommand func(configPath string) *exec.Cmd
	// Cancel, when closed, stops the run at the next check (every few dozen
	// operations): Run then tears down as after any error and returns
	// ErrCanceled.
	Cancel <-chan struct{}
	// Backend is what the service's instance stores its files on: BackendHost
	// (default: the cache-over-union stack on host directories) or BackendCephFS
	// (the stack is the cephfs libservice alone, on Ceph; the service must be
	// built with -tags ceph,pacific). With CephFS there is no kernel path (this
	// kernel has no Ceph client), so Paths defaults to the fuse and direct paths.
	Backend string
	// Ceph says how the cephfs backend reaches the cluster.
	Ceph CephOptions
}

// Backends of Options.Backend.
const (
	BackendHost   = "host"
	BackendCephFS = "cephfs"
)

// CephOptions are the cephfs libservice's connection keys for BackendCephFS.
type CephOptions struct {
	Conf     string `json:"conf"`
	ClientID string `json:"client_id,omitempty"`
	Keyring  string `json:"keyring,omitempty"`
	FSName   string `json:"fs_name,omitempty"`
}

// ErrCanceled is returned by Run when Options.Cancel was closed.
var ErrCanceled = errors.New("pathperf: canceled")

func (o *Options) canceled() bool {
	select {
	case <-o.Cancel:
		return true
	default:
		return false
	}
}

// Result is one operation on one path.
type Result struct {
	Op        string  `json:"op"`
	Path      string  `json:"path"`
	N         int64   `json:"n"`
	P50Ns     int64   `json:"p50_ns"`
	P99Ns     int64   `json:"p99_ns"`
	P999Ns    int64   `json:"p999_ns"`
	MeanNs    float64 `json:"mean_ns"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// CloseNs is, for pebble-put, how long closing the store took after the puts
	// (not part of OpsPerSec).
	CloseNs int64 `json:"close_ns,omitempty"`
	// Stalls and StallNs are, for pebble-put, how often and how long Pebble held
	// the puts back because its flushes and compactions (writes through the same
	// path) fell behind.
	Stalls  int64 `json:"stalls,omitempty"`
	StallNs int64 `json:"stall_ns,omitempty"`
}

// Ratio compares the paths for one operation. Latency ratios are the other path's
// p50 over the direct path's, throughput ratios the direct path's ops/s over the
// other's: either way, above 1 means the direct path is faster. A ratio is 0 when
// one of its paths was not measured.
type Ratio struct {
	Op                string  `json:"op"`
	FUSEOverDirectP50 float64 `json:"fuse_over_direct_p50,omitempty"`
	// FUSEUncached ratios compare the uncached FUSE mount (every call a round trip).
	FUSEUncachedOverDirectP50       float64 `json:"fuse_uncached_over_direct_p50,omitempty"`
	DirectOverFUSEUncachedOpsPerSec float64 `json:"direct_over_fuse_uncached_ops_per_sec,omitempty"`
	KernelOverDirectP50             float64 `json:"kernel_over_direct_p50,omitempty"`
	DirectOverFUSEOpsPerSec         float64 `json:"direct_over_fuse_ops_per_sec,omitempty"`
	DirectOverKernelOpsPerSec       float64 `json:"direct_over_kernel_ops_per_sec,omitempty"`
}

// Settings are the options a report was measured with.
type Settings struct {
	Paths      []string `json:"paths"`
	Ops        []string `json:"ops"`
	DurationNs int64    `json:"duration_ns"`
	Iterations int      `json:"iterations"`
	PebbleKeys int      `json:"pebble_keys"`
	Seed       uint64   `json:"seed"`
	Backend    string   `json:"backend"`
	// ServiceConfig is the configuration the service ran ("" for a kernel-only run).
	ServiceConfig string `json:"service_config,omitempty"`
}

// Report is a whole run.
type Report struct {
	Machine  results.Machine `json:"machine"`
	Settings Settings        `json:"settings"`
	// Results are in Ops order, then Paths order.
	Results []Result `json:"results"`
	// Ratios are in Ops order, for the operations measured on the direct path.
	Ratios []Ratio `json:"ratios,omitempty"`
}

// Result returns the result of op on path, or nil.
func (r *Report) Result(op, path string) *Result {
	for i := range r.Results {
		if r.Results[i].Op == op && r.Results[i].Path == path {
			return &r.Results[i]
		}
	}
	return nil
}

// Ratio returns the ratios of op, or nil.
func (r *Report) Ratio(op string) *Ratio {
	for i := range r.Ratios {
		if r.Ratios[i].Op == op {
			return &r.Ratios[i]
		}
	}
	return nil
}

// pick checks a list of names against the known ones and returns it in the known
// order; an empty list means all of them.
func pick(kind string, list, known []string) ([]string, error) {
	if len(list) == 0 {
		return slices.Clone(known), nil
	}
	seen := map[string]bool{}
	for _, n := range list {
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("pathperf: unknown %s %q (valid: %s)", kind, n, strings.Join(known, ", "))
		}
		if seen[n] {
			return nil, fmt.Errorf("pathperf: %s %q listed twice", kind, n)
		}
		seen[n] = true
	}
	var out []string
	for _, n := range known {
		if seen[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// normalize checks o and fills in its defaults.
func (o *Options) normalize() error {
	var err error
	switch o.Backend {
	case "", BackendHost:
		o.Backend = BackendHost
	case BackendCephFS:
		if o.Ceph.Conf == "" {
			return errors.New("pathperf: the cephfs backend needs the cluster's ceph.conf (--ceph-conf or POLYTROPON_CEPH_CONF)")
		}
		if len(o.Paths) == 0 {
			o.Paths = []string{PathFUSE, PathFUSEUncached, PathDirect}
		}
		if slices.Contains(o.Paths, PathKernel) {
			return errors.New("pathperf: the cephfs backend has no kernel path (no kernel Ceph client here): measure fuse, fuse-uncached and direct")
		}
	default:
		return fmt.Errorf("pathperf: unknown backend %q (known: %s, %s)", o.Backend, BackendHost, BackendCephFS)
	}
	if o.Paths, err = pick("path", o.Paths, Paths); err != nil {
		return err
	}
	if o.Ops, err = pick("op", o.Ops, Ops); err != nil {
		return err
	}
	switch {
	case o.Duration < 0:
		return fmt.Errorf("pathperf: duration %v is negative", o.Duration)
	case o.Duration == 0:
		o.Duration = DefaultDuration
	}
	switch {
	case o.Iterations < 0:
		return fmt.Errorf("pathperf: iterations %d is negative", o.Iterations)
	case o.Iterations == 0:
		o.Iterations = DefaultIterations
	case o.Iterations > maxOps:
		return fmt.Errorf("pathperf: iterations %d is more than %d", o.Iterations, maxOps)
	}
	switch {
	case o.PebbleKeys < 0:
		return fmt.Errorf("pathperf: pebble keys %d is negative", o.PebbleKeys)
	case o.PebbleKeys == 0:
		o.PebbleKeys = DefaultPebbleKeys
	case o.PebbleKeys > maxOps:
		return fmt.Errorf("pathperf: pebble keys %d is more than %d", o.PebbleKeys, maxOps)
	}
	if o.needService() && o.ServiceCommand == nil {
		return errors.New("pathperf: Options.ServiceCommand is required for the fuse and direct paths")
	}
	return nil
}

func (o *Options) wants(path string) bool { return slices.Contains(o.Paths, path) }

func (o *Options) needService() bool { return o.wantsFUSE() || o.wants(PathDirect) }

func (o *Options) wantsFUSE() bool { return o.wants(PathFUSE) || o.wants(PathFUSEUncached) }

// fuseDevice is what the fuse path needs; a variable so that a test can take it away.
var fuseDevice = "/dev/fuse"

func checkFUSE(o *Options) error {
	if !o.wantsFUSE() {
		return nil
	}
	f, err := os.OpenFile(fuseDevice, os.O_RDWR, 0)
	if err != nil {
		others := slices.DeleteFunc(slices.Clone(o.Paths), func(p string) bool { return p == PathFUSE || p == PathFUSEUncached })
		hint := "measure the other paths without it"
		if len(others) > 0 {
			hint = "leave it out with --paths " + strings.Join(others, ",")
		}
		return fmt.Errorf("pathperf: the fuse paths need FUSE, which is not available here (%w); %s", err, hint)
	}
	return f.Close()
}

// Run measures opts.Ops on opts.Paths. On error it returns no report, and still
// stops the service, detaches its mount and removes its directory.
func Run(opts Options) (rep *Report, err error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if err := checkFUSE(&opts); err != nil {
		return nil, err
	}
	parent := opts.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	work, err := os.MkdirTemp(parent, "polytropon-pathperf-")
	if err != nil {
		return nil, fmt.Errorf("pathperf: work directory: %w", err)
	}
	// The mount table names the real path, so resolve symbolic links (/tmp may be one).
	if real, err := filepath.EvalSymlinks(work); err == nil {
		if abs, err := filepath.Abs(real); err == nil {
			work = abs
		}
	}
	upper, lower, mnt := filepath.Join(work, "upper"), filepath.Join(work, "lower"), filepath.Join(work, "mnt")
	mntUncached := filepath.Join(work, "mnt-uncached")
	defer func() {
		// Never remove through a mount that is still there: that would delete the
		// instance's files through the service, or fail on a dead mount.
		m, merr := svcproc.IsMounted(mnt)
		if m2, merr2 := svcproc.IsMounted(mntUncached); merr == nil {
			m, merr = m || m2, merr2
		}
		if merr != nil || m {
			why := "it is still mounted"
			if merr != nil {
				why = "its mount state is unknown: " + merr.Error()
			}
			rep, err = nil, errors.Join(err, fmt.Errorf("pathperf: %s left in place: %s", work, why))
			return
		}
		if rerr := os.RemoveAll(work); rerr != nil && err == nil {
			rep, err = nil, fmt.Errorf("pathperf: removing %s: %w", work, rerr)
		}
	}()
	for _, d := range []string{upper, lower, mnt, mntUncached} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("pathperf: %w", err)
		}
	}
	rep = &Report{
		Machine: results.ThisMachine(upper),
		Settings: Settings{Paths: opts.Paths, Ops: opts.Ops, DurationNs: int64(opts.Duration),
			Iterations: opts.Iterations, PebbleKeys: opts.PebbleKeys, Seed: opts.Seed, Backend: opts.Backend},
	}

	targets := map[string]*target{}
	sock := filepath.Join(work, "service.sock")
	if len(sock) >= svcproc.MaxSocketPath && opts.needService() {
		return nil, fmt.Errorf("pathperf: the service socket %s would be longer than a Unix socket path may be (%d bytes): choose a shorter directory", sock, svcproc.MaxSocketPath-1)
	}
	if opts.needService() {
		fuse, uncached := "", ""
		if opts.wants(PathFUSE) {
			fuse = mnt
		}
		if opts.wants(PathFUSEUncached) {
			uncached = mntUncached
		}
		cfg := svcproc.Config{Socket: sock, Upper: upper, Lower: lower, FUSE: fuse, FUSEUncached: uncached,
			Stack: opts.stack()}.YAML()
		rep.Settings.ServiceConfig = cfg
		cfgPath := filepath.Join(work, "service.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, fmt.Errorf("pathperf: %w", err)
		}
		var svc *svcproc.Service
		if svc, err = svcproc.Start(opts.ServiceCommand, cfgPath, fuse, uncached); err != nil {
			return nil, err
		}
		defer func() {
			if serr := svc.Stop(); serr != nil {
				rep, err = nil, errors.Join(err, serr)
			}
		}()
	}
	// Targets close before the service stops (defers run last in, first out): a
	// file left open on the mount would hold up its unmount.
	defer func() {
		for _, p := range opts.Paths {
			if t := targets[p]; t != nil {
				if cerr := t.close(); cerr != nil && err == nil {
					rep, err = nil, fmt.Errorf("pathperf: closing the %s path: %w", p, cerr)
				}
			}
		}
	}()
	// On CephFS the instance is shared with every earlier run: this run's files
	// go to a directory of its own there, removed at the end.
	sub := ""
	if opts.Backend == BackendCephFS {
		sub = filepath.Base(work)
		defer func() {
			for _, p := range opts.Paths {
				if t := targets[p]; t != nil {
					if rerr := t.fs.RemoveAll(filepath.Dir(t.dir)); rerr != nil && err == nil {
						rep, err = nil, fmt.Errorf("pathperf: removing the run's directory on CephFS: %w", rerr)
					}
					return
				}
			}
		}()
	}
	for _, p := range opts.Paths {
		var t *target
		switch p {
		case PathKernel:
			t = newOSTarget(filepath.Join(upper, p))
		case PathFUSE:
			t = newOSTarget(filepath.Join(mnt, sub, p))
		case PathFUSEUncached:
			t = newOSTarget(filepath.Join(mntUncached, sub, p))
		case PathDirect:
			if t, err = dialDirect(sock, filepath.Join("/", sub, p)); err != nil {
				return nil, err
			}
		}
		if sub != "" {
			if err := t.fs.MkdirAll(filepath.Dir(t.dir), 0o755); err != nil {
				t.close()
				return nil, fmt.Errorf("pathperf: the run's directory on CephFS: %w", err)
			}
		}
		targets[p] = t
	}

	data := make([]byte, fileSize)
	fill(rand.New(rand.NewPCG(opts.Seed, 0)), data)
	for _, p := range opts.Paths {
		if err := targets[p].prepare(data); err != nil {
			return nil, fmt.Errorf("pathperf: preparing the %s path: %w", p, err)
		}
	}
	buf := make([]byte, blockSize)
	for _, op := range opts.Ops {
		for _, p := range opts.Paths {
			var r Result
			var err error
			if op == OpPebblePut {
				r, err = measurePebble(targets[p], &opts)
			} else {
				r, err = measure(targets[p], op, &opts, buf)
			}
			if err == ErrCanceled {
				return nil, err
			}
			if err != nil {
				return nil, fmt.Errorf("pathperf: %s on the %s path: %w", op, p, err)
			}
			r.Op, r.Path = op, p
			rep.Results = append(rep.Results, r)
		}
		if opts.wants(PathDirect) {
			rep.Ratios = append(rep.Ratios, ratiosOf(rep, op))
		}
	}
	return rep, nil
}

func ratiosOf(rep *Report, op string) Ratio {
	d := rep.Result(op, PathDirect)
	r := Ratio{Op: op}
	if f := rep.Result(op, PathFUSE); f != nil {
		r.FUSEOverDirectP50 = ratio(float64(f.P50Ns), float64(d.P50Ns))
		r.DirectOverFUSEOpsPerSec = ratio(d.OpsPerSec, f.OpsPerSec)
	}
	if f := rep.Result(op, PathFUSEUncached); f != nil {
		r.FUSEUncachedOverDirectP50 = ratio(float64(f.P50Ns), float64(d.P50Ns))
		r.DirectOverFUSEUncachedOpsPerSec = ratio(d.OpsPerSec, f.OpsPerSec)
	}
	if k := rep.Result(op, PathKernel); k != nil {
		r.KernelOverDirectP50 = ratio(float64(k.P50Ns), float64(d.P50Ns))
		r.DirectOverKernelOpsPerSec = ratio(d.OpsPerSec, k.OpsPerSec)
	}
	return r
}

// ratio is a/b, or 0 where that would not be a finite number (JSON has no NaN).
func ratio(a, b float64) float64 {
	q := a / b
	if b == 0 || math.IsNaN(q) || math.IsInf(q, 0) {
		return 0
	}
	return q
}

func fill(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// stack is the service's stack as svcproc.Config.Stack: the cephfs libservice
// alone for BackendCephFS, else the default stack (empty).
func (o *Options) stack() string {
	if o.Backend != BackendCephFS {
		return ""
	}
	var b strings.Builder
	c := o.Ceph
	fmt.Fprintf(&b, "    stack:\n      - cephfs: {conf: %q", c.Conf)
	for _, kv := range [][2]string{{"client_id", c.ClientID}, {"keyring", c.Keyring}, {"fs_name", c.FSName}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, ", %s: %q", kv[0], kv[1])
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(maxLatency), 3)
}

func record(h *hdrhistogram.Histogram, d time.Duration) {
	_ = h.RecordValue(min(max(int64(d), 1), int64(maxLatency)))
}

func resultOf(h *hdrhistogram.Histogram, n int, elapsed time.Duration) Result {
	return Result{N: int64(n), P50Ns: h.ValueAtQuantile(50), P99Ns: h.ValueAtQuantile(99),
		P999Ns: h.ValueAtQuantile(99.9), MeanNs: h.Mean(), OpsPerSec: float64(n) / elapsed.Seconds()}
}

// measure times op on t for opts.Duration and at least opts.Iterations operations,
// after up to maxWarm untimed ones.
func measure(t *target, op string, opts *Options, buf []byte) (Result, error) {
	rng := rand.New(rand.NewPCG(opts.Seed, 1))
	var do func() error
	switch op {
	case OpStat:
		do = t.stat
	case OpRead4K:
		do = func() error { return t.read(buf, int64(rng.IntN(fileSize/blockSize))*blockSize) }
	case OpWrite4K:
		do = func() error { return t.write(buf, int64(rng.IntN(fileSize/blockSize))*blockSize) }
	case OpOpenClose:
		do = t.openClose
	case OpCreateUnlink:
		do = t.createUnlink
	default:
		return Result{}, fmt.Errorf("unknown op %q", op)
	}
	for range min(opts.Iterations, maxWarm) {
		if err := do(); err != nil {
			return Result{}, err
		}
	}
	h := newHistogram()
	start := time.Now()
	deadline := start.Add(opts.Duration)
	n := 0
	for n < maxOps {
		t0 := time.Now()
		if err := do(); err != nil {
			return Result{}, err
		}
		t1 := time.Now()
		record(h, t1.Sub(t0))
		n++
		if n >= opts.Iterations && t1.After(deadline) {
			break
		}
		if n&63 == 0 && opts.canceled() {
			return Result{}, ErrCanceled
		}
	}
	return resultOf(h, n, time.Since(start)), nil
}
