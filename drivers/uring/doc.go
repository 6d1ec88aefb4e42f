// Package uring is a thin io_uring ring over golang.org/x/sys/unix: raw
// io_uring_setup, io_uring_enter and io_uring_register system calls, the submission
// and completion rings mapped into the process, and preparation helpers that fill
// submission queue entries (SQEs) in place.
//
// # Why not an existing library
//
// The design card named github.com/iceber/iouring-go. It does not link on Go 1.26
// ("invalid reference to syscall.Sockaddr.sockaddr", its issue #32); its SQPOLL
// wake-up passes IORING_SQ_NEED_WAKEUP to io_uring_enter where IORING_ENTER_SQ_WAKEUP
// belongs, so a ring whose poller went idle hangs (its issue #26); and it starts a
// goroutine and a channel per request, which cost 2-3x fio's CPU per I/O. giouring
// does not link either, and go-uring lacks SQE128 and URING_CMD. This package has no
// goroutines: the goroutine that owns a Ring submits and reaps, and each completion
// carries the caller's cookie in user_data.
//
// # Memory layout
//
// With IORING_FEAT_SINGLE_MMAP (every kernel since 5.4) one mapping at offset
// IORING_OFF_SQ_RING holds both ring headers; the SQE array is a second mapping at
// IORING_OFF_SQES. Offsets inside the ring mapping come from io_uring_params:
//
//	ring mapping:  sq_off.head  sq_off.tail  sq_off.ring_mask ... sq_off.flags  sq_off.array[entries]uint32
//	               cq_off.head  cq_off.tail  cq_off.overflow     cq_off.cqes[cq_entries]CQE (16 or 32 bytes each)
//	SQE mapping:   entries x 64 bytes (128 with IORING_SETUP_SQE128; URING_CMD's cmd area at byte 48)
//
// The process writes the SQ tail and the CQ head; the kernel writes the SQ head and
// the CQ tail. Each side publishes with sync/atomic stores and observes the other with
// sync/atomic loads (sequentially consistent in Go, which is at least the
// release/acquire order the kernel's ring protocol needs, and the full barrier SQPOLL
// needs between storing the SQ tail and reading IORING_SQ_NEED_WAKEUP). The SQ index
// array is filled once with the identity mapping, so slot i of the SQE array is always
// submitted as entry i.
//
// # Invariants and rules
//
//   - A Ring is owned by one goroutine at a time: GetSQE, Submit, WaitCQEs and the rest
//     are not safe for concurrent use. Hand a Ring to another goroutine only with a
//     happens-before edge (a channel send, a mutex). With WithSingleIssuer or
//     WithDeferTaskrun the kernel also ties the ring to the OS thread that created it,
//     so the owner must call runtime.LockOSThread before New and keep it locked.
//   - Every buffer, iovec array, path and sockaddr handed to a preparation helper must
//     stay reachable and must not move until its completion has been reaped: use heap
//     or mmap memory (blockdev/alignedbuf), never a stack array, since the kernel holds
//     only its address.
//   - The ring never loses a completion: when the completion queue overflows (the
//     kernel keeps the excess and sets IORING_SQ_CQ_OVERFLOW), reaping enters the
//     kernel with IORING_ENTER_GETEVENTS to flush them. io_uring_enter interrupted by
//     Go's preemption signal (EINTR) is retried until a completion is visible, a
//     bounded number of times; EBUSY and EAGAIN (no room for more completions) leave
//     the unsubmitted entries queued and report ErrBusy so the owner reaps first.
//
// There are no locks in this package.
//
// Measure: `go test -run '^$' -bench Nop -benchmem ./drivers/uring` (a
// submission and completion round trip), and the devices on top of it with
// `polytropon perf blockdev --dev PATH --vs-fio`.
package uring
