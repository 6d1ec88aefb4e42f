package passthrough

import (
	"os"
	"strconv"
	"testing"

	"github.com/polytropon/polytropon/libservices"
)

// The benchmarks use only New(Options{Dir}) so that they build unchanged
// against the code before the directory cache, for an A/B run (see
// docs/results/2026-12-08/passthrough-dircache.md). Each runs on a name at
// the root of the branch and three directories down, on /dev/shm (tmpfs).

var benchPaths = []struct{ name, dir string }{{"depth0", ""}, {"depth3", "a/b/c/"}}

func benchFS(b *testing.B, dir string) *FS {
	b.Helper()
	base, err := os.MkdirTemp("/dev/shm", "polytropon-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(base) })
	if err := os.MkdirAll(base+"/"+dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(base+"/"+dir+"f", []byte("data"), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := New(Options{Dir: base})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.CloseFS() })
	return f
}

func BenchmarkLstat(b *testing.B) {
	for _, p := range benchPaths {
		b.Run(p.name, func(b *testing.B) {
			f := benchFS(b, p.dir)
			name := p.dir + "f"
			var a libservices.Attr
			b.ReportAllocs()
			for b.Loop() {
				if err := f.Lstat(name, &a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLstatParallel is Lstat from every P at once: the cache's locks
// under contention.
func BenchmarkLstatParallel(b *testing.B) {
	f := benchFS(b, "a/b/c/")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var a libservices.Attr
		for pb.Next() {
			if err := f.Lstat("a/b/c/f", &a); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkOpenClose(b *testing.B) {
	for _, p := range benchPaths {
		b.Run(p.name, func(b *testing.B) {
			f := benchFS(b, p.dir)
			name := p.dir + "f"
			b.ReportAllocs()
			for b.Loop() {
				h, err := f.Open(name, libservices.O_RDONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				if err := f.Close(h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCreateUnlink(b *testing.B) {
	for _, p := range benchPaths {
		b.Run(p.name, func(b *testing.B) {
			f := benchFS(b, p.dir)
			name := p.dir + "new"
			mode := uint32(0o644 &^ umask) // no chmod after the create
			b.ReportAllocs()
			for b.Loop() {
				h, err := f.Open(name, libservices.O_CREAT|libservices.O_WRONLY, mode)
				if err != nil {
					b.Fatal(err)
				}
				if err := f.Close(h); err != nil {
					b.Fatal(err)
				}
				if err := f.Unlink(name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRenameFile renames a file back and forth (two renames per op)
// with 1024 other directories cached: what an own rename pays for keeping
// the cache coherent when nothing is cached below the name.
func BenchmarkRenameFile(b *testing.B) {
	f := benchFS(b, "a/b/c/")
	root, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(f.root))
	if err != nil {
		b.Fatal(err)
	}
	var a libservices.Attr
	for i := 0; i < 1024; i++ {
		d := "d" + strconv.Itoa(i)
		if err := os.Mkdir(root+"/"+d, 0o755); err != nil {
			b.Fatal(err)
		}
		f.Lstat(d+"/x", &a)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Rename("a/b/c/f", "a/b/c/g"); err != nil {
			b.Fatal(err)
		}
		if err := f.Rename("a/b/c/g", "a/b/c/f"); err != nil {
			b.Fatal(err)
		}
	}
}
