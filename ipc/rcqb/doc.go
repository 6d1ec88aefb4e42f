// Package rcqb is the relaxed concurrent queue with bounded waiting (RCQB) that
// carries requests on polytropon's direct path: a bounded multi-producer
// multi-consumer queue of uint64 values that works in process memory and over a
// shared region mapped by several processes. It is not a general container (no
// iteration, no peek, no resize) and it does not allocate on any operation.
//
// # Protocol
//
// The queue has a fixed power-of-two number of slots. Enqueuers take tickets by
// fetch-and-add on tail and dequeuers by fetch-and-add on head (sequential
// distribution); ticket t uses slot t & (cap-1) in lap t / cap. Each slot has a
// 64-bit sequence word seq = lap<<2 | state, with the states
//
//	FREE(k) -> ENQPND(k) -> OCCUPIED(k) -> DEQPND(k) -> FREE(k+1)
//
// An enqueuer of lap k waits for FREE(k) (the dequeuer of lap k-1 has finished),
// moves it to ENQPND(k) by CAS, writes the value and CASes OCCUPIED(k). A
// dequeuer of lap k waits for OCCUPIED(k), CASes DEQPND(k), reads and CASes
// FREE(k+1). Every transition is a CAS on the exact expected word, so a party
// whose slot moved on without it (cancel or reclaim, below) notices instead of
// overwriting. Operations on different slots complete in parallel and in any
// order (parallel completion).
//
// # Pending states
//
// Only stall reclaim (below) ever moves a slot out of ENQPND or DEQPND other
// than the party that put it there. Where no reclaim can happen, that is, a New
// queue without WithStallTimeout, the queue runs in release mode: the party
// leaves its pending state with a release store (a plain MOV on amd64, see
// store_tso_unsafe.go) instead of a second CAS, one locked instruction per side
// per value besides the ticket instead of two. In a region (Init, Attach) every
// handle, in any process, may reclaim, and a stopped party that resumed after
// a reclaim would store over a slot that moved on: an enqueuer would report
// success for a value nobody gets, a dequeuer could deliver a later lap's value
// twice. So regions keep the CAS: the protocol on a shared region is the one
// above.
//
// # Single producer, single consumer
//
// WithSPSC (New only, no stall timeout) declares one producer and one
// consumer at a time. Nobody then contends for a ticket or a slot and only
// the ticket's holder moves a slot, so each side keeps its counter (tail,
// head) with plain loads and stores and moves its slot through the same
// states with plain stores: no locked instruction per value, where release
// mode has two per side. What the locked instructions did for the wake-up
// handshake and for Close, membarrier(2) does on the rare side: a sleeper
// runs it between registering and re-reading the word, and Close runs it
// between raising the closed flag and marking it settled, while a producer
// re-reads the flag after its plain store of ENQPND and backs out to FREE if
// it sees it. A consumer that sees the flag settled and its slot FREE returns
// ErrClosed; one that sees ENQPND waits. Without membarrier the producer
// enters ENQPND by CAS and both sides leave their pending states by CAS. A
// broken promise (two producers or two consumers at once) loses or duplicates
// values; the queue returns ErrConcurrentUse where it notices one. The
// argument, and why no test can catch a missing fence, are in spsc.go.
//
// # Waiting
//
// A waiter polls the word at least WithSpin times and for at least WithSpinTime,
// in blocks of 64 polls with nothing else in the loop (a call and a budget
// check per poll cost SPSC mode a sixth of its 1P1C rate), yielding the P
// between blocks, then registers in the slot's waiters count and
// sleeps in FUTEX_WAIT on the low 32 bits of the word, for at most a wait slice
// (WithWaitSlice) before it re-checks. Futexes on a region from Init or Attach
// are non-private (no FUTEX_PRIVATE_FLAG), so they work across processes on a
// MAP_SHARED mapping; New uses private futexes.
//
// Wake-ups cost a system call only when somebody sleeps. A party reads the
// waiters count after the CAS that changes the word (leaving a pending state,
// cancel, reclaim) and calls FUTEX_WAKE only if it saw sleepers; a sleeper
// increments the count before it re-reads the word. Both first steps are
// sequentially consistent read-modify-writes (locked instructions, which x86
// orders totally), so either the party sees the sleeper or the sleeper sees the
// new word. In release mode the last change is a plain store, and a load after
// a store may pass it on x86 (the store waits in the store buffer), so the
// party reads the count right after the CAS that entered the pending state and
// wakes after its store if it saw sleepers: a sleeper that registered later
// re-reads a pending word or a later one, never the old word. What such a
// sleeper must not do is sleep a whole slice on the pending word: in release
// mode a sleep on ENQPND or DEQPND lasts at most 100 µs, in practice only when
// the owner was descheduled between its two steps.
//
// The spin time matters in Go: a goroutine asleep in FUTEX_WAIT keeps its P
// until the runtime's monitor hands it off, 20 µs to 10 ms later, so with more
// goroutines than Ps an early sleep also stalls the goroutines queued behind it,
// often the very peer being waited for. A poll count alone bounds the spin to
// about a microsecond, far below that hand-off, so the spin also lasts at least
// DefaultSpinTime (200 µs), which removed almost every such sleep at 2P2C in the
// runs of docs/results/2026-11-21/rcqb.md. Callers that must not burn CPU pass
// WithSpin(0) and wait their own way (the ipc drivers do).
//
// # Ordering
//
// The value with enqueue ticket t goes to the dequeuer holding dequeue ticket t.
// Tickets are handed out in order, and one goroutine's successive operations take
// increasing tickets, so: (1) with one consumer, values from each producer come
// out in that producer's order (FIFO per producer); (2) with several consumers,
// values of one producer that reach the same consumer reach it in order (FIFO per
// producer-consumer pair); (3) across consumers, only ticket order holds:
// completion may reorder (relaxed FIFO). TryEnqueue and TryDequeue take tickets in
// the same order. The guarantees assume no ticket was reclaimed (below).
//
// # Close
//
// Close sets the closed bit in the tail word (atomic OR, so every enqueue ticket
// is either below the closing tail or sees the bit), sets the closed flag and
// wakes every registered sleeper in every process. After Close: Enqueue returns
// ErrClosed; a blocked enqueuer returns ErrClosed; Dequeue returns the values
// whose enqueue ticket was taken, then ErrClosed. A dequeuer whose ticket has no
// value coming finds its slot FREE for its lap and cancels the lap by CAS to the
// next FREE (the late enqueuer's CAS fails and it reports ErrClosed), then takes
// the next ticket; once head reaches the tail, Dequeue returns ErrClosed.
// A sleeper that registers while Close runs may miss its wake-up and notice the
// flag at the end of its wait slice. An SPSC queue closes differently: no
// closed bit, no cancelled laps (see Single producer, single consumer).
//
// # Dead peers and stall reclaim
//
// A process can die holding a ticket (most often while it sleeps, waiting for
// its slot). Without help its slot would stop at FREE(k) (a dead enqueuer) or
// OCCUPIED(k) (a dead dequeuer) and the queue would wedge one lap later. With a
// stall timeout (WithStallTimeout; on by default for Init and Attach, off for
// New), a waiter that sees its slot's word unchanged for that long while the
// party that must move it holds its ticket (FREE with tail past the ticket,
// OCCUPIED with head past it, or ENQPND/DEQPND) reclaims the slot by CAS to the
// next lap's FREE, and the operations whose tickets were skipped retry with new
// tickets. Reclaim is done by waiters: Enqueue and Dequeue in their waits, and
// DequeueTimeout on the head slot; TryDequeue skips a head ticket whose slot
// has moved past its lap. A consumer that only polls TryDequeue, fed only by
// TryEnqueue, never reclaims: behind a dead enqueuer it sees an empty queue.
// What a dead process costs: the value it was enqueuing or dequeuing (at most
// one per operation in flight in it) is lost; values are never duplicated;
// everybody else keeps going; nobody waits forever. What a stopped (not dead)
// peer costs when it stalls longer than the timeout: its in-flight ticket is
// skipped (a dequeuer's value is lost, an enqueuer retries). If an enqueuer
// stopped exactly between writing ENQPND and writing the value, and the slot's
// next lap was published before it resumed, its late write replaces that
// lap's value: it then reports its own value enqueued instead of retrying, so
// one of the two values is lost and neither is delivered twice. The timeout
// must therefore be far longer than any scheduling delay (default 1s). The
// stall clock starts at the first check that finds the party that must act
// holding its ticket: time a waiter spent on a full or empty queue before
// that does not count against a peer that has just taken its ticket. A
// sleeper killed while registered leaves the slot's waiters count raised:
// wakers then make one useless FUTEX_WAKE per operation on that slot, which is
// slower, not wrong.
//
// # Shared layout
//
// A region holds a header and the slots, in native byte order, at these offsets
// (constants off*, slot*):
//
//	0    +--------------------------------------------------------------+
//	     | magic u64 | version u32 | capacity u32 | slotSize u32        |
//	     | headerSize u32 | closedTail u64 (tail at Close + 1)           |
//	128  +--------------------------------------------------------------+
//	     | tail u64 (bit 63: closed)                 (own 128 B block)  |
//	256  +--------------------------------------------------------------+
//	     | head u64                                  (own 128 B block)  |
//	384  +--------------------------------------------------------------+
//	     | closed u32                                (own 128 B block)  |
//	512  +--------------------------------------------------------------+
//	     | slot 0: seq u64 @0 | data u64 @8 | waiters u32 @16 | pad     |
//	     | slot 1 ...          (slotSize bytes each: 64 padded, 32 packed)
//	     +--------------------------------------------------------------+
//
// No Go pointer is ever stored in the region; all references are offsets. Init
// writes the magic last; Attach checks magic, version, header size, capacity
// (a power of two in [MinCapacity, MaxCapacity]), slot size, and that the region
// is long enough, and caches them, so a header corrupted later cannot move an
// access outside the region.
//
// # Invariants and locks
//
// A slot's sequence word only increases, with one exception: an SPSC producer
// that finds the queue closed after entering ENQPND(k) puts the slot back to
// FREE(k) by CAS (same lap; nothing else moved it meanwhile). head and tail
// only increase (tail's bit 63 is set once). The package has no locks. Every
// shared word is accessed with sync/atomic except plain stores by the owner of
// a slot or counter: the value; and, as plain MOVs on amd64 in gc builds
// without the race detector (atomic stores elsewhere), in release mode the
// word that leaves the pending state, in SPSC mode the slot word's steps and
// the producer's tail and consumer's head. The sleep/wake handshake relies on
// the sequential consistency of sync/atomic's read-modify-writes (on amd64,
// the total order of locked instructions; Waiting, above), and in SPSC mode
// with membarrier, the wake-ups and Close rely on membarrier (spsc.go).
//
// # Layout choice
//
// Padded (one slot per cache line) is the default: at 1P1C, where consumer and
// producer work a few slots apart, two slots per line make them fight over the
// line; at 2P2C and 4P4C the two layouts measure within noise. Packed halves
// the region.
//
// # Measuring
//
// `polytropon perf ipc` measures the queue in one run against a buffered
// channel, a ring behind a mutex and Vyukov's bounded MPMC queue (package
// perf/ipcperf/throughput holds those baselines), and the direct path's round
// trip against a Unix socket and a pipe. In process: `go test -run '^$' -bench
// . -benchmem ./ipc/rcqb` (the uncontended cost, a hand-off round trip) and
// `./perf/ipcperf/throughput` (throughput per kind and per spin budget). The
// goals (issue 3): RCQB at least the Vyukov baseline at 2P2C; a 1P1C queue
// (WithSPSC) at least 3x the buffered channel; no allocation on any operation
// (TestZeroAllocs, both modes). Dated runs, with what made the figures and
// what was tried and dropped, are in docs/results/2026-11-21/rcqb.md.
package rcqb
