package fusegw

import (
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices/memfs"
)

// Benchmarks of the legacy path over memfs: a program's lstat(2) and 4 KiB
// pread(2) through the mount, client and server in this process, so that
// -benchmem counts the gateway's allocations too. Each operation is timed, and
// p50 and p99 are reported beside the mean.
//
//   - Cached: the default options; the kernel answers from its caches (entries
//     and attributes for 1 s, pages while unchanged), so this measures the kernel.
//   - RoundTrip: kernel caches off (timeouts -1 for lstat, O_DIRECT for pread):
//     every call is a FUSE request answered by the gateway (lstat of dir/file is
//     five: GETATTR of the root and of dir for the permission checks, two
//     LOOKUPs and the GETATTR).
//   - Host: the same call on a tmpfs file (/dev/shm), without FUSE: the
//     baseline for ratios.

// hostFile makes dir/file of 1 MiB on the host's tmpfs and returns its path.
func hostFile(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "polytropon-fusegw-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Mkdir(dir+"/dir", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(dir+"/dir/file", make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir + "/dir/file"
}

func benchMount(b *testing.B, o Options) string {
	b.Helper()
	needFUSE(b)
	fsys := memfs.New(memfs.Options{})
	if err := fsys.Mkdir("dir", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := writeFS(fsys, "dir/file", make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	s, err := Mount(b.TempDir(), fsys, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stop(b, s) })
	return s.Mountpoint()
}

// timed runs op b.N times, timing each, and reports the percentiles.
func timed(b *testing.B, op func(i int) error) {
	lat := make([]int64, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		lat[i] = int64(time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

func BenchmarkLstat(b *testing.B) {
	for _, c := range []struct {
		name string
		o    *Options
	}{
		{"Cached", &Options{}},
		{"RoundTrip", &Options{EntryTimeout: -1, AttrTimeout: -1}},
		{"Host", nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			var path string
			if c.o == nil {
				path = hostFile(b)
			} else {
				path = benchMount(b, *c.o) + "/dir/file"
			}
			var st unix.Stat_t
			timed(b, func(int) error { return unix.Lstat(path, &st) })
		})
	}
}

func BenchmarkPread4K(b *testing.B) {
	for _, c := range []struct {
		name  string
		flags int
		host  bool
	}{
		{"Cached", 0, false},
		{"RoundTrip", unix.O_DIRECT, false},
		{"Host", 0, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var path string
			if c.host {
				path = hostFile(b)
			} else {
				path = benchMount(b, Options{}) + "/dir/file"
			}
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|c.flags, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned, for O_DIRECT
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Munmap(buf)
			b.SetBytes(4096)
			timed(b, func(i int) error {
				n, err := unix.Pread(fd, buf, int64(i%256)*4096)
				if err == nil && n != 4096 {
					b.Fatalf("short read %d", n)
				}
				return err
			})
		})
	}
}
