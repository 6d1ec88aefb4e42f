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
// # Waiting
//
// A waiter polls the word at least WithSpin times and for at least WithSpinTime,
// yielding the P every 64 polls, then registers in the slot's waiters count and
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
// often the very peer being waited for. 4096 polls alone last about a
// microsecond here; with them only, 2P2C throughput ran at 127 % CPU of 200 %
// (about 2000 sleeps of ~200 µs per 10 million values). DefaultSpinTime (200 µs)
// left almost none. Callers that must not burn CPU pass WithSpin(0) and wait
// their own way (the ipc drivers do).
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
// flag at the end of its wait slice.
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
// sleeper killed while
// registered leaves the slot's waiters count raised: wakers then make one
// useless FUTEX_WAKE per operation on that slot, which is slower, not wrong.
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
// A slot's sequence word only increases. head and tail only increase (tail's
// bit 63 is set once). The package has no locks. Every shared word is accessed
// with sync/atomic except plain stores by the owner of a pending slot: the
// value, and in release mode (on amd64 outside race builds) the word that
// leaves the pending state. The sleep/wake handshake relies on the sequential
// consistency of sync/atomic's read-modify-writes (on amd64, the total order
// of locked instructions; Waiting, above).
//
// # Layout choice and performance
//
// Measured 2026-11-21 08:00-08:10 UTC on the project's development VM (2 vCPU
// "AMD EPYC", CPUID family 26 model 2, i.e. Zen 5, with AVX-512; Linux 6.18,
// Go 1.26.8, GOMAXPROCS 2, nothing else running but the VM's host is shared;
// earlier sessions' figures came from a Zen 3 VM), capacity 1024, all kinds in
// the same run.
// `polytropon perf ipc`, six runs (M values/s, range and median):
//
//	            1P1C                2P2C                4P4C
//	rcqb        21-42 (median 37)   33-44 (41)          32-47 (40)
//	chan        20-26 (23)          19-26 (24)          20-26 (23)
//	vyukov      29-34 (31)          31-36 (34)          31-36 (33)
//	mutex-ring  26-35 (30)          19-26 (23)          13-16 (14)
//
// Per run, RCQB / Vyukov at 2P2C: 1.07, 1.37, 1.28, 1.19, 0.98, 1.18; RCQB /
// chan at 1P1C: 1.67, 1.18, 1.42, 2.07, 0.91, 1.45. `go test -bench
// Throughput` (eight process runs, ns per value): rcqb 1P1C 23-33, 2P2C
// 22-24; vyukov 1P1C 27-29, 2P2C 28-30; chan 1P1C 42-52. Uncontended
// Enqueue+Dequeue by one goroutine: padded 34-37 ns, packed 32-35 ns.
// BenchmarkPingPong (round trip over two queues): spin 0 (futex every time)
// 11.7-13.5 us, default spin 176-182 ns. 0 allocs/op everywhere (-benchmem,
// and TestZeroAllocs).
//
// Two changes made these numbers (the code before them, `go test -bench` at
// 07:40 UTC the same morning: rcqb 1P1C 33-37 ns per value, 2P2C 52-64 ns):
// the spin time (see Waiting: sleeps, not the queue, cost 2P2C
// half its throughput) and release mode (about +25 % at 2P2C in A/B runs: a
// locked CAS stalls until its cache line arrives and drains the store buffer;
// a store retires into the buffer). These are New queues, in release mode;
// a queue in a region keeps the second CAS per side.
// Trying the dequeuer's CAS before reading the slot word (as the enqueuer
// does) stays: without it, 1P1C and 2P2C were 25-40 % slower. Software
// prefetch for write (PREFETCHW 4 or 16 slots ahead, by the producer, the
// consumer or both) gained nothing measurable in four A/B rounds and was
// dropped.
//
// Layout: padded (one slot per cache line) is the default: at 1P1C, where
// consumer and producer work a few slots apart, two slots per line make them
// fight over the line (packed 1P1C 27-36 ns against padded 21-32); at 2P2C
// and 4P4C the two are within noise.
//
// Goals (issue 3): RCQB >= the Vyukov baseline at 2P2C: met in five runs of
// six (median 1.19x). RCQB >= 3x the buffered channel at 1P1C: not met
// (median 1.4x). Where the floor is: a locked instruction costs 5.2 ns here
// even on a line the core owns (loops of atomic.Add, CAS or Store: 5.1-5.3 ns
// each, against 0.3 ns for a load), and each side of RCQB needs two per value
// (the ticket's fetch-and-add and the CAS into the pending state), 10.4 ns;
// the CAS into the pending state also waits for the slot's line to come from
// the other core, once per value. Vyukov's queue has the same two locked
// instructions per side and runs at the same 1P1C rate (27-29 ns). Three
// times the channel needs 13-17 ns per value: as far as these measurements
// show, that takes a protocol with fewer locked instructions per value
// (batches, or no shared tickets), not a better implementation of this one.
// 0 allocs/op: met.
package rcqb
