// Package memcopy copies bytes for the direct path: Asterope-style copy kernels
// in Go assembly (AVX2 and AVX-512, temporal and non-temporal with
// PREFETCHNTA, REP MOVSB) beside the built-in copy, and a Copier that picks one
// kernel per size class from a profile tuned on this kind of CPU.
//
// Every byte on the direct path is copied twice, into and out of shared memory,
// and the other side of the copy is another core. Go's copy() switches to
// non-temporal stores only from 1 MiB and has no AVX-512 or REP MOVSB path on
// AMD; which kernel wins depends on the CPU, the size and the cache state, so
// `polytropon tune copy` (package internal/copytune) measures them all in the direct
// path's settings and writes a Profile; drivers load it at start
// (LoadDefault, or LoadProfile + NewCopier + SetDefault) and call Copy.
//
// What it is not: a memmove. Source and destination must not overlap.
//
// # Contract and invariants
//
//   - Copy and Copier.Copy have copy() semantics for lengths: they copy
//     min(len(dst), len(src)) bytes and return the count. Any length, any
//     alignment; nothing outside dst[:n] is written.
//   - dst and src must not overlap. Builds with -tags invariants check it on
//     every call and panic (internal/invariants); normal builds do not check.
//   - Without a profile (and with a profile that fails to load) every size uses
//     the built-in copy, so an untuned machine is never slower than copy().
//   - A profile applies only on the CPU it was tuned on: vendor, family, model
//     and the copy-relevant features (avx2, avx512f, avx512bw, erms, fsrm) must
//     all match, or NewCopier returns ErrOtherCPU.
//   - A Copier is immutable; the kernel registry is built at init and never
//     changes. Copy costs bits.Len, one table load and one indirect call, and
//     never allocates.
//   - The kernels run as assembly without preemption points: a 64 MiB copy
//     holds its goroutine's P for a few milliseconds, as copy() does.
//
// Files: kernels.go holds the contract and the built-in kernel; the assembly
// is declared in kernels_amd64.go (chosen from x/sys/cpu features) and lives in
// kernels_amd64.s; kernels_other.go is the pure-Go build (other architectures
// and -tags purego), where copy() is the only kernel.
//
// # Locking
//
// There are no locks. The process-wide Copier is an atomic.Pointer
// (SetDefault/Default); copies in flight finish with the Copier they loaded.
package memcopy
