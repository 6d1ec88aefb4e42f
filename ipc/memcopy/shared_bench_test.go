package memcopy

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkKernelsShared copies from private memory into a shared memfd
// mapping (MAP_SHARED), the destination of the direct path. No other process
// reads it here; `polytropon perf copy` measures that setting.
func BenchmarkKernelsShared(b *testing.B) {
	const size = 16 << 20
	fd, err := unix.MemfdCreate("memcopy-bench", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatalf("memfd_create: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		b.Fatal(err)
	}
	shared, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(shared)
	src := make([]byte, size)
	fillSource(src)
	copy(shared, src) // fault the pages in
	for _, k := range availableKernels(b) {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%s", k.Name(), sizeName(n)), func(b *testing.B) {
				b.SetBytes(int64(n))
				for b.Loop() {
					k.Copy(shared[:n], src[:n])
				}
			})
		}
	}
}
