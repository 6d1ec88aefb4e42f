package harness

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/perf/pathfs"
	"github.com/polytropon/polytropon/perf/results"
)

// Spec is what a worker process measures: one operation of one workload on one
// path of one tenant. It is the first line of the worker's stdin, in JSON.
type Spec struct {
	Workload string `json:"workload"`
	Op       string `json:"op"`
	Path     string `json:"path"`
	// Dir is the worker's own directory on its path: a directory of the host for
	// kernel and fuse, of the service's namespace for direct. The worker makes it
	// and removes it when done.
	Dir string `json:"dir"`
	// Socket is the tenant's service (direct path).
	Socket     string `json:"socket,omitempty"`
	Threads    int    `json:"threads"`
	WarmupNs   int64  `json:"warmup_ns"`
	DurationNs int64  `json:"duration_ns"`
	Seed       uint64 `json:"seed"`
	// Sync makes the Pebble writes synchronous (and the readrandom fill).
	Sync bool `json:"sync"`
	// Keys is the number of keys readrandom fills its store with first.
	Keys int `json:"keys"`
}

// WorkerResult is what a worker writes to its stdout at the end, in JSON.
type WorkerResult struct {
	Hist *results.Histogram `json:"histogram"`
	// Seconds is the measured wall time: Duration, or less when stopped.
	Seconds float64 `json:"seconds"`
	// CPU is the worker's user+system time over the measurement (getrusage).
	CPU     float64 `json:"cpu_s"`
	Partial bool    `json:"partial"`
}

// The worker protocol, after the Spec line: the worker prepares, prints
// readyLine, reads "go UNIXNANOS" (the start of the warm-up, the same for every
// worker of a cell: the start barrier), warms up for WarmupNs, measures for
// DurationNs, and prints its WorkerResult. SIGTERM during the measurement ends
// it early with Partial set; before, the worker exits with nothing.
const (
	readyLine = "ready"
	goWord    = "go"
)

const (
	fileSize   = 4 << 20 // files read and written at 4 KiB offsets
	blockSize  = 4096
	appendMax  = 64 << 20 // append-fsync starts a new file past this size
	keySize    = 16
	valueSize  = 100
	fillBatch  = 1000
	maxThreads = 256
)

// RunWorker is `polytropon perf worker`: it reads a Spec and the start time from
// in and writes readyLine and its WorkerResult to out.
func RunWorker(in io.Reader, out io.Writer) error {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("harness worker: reading the spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(line, &s); err != nil {
		return fmt.Errorf("harness worker: spec: %w", err)
	}
	if err := s.check(); err != nil {
		return err
	}
	b, err := newBench(&s)
	if err != nil {
		return fmt.Errorf("harness worker: %s %s on the %s path: preparing: %w", s.Workload, s.Op, s.Path, err)
	}
	res, err := b.run(&s, br, out, term)
	if cerr := b.close(); err == nil && cerr != nil {
		err = fmt.Errorf("harness worker: %s %s on the %s path: cleaning up: %w", s.Workload, s.Op, s.Path, cerr)
	}
	if err != nil || res == nil {
		return err
	}
	return json.NewEncoder(out).Encode(res)
}

