package cache

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

func TestConformanceMemfs(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return New(memfs.New(memfs.Options{}), NewStore(1<<20), Options{})
	})
}

// TestConformanceTinyStore runs the suite with a store of 16 pages, so that
// eviction happens all the time.
func TestConformanceTinyStore(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return New(memfs.New(memfs.Options{}), NewStore(0), Options{Attrs: 8})
	})
}

// TestConformanceStack runs the suite on cache over union over passthrough with a
// read-only lower branch, the stack of the example configuration.
func TestConformanceStack(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		var layers []libservices.FS
		for _, ro := range []bool{false, true} {
			dir, err := os.MkdirTemp("/dev/shm", "polytropon-cache-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: ro})
			if err != nil {
				t.Fatal(err)
			}
			layers = append(layers, p)
		}
		c := New(union.New(layers[0], layers[1]), NewStore(1<<20), Options{})
		t.Cleanup(func() { c.CloseFS() })
		return c
	})
}

// countingFS counts data reads reaching the inner FS.
type countingFS struct {
	libservices.FS
	reads int
}

func (c *countingFS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	c.reads++
	return c.FS.ReadAt(h, p, off)
}

func (c *countingFS) Identity() [2]uint64 { return c.FS.(libservices.Identifier).Identity() }

func TestHitsAndCoherence(t *testing.T) {
	inner := &countingFS{FS: memfs.New(memfs.Options{})}
	c := New(inner, NewStore(1<<20), Options{})
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3*PageSize)
	for i := range data {
		data[i] = byte(i)
	}
	c.WriteAt(h, data, 0)
	buf := make([]byte, 3*PageSize)
	for i := 0; i < 3; i++ {
		if n, err := c.ReadAt(h, buf, 0); err != nil || n != len(buf) {
			t.Fatal(n, err)
		}
	}
	if inner.reads != 3 {
		t.Fatalf("three pages read three times: %d inner reads, want 3", inner.reads)
	}
	c.WriteAt(h, []byte("XY"), PageSize-1)
	c.ReadAt(h, buf, 0)
	if buf[PageSize-1] != 'X' || buf[PageSize] != 'Y' || inner.reads != 3 {
		t.Fatalf("write across a page boundary not seen in cached pages (%d reads)", inner.reads)
	}
	if err := c.Ftruncate(h, 10); err != nil {
		t.Fatal(err)
	}
	c.Ftruncate(h, 2*PageSize)
	n, _ := c.ReadAt(h, buf, 0)
	if n != 2*PageSize || buf[PageSize] != 0 || buf[5] != 5 {
		t.Fatalf("after truncate down and up: %d bytes, byte %d", n, buf[PageSize])
	}
	c.Close(h)
}

// TestSharedStore: two caches over two branches of the same host directory (as two
// containers over one image) share pages.
func TestSharedStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/img", make([]byte, 8*PageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	st := NewStore(1 << 20)
	var caches []*FS
	var counters []*countingFS
	for i := 0; i < 2; i++ {
		p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer p.CloseFS()
		cf := &countingFS{FS: p}
		counters = append(counters, cf)
		caches = append(caches, New(cf, st, Options{}))
	}
	buf := make([]byte, 8*PageSize)
	for _, c := range caches {
		h, err := c.Open("img", libservices.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := c.ReadAt(h, buf, 0); err != nil || n != len(buf) {
			t.Fatal(n, err)
		}
		c.Close(h)
	}
	if counters[0].reads != 8 || counters[1].reads != 0 {
		t.Fatalf("inner reads %d and %d: the second container must hit the shared pages", counters[0].reads, counters[1].reads)
	}
}

func TestStatCache(t *testing.T) {
	inner := memfs.New(memfs.Options{})
	c := New(inner, NewStore(0), Options{})
	var a libservices.Attr
	if err := c.Lstat("f", &a); err != syscall.ENOENT {
		t.Fatal(err)
	}
	h, _ := c.Open("f", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	if err := c.Lstat("f", &a); err != nil {
		t.Fatalf("negative entry served after create: %v", err)
	}
	c.WriteAt(h, []byte("abc"), 0)
	if c.Lstat("f", &a); a.Size != 3 {
		t.Fatalf("stale size %d after write", a.Size)
	}
	c.Close(h)
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Policy: "lru"}, {Policy: "writeback", DirtyLimit: -1}, {Size: 100}, {Attrs: -1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v validated", o)
		}
	}
	if err := (&Options{Size: 256 << 20, Policy: "writethrough"}).Validate(); err != nil {
		t.Error(err)
	}
}

func wbOptions() Options { return Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 1 << 30} }

func TestConformanceWriteBack(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return New(memfs.New(memfs.Options{}), NewStore(1<<20), wbOptions())
	})
}

func TestConformanceWriteBackTinyLimit(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		c := New(memfs.New(memfs.Options{}), NewStore(0), Options{Policy: "writeback", FlushInterval: time.Millisecond, DirtyLimit: 2 * PageSize})
		t.Cleanup(func() { c.CloseFS() })
		return c
	})
}

func TestConformanceWriteBackStack(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		var layers []libservices.FS
		for _, ro := range []bool{false, true} {
			dir, err := os.MkdirTemp("/var/tmp", "polytropon-cache-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: ro})
			if err != nil {
				t.Fatal(err)
			}
			layers = append(layers, p)
		}
		c := New(union.New(layers[0], layers[1]), NewStore(1<<20), Options{Policy: "writeback", FlushInterval: 10 * time.Millisecond})
		t.Cleanup(func() { c.CloseFS() })
		return c
	})
}

// TestTruncatingOpenVsFlusher: a truncating open of a file with dirty pages, while
// the background flusher runs, must not let old pages reach the inner FS after the
// truncation.
func TestTruncatingOpenVsFlusher(t *testing.T) {
	inner := memfs.New(memfs.Options{})
	c := New(inner, NewStore(4<<20), Options{Policy: "writeback", FlushInterval: time.Millisecond})
	defer c.CloseFS()
	data := bytes.Repeat([]byte("A"), 16*PageSize)
	for i := range 300 {
		h1, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteAt(h1, data, 0); err != nil {
			t.Fatal(err)
		}
		h2, err := c.Open("f", libservices.O_WRONLY|libservices.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(h2); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(h1); err != nil {
			t.Fatal(err)
		}
		var a libservices.Attr
		if err := inner.Stat("f", &a); err != nil {
			t.Fatal(err)
		}
		if a.Size != 0 {
			t.Fatalf("round %d: %d bytes of old data below after a truncating open", i, a.Size)
		}
	}
}
