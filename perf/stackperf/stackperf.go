// Package stackperf measures file micro-operations through a libservices stack in
// process, beside the same operations made with system calls on the kernel's
// filesystem over the same backing directory.
//
// It isolates what the libservices cost (and what the user-level cache saves) before
// any transport is added: the direct path adds the RCQB round trip on top, the FUSE
// path the kernel's FUSE round trip. The stack measured is the default one of the
// design: a write-back cache over a union of a writable passthrough branch and a
// read-only passthrough image branch.
//
// Each operation is timed individually into an HdrHistogram (nanoseconds); the
// kernel and the stack run one after the other in the same process, so only their
// ratio means anything on a shared machine. Nothing here holds a lock; a Run owns
// its directory and closes its stack before returning. It asserts nothing about
// speed.
//
// Measure: `polytropon perf stack [--duration 2s] [--json]` (WriteTable's
// table: p50, p99, p99.9, mean and ops/s per operation and path, and the
// kernel's p50 over the stack's).
package stackperf

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/stack"
)

// Ops are the operations measured, in report order.
var Ops = []string{"stat", "read4k", "write4k", "create+unlink"}

// Paths are the ways the operations are made.
var Paths = []string{"kernel", "stack"}

const (
	fileSize  = 1 << 20 // the file read at random 4 KiB offsets
	blockSize = 4096
	maxOps    = 10_000_000
)

// Config says how long to measure each operation on each path.
type Config struct {
	Dir         string        // backing directory (made empty branches under it); required
	Duration    time.Duration // per operation and path
	MaxOpsPerOp int           // bound on operations per measurement; 0 means 10 million
	Seed        uint64
}

// Result is the latency of one operation on one path.
type Result struct {
	Op, Path  string
	Ops       int64
	P50Ns     int64
	P99Ns     int64
	P999Ns    int64
	MeanNs    float64
	OpsPerSec float64
}

// WriteTable prints one row per result, with the kernel's p50 over the row's
// (above 1: the row's path is faster than the kernel).
func WriteTable(w io.Writer, res []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tpath\tp50\tp99\tp99.9\tmean\tops/s\tp50 vs kernel\t")
	kernelP50 := map[string]int64{}
	for _, r := range res {
		if r.Path == "kernel" {
			kernelP50[r.Op] = r.P50Ns
		}
		ratio := float64(kernelP50[r.Op]) / float64(r.P50Ns)
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%v\t%v\t%.0f\t%.2fx\t\n", r.Op, r.Path,
			time.Duration(r.P50Ns), time.Duration(r.P99Ns), time.Duration(r.P999Ns),
			time.Duration(r.MeanNs).Round(time.Nanosecond), r.OpsPerSec, ratio)
	}
	return tw.Flush()
}

// ops is one path's implementation of the measured operations.
type ops interface {
	stat(name string) error
	read(p []byte, off int64) error
	write(p []byte, off int64) error
	createUnlink(name string) error
	close() error
}

// Run measures every operation on both paths and returns one Result per pair, in
// the order of Ops then Paths.
func Run(cfg Config) ([]Result, error) {
	if cfg.Dir == "" {
		return nil, errors.New("stackperf: no directory")
	}
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("stackperf: duration %v must be positive", cfg.Duration)
	}
	if cfg.MaxOpsPerOp <= 0 || cfg.MaxOpsPerOp > maxOps {
		cfg.MaxOpsPerOp = maxOps
	}
	upper, lower := filepath.Join(cfg.Dir, "upper"), filepath.Join(cfg.Dir, "lower")
	for _, d := range []string{upper, lower} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("stackperf: %w", err)
		}
	}
	// The image file lives in the read-only branch; the written file in the upper one,
	// so that the stack's writes never copy up and both paths write the same file.
	data := make([]byte, fileSize)
	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(lower, "image.dat"), data, 0o644); err != nil {
		return nil, fmt.Errorf("stackperf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(upper, "scratch.dat"), data, 0o644); err != nil {
		return nil, fmt.Errorf("stackperf: %w", err)
	}

	k, err := newKernelOps(upper, lower)
	if err != nil {
		return nil, err
	}
	defer k.close()
	s, err := newStackOps(upper, lower)
	if err != nil {
		return nil, err
	}
	defer s.close()
	impl := map[string]ops{"kernel": k, "stack": s}

	var out []Result
	buf := make([]byte, blockSize)
	for _, op := range Ops {
		for _, path := range Paths {
			r, err := measure(impl[path], op, cfg, buf, rand.New(rand.NewPCG(cfg.Seed, 2)))
			if err != nil {
				return nil, fmt.Errorf("stackperf: %s on %s: %w", op, path, err)
			}
			r.Path = path
			out = append(out, r)
		}
	}
	return out, nil
}

