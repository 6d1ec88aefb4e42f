package cache

import (
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
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
