// Package blockperf measures a blockdev/file device the way fio does: a fixed queue
// depth of block-sized reads or writes (random or sequential) for a fixed time, with
// IOPS, throughput, latency percentiles (HdrHistogram) and CPU per I/O; and it runs
// fio's io_uring engine with the same parameters so the two can be compared as ratios
// measured in one run. `polytropon perf blockdev` is its command-line face. Besides
// files and block devices it measures NVMe namespaces through drivers/nvme: a generic
// device /dev/ngXnY (passthrough; fio's io_uring_cmd engine on the fio side) and
// nvme:PCIADDR (the user-level VFIO driver; fio cannot drive that).
//
// How it measures. One goroutine owns one blockdev.Queue (an io_uring with the file
// and a page-aligned buffer pool registered), keeps QueueDepth requests in flight,
// reaps with Poll(1) and resubmits every reaped slot in one batch. Latency is from
// just before the Submit that carried a request to just after the Poll that returned
// it. CPU is getrusage(RUSAGE_SELF) user+system over the measured interval divided
// by the I/Os completed: the kernel's io_uring worker threads (iou-wrk-*, iou-sqp-*)
// belong to this process, so their time is included there; KernelWorkerCPU reports
// their share separately as far as /proc/self/task shows it (threads that exited
// during the run are not seen there). fio's CPU per I/O is its job's usr_cpu+sys_cpu
// (percent of the job's runtime, also from getrusage) times the runtime over its
// total I/Os. Both sides use registered files and fixed buffers (fio
// --registerfiles=1 --fixedbufs=1), O_DIRECT, --norandommap and no warm-up.
//
// Invariants: a run allocates nothing per I/O (buffers, requests and completions are
// sized by the queue depth up front); it never writes outside [0, Size). No locks.
//
// # Measuring
//
// `polytropon perf blockdev --dev PATH --rw randread --bs 4k --qd 1,32
// --duration 10s --repeat 3 --vs-fio` alternates polytropon's and fio's runs
// per queue depth and prints ours/fio per pair (Sweep, WriteTable). The goals:
// at queue depth 32, IOPS at least 0.95x fio's and CPU per I/O at most 1.1x;
// at queue depth 1, p50 within 10 % of fio's. A VM's disk and neighbours make
// single figures swing by 30 % or more: read the ratios of pairs measured back
// to back. A dated run with what it showed is in
// docs/results/2026-11-21/blockperf.md.
package blockperf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
	"github.com/polytropon/polytropon/blockdev/file"
	"github.com/polytropon/polytropon/drivers/nvme"
)

// Workloads.
const (
	RandRead  = "randread"
	RandWrite = "randwrite"
	Read      = "read"
	Write     = "write"
)

// Config is one measurement.
type Config struct {
	Path       string
	RW         string
	BlockSize  int
	QueueDepth int
	Duration   time.Duration
	// Size is the region measured; 0 means the whole file or device. A regular file
	// that is missing or smaller is created with real data written (reads of
	// unwritten extents never reach the disk).
	Size   int64
	Seed   uint64
	Logger *zap.Logger
}

// Result is one measurement's figures.
type Result struct {
	Engine     string  `json:"engine"`
	RW         string  `json:"rw"`
	BlockSize  int     `json:"bs"`
	QueueDepth int     `json:"qd"`
	Direct     bool    `json:"direct"`
	IOs        int64   `json:"ios"`
	Seconds    float64 `json:"seconds"`
	IOPS       float64 `json:"iops"`
	MBps       float64 `json:"mb_per_s"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p99_9_us"`
	CPUUserS   float64 `json:"cpu_user_s"`
	CPUSysS    float64 `json:"cpu_sys_s"`
	CPUPerIOus float64 `json:"cpu_per_io_us"`
	// KernelWorkerCPUs is the CPU of io_uring worker threads seen in
	// /proc/self/task (already inside CPUUserS+CPUSysS); -1 when not measurable.
	KernelWorkerCPUs float64 `json:"kernel_worker_cpu_s"`
}

func (c *Config) check() error {
	switch c.RW {
	case RandRead, RandWrite, Read, Write:
	default:
		return fmt.Errorf("blockperf: --rw %q: want randread, randwrite, read or write", c.RW)
	}
	if c.BlockSize <= 0 || c.BlockSize%512 != 0 {
		return fmt.Errorf("blockperf: block size %d: want a positive multiple of 512", c.BlockSize)
	}
	if c.QueueDepth < 1 || c.QueueDepth > 4096 {
		return fmt.Errorf("blockperf: queue depth %d: want 1..4096", c.QueueDepth)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("blockperf: duration %v: want a positive duration", c.Duration)
	}
	if c.Path == "" {
		return errors.New("blockperf: no device path (--dev)")
	}
	return nil
}