func (s *Spec) check() error {
	ops, err := WorkloadOps(s.Workload)
	if err != nil {
		return err
	}
	switch {
	case !contains(ops, s.Op):
		return fmt.Errorf("harness worker: workload %s has no op %q (valid: %s)", s.Workload, s.Op, strings.Join(ops, ", "))
	case !contains(Paths, s.Path):
		return fmt.Errorf("harness worker: unknown path %q", s.Path)
	case s.Threads < 1 || s.Threads > maxThreads:
		return fmt.Errorf("harness worker: %d threads (1 to %d)", s.Threads, maxThreads)
	case s.WarmupNs < 0 || s.DurationNs <= 0:
		return fmt.Errorf("harness worker: warm-up %v, duration %v", time.Duration(s.WarmupNs), time.Duration(s.DurationNs))
	case s.Dir == "":
		return errors.New("harness worker: no directory")
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// thread is one measuring thread's operation. untimed, when set, runs between
// timed operations (housekeeping that is not the operation's cost).
type thread struct {
	do      func() error
	untimed func() error
}

// bench is a prepared measurement.
type bench struct {
	fs      pathfs.FS
	dir     string
	threads []thread
	closers []func() error
	db      *pebble.DB
	log     *pebbleLogger
}

func newBench(s *Spec) (b *bench, err error) {
	b = &bench{dir: s.Dir}
	if s.Path == PathDirect {
		if b.fs, err = pathfs.Dial(s.Socket); err != nil {
			return nil, err
		}
	} else {
		b.fs = pathfs.OS
	}
	defer func() {
		if err != nil {
			_ = b.close()
			b = nil
		}
	}()
	// A directory left by an interrupted run is this worker's to replace.
	if err := b.fs.RemoveAll(s.Dir); err != nil {
		return b, err
	}
	if err := b.fs.MkdirAll(s.Dir, 0o755); err != nil {
		return b, err
	}
	if isPebble(s.Workload) {
		return b, b.preparePebble(s)
	}
	data := make([]byte, fileSize)
	fillRandom(rand.New(rand.NewPCG(s.Seed, 0)), data)
	for i := range s.Threads {
		t, err := b.prepareMicro(s, i, data)
		if err != nil {
			return b, err
		}
		b.threads = append(b.threads, t)
	}
	return b, nil
}

// prepareMicro makes thread i's files, in a directory of its own, and reads them
// whole once so that every cache on the path holds them before anything is timed.
func (b *bench) prepareMicro(s *Spec, i int, data []byte) (thread, error) {
	dir := path.Join(s.Dir, "t"+strconv.Itoa(i))
	if err := b.fs.Mkdir(dir, 0o755); err != nil {
		return thread{}, err
	}
	image, scratch, tmp, logf := dir+"/image.dat", dir+"/scratch.dat", dir+"/tmp.dat", dir+"/log.dat"
	for _, n := range []string{image, scratch} {
		if err := b.fs.WriteFile(n, data, 0o644); err != nil {
			return thread{}, err
		}
	}
	open := func(name string, flag int) (pathfs.File, error) {
		f, err := b.fs.OpenFile(name, flag, 0o644)
		if err == nil {
			b.closers = append(b.closers, f.Close)
		}
		return f, err
	}
	rf, err := open(image, os.O_RDONLY)
	if err != nil {
		return thread{}, err
	}
	wf, err := open(scratch, os.O_RDWR)
	if err != nil {
		return thread{}, err
	}
	buf := make([]byte, 128<<10)
	for _, f := range []pathfs.File{rf, wf} {
		for off := int64(0); off < fileSize; off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				return thread{}, err
			}
		}
	}
	rng := rand.New(rand.NewPCG(s.Seed, uint64(i)+1))
	p := make([]byte, blockSize)
	copy(p, data)
	var seq int64
	next := func() int64 {
		off := seq
		seq = (seq + blockSize) % fileSize
		return off
	}
	random := func() int64 { return int64(rng.IntN(fileSize/blockSize)) * blockSize }
	switch s.Op {
	case OpStat:
		return thread{do: func() error { _, err := b.fs.Stat(image); return err }}, nil
	case OpOpenClose:
		return thread{do: func() error {
			f, err := b.fs.OpenFile(image, os.O_RDONLY, 0)
			if err != nil {
				return err
			}
			return f.Close()
		}}, nil
	case OpCreateUnlink:
		return thread{do: func() error {
			f, err := b.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			return b.fs.Remove(tmp)
		}}, nil
	case OpRead4KSeq:
		return thread{do: func() error { return readFull(rf, p, next()) }}, nil
	case OpRead4KRand:
		return thread{do: func() error { return readFull(rf, p, random()) }}, nil
	case OpWrite4KSeq:
		return thread{do: func() error { _, err := wf.WriteAt(p, next()); return err }}, nil
	case OpWrite4KRand:
		return thread{do: func() error { _, err := wf.WriteAt(p, random()); return err }}, nil
	case OpAppendFsync:
		lf, err := b.fs.OpenFile(logf, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return thread{}, err
		}
		var size int64
		// The log is closed by whichever of untimed and close comes last.
		closeLog := func() error { return lf.Close() }
		b.closers = append(b.closers, func() error { return closeLog() })
		return thread{
			do: func() error {
				if _, err := lf.WriteAt(p, size); err != nil {
					return err
				}
				size += blockSize
				return lf.Sync()
			},
			// A new empty file past appendMax, so that every append grows a file.
			untimed: func() error {
				if size < appendMax {
					return nil
				}
				if err := lf.Close(); err != nil {
					return err
				}
				closeLog = func() error { return nil }
				if lf, err = b.fs.OpenFile(logf, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
					return err
				}
				closeLog = func() error { return lf.Close() }
				size = 0
				return nil
			},
		}, nil
	}
	return thread{}, fmt.Errorf("no micro op %q", s.Op)
}

