//go:build !purego

package memcopy

import "golang.org/x/sys/cpu"

// The assembly kernels in kernels_amd64.s. Each copies len(dst) bytes from src
// to dst; the caller (Kernel.Copy) guarantees len(dst) == len(src) > 0 and that
// the ranges do not overlap. The NT kernels prefetch the source dist bytes ahead
// of the load position with PREFETCHNTA (dist may be any value: a prefetch past
// the end of the source never faults) and end with SFENCE, so their stores are
// globally visible, in order with later stores, when they return.

// copyAVX2 uses 32-byte loads and aligned temporal stores, 128 bytes per
// iteration: the destination stays in this core's caches.
//
//go:noescape
func copyAVX2(dst, src []byte)

// copyAVX2NT2 is the SMO pipeline: two cache lines per iteration, prefetched
// non-temporally dist bytes ahead, written with non-temporal stores to
// line-aligned destinations, so that the destination bypasses this core's caches
// and is read next by another core from memory or the shared cache.
//
//go:noescape
func copyAVX2NT2(dst, src []byte, dist int)

// copyAVX2NT4 is copyAVX2NT2 with four cache lines per iteration, for fewer
// loop branches and more stores in flight per prefetch batch.
//
//go:noescape
func copyAVX2NT4(dst, src []byte, dist int)

// copyAVX512 is copyAVX2 with 64-byte vectors, 256 bytes per iteration.
//
//go:noescape
func copyAVX512(dst, src []byte)

// copyAVX512NT is copyAVX2NT4 with 64-byte vectors: one store per cache line.
//
//go:noescape
func copyAVX512NT(dst, src []byte, dist int)

// copyRepMovsb is REP MOVSB, which microcode turns into full-line moves on
// CPUs with ERMS (and fast short moves with FSRM).
//
//go:noescape
func copyRepMovsb(dst, src []byte)

// cpuid executes CPUID with the given leaf and sub-leaf.
func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

// Prefetch distances tried: the SMO seed prefetches a few lines ahead; further
// ahead suits large copies on CPUs with long memory latency. The tuner decides.
const (
	prefetchNear = 256
	prefetchMid  = 512
	prefetchFar  = 1024
)

func platformKernels() []*Kernel {
	avx2, avx512 := cpu.X86.HasAVX2, cpu.X86.HasAVX512F
	return []*Kernel{
		{
			name: "avx2", needs: "AVX2", available: avx2,
			doc: "AVX2 loads, aligned temporal stores, 128 B per iteration",
			fn:  copyAVX2,
		},
		{
			name: "avx2-nt2-pf256", needs: "AVX2", available: avx2,
			doc: "AVX2, non-temporal stores, 2 lines per iteration, PREFETCHNTA +256 B",
			fn:  func(dst, src []byte) { copyAVX2NT2(dst, src, prefetchNear) },
		},
		{
			name: "avx2-nt2-pf1024", needs: "AVX2", available: avx2,
			doc: "AVX2, non-temporal stores, 2 lines per iteration, PREFETCHNTA +1024 B",
			fn:  func(dst, src []byte) { copyAVX2NT2(dst, src, prefetchFar) },
		},
		{
			name: "avx2-nt4-pf512", needs: "AVX2", available: avx2,
			doc: "AVX2, non-temporal stores, 4 lines per iteration, PREFETCHNTA +512 B",
			fn:  func(dst, src []byte) { copyAVX2NT4(dst, src, prefetchMid) },
		},
		{
			name: "avx2-nt4-pf1024", needs: "AVX2", available: avx2,
			doc: "AVX2, non-temporal stores, 4 lines per iteration, PREFETCHNTA +1024 B",
			fn:  func(dst, src []byte) { copyAVX2NT4(dst, src, prefetchFar) },
		},
		{
			name: "avx512", needs: "AVX-512F", available: avx512,
			doc: "AVX-512 loads, aligned temporal stores, 256 B per iteration",
			fn:  copyAVX512,
		},
		{
			name: "avx512-nt4-pf512", needs: "AVX-512F", available: avx512,
			doc: "AVX-512, non-temporal stores, 4 lines per iteration, PREFETCHNTA +512 B",
			fn:  func(dst, src []byte) { copyAVX512NT(dst, src, prefetchMid) },
		},
		{
			name: "avx512-nt4-pf1024", needs: "AVX-512F", available: avx512,
			doc: "AVX-512, non-temporal stores, 4 lines per iteration, PREFETCHNTA +1024 B",
			fn:  func(dst, src []byte) { copyAVX512NT(dst, src, prefetchFar) },
		},
		{
			// REP MOVSB is correct on every x86-64 CPU; ERMS/FSRM only make it
			// fast, which the tuner measures rather than assumes.
			name: "rep-movsb", needs: "x86-64", available: true,
			doc: "REP MOVSB (fast-string microcode with ERMS/FSRM)",
			fn:  copyRepMovsb,
		},
	}
}