// VFIOPrefix in Config.Path names an NVMe controller bound to vfio-pci by PCI
// address ("nvme:0000:01:00.0"), driven by drivers/nvme's user-level driver.
const VFIOPrefix = "nvme:"

var genericNVMe = regexp.MustCompile(`^/dev/ng[0-9]+n[0-9]+$`)

// OpenDevice opens the device cfg.Path names: "nvme:PCIADDR" (the VFIO driver),
// /dev/ngXnY (NVMe passthrough over io_uring), or else a file or block device
// (blockdev/file, created or grown to cfg.Size first). direct reports whether I/O
// bypasses the page cache, which both NVMe paths always do.
func OpenDevice(cfg Config) (d blockdev.Device, direct bool, err error) {
	switch {
	case strings.HasPrefix(cfg.Path, VFIOPrefix):
		v, err := nvme.OpenVFIO(strings.TrimPrefix(cfg.Path, VFIOPrefix), nvme.VFIOOptions{MaxQueues: 4})
		if err != nil {
			return nil, false, err
		}
		return v, true, nil
	case genericNVMe.MatchString(cfg.Path):
		p, err := nvme.OpenPassthrough(cfg.Path)
		if err != nil {
			return nil, false, err
		}
		return p, true, nil
	}
	if err := Prepare(cfg.Path, cfg.Size); err != nil {
		return nil, false, err
	}
	f, err := file.Open(cfg.Path, file.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, false, err
	}
	return f, f.Direct(), nil
}

// Prepare makes sure a regular file at path holds at least size bytes of written
// data; block devices are left alone.
func Prepare(path string, size int64) error {
	st, err := os.Stat(path)
	if err == nil && (!st.Mode().IsRegular() || st.Size() >= size) {
		return nil
	}
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("blockperf: %w", err)
	}
	if size <= 0 {
		return fmt.Errorf("blockperf: %s is missing or empty and no --size was given to create it", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("blockperf: create %s: %w", path, err)
	}
	defer f.Close()
	var from int64
	if st != nil {
		from = st.Size()
	}
	buf := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for off := from; off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("blockperf: fill %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blockperf: sync %s: %w", path, err)
	}
	return nil
}

