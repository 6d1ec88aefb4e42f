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
// iterations and then for up to Config.SpinTime (50 µs by default: an open or a
// create answered within it costs no futex wake on either side); then it announces that it sleeps (CAS StateSubmitted -> StateSleeping)
// and FUTEX_WAITs on the word for at most Config.WaitSlice, so the service makes a
// wake system call only for a client that really sleeps. A client left with the
// default waiting whose process and service may run on one and the same CPU only
// (a pool with one reserved core; checked at Dial through SO_PEERCRED's pid and
// both affinity masks) sleeps at once instead: its polling would hold the CPU the
// answer needs (round trip 22 us polling, 8 us sleeping, on one CPU of the Zen 3
// VM, 2026-11-21; SleepsAtOnce reports the choice). After each slice that ends
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
// release, or by one reaper from a timed-out call's release to the service's
// answer; its buffer (the descriptor's slot in the data area) is touched only by
// that owner and, between enqueue and StateDone, by the service. A descriptor
// whose answer never came (dead service) is never reused: the Client is broken
// from then. Close stops the reapers before it unmaps the arena.
//
// # A live service that does not answer
//
// Death is detected by the socket; a hung service (a handler stuck on a lock, a
// process stopped with SIGSTOP) is not dead. With Config.CallTimeout a call gives
// up after that long with ETIMEDOUT, and so does a call that waits that long for
// a free descriptor. The timed-out descriptor still belongs to the service, which
// may write its buffer whenever it answers, so it is never handed out again until
// it does: the call marks it orphaned, and at its release a reaper goroutine waits
// for the answer (futex slices, liveness checks), then frees it. A write whose
// call timed out may still be applied later; a read's data is dropped; a handle
// or lock the service grants to an open, create or lock that timed out is closed
// by the reaper. CallTimeout bounds each request: a ReadAt or WriteAt split into
// k requests may take up to k times as long, and returns what completed.
//
// Lock order: reapMu (Close against the start of a reaper, only on the timeout
// path) is the one lock and is never held with another; the rest is channels
// and atomics.
//
// All payload copies between a caller's buffer and the arena go through
// shm.CopyData.
//
// # Performance
//
// Empty-request (OpNop) round trips, measured with `polytropon perf ipc` (client and
// service in separate processes, 200000 round trips each, one run) and
// `go test -bench Nop -benchmem ./ipc/back` (both sides in one process, separate
// mappings), on 2026-11-21, 2 vCPU "AMD EPYC" (CPUID family 25 model 1, Zen 3) VM shared with other jobs, so
// read ratios, not absolutes:
//
//	path                         p50       p99       ops/s
//	direct, service spinning     531 ns    661 ns    1.40 M
//	direct, service sleeping     9.4 us    194 us    34 k
//	Unix socket (stream, echo)   26.2 us   76 us     35 k
//	pipe (echo)                  15.0 us   475 us    16 k
//
// Unix-socket p50 / direct-spinning p50 = 49x in that run (goal >= 5x; p50 goal
// <= 1.5 us met). A sleeping service costs a futex wake plus a scheduler hand-off per
// request (~9 us here, about 18x the spinning path): spinning is for pools with a
// reserved core. Benchmarks: BenchmarkNopServiceSpinning 551 ns/op, 0 B/op,
// 0 allocs/op; BenchmarkNopServiceSleeping 14.7 us/op, 0 allocs/op; BenchmarkWrite4K
// 0 allocs/op (allocations of both sides counted).
package front
