// Package back is the service side of the direct path (the "back driver"): it listens
// on a Unix socket, admits clients after checking their peer credentials, gives each
// one a private shared arena, and runs worker threads that take descriptor references
// from the request ring, validate them field by field and dispatch them to a Handler
// (the filesystem service plugs in there), answering in the descriptor itself.
//
// It is not the filesystem service, and not the client (ipc/front).
//
// # Design
//
// One request ring per service, shared by all its clients. RCQB is a multi-producer,
// multi-consumer queue whose consumers sleep on the ring itself, so N workers serve
// any number of clients with no polling over per-client rings (a worker cannot sleep
// on many rings at once). The ring carries only references (wire.Ref: client slot,
// client generation, descriptor index), never pointers or offsets, and every
// reference is resolved against the service's own client table. Isolation therefore
// does not depend on the ring: a client that scribbles on the ring can disturb only
// the scheduling of its own tenant's service (one service serves one pool), never
// make the service touch another client's memory.
//
// One arena per client, created by the service (memfd, sealed size) and passed at the
// handshake: a header, the client's descriptors, and its data area. A request's
// buffer must lie inside the data area of the arena of the client whose reference
// carried it (wire.Validate with that client's limits); handles are per client
// (ClientCtx's handle table), so a handle opened by one client means nothing in
// another's request (EBADF).
//
// Completion goes back through the descriptor: status and result, then an atomic swap
// of the State word to StateDone and a FUTEX_WAKE only if the client had announced
// it was sleeping.
//
// # Failures
//
// A client that disconnects (or is killed) is noticed by the goroutine that watches
// its socket: the client is marked dead, the service waits for its in-flight
// descriptors to finish (workers check the mark after announcing themselves, so none
// starts on a dead client), calls Handler.ClientGone, unmaps the arena and frees the
// slot with a new generation, so stale references still in the ring are dropped.
//
// Invariants: a worker touches a client's arena only between inflight.Add(1) and
// inflight.Add(-1), and only after seeing the client not dead; the arena is unmapped
// only after dead is set and inflight has been seen at zero.
//
// Workers can be added and retired at run time (SetWorkers): a retire reference
// in the ring (slot 0xffff, never a client's) makes whichever worker takes it exit
// between two requests, while more workers run than the target.
//
// Lock order: Service.workersMu (SetWorkers, and a worker retiring) is a leaf.
// Service.mu (client slots, accept bookkeeping) before ClientCtx.handlesMu (that
// client's handle table). Serving a request, workers take no Service-wide lock,
// only the handle table lock of the client they serve; workersMu only when a
// retire reference reaches them.
//
// # Performance
//
// Measured with `polytropon perf ipc` and the benchmarks in this package
// (bench_test.go); figures are in ipc/front's package doc. The per-request path
// (serve, dispatch) allocates nothing: each worker owns its private descriptor copy.
package back
