package cache

import (
	"os"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// nameBench is a cache over a counting FS over memfs or a host directory on
// /var/tmp, with directories a and b and a file b/file.
func nameBench(b *testing.B, below string) (*FS, *countFS) {
	var inner libservices.FS
	switch below {
	case "memfs":
		inner = memfs.New(memfs.Options{})
	default:
		dir, err := os.MkdirTemp("/var/tmp", "polytropon-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		p, err := passthrough.New(passthrough.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		inner = p
	}
	cf := &countFS{FS: inner}
	c := New(cf, NewStore(1<<20), Options{})
	b.Cleanup(func() { c.CloseFS() })
	for _, d := range []string{"a", "b"} {
		if err := c.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	h, err := c.Open("b/file", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	c.Close(h)
	var a libservices.Attr
	c.Lstat("b/file", &a)
	return c, cf
}

// runNames runs fn over memfs and over passthrough, and reports the metadata
// calls that reached the FS below per operation (lookups/op).
func runNames(b *testing.B, fn func(b *testing.B, c *FS)) {
	for _, below := range []string{"memfs", "passthrough"} {
		b.Run(below, func(b *testing.B) {
			c, cf := nameBench(b, below)
			fn(b, c) // warm
			cf.reset()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				fn(b, c)
			}
			b.ReportMetric(float64(cf.lookups())/float64(b.N), "lookups/op")
		})
	}
}

// BenchmarkNameStat: Lstat of a cached name.
func BenchmarkNameStat(b *testing.B) {
	var a libservices.Attr
	runNames(b, func(b *testing.B, c *FS) {
		if err := c.Lstat("b/file", &a); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkNameStatAfterCreate: a create and unlink in directory a, then a
// Lstat of b/file, which they do not concern.
func BenchmarkNameStatAfterCreate(b *testing.B) {
	var a libservices.Attr
	runNames(b, func(b *testing.B, c *FS) {
		h, err := c.Open("a/x", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		c.Close(h)
		if err := c.Unlink("a/x"); err != nil {
			b.Fatal(err)
		}
		if err := c.Lstat("b/file", &a); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkNameCreateUnlink: create (O_CREAT|O_EXCL), close and unlink of one
// name.
func BenchmarkNameCreateUnlink(b *testing.B) {
	runNames(b, func(b *testing.B, c *FS) {
		h, err := c.Open("a/x", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		c.Close(h)
		if err := c.Unlink("a/x"); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkNameOpenClose: a read-only open and close of a cached name.
func BenchmarkNameOpenClose(b *testing.B) {
	runNames(b, func(b *testing.B, c *FS) {
		h, err := c.Open("b/file", libservices.O_RDONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		c.Close(h)
	})
}