// Run measures cfg on polytropon's blockdev/file.
func Run(cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	d, direct, err := OpenDevice(cfg)
	if err != nil {
		return Result{}, err
	}
	defer d.Close()
	if cfg.BlockSize%d.BlockSize() != 0 {
		return Result{}, fmt.Errorf("blockperf: --bs %d is not a multiple of the device's block size %d", cfg.BlockSize, d.BlockSize())
	}
	size := d.Size()
	if cfg.Size > 0 && cfg.Size < size {
		size = cfg.Size
	}
	blocks := size / int64(cfg.BlockSize)
	if blocks < 1 {
		return Result{}, fmt.Errorf("blockperf: %s holds less than one %d-byte block", cfg.Path, cfg.BlockSize)
	}
	qd := cfg.QueueDepth
	pool, err := alignedbuf.NewPool(cfg.BlockSize, qd)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	q, err := d.NewQueue(qd)
	if err != nil {
		return Result{}, err
	}
	defer q.Close()
	if reg, ok := q.(blockdev.BufferRegistrar); ok {
		if err := reg.RegisterBuffers([][]byte{pool.Region()}); err != nil {
			return Result{}, err
		}
	}
	op := blockdev.OpRead
	if cfg.RW == RandWrite || cfg.RW == Write {
		op = blockdev.OpWrite
	}
	random := cfg.RW == RandRead || cfg.RW == RandWrite
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	var seq int64
	nextOff := func() int64 {
		if random {
			return rng.Int64N(blocks) * int64(cfg.BlockSize)
		}
		o := seq
		seq = (seq + 1) % blocks
		return o * int64(cfg.BlockSize)
	}
	slots := make([]blockdev.Request, qd)
	for i := range slots {
		b := pool.Get()[:cfg.BlockSize]
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		slots[i] = blockdev.Request{Op: op, Buf: b, Cookie: uint64(i)}
	}
	issued := make([]time.Time, qd)
	batch := make([]blockdev.Request, 0, qd)
	out := make([]blockdev.Completion, qd)
	hist := hdrhistogram.New(1, int64(time.Minute), 3)

	workers0 := workerCPU()
	var ru0, ru1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru0); err != nil {
		return Result{}, fmt.Errorf("blockperf: getrusage: %w", err)
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for i := range slots {
		slots[i].Off = nextOff()
		issued[i] = start
	}
	if n, err := q.Submit(slots); err != nil || n != qd {
		return Result{}, fmt.Errorf("blockperf: first submit took %d of %d: %v", n, qd, err)
	}
	var ios int64
	for q.InFlight() > 0 {
		n, err := q.Poll(1, out)
		if err != nil {
			return Result{}, err
		}
		now := time.Now()
		stopping := now.After(deadline)
		batch = batch[:0]
		for _, c := range out[:n] {
			if c.Err != nil {
				return Result{}, fmt.Errorf("blockperf: %v at %d: %w", op, slots[c.Cookie].Off, c.Err)
			}
			if c.N != cfg.BlockSize {
				return Result{}, fmt.Errorf("blockperf: %v at %d moved %d bytes of %d", op, slots[c.Cookie].Off, c.N, cfg.BlockSize)
			}
			hist.RecordValue(int64(now.Sub(issued[c.Cookie])))
			ios++
			if !stopping {
				s := &slots[c.Cookie]
				s.Off = nextOff()
				batch = append(batch, *s)
			}
		}
		if len(batch) > 0 {
			t := time.Now()
			for _, r := range batch {
				issued[r.Cookie] = t
			}
			if m, err := q.Submit(batch); err != nil || m != len(batch) {
				return Result{}, fmt.Errorf("blockperf: submit took %d of %d: %v", m, len(batch), err)
			}
		}
	}
	elapsed := time.Since(start)
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru1); err != nil {
		return Result{}, fmt.Errorf("blockperf: getrusage: %w", err)
	}
	workers1 := workerCPU()
	res := Result{Engine: "polytropon", RW: cfg.RW, BlockSize: cfg.BlockSize, QueueDepth: qd, Direct: direct,
		IOs: ios, Seconds: elapsed.Seconds(),
		CPUUserS: tv(ru1.Utime) - tv(ru0.Utime), CPUSysS: tv(ru1.Stime) - tv(ru0.Stime), KernelWorkerCPUs: -1}
	if workers0 >= 0 && workers1 >= 0 {
		res.KernelWorkerCPUs = max(0, workers1-workers0)
	}
	res.IOPS = float64(ios) / res.Seconds
	res.MBps = res.IOPS * float64(cfg.BlockSize) / 1e6
	res.P50us = float64(hist.ValueAtQuantile(50)) / 1e3
	res.P99us = float64(hist.ValueAtQuantile(99)) / 1e3
	res.P999us = float64(hist.ValueAtQuantile(99.9)) / 1e3
	if ios > 0 {
		res.CPUPerIOus = (res.CPUUserS + res.CPUSysS) / float64(ios) * 1e6
	}
	return res, nil
}

func tv(t unix.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// clockTicks is USER_HZ, the unit of /proc/*/stat times (100 on every Linux ABI Go
// supports).
const clockTicks = 100

// workerCPU sums user+system seconds of this process's io_uring kernel threads
// (iou-wrk-*, iou-sqp-*) from /proc/self/task, or -1 when /proc is not readable.
func workerCPU() float64 {
	tasks, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil || len(tasks) == 0 {
		return -1
	}
	var ticks int64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		comm := s[open+1 : close]
		if !strings.HasPrefix(comm, "iou-wrk") && !strings.HasPrefix(comm, "iou-sqp") {
			continue
		}
		f := strings.Fields(s[close+1:])
		// Fields after the comm start at state (field 3); utime and stime are
		// fields 14 and 15.
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return float64(ticks) / clockTicks
}

// ParseSize parses sizes such as 4096, 4k, 4K, 64KiB, 1m, 1G (powers of 1024).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1<<10, t[:n-1]
		case 'm':
			mult, t = 1<<20, t[:n-1]
		case 'g':
			mult, t = 1<<30, t[:n-1]
		case 't':
			mult, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("blockperf: bad size %q: want a positive number with an optional k, m, g or t suffix", s)
	}
	return v * mult, nil
}
