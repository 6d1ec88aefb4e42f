package wire

import "errors"

// Handshake messages, exchanged once over the service's SOCK_SEQPACKET Unix socket
// before any descriptor flows. Little-endian like the rest.
//
//	Hello (client -> service), HelloSize bytes:
//	  0 u32 magic (HelloMagic)   4 u16 version   6 u16 reserved (0)
//	Welcome (service -> client), WelcomeSize bytes, with two fds (SCM_RIGHTS) when
//	Status is 0: the request ring's memfd, then the client's arena memfd:
//	  0 u32 magic (WelcomeMagic) 4 u16 version   6 u16 reserved
//	  8 i32 status (0 or errno)  12 u16 client slot  14 u16 client generation
//	 16 u32 ring capacity       20 u32 descriptors  24 u32 slot bytes  28 u32 reserved
//	 32 u64 arena size
const (
	HelloMagic   = 0x50544831 // "PTH1"
	WelcomeMagic = 0x50545731 // "PTW1"
	HelloSize    = 8
	WelcomeSize  = 40
)

// Hello is the client's opening message.
type Hello struct {
	Version uint16
}

// Welcome is the service's answer.
type Welcome struct {
	Version   uint16
	Status    int32
	Slot, Gen uint16
	RingCap   uint32
	NumDesc   uint32
	SlotBytes uint32
	ArenaSize uint64
}

// ErrHandshake is returned for a handshake message of the wrong size or magic.
var ErrHandshake = errors.New("wire: malformed handshake message")

// Put encodes h into b (HelloSize bytes).
func (h *Hello) Put(b []byte) {
	_ = b[HelloSize-1]
	le.PutUint32(b[0:], HelloMagic)
	le.PutUint16(b[4:], h.Version)
	le.PutUint16(b[6:], 0)
}

// Get decodes a Hello from b.
func (h *Hello) Get(b []byte) error {
	if len(b) != HelloSize || le.Uint32(b[0:]) != HelloMagic {
		return ErrHandshake
	}
	h.Version = le.Uint16(b[4:])
	return nil
}

// Put encodes w into b (WelcomeSize bytes).
func (w *Welcome) Put(b []byte) {
	_ = b[WelcomeSize-1]
	clear(b[:WelcomeSize])
	le.PutUint32(b[0:], WelcomeMagic)
	le.PutUint16(b[4:], w.Version)
	le.PutUint32(b[8:], uint32(w.Status))
	le.PutUint16(b[12:], w.Slot)
	le.PutUint16(b[14:], w.Gen)
	le.PutUint32(b[16:], w.RingCap)
	le.PutUint32(b[20:], w.NumDesc)
	le.PutUint32(b[24:], w.SlotBytes)
	le.PutUint64(b[32:], w.ArenaSize)
}

// Get decodes a Welcome from b.
func (w *Welcome) Get(b []byte) error {
	if len(b) != WelcomeSize || le.Uint32(b[0:]) != WelcomeMagic {
		return ErrHandshake
	}
	w.Version = le.Uint16(b[4:])
	w.Status = int32(le.Uint32(b[8:]))
	w.Slot = le.Uint16(b[12:])
	w.Gen = le.Uint16(b[14:])
	w.RingCap = le.Uint32(b[16:])
	w.NumDesc = le.Uint32(b[20:])
	w.SlotBytes = le.Uint32(b[24:])
	w.ArenaSize = le.Uint64(b[32:])
	return nil
}

// Ref is what the request ring carries: which client (slot and generation, so that a
// reference left in the ring by a client that died cannot reach the slot's next
// owner) and which of its descriptors. The generation is never zero, so neither is a
// Ref.
func Ref(slot, gen uint16, desc uint32) uint64 {
	return uint64(gen)<<48 | uint64(slot)<<32 | uint64(desc)
}

// SplitRef undoes Ref.
func SplitRef(r uint64) (slot, gen uint16, desc uint32) {
	return uint16(r >> 32), uint16(r >> 48), uint32(r)
}
