package wire

import "errors"

// Handshake messages, exchanged once over the service's SOCK_SEQPACKET Unix socket
// before any descriptor flows. Little-endian like the rest; every offset below is a
// named constant, mirrored in polytropon_wire.h.
//
//	Hello (client -> service), HelloSize bytes:
//	  0 u32 magic (HelloMagic)   4 u16 version   6 u16 reserved (0)
//
//	Welcome (service -> client), WelcomeSize bytes. When Status is 0 it carries
//	WelcomeFds file descriptors (SCM_RIGHTS), in this order:
//	  WelcomeFdStatus  the service's status page (memfd, sealed with
//	                   F_SEAL_FUTURE_WRITE: the client can map it read-only only)
//	  WelcomeFdArena   the client's own arena (memfd, size sealed): header,
//	                   submission ring, descriptors, data area
//	  WelcomeFdEvent   the client's own eventfd, which it writes to wake a
//	                   sleeping worker
//	  0 u32 magic (WelcomeMagic) 4 u16 version   6 u16 reserved
//	  8 i32 status (0 or errno)  12 u16 client slot (for logs)  14 u16 generation
//	 16 u32 ring capacity       20 u32 descriptors  24 u32 slot bytes
//	 28 u32 status page size    32 u64 arena size
//
// A refusal (Status != 0) carries no fds. The service may shut the socket right
// after a refusal, even before it read the Hello: a client whose Hello could not be
// sent still reads the Welcome to learn why.
const (
	HelloMagic   = 0x50544831 // "PTH1"
	WelcomeMagic = 0x50545731 // "PTW1"

	HelloOffMagic   = 0 // u32
	HelloOffVersion = 4 // u16
	HelloSize       = 8

	WelcomeOffMagic      = 0  // u32
	WelcomeOffVersion    = 4  // u16
	WelcomeOffStatus     = 8  // i32
	WelcomeOffSlot       = 12 // u16
	WelcomeOffGen        = 14 // u16
	WelcomeOffRingCap    = 16 // u32
	WelcomeOffNumDesc    = 20 // u32
	WelcomeOffSlotBytes  = 24 // u32
	WelcomeOffStatusSize = 28 // u32
	WelcomeOffArenaSize  = 32 // u64
	WelcomeSize          = 40

	WelcomeFdStatus = 0
	WelcomeFdArena  = 1
	WelcomeFdEvent  = 2
	WelcomeFds      = 3
)

// Hello is the client's opening message.
type Hello struct {
	Version uint16
}

// Welcome is the service's answer.
type Welcome struct {
	Version    uint16
	Status     int32
	Slot, Gen  uint16
	RingCap    uint32
	NumDesc    uint32
	SlotBytes  uint32
	StatusSize uint32
	ArenaSize  uint64
}

// ErrHandshake is returned for a handshake message of the wrong size or magic.
var ErrHandshake = errors.New("wire: malformed handshake message")

// Put encodes h into b (HelloSize bytes).
func (h *Hello) Put(b []byte) {
	_ = b[HelloSize-1]
	clear(b[:HelloSize])
	le.PutUint32(b[HelloOffMagic:], HelloMagic)
	le.PutUint16(b[HelloOffVersion:], h.Version)
}

// Get decodes a Hello from b.
func (h *Hello) Get(b []byte) error {
	if len(b) != HelloSize || le.Uint32(b[HelloOffMagic:]) != HelloMagic {
		return ErrHandshake
	}
	h.Version = le.Uint16(b[HelloOffVersion:])
	return nil
}

// Put encodes w into b (WelcomeSize bytes).
func (w *Welcome) Put(b []byte) {
	_ = b[WelcomeSize-1]
	clear(b[:WelcomeSize])
	le.PutUint32(b[WelcomeOffMagic:], WelcomeMagic)
	le.PutUint16(b[WelcomeOffVersion:], w.Version)
	le.PutUint32(b[WelcomeOffStatus:], uint32(w.Status))
	le.PutUint16(b[WelcomeOffSlot:], w.Slot)
	le.PutUint16(b[WelcomeOffGen:], w.Gen)
	le.PutUint32(b[WelcomeOffRingCap:], w.RingCap)
	le.PutUint32(b[WelcomeOffNumDesc:], w.NumDesc)
	le.PutUint32(b[WelcomeOffSlotBytes:], w.SlotBytes)
	le.PutUint32(b[WelcomeOffStatusSize:], w.StatusSize)
	le.PutUint64(b[WelcomeOffArenaSize:], w.ArenaSize)
}

// Get decodes a Welcome from b.
func (w *Welcome) Get(b []byte) error {
	if len(b) != WelcomeSize || le.Uint32(b[WelcomeOffMagic:]) != WelcomeMagic {
		return ErrHandshake
	}
	w.Version = le.Uint16(b[WelcomeOffVersion:])
	w.Status = int32(le.Uint32(b[WelcomeOffStatus:]))
	w.Slot = le.Uint16(b[WelcomeOffSlot:])
	w.Gen = le.Uint16(b[WelcomeOffGen:])
	w.RingCap = le.Uint32(b[WelcomeOffRingCap:])
	w.NumDesc = le.Uint32(b[WelcomeOffNumDesc:])
	w.SlotBytes = le.Uint32(b[WelcomeOffSlotBytes:])
	w.StatusSize = le.Uint32(b[WelcomeOffStatusSize:])
	w.ArenaSize = le.Uint64(b[WelcomeOffArenaSize:])
	return nil
}

// Submission ring: an array of RingCap (a power of two, >= the client's descriptor
// count) little-endian u64 entries at ArenaOffRingOff in the client's arena. The
// client publishes a request at position p (0, 1, 2, ...; positions are private to
// the client, which reserves them with a counter in its own process memory) with
// one atomic store of RingEntry(RingSeq(p), descriptor index) into entry
// p % RingCap. The service keeps its own consumer position h for each client, in its
// own memory, and takes position h only when the entry's sequence equals RingSeq(h):
// an entry from an earlier lap, or a stray one, is "not yet".
const (
	RingEntrySize = 8
	RingSeqShift  = 32         // the sequence is the entry's high word
	RingIndexMask = 0xffffffff // the descriptor index is the low word
)

// RingSeq is the sequence number an entry at position p carries: p+1 (mod 2^32), so
// that a zeroed ring holds no valid entry for position 0.
func RingSeq(p uint64) uint32 { return uint32(p + 1) }

// RingEntry is the ring word that publishes descriptor idx at the position whose
// sequence is seq.
func RingEntry(seq, idx uint32) uint64 { return uint64(seq)<<RingSeqShift | uint64(idx) }

// SplitRingEntry undoes RingEntry.
func SplitRingEntry(e uint64) (seq, idx uint32) {
	return uint32(e >> RingSeqShift), uint32(e & RingIndexMask)
}

// Status page: one page, shared by every client of a service, that the service
// writes and clients can only read (the memfd is sealed with F_SEAL_FUTURE_WRITE
// after the service mapped it). The sleeper count has a cache line of its own:
// workers change it when they go to sleep and wake, clients read it after every
// publish.
const (
	StatusMagic       = 0x50545354 // "PTST"
	StatusOffMagic    = 0          // u32
	StatusOffVersion  = 4          // u32
	StatusOffSleepers = 64         // u32: workers asleep (or about to be) in epoll_wait
	StatusPageSize    = 4096
)
