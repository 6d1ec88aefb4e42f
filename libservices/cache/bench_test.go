package cache

import (
	"os"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

func warmCache(tb testing.TB) (*FS, libservices.Handle) {
	tb.Helper()
	c := New(memfs.New(memfs.Options{}), NewStore(64<<20), Options{})
	if err := c.Mkdir("dir", 0o755); err != nil {
		tb.Fatal(err)
	}
	h, err := c.Open("dir/file", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.WriteAt(h, make([]byte, 1<<20), 0); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	c.ReadAt(h, buf, 0)
	var a libservices.Attr
	c.Lstat("dir/file", &a)
	return c, h
}

// TestHitPathAllocs checks the zero-allocation promise of the hit path (an
// allocation count, not a timing).
func TestHitPathAllocs(t *testing.T) {
	c, h := warmCache(t)
	buf := make([]byte, 4096)
	var a libservices.Attr
	if n := testing.AllocsPerRun(200, func() { c.ReadAt(h, buf, 8192) }); n != 0 {
		t.Errorf("cached 4 KiB ReadAt allocates %v times", n)
	}
	if n := testing.AllocsPerRun(200, func() { c.Lstat("dir/file", &a) }); n != 0 {
		t.Errorf("cached Lstat allocates %v times", n)
	}
}

func BenchmarkCachedRead4K(b *testing.B) {
	c, h := warmCache(b)
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := c.ReadAt(h, buf, int64(i%16)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCachedStat(b *testing.B) {
	c, _ := warmCache(b)
	var a libservices.Attr
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Lstat("dir/file", &a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCachedRead4KParallel(b *testing.B) {
	c, h := warmCache(b)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		i := 0
		for pb.Next() {
			c.ReadAt(h, buf, int64(i%16)*4096)
			i++
		}
	})
}

// writeBackCache is a write-back cache over memfs with a file of 16 hot pages
// already dirty, so that a 4 KiB write into them is the steady state of a
// write-back cache: no page to allocate, nothing to flush.
func writeBackCache(tb testing.TB) (*FS, libservices.Handle) {
	tb.Helper()
	c := New(memfs.New(memfs.Options{}), NewStore(64<<20), Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 1 << 30})
	h, err := c.Open("file", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.WriteAt(h, make([]byte, 16*PageSize), 0); err != nil {
		tb.Fatal(err)
	}
	return c, h
}

// TestWritePathAllocs checks that a write-back cache holds a 4 KiB write back
// without allocating: into a page that is dirty already, and into pages that a
// flush has just written (their memory is recycled).
func TestWritePathAllocs(t *testing.T) {
	c, h := writeBackCache(t)
	buf := make([]byte, PageSize)
	if n := testing.AllocsPerRun(200, func() { c.WriteAt(h, buf, 5*PageSize) }); n != 0 {
		t.Errorf("4 KiB write into a dirty page allocates %v times", n)
	}
	cycle := func() {
		for i := range 16 {
			c.WriteAt(h, buf, int64(i)*PageSize)
		}
		if err := c.Flush(h); err != nil {
			t.Fatal(err)
		}
	}
	cycle()
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d dirty bytes after Flush", d)
	}
	if raceEnabled {
		return
	}
	if n := testing.AllocsPerRun(100, cycle); n != 0 {
		t.Errorf("16 writes of 4 KiB into clean pages and a flush allocate %v times", n)
	}
}

// BenchmarkCachedWrite4K: 4 KiB writes held back by a write-back cache, into
// pages that are dirty already.
func BenchmarkCachedWrite4K(b *testing.B) {
	c, h := writeBackCache(b)
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.WriteAt(h, buf, int64(i%16)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCachedWrite4KAppend: 4 KiB appends held back by a write-back cache
// over a host directory (/dev/shm), flushed by the dirty limit every 1 MiB and
// truncated every 64 MiB: what a streaming writer costs, system calls of the
// flushes included.
func BenchmarkCachedWrite4KAppend(b *testing.B) {
	dir, err := os.MkdirTemp("/dev/shm", "polytropon-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p, err := passthrough.New(passthrough.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	c := New(p, NewStore(64<<20), Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 1 << 20})
	defer c.CloseFS()
	h, err := c.Open("file", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(h)
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	const wrap = 64 << 20
	for i := 0; b.Loop(); i++ {
		off := int64(i) * 4096 % wrap
		if off == 0 && i > 0 {
			if err := c.Ftruncate(h, 0); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := c.WriteAt(h, buf, off); err != nil {
			b.Fatal(err)
		}
	}
}
