// Package front is the client side of the direct path (the "front driver"): it
// connects to a service's Unix socket, maps the service's status page (read-only)
// and its own arena received at the handshake, and turns calls (Nop, Stat, Open,
// ReadAt, WriteAt, ...) into descriptors in its arena whose indices it publishes in
// its own submission ring; the answer comes back in the descriptor itself.
//
// It is not the application API (fslib builds os-like files on it) and not the
// service (ipc/back, whose package doc describes the protocol and the client
// boundary).
//
// # Submitting
//
// A call takes a free descriptor, writes its request, stores StateSubmitted, then
// reserves the next ring position with an atomic add on a counter in this process's
// memory and publishes the descriptor index there with one atomic store. It then
// reads the status page's count of sleeping workers and writes its own eventfd only
// when one sleeps, so no system call is made while a worker is awake. The ring has
// at least as many entries as descriptors and a position is reserved only by a call
// that holds a descriptor, so it never overruns; a call never waits for ring space.
//
// # Waiting for an answer
//
// After publishing, a call polls the descriptor's State word for Config.SpinIters
// iterations and then for up to Config.SpinTime (50 µs by default: an open or a
// create answered within it costs no futex wake on either side); then it announces
// that it sleeps (CAS StateSubmitted -> StateSleeping) and FUTEX_WAITs on the word
// for at most Config.WaitSlice, so the service makes a wake system call only for a
// client that really sleeps. A client left with the default waiting whose process
// and service may run on one and the same CPU only (a pool with one reserved core;
// checked at Dial through SO_PEERCRED's pid and both affinity masks) sleeps at once
// instead: its polling would hold the CPU the answer needs (SleepsAtOnce reports
// the choice). After each slice that ends without an answer the call polls the
// socket: a service that died (its socket end closed by the kernel), or that
// disconnected this client, makes the call return ENOTCONN within about one
// WaitSlice, and every later call on the Client fails at once.
//
// # A live service that does not answer
//
// Death is detected by the socket; a hung service (a handler stuck on a lock, a
// process stopped with SIGSTOP) is not dead. A call gives up after
// Config.CallTimeout with ETIMEDOUT, and so does a call that waits that long for a
// free descriptor. CallTimeout defaults to DefaultCallTimeout (30 s, see there why);
// a negative value waits as long as the service lives, like a hard NFS mount. The
// timed-out descriptor still belongs to the service, which may write its buffer
// whenever it answers, so it is never handed out again until it does: the call
// marks it orphaned, and at its release a reaper goroutine waits for the answer
// (futex slices, liveness checks), then frees it. A write whose call timed out may
// still be applied later; a read's data is dropped; a handle or lock the service
// grants to an open, create or lock that timed out is closed by the reaper.
// CallTimeout bounds each request: a ReadAt or WriteAt split into k requests may
// take up to k times as long, and returns what completed.
//
// # Handshake
//
// Dial sends a Hello and reads the Welcome even if the Hello could not be sent (a
// service refusing a uid over its quota answers and shuts the socket at once): a
// refusal is ErrRefused wrapping the service's errno (EACCES: credentials; EAGAIN:
// no slot, or the uid's share of slots or handshakes is used;
// EPROTONOSUPPORT: version). The client checks everything it is given before using
// it: three fds, the status page and the arena sealed against resizing (a peer
// could otherwise SIGBUS it), the third an eventfd, the status page's magic and
// version, and the arena header against the Welcome and the mapping (ring size a
// power of two no smaller than the descriptor count, ring, descriptors and data
// inside the arena, not overlapping); anything else is ErrBadWelcome.
//
// # Concurrency
//
// A Client is safe for concurrent use; its descriptors are handed out from a free
// list (a buffered channel of indices), so at most Config's descriptor count of calls
// are in flight and the rest wait for a descriptor. No lock is shared between
// clients; within one Client the free list and the ring's position counter are the
// only shared structures.
//
// Invariants: a descriptor index is owned by exactly one call from acquire to
// release, or by one reaper from a timed-out call's release to the service's
// answer; its buffer (the descriptor's slot in the data area) is touched only by
// that owner and, between publishing and StateDone, by the service. A ring position
// is written once per lap, by the call that reserved it, and only after its
// descriptor's request is complete. A descriptor whose answer never came (dead
// service) is never reused: the Client is broken from then. Close stops the
// reapers before it unmaps the arena, and the mappings are released only when
// the last reference goes (the open Client's, dropped by Close, and one per call
// from acquire to done), so a Close on one goroutine never unmaps memory a call
// on another still uses.
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
// `polytropon perf ipc` (client and service in separate processes) and
// `go test -run '^$' -bench Nop -benchmem ./ipc/back` (both sides in one process,
// separate mappings) measure the empty round trip with the service spinning and
// sleeping. Dated figures are in docs/results/ (2026-11-21/ipc-front.md for the
// shared-ring design, 2026-12-07/ for the per-client rings).
package front