func readFull(f pathfs.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if err == nil && n != len(p) {
		err = fmt.Errorf("short read: %d bytes at %d", n, off)
	}
	return err
}

// pebbleLogger keeps Pebble's chatter out of the worker's output and remembers
// its first error: a background flush that failed would otherwise pass unnoticed
// while the puts look fast.
type pebbleLogger struct{ first atomic.Pointer[string] }

func (*pebbleLogger) Infof(string, ...any) {}
func (l *pebbleLogger) Errorf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	l.first.CompareAndSwap(nil, &s)
}
func (*pebbleLogger) Fatalf(format string, args ...any) {
	panic("harness worker: pebble: " + fmt.Sprintf(format, args...)) // Fatalf must not return
}

// key writes key number i: big-endian, so that sequential numbers are
// sequential keys.
func key(k []byte, i uint64) {
	binary.BigEndian.PutUint64(k[:8], i>>32)
	binary.BigEndian.PutUint64(k[8:], i)
}

func (b *bench) preparePebble(s *Spec) error {
	b.log = &pebbleLogger{}
	po := &pebble.Options{Logger: b.log}
	b.fs.PebbleOptions(po)
	db, err := pebble.Open(path.Join(s.Dir, "pebble"), po)
	if err != nil {
		return err
	}
	b.db = db
	wo := pebble.NoSync
	if s.Sync {
		wo = pebble.Sync
	}
	vals := make([]byte, 64<<10)
	fillRandom(rand.New(rand.NewPCG(s.Seed, 0)), vals)
	value := func(rng *rand.Rand) []byte {
		off := rng.IntN(len(vals) - valueSize)
		return vals[off : off+valueSize]
	}
	keys := uint64(max(s.Keys, 1))
	if s.Workload == WorkloadPebbleReadRandom {
		// The store the gets read: Keys sequential keys in batches, flushed so
		// that the gets read tables through the path, not the memtable.
		rng := rand.New(rand.NewPCG(s.Seed, 1))
		k := make([]byte, keySize)
		for i := uint64(0); i < keys; {
			batch := db.NewBatch()
			for j := 0; j < fillBatch && i < keys; j, i = j+1, i+1 {
				key(k, i)
				if err := batch.Set(k, value(rng), nil); err != nil {
					return err
				}
			}
			if err := batch.Commit(wo); err != nil {
				return err
			}
		}
		if err := db.Flush(); err != nil {
			return err
		}
	}
	var seq atomic.Uint64
	for i := range s.Threads {
		rng := rand.New(rand.NewPCG(s.Seed, uint64(i)+2))
		k := make([]byte, keySize)
		var do func() error
		switch s.Workload {
		case WorkloadPebbleFillSeq:
			do = func() error { key(k, seq.Add(1)-1); return db.Set(k, value(rng), wo) }
		case WorkloadPebbleFillRandom:
			do = func() error { key(k, rng.Uint64()); return db.Set(k, value(rng), wo) }
		case WorkloadPebbleReadRandom:
			do = func() error {
				key(k, rng.Uint64N(keys))
				v, c, err := db.Get(k)
				if err != nil {
					return err
				}
				if len(v) != valueSize {
					err = fmt.Errorf("get: value of %d bytes, want %d", len(v), valueSize)
				}
				return errors.Join(err, c.Close())
			}
		}
		b.threads = append(b.threads, thread{do: do})
	}
	return nil
}

