package service_test

import (
	"testing"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/service"
)

// benchService is the default stack with a spinning worker (a reserved core), in
// this process; client and service still talk only through shared memory.
func benchService(b *testing.B) (*service.Service, libservices.FS) {
	cfg := stackConfig(b, "writeback")
	spin := 2000
	cfg.Spin = &spin
	s := start(b, cfg)
	return s, dialFS(b, s, "")
}

// BenchmarkDirectStat: a cached stat through fslib's remote FS, the service and
// the cache layer.
func BenchmarkDirectStat(b *testing.B) {
	_, fs := benchService(b)
	c := fslib.New(fs)
	if err := c.WriteFile("/f", []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	var a libservices.Attr
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := fs.Stat("/f", &a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDirectRead4K: a 4 KiB read of cached pages.
func BenchmarkDirectRead4K(b *testing.B) {
	_, fs := benchService(b)
	h, err := fs.Open("/f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range 256 {
		if _, err := fs.WriteAt(h, buf, int64(i)*4096); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := fs.ReadAt(h, buf, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	if err := fs.Close(h); err != nil {
		b.Fatal(err)
	}
}
