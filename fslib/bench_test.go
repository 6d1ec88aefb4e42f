package fslib_test

import (
	"os"
	"testing"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

func benchClient(b *testing.B) (*fslib.Client, *memfs.FS) {
	b.Helper()
	m := memfs.New(memfs.Options{})
	c := fslib.New(m)
	if err := c.MkdirAll("dir/sub", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := c.WriteFile("dir/sub/file", make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	return c, m
}

// BenchmarkStat: one allocation, the FileInfo the caller gets (it escapes through
// the fs.FileInfo interface); the FS fills its Attr in place.
func BenchmarkStat(b *testing.B) {
	c, _ := benchClient(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Stat("dir/sub/file"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatFS is the same Stat on the libservices.FS directly: the baseline
// that BenchmarkStat's overhead is measured against.
func BenchmarkStatFS(b *testing.B) {
	_, m := benchClient(b)
	var fsys libservices.FS = m
	var a libservices.Attr
	b.ReportAllocs()
	for b.Loop() {
		if err := fsys.Stat("dir/sub/file", &a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadAt4K(b *testing.B) {
	c, _ := benchClient(b)
	f, err := c.Open("dir/sub/file")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		if _, err := f.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 4096) % (1 << 20)
	}
}

func BenchmarkReadAt4KFS(b *testing.B) {
	_, m := benchClient(b)
	var fsys libservices.FS = m
	h, err := fsys.Open("dir/sub/file", libservices.O_RDONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer fsys.Close(h)
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		if _, err := fsys.ReadAt(h, buf, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 4096) % (1 << 20)
	}
}

// BenchmarkReadAt4KParallel: concurrent ReadAt on one File share only the
// handle lock (read-locked).
func BenchmarkReadAt4KParallel(b *testing.B) {
	c, _ := benchClient(b)
	f, err := c.Open("dir/sub/file")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		off := int64(0)
		for pb.Next() {
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			off = (off + 4096) % (1 << 20)
		}
	})
}

func BenchmarkRead4K(b *testing.B) {
	c, _ := benchClient(b)
	f, err := c.Open("dir/sub/file")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Read(buf); err != nil {
			if _, err := f.Seek(0, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkWrite4K(b *testing.B) {
	c, _ := benchClient(b)
	f, err := c.Create("w")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.WriteAt(buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAllocs pins the allocation counts the benchmarks report: none for data
// operations on an open File, one (the FileInfo) for Stat on top of the FS's own.
func TestAllocs(t *testing.T) {
	m := memfs.New(memfs.Options{})
	c := fslib.New(m)
	if err := c.WriteFile("file", make([]byte, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := c.OpenFile("file", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for name, fn := range map[string]func(){
		"ReadAt":  func() { f.ReadAt(buf, 4096) },
		"WriteAt": func() { f.WriteAt(buf, 4096) },
		"Read":    func() { f.Seek(0, 0); f.Read(buf) },
		"Write":   func() { f.Seek(0, 0); f.Write(buf) },
		"Sync":    func() { f.Sync() },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
	var a libservices.Attr
	fsAllocs := testing.AllocsPerRun(100, func() { m.Stat("file", &a) })
	if n := testing.AllocsPerRun(100, func() { c.Stat("file") }); n != fsAllocs+1 {
		t.Errorf("Stat: %v allocations, want the FS's %v plus 1", n, fsAllocs)
	}
}
