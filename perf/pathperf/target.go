package pathperf

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/polytropon/polytropon/perf/pathfs"
)

// target is one path, prepared: its directory, the file read and the file
// written, open.
type target struct {
	fs                      pathfs.FS
	dir                     string
	image, scratch, tmp, db string
	rf, wf                  pathfs.File
}

func newTarget(f pathfs.FS, dir string) *target {
	return &target{fs: f, dir: dir, image: dir + "/image.dat", scratch: dir + "/scratch.dat",
		tmp: dir + "/tmp.dat", db: dir + "/pebble"}
}

func newOSTarget(dir string) *target { return newTarget(pathfs.OS, dir) }

func dialDirect(socket, dir string) (*target, error) {
	f, err := pathfs.Dial(socket)
	if err != nil {
		return nil, fmt.Errorf("pathperf: direct path: %w", err)
	}
	return newTarget(f, dir), nil
}

// prepare makes the path's directory and files, opens them, and reads them whole
// once, so that every cache on the path (page cache, FUSE page cache, the service's
// cache) holds them before anything is timed.
func (t *target) prepare(data []byte) error {
	if err := t.fs.Mkdir(t.dir, 0o755); err != nil {
		return err
	}
	for _, n := range []string{t.image, t.scratch} {
		if err := t.fs.WriteFile(n, data, 0o644); err != nil {
			return err
		}
	}
	var err error
	if t.rf, err = t.fs.OpenFile(t.image, os.O_RDONLY, 0); err != nil {
		return err
	}
	if t.wf, err = t.fs.OpenFile(t.scratch, os.O_RDWR, 0); err != nil {
		return err
	}
	buf := make([]byte, 128<<10)
	for _, f := range []pathfs.File{t.rf, t.wf} {
		for off := int64(0); off < int64(len(data)); off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				return err
			}
		}
	}
	_, err = t.fs.Stat(t.image)
	return err
}

func (t *target) stat() error {
	_, err := t.fs.Stat(t.image)
	return err
}

func (t *target) read(p []byte, off int64) error {
	n, err := t.rf.ReadAt(p, off)
	if err == nil && n != len(p) {
		err = fmt.Errorf("short read: %d bytes at %d", n, off)
	}
	return err
}

func (t *target) write(p []byte, off int64) error {
	_, err := t.wf.WriteAt(p, off)
	return err
}

func (t *target) openClose() error {
	f, err := t.fs.OpenFile(t.image, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func (t *target) createUnlink() error {
	f, err := t.fs.OpenFile(t.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return t.fs.Remove(t.tmp)
}

func (t *target) close() error {
	var errs []error
	for _, f := range []pathfs.File{t.rf, t.wf} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	errs = append(errs, t.fs.Close())
	return errors.Join(errs...)
}

const (
	pebbleKeySize   = 16
	pebbleValueSize = 100
)

// pebbleLogger keeps Pebble's chatter out of the report and remembers its first
// error, which Run returns: a background flush that failed would otherwise pass
// unnoticed while the puts look fast.
type pebbleLogger struct{ first atomic.Pointer[string] }

func (*pebbleLogger) Infof(string, ...any) {}
func (l *pebbleLogger) Errorf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	l.first.CompareAndSwap(nil, &s)
}
func (*pebbleLogger) Fatalf(format string, args ...any) {
	panic("pathperf: pebble: " + fmt.Sprintf(format, args...)) // Fatalf must not return
}

// stallClock adds up Pebble's write stalls (puts held back because flushes or
// compactions fall behind), which tell a slow disk path from a slow put path.
// Pebble reports them one at a time, under its own mutex.
type stallClock struct {
	since    atomic.Int64 // start of the current stall, unix ns
	n, total atomic.Int64
}

func (c *stallClock) begin(pebble.WriteStallBeginInfo) { c.since.Store(time.Now().UnixNano()) }
func (c *stallClock) end() {
	c.n.Add(1)
	c.total.Add(time.Now().UnixNano() - c.since.Load())
}

// measurePebble times keys puts of random keys without sync into a fresh store on
// t's path, then closes and removes the store. Keys and values are made before
// timing, the same on every path for one seed.
func measurePebble(t *target, opts *Options) (Result, error) {
	keys := opts.PebbleKeys
	rng := rand.New(rand.NewPCG(opts.Seed, 2))
	kb := make([]byte, keys*pebbleKeySize)
	fill(rng, kb)
	vb := make([]byte, 64<<10)
	fill(rng, vb)
	if err := t.fs.RemoveAll(t.db); err != nil {
		return Result{}, err
	}
	log := &pebbleLogger{}
	var stalls stallClock
	po := &pebble.Options{Logger: log,
		EventListener: &pebble.EventListener{WriteStallBegin: stalls.begin, WriteStallEnd: stalls.end}}
	t.fs.PebbleOptions(po)
	db, err := pebble.Open(t.db, po)
	if err != nil {
		return Result{}, err
	}
	h := newHistogram()
	start := time.Now()
	for i := range keys {
		k := kb[i*pebbleKeySize : (i+1)*pebbleKeySize]
		off := (i * 4099) % (len(vb) - pebbleValueSize)
		t0 := time.Now()
		if err := db.Set(k, vb[off:off+pebbleValueSize], pebble.NoSync); err != nil {
			_ = db.Close()
			return Result{}, err
		}
		record(h, time.Since(t0))
		if i&1023 == 0 && opts.canceled() {
			_ = db.Close()
			return Result{}, ErrCanceled
		}
	}
	elapsed := time.Since(start)
	t0 := time.Now()
	if err := db.Close(); err != nil {
		return Result{}, err
	}
	r := resultOf(h, keys, elapsed)
	r.CloseNs = int64(time.Since(t0))
	r.Stalls, r.StallNs = stalls.n.Load(), stalls.total.Load()
	if e := log.first.Load(); e != nil {
		return Result{}, fmt.Errorf("pebble reported an error: %s", *e)
	}
	return r, t.fs.RemoveAll(t.db)
}
