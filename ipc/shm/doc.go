// Package shm holds the shared-memory plumbing of the direct path: memfd-backed
// regions sealed at a fixed size, MAP_SHARED mappings of them (read-only for peers
// when the creator asks), fd passing over a Unix socket (SCM_RIGHTS), futex wait and
// wake on a word of a mapping, eventfds written and read without allocating, word
// views of a mapping for atomic access, and CopyData, the one function through which
// every data copy between private memory and a shared region goes.
//
// It is not a protocol: what a region holds is defined by ipc/wire, and how the
// front and back drivers use it by them.
//
// Invariants:
//   - A Region's size never changes after Create: the memfd carries F_SEAL_SHRINK,
//     F_SEAL_GROW and F_SEAL_SEAL, so neither peer can truncate it under the other's
//     mapping (which would turn the other's next access into SIGBUS). Open and
//     OpenReadOnly refuse an fd that lacks those seals.
//   - A region created with Options.ReadOnlyPeers also carries F_SEAL_FUTURE_WRITE,
//     added after Create mapped it: Create's mapping is the only writable one there
//     will ever be. The kernel then refuses a writable shared mapping, mprotect to
//     PROT_WRITE of a read-only one (VM_MAYWRITE is cleared), write(2) and hole
//     punching, for every fd of the memfd, reopened ones included (the seals belong
//     to the inode).
//   - Huge pages are a preference, never a requirement: Create tries MFD_HUGETLB and
//     falls back to ordinary shmem pages with madvise(MADV_HUGEPAGE) when the hugetlb
//     pool is empty or the kernel refuses. (A peer holding a writable fd of a hugetlb
//     region can punch holes in it; if the pool is then empty, the creator's next
//     fault there is a SIGBUS. Use huge pages only where the peers are trusted with
//     that.)
//   - Futex operations are non-private (no FUTEX_PRIVATE_FLAG) because the words live
//     in mappings shared by several processes.
//
// Lock order: the package holds no locks. A Region is not safe for concurrent Close;
// its memory is, by design, shared.
package shm
