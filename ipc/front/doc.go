// Package front is the client side of the direct path (the "front driver"): it
// connects to a service's Unix socket, maps the request ring and its private arena
// received at the handshake, and turns calls (Nop, Stat, Open, ReadAt, WriteAt, ...)
// into descriptors in its arena whose references it enqueues on the ring; the answer
// comes back in the descriptor itself.
//
// It is not the application API (fslib builds os-like files on it) and not the
// service (ipc/back).
//
// # Waiting for an answer
//
// After enqueueing, a call polls the descriptor's State word for Config.SpinIters
// iterations; then it announces that it sleeps (CAS StateSubmitted -> StateSleeping)
// and FUTEX_WAITs on the word for at most Config.WaitSlice, so the service makes a
// wake system call only for a client that really sleeps. After each slice that ends
// without an answer the call polls the socket: a service that died (its socket end
// closed by the kernel) makes the call return ENOTCONN within about one WaitSlice,
// and every later call on the Client fails at once. A full ring is handled the same
// way: TryEnqueue with bounded back-off and a liveness check, never an unbounded
// blocking enqueue on a ring whose consumer may be dead.
//
// # Concurrency
//
// A Client is safe for concurrent use; its descriptors are handed out from a free
// list (a buffered channel of indices), so at most Config's descriptor count of calls
// are in flight and the rest wait for a descriptor. No lock is shared between
// clients; within one Client the free list is the only shared structure.
//
// Invariants: a descriptor index is owned by exactly one call from acquire to
// release; its buffer (the descriptor's slot in the data area) is touched only by
// that call and, between enqueue and StateDone, by the service. A descriptor whose
// answer never came (dead service) is never reused: the Client is broken from then.
//
// Lock order: the package holds no locks (channels and atomics only).
//
// All payload copies between a caller's buffer and the arena go through
// shm.CopyData.
//
// # Performance
//
// Empty-request (OpNop) round trips, `go test -bench . -benchmem ./ipc/front` and
// `polytropon perf ipc`; see the end of this comment for figures.
package front
