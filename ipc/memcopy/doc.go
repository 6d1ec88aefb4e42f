// Package memcopy copies bytes for the direct path: Asterope-style copy kernels
// in Go assembly (AVX2 and AVX-512, temporal and non-temporal with
// PREFETCHNTA, REP MOVSB) beside the built-in copy, and a Copier that picks one
// kernel per size class from a profile tuned on this kind of CPU.
//
// Every byte on the direct path is copied twice, into and out of shared memory,
// and the other side of the copy is another core. Go's copy() switches to
// non-temporal stores only from 1 MiB and has no AVX-512 or REP MOVSB path on
// AMD; which kernel wins depends on the CPU, the size and the cache state, so
// `polytropon tune copy` (package ipc/memcopy/tune) measures them all in the direct
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
//     changes. Below the smallest size its profile gives a kernel, Copy is
//     copy() behind one load and one compare, inlined into the caller
//     (TestCopyInlines asks the compiler); above, it adds a bits.Len, a table
//     load and an indirect call. It never allocates (TestCopyAllocs).
//   - The kernels run as assembly without preemption points: a 64 MiB copy
//     holds its goroutine's P for a few milliseconds, as copy() does.
//
// Files: kernels.go holds the contract and the built-in kernel; the assembly
// is declared in kernels_amd64.go (chosen from x/sys/cpu features) and lives in
// kernels_amd64.s; kernels_other.go is the pure-Go build (other architectures
// and -tags purego), where copy() is the only kernel.
//
// # Measuring
//
// `polytropon tune copy --show` measures every kernel in the direct path's
// settings (into a shared mapping a reader process on another core reads, and
// out of one it wrote; warm and cold destinations) and writes the profile;
// `polytropon perf copy --reps 15` measures every kernel and the tuned Copier
// in one run. The goal, that the tuned Copier is never more than 2 % slower
// than copy(), is judged per cell: a second run times only copy() and the
// Copier, side by side in each round in a shuffled order, and the median of
// the per-round ratios gets a 95 % distribution-free interval (order
// statistics; 6 rounds at least). A cell "holds" when the whole interval is at
// or above 0.98, "fails" when it is below, and is "unclear" otherwise. In
// process: `go test -run '^$' -bench 'Kernels|Dispatch' -benchmem
// ./ipc/memcopy` (TestCopyAllocs and TestCopyInlines check the dispatch never
// allocates and inlines below the first tuned class). Dated runs, with what
// they showed on Zen 3 and Zen 5 (which kernel wins where, and why the 2 %
// goal cannot hold at 64-128 B), are in docs/results/2026-11-21/memcopy.md.
//
// # Locking
//
// There are no locks. The process-wide Copier is an atomic.Pointer
// (SetDefault/Default); copies in flight finish with the Copier they loaded.
package memcopy