// run does the protocol: ready, wait for the start, warm up, measure.
func (b *bench) run(s *Spec, in *bufio.Reader, out io.Writer, term <-chan os.Signal) (*WorkerResult, error) {
	if _, err := fmt.Fprintln(out, readyLine); err != nil {
		return nil, err
	}
	line, err := in.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("harness worker: waiting for the start: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != goWord {
		return nil, fmt.Errorf("harness worker: %q where %q was expected", strings.TrimSpace(line), goWord+" UNIXNANOS")
	}
	startNs, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("harness worker: start time: %w", err)
	}
	start := time.Unix(0, startNs)
	mstart := start.Add(time.Duration(s.WarmupNs))
	mend := mstart.Add(time.Duration(s.DurationNs))
	var stop atomic.Bool
	stopped := make(chan struct{})
	go func() {
		select {
		case <-term:
			stop.Store(true)
		case <-stopped:
		}
	}()
	defer close(stopped)

	time.Sleep(time.Until(start))
	hists := make([]*results.Histogram, len(b.threads))
	errs := make([]error, len(b.threads))
	ends := make([]time.Time, len(b.threads))
	var wg sync.WaitGroup
	for i, t := range b.threads {
		hists[i] = results.NewHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ends[i], errs[i] = measure(t, hists[i], mstart, mend, &stop)
		}()
	}
	time.Sleep(time.Until(mstart))
	cpu0 := cpuSelf()
	wg.Wait()
	end := time.Now()
	cpu1 := cpuSelf()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("harness worker: %s %s on the %s path: %w", s.Workload, s.Op, s.Path, err)
	}
	if stop.Load() && end.Before(mstart) {
		return nil, errors.New("harness worker: stopped during the warm-up")
	}
	res := &WorkerResult{Hist: results.NewHistogram(), Partial: stop.Load() && end.Before(mend),
		Seconds: mend.Sub(mstart).Seconds(), CPU: cpu1 - cpu0}
	if res.Partial {
		res.Seconds = end.Sub(mstart).Seconds()
	}
	for _, e := range ends {
		if e.After(mend) {
			// A thread ran on to time one operation: every operation it timed
			// started in [mstart, e).
			res.Seconds = max(res.Seconds, e.Sub(mstart).Seconds())
		}
	}
	for _, h := range hists {
		res.Hist.Merge(h)
	}
	if b.log != nil {
		if e := b.log.first.Load(); e != nil {
			return nil, fmt.Errorf("harness worker: pebble reported an error: %s", *e)
		}
	}
	return res, nil
}

// measure runs t's operation until mend, recording the latency of those that
// start at mstart or later, and at least one: an operation slower than the whole
// measurement is still measured. It returns when the last recorded operation
// that started after mend ended (zero when none did).
func measure(t thread, h *results.Histogram, mstart, mend time.Time, stop *atomic.Bool) (time.Time, error) {
	for !stop.Load() {
		t0 := time.Now()
		if err := t.do(); err != nil {
			return time.Time{}, err
		}
		t1 := time.Now()
		recorded := !t0.Before(mstart)
		if recorded {
			h.Record(int64(t1.Sub(t0)))
		}
		if !t1.Before(mend) && h.Count() > 0 {
			if recorded && !t0.Before(mend) {
				return t1, nil
			}
			return time.Time{}, nil
		}
		if t.untimed != nil {
			if err := t.untimed(); err != nil {
				return time.Time{}, err
			}
		}
	}
	return time.Time{}, nil
}

// cpuSelf is this process's user+system time, in seconds.
func cpuSelf() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

func tvSeconds(tv unix.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// close releases the files, the store and the directory.
func (b *bench) close() error {
	var errs []error
	for _, c := range b.closers {
		errs = append(errs, c())
	}
	if b.db != nil {
		errs = append(errs, b.db.Close())
	}
	if b.fs != nil {
		errs = append(errs, b.fs.RemoveAll(b.dir), b.fs.Close())
	}
	return errors.Join(errs...)
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
}
