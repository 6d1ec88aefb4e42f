// Package back is the service side of the direct path (the "back driver"): it listens
// on a Unix socket, admits clients after checking their peer credentials and their
// uid's quotas, gives each one a private shared arena with its own submission ring,
// and runs worker threads that take descriptor indices from the clients' rings,
// validate them and the descriptors field by field, and dispatch them to a Handler
// (the filesystem service plugs in there), answering in the descriptor itself.
//
// It is not the filesystem service, and not the client (ipc/front).
//
// # The client boundary
//
// Clients of one service do not trust each other (they may be different users of a
// tenant, or one compromised program). The rule: no memory that a client can write
// holds anything another client, or the service's handling of another client,
// depends on.
//
//   - Each client has its own arena (a memfd the service creates, size-sealed, that
//     only that client and the service map): header, submission ring, descriptors,
//     data area (layouts in ipc/wire). A request's buffer must lie in the data area
//     of the arena it came from (wire.Validate with that client's limits), handles
//     are per client (ClientCtx's handle table), so nothing a client writes names
//     another client's memory, descriptors or handles.
//   - The ring is a single array of 64-bit entries seq<<32 | index. The client
//     reserves positions with a counter in its own process memory (several
//     goroutines may submit) and publishes position p with one atomic store of
//     RingEntry(p+1, index). The service keeps each client's consumer position
//     (ClientCtx.head) in service memory; a worker takes position h only if the
//     entry there carries sequence h+1, by CAS on the private head, so each position
//     is taken once. An honest client has at most one entry per descriptor untaken
//     (a descriptor is released only after its answer, which comes after its
//     position was taken), so a ring of at least as many entries as descriptors
//     never overruns.
//   - Whatever a client writes into its ring, the service at worst reads an entry
//     with the wrong sequence (its own ring then looks empty: its loss) or takes a
//     bogus index. An index is acted on only if it is below the descriptor count
//     and the descriptor's State is Submitted or Sleeping; anything else is
//     corruption: the client is marked dead, its socket closed, and its watcher
//     reclaims it as if it had died (logged once per client, at most once a second
//     overall; Stats.Corrupt counts them). The service never needs a restart.
//   - What clients must read of the service's state, the number of sleeping
//     workers, is in a status page: a memfd the service maps writable and then
//     seals with F_SEAL_FUTURE_WRITE (and SHRINK, GROW, SEAL) before passing it, so
//     clients can map it read-only only, cannot mprotect it writable, write(2) it,
//     resize it or punch holes in it (tested from a hostile process).
//   - Wake-ups go through one eventfd per client: a shared one could be read by a
//     client to steal everybody's wake-ups. A client can only write its own, which
//     wakes a worker (costing that worker a pass over the rings, as a request
//     would).
//   - Workers poll every live client's ring in passes that take at most one request
//     per client and start at a different client each time: a client that floods
//     gets one request per pass, like every other client with work. (A handler that
//     blocks holds its worker; a worker that takes a request while others sleep and
//     more work is waiting wakes one first, so one slow request does not stall the
//     rest.)
//
// The ring could instead have been an RCQB queue per client (ipc/rcqb), but its
// consumer state lives in the shared region, which the client can write, and the
// service would have to trust it; the private-head array needs no shared consumer
// state at all, and one store per request on the client side.
//
// # Wake-up protocol
//
// A worker with nothing to do spins (SpinBudget empty passes, then SpinTime with
// sched_yield) and then sleeps in epoll_wait on one epoll set holding every client's
// eventfd (edge-triggered) and the service's own eventfd (level-triggered; Close and
// SetWorkers make it readable, no client involved, and nothing in the rings does
// it). The number of sleeping workers is in the status page.
//
//	client                            worker
//	(1) store entry (atomic)          (a) sleepers += 1 (atomic)
//	(2) load sleepers (atomic)        (b) look at every ring once more
//	    if > 0: write own eventfd     (c) nothing: epoll_wait
//
// Both sides use sequentially consistent atomics (Go's sync/atomic; a C client uses
// __ATOMIC_SEQ_CST), so (1) before (2) and (a) before (b) hold, and in the single
// total order of those four either (1) comes before (b)'s load of that ring, and the
// worker finds the request and does not sleep, or (b) comes before (1), so (a) <
// (b) < (1) < (2) and the client sees the sleeper and writes its eventfd, which was
// in the epoll set since the client's admission: the eventfd is then ready, and
// epoll_wait in (c) returns at once even if the write came before it. No wake-up is
// lost (TestWakeUpRace forces (1) between (b) and (c) every time; TestNoLostWakeups
// runs many ping-pongs against workers that sleep at once). While any worker is
// awake and polling, clients make no system call at all (TestWakeOnlyWhenAsleep).
// One eventfd write wakes one waiter; two writes of one client may coalesce into
// one wake-up, which is why a worker that takes a request while another sleeps and
// more work waits wakes one before serving.
//
// # Resources
//
// Every client costs the service FdsPerClient file descriptors (its socket and its
// eventfd; the arena's memfd is closed once passed, the mapping stays) and every
// handshake in progress at most FdsPerHandshake. Bounds, each refused with EAGAIN
// (slots, handshakes) or EMFILE (handles) to the one client over it: MaxClients,
// MaxClientsPerUID (so root and other uids can still connect when one uid fills
// its share), MaxPendingPerUID and MaxPending (a connection over them is answered
// from the accept loop at once, before it costs a goroutine; handshakes end after
// HandshakeTimeout), MaxHandles per client and Config.Quota per uid (service sizes
// all of these under RLIMIT_NOFILE). A refusal is sent, then the socket is shut and
// drained before it is closed, so the client reads why rather than a reset. A
// failing accept (EMFILE) backs off up to 100 ms; every repeated failure is logged
// at most once a second with a count of what was suppressed.
//
// # Failures
//
// A client that disconnects (or is killed, or is disconnected for corruption) is
// noticed by the goroutine that watches its socket: the client is marked dead and
// taken off the list the workers poll, the service waits for its in-flight
// requests to finish, calls Handler.ClientGone, frees its slot, and, once every
// worker has been outside a pass since the list changed (quiescent-state
// reclamation on the workers' epochs), unmaps the arena.
//
// Workers can be added and retired at run time (SetWorkers): a surplus worker exits
// between two passes; sleeping ones are woken through the service's eventfd.
// Listen and SetWorkers return once the workers they start run (pinned, with CPUs).
//
// # Invariants
//
//   - A worker reads a client's ring only during a pass (epoch odd) over a client
//     list that contained it; the arena is unmapped only after the client left the
//     list and every worker's epoch has changed or been even since.
//   - A worker touches a client's descriptors and data only between
//     inflight.Add(1) and inflight.Add(-1), and only after seeing the client not
//     dead; ClientGone runs only after dead is set and inflight was seen at zero.
//   - A ring position is taken once (CAS on the service's private head); a
//     descriptor is answered only if its State was Submitted or Sleeping.
//   - Nothing read from client memory is used without validation, and nothing the
//     service keeps about a client (layout, head, handles) lives in client memory.
//
// Lock order: Service.workersMu (SetWorkers, a worker retiring or exiting, reclaim's
// and StuckWorkers' snapshots of the workers) is a leaf, and so is the stuck
// watch's lock (StuckWorkers, taken after workersMu is released). Service.mu (client slots, per-uid counts, the
// published client list, accept bookkeeping) before ClientCtx.handlesMu (that
// client's handle table), which is held while the handle quota is called. Serving
// a request, workers take no Service-wide lock, only the handle table lock of the
// client they serve.
//
// # Performance
//
// `go test -run '^$' -bench . -benchmem ./ipc/back` (both sides in one process,
// separate mappings; allocations of both sides counted) and `polytropon perf ipc`
// (client and service in separate processes) measure the empty round trip with the
// service spinning and sleeping; TestRoundTripAllocs pins zero allocations per
// round trip on both sides. Figures, with the machine and the date, are in
// docs/results/.
package back
