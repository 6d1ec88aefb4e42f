// Package shm holds the shared-memory plumbing of the direct path: memfd-backed
// regions sealed at a fixed size, MAP_SHARED mappings of them, fd passing over a Unix
// socket (SCM_RIGHTS), futex wait and wake on a word of a mapping, and CopyData, the one
// function through which every data copy between private memory and a shared region
// goes.
//
// It is not a protocol: what a region holds is defined by ipc/wire (descriptors),
// ipc/rcqb (the queue) and the front and back drivers.
//
// Invariants:
//   - A Region's size never changes after Create: the memfd carries F_SEAL_SHRINK,
//     F_SEAL_GROW and F_SEAL_SEAL, so neither peer can truncate it under the other's
//     mapping (which would turn the other's next access into SIGBUS). Open refuses an
//     fd that lacks those seals.
//   - Huge pages are a preference, never a requirement: Create tries MFD_HUGETLB and
//     falls back to ordinary shmem pages with madvise(MADV_HUGEPAGE) when the hugetlb
//     pool is empty or the kernel refuses.
//   - Futex operations are non-private (no FUTEX_PRIVATE_FLAG) because the words live
//     in mappings shared by several processes.
//
// Lock order: the package holds no locks. A Region is not safe for concurrent Close;
// its memory is, by design, shared.
package shm
