// Package wire is the byte layout of the direct path: the request descriptor that a
// client writes in its shared arena and the service answers in place, the arena
// header, the stat and directory-entry records that replies carry, and the field by
// field validation the service applies to every descriptor before acting on it.
//
// It is a format, not a transport: regions, fd passing and wake-ups live in ipc/shm,
// the protocol's behaviour in the front and back drivers. The same layout is declared for C
// in polytropon_wire.h beside this file (for the LD_PRELOAD client to come); a test
// compiles a program against that header with the system C compiler and checks every
// offset, size and constant against this package.
//
// # Descriptor (DescSize = 64 bytes, one cache line, little-endian)
//
//	0      2      4             8
//	+------+------+-------------+
//	| Ver  |  Op  |    Flags    |   0  Version, opcode, op flags (open flags)
//	+------+------+-------------+
//	|          ReqID            |   8  client's request id (generation)
//	|          Handle           |  16  client-visible handle (handle ops)
//	|          Offset           |  24  file offset / new size / readdir cookie
//	+-------------+-------------+
//	|   BufOff    |   Length    |  32  buffer inside the arena's data area
//	|    Aux      |   Status    |  40  path length / rename split | result: >=0 or -errno
//	+-------------+-------------+
//	|          Result           |  48  op result (handle, next cookie, size)
//	+-------------+-------------+
//	|   State     |    Mode     |  56  done word (futex) | create/mkdir mode
//	+-------------+-------------+
//
// State is the one word both sides touch concurrently, always atomically:
//
//	StateFree -> StateSubmitted (client, before enqueueing the reference)
//	StateSubmitted -> StateSleeping (client CAS, just before FUTEX_WAIT)
//	StateSubmitted|StateSleeping -> StateDone (service swap; FUTEX_WAKE only if the
//	                                            old value was StateSleeping)
//	StateDone -> StateFree (client, after reading the reply)
//
// so the service makes a wake system call only when the client really sleeps.
// Every other field is plain memory written before the State store that publishes it.
//
// # Buffers
//
// Path-carrying ops put the path in the buffer at BufOff: Aux is the path length and
// Length the buffer's capacity (>= Aux); ops that return a record (stat, lstat,
// fstat, statfs) or bytes (readlink, listxattr, getxattr, mounts, status) write it at
// the start of the buffer, the byte count in Status. Rename, link and symlink carry
// two paths back to back: Aux is the first one's length and Length the total.
// Setattr carries a Setattr record (owner, times), then the path (Aux bytes); the
// valid bits ride in Flags, the mode in Mode and the new size in Offset. Xattr ops
// carry path || name [|| value]: Aux is the path's length and Offset the name's, the
// value is the rest of Length (getxattr: the room for
// the value, which the service writes right after the name). Fallocate's length is a u64 at the start of its
// buffer. Read and write move Length bytes.
//
// # Handshake, arena, submission ring, status page
//
// The handshake (Hello, Welcome and the fds the Welcome carries), the arena header,
// the submission ring's entry format and the status page are declared in
// handshake.go and wire.go, each offset a named constant with its diagram there.
// In short: each client has its own arena (only it and the service map it) holding
// its header, its submission ring, its descriptors and its data area; it publishes a
// descriptor by writing RingEntry(RingSeq(p), index) at ring position p with one
// atomic store, then reads the status page's sleeper count and writes its own eventfd
// only when a worker sleeps. The service's consumer position for each ring lives in
// the service's private memory. A C client must use sequentially consistent atomics
// (__atomic_store_n and __atomic_load_n with __ATOMIC_SEQ_CST) for the ring store and
// the sleeper load: the wake-up protocol relies on the store being ordered before the
// load (see ipc/back's package doc).
//
// Version 3 (this one) replaced the request ring that all clients of a service shared
// (an RCQB region carrying slot/generation/index references) with a ring per client
// inside its own arena, added the status page and the per-client eventfd to the
// Welcome (three fds instead of two), and the ring's offset and capacity to the arena
// header. Version 2 added lstat, link, symlink, readlink, setattr, statfs, the xattr
// ops, fallocate, fdatasync (a flag of fsync), lock, mounts and status, and widened
// the stat record to every attribute and the directory entry to carry the inode
// number. Clients of another version are refused at the handshake
// (EPROTONOSUPPORT).
//
// # Invariants
//
// Validate never trusts a field: every opcode, flag, mode, length and buffer range is
// checked against the arena's data area of the client that sent it, with 64-bit
// arithmetic so that no sum wraps. The service validates a private copy of the
// descriptor (Decode), never the shared bytes, so a client rewriting its descriptor
// during validation cannot pass one value and act on another.
//
// Lock order: the package holds no locks.
package wire