func measure(o ops, op string, cfg Config, buf []byte, rng *rand.Rand) (Result, error) {
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	var do func(i int) error
	switch op {
	case "stat":
		do = func(int) error { return o.stat("image.dat") }
	case "read4k":
		do = func(int) error { return o.read(buf, int64(rng.IntN(fileSize/blockSize))*blockSize) }
	case "write4k":
		do = func(int) error { return o.write(buf, int64(rng.IntN(fileSize/blockSize))*blockSize) }
	case "create+unlink":
		do = func(int) error { return o.createUnlink("tmp.dat") }
	default:
		return Result{}, fmt.Errorf("unknown operation %q (valid: %v)", op, Ops)
	}
	// Warm both paths' caches with the same work before timing.
	for i := 0; i < 1000; i++ {
		if err := do(i); err != nil {
			return Result{}, err
		}
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	n := 0
	for ; n < cfg.MaxOpsPerOp; n++ {
		t0 := time.Now()
		if err := do(n); err != nil {
			return Result{}, err
		}
		t1 := time.Now()
		_ = h.RecordValue(max(t1.Sub(t0).Nanoseconds(), 1))
		if n&63 == 0 && t1.After(deadline) {
			n++
			break
		}
	}
	elapsed := time.Since(start)
	return Result{
		Op: op, Ops: int64(n),
		P50Ns:     h.ValueAtQuantile(50),
		P99Ns:     h.ValueAtQuantile(99),
		P999Ns:    h.ValueAtQuantile(99.9),
		MeanNs:    h.Mean(),
		OpsPerSec: float64(n) / elapsed.Seconds(),
	}, nil
}

// kernelOps makes the operations with system calls on the branch directories: what
// an application does without polytropon.
type kernelOps struct {
	upper, lower string
	rfd, wfd     int
}

func newKernelOps(upper, lower string) (*kernelOps, error) {
	rfd, err := unix.Open(filepath.Join(lower, "image.dat"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("stackperf: kernel open: %w", err)
	}
	wfd, err := unix.Open(filepath.Join(upper, "scratch.dat"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(rfd)
		return nil, fmt.Errorf("stackperf: kernel open: %w", err)
	}
	return &kernelOps{upper: upper, lower: lower, rfd: rfd, wfd: wfd}, nil
}

func (k *kernelOps) stat(name string) error {
	var st unix.Stat_t
	return unix.Lstat(k.lower+"/"+name, &st)
}

func (k *kernelOps) read(p []byte, off int64) error {
	n, err := unix.Pread(k.rfd, p, off)
	if err == nil && n != len(p) {
		err = fmt.Errorf("short read %d at %d", n, off)
	}
	return err
}

func (k *kernelOps) write(p []byte, off int64) error {
	_, err := unix.Pwrite(k.wfd, p, off)
	return err
}

func (k *kernelOps) createUnlink(name string) error {
	p := k.upper + "/" + name
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return unix.Unlink(p)
}

func (k *kernelOps) close() error {
	return errors.Join(unix.Close(k.rfd), unix.Close(k.wfd))
}

// stackOps makes the operations through the libservices stack in process.
type stackOps struct {
	fs     libservices.FS
	rh, wh libservices.Handle
	attr   libservices.Attr
}

// StackYAML is the measured stack: a write-back cache over a union of a writable and
// a read-only passthrough branch.
func StackYAML(upper, lower string) string {
	return fmt.Sprintf(`name: bench
stack:
  - cache: {size: 64MiB, policy: writeback}
  - union: {}
branches:
  - passthrough: {dir: %q}
  - passthrough: {dir: %q, readonly: true}
`, upper, lower)
}

func newStackOps(upper, lower string) (*stackOps, error) {
	fs, err := stack.BuildYAML([]byte(StackYAML(upper, lower)), "bench", nil)
	if err != nil {
		return nil, fmt.Errorf("stackperf: build stack: %w", err)
	}
	s := &stackOps{fs: fs}
	if s.rh, err = fs.Open("image.dat", libservices.O_RDONLY, 0); err != nil {
		stack.Close(fs)
		return nil, fmt.Errorf("stackperf: stack open: %w", err)
	}
	if s.wh, err = fs.Open("scratch.dat", libservices.O_RDWR, 0); err != nil {
		fs.Close(s.rh)
		stack.Close(fs)
		return nil, fmt.Errorf("stackperf: stack open: %w", err)
	}
	return s, nil
}

func (s *stackOps) stat(name string) error { return s.fs.Lstat(name, &s.attr) }

func (s *stackOps) read(p []byte, off int64) error {
	n, err := s.fs.ReadAt(s.rh, p, off)
	if err == nil && n != len(p) {
		err = fmt.Errorf("short read %d at %d", n, off)
	}
	return err
}

func (s *stackOps) write(p []byte, off int64) error {
	_, err := s.fs.WriteAt(s.wh, p, off)
	return err
}

func (s *stackOps) createUnlink(name string) error {
	h, err := s.fs.Open(name, libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := s.fs.Close(h); err != nil {
		return err
	}
	return s.fs.Unlink(name)
}

func (s *stackOps) close() error {
	return errors.Join(s.fs.Close(s.rh), s.fs.Close(s.wh), stack.Close(s.fs))
}
