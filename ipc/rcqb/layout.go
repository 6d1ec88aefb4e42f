package rcqb

import (
	"fmt"
	"math/bits"
)

// Header layout (byte offsets from the start of the region). All fields are in the
// machine's native byte order: a queue is shared between processes on one host, and
// its counters are updated with native atomic instructions.
const (
	// Line 0: read-only after Init.
	offMagic      = 0  // uint64: Magic
	offVersion    = 8  // uint32: Version
	offCapacity   = 12 // uint32: number of slots, a power of two
	offSlotSize   = 16 // uint32: bytes per slot (SlotSizePadded or SlotSizePacked)
	offHeaderSize = 20 // uint32: HeaderSize, the offset of slot 0
	offClosedTail = 24 // uint64: tail value at Close + 1 (0 while open), informational

	// Each hot counter has its own 128-byte block, so that neither false sharing nor
	// the adjacent-line prefetcher couples the producers' line with the consumers'.
	offTail   = 128 // uint64: next enqueue ticket; bit 63 is the closed bit (closedBit)
	offHead   = 256 // uint64: next dequeue ticket
	offClosed = 384 // uint32: nonzero once closed (SPSC mode: 1 closing, 2 settled); read by sleepers

	// HeaderSize is the offset of slot 0.
	HeaderSize = 512
)

// Slot layout (offsets inside a slot).
const (
	slotSeq     = 0  // uint64: lap<<2 | state; the futex word is its low 32 bits
	slotData    = 8  // uint64: the value
	slotWaiters = 16 // uint32: sleepers registered on this slot's futex word

	// SlotSizePadded gives every slot its own 64-byte cache line.
	SlotSizePadded = 64
	// SlotSizePacked puts two slots in each 64-byte cache line.
	SlotSizePacked = 32
)

const (
	// Magic identifies an RCQB region ("RCQBRING" read as a little-endian uint64).
	Magic uint64 = 0x474E495242514352
	// Version is the layout version written by Init and required by Attach.
	// (Queues in shared regions never use release mode, so the protocol on a
	// region is the same as before it existed.)
	Version = 1

	// MinCapacity and MaxCapacity bound the number of slots. The maximum keeps a
	// padded queue under 1 GiB and every offset far from overflow.
	MinCapacity = 2
	MaxCapacity = 1 << 24

	// closedBit is set in the tail word by Close, so that an enqueuer's
	// fetch-and-add and the close decision are ordered by the same atomic word.
	closedBit = uint64(1) << 63
)

// Slot states, the low two bits of a slot's sequence word. The upper bits hold
// the lap (ticket / capacity), so seq = lap<<2 | state only increases (but for
// an SPSC producer's back-out, ENQPND -> FREE of the same lap; see spsc.go).
const (
	stFree     = 0 // empty, ready for the enqueuer of this lap
	stEnqPnd   = 1 // the enqueuer of this lap is writing the value
	stOccupied = 2 // holds the value of this lap
	stDeqPnd   = 3 // the dequeuer of this lap is reading the value
)

func seqOf(lap, state uint64) uint64 { return lap<<2 | state }

// nextFree is the sequence word of the FREE state of the lap after w's.
func nextFree(w uint64) uint64 { return (w>>2 + 1) << 2 }

// Layout selects how slots are laid out in memory.
type Layout int

const (
	// Padded: one slot per cache line (SlotSizePadded).
	Padded Layout = iota + 1
	// Packed: two slots per cache line (SlotSizePacked).
	Packed
)

// DefaultLayout is the layout New and Init use without WithLayout; chosen by
// measurement (see the package doc).
const DefaultLayout = Padded

func (l Layout) slotSize() (int, error) {
	switch l {
	case Padded:
		return SlotSizePadded, nil
	case Packed:
		return SlotSizePacked, nil
	}
	return 0, fmt.Errorf("rcqb: unknown layout %d", int(l))
}

func (l Layout) String() string {
	switch l {
	case Padded:
		return "padded"
	case Packed:
		return "packed"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

func checkCapacity(capacity int) error {
	if capacity < MinCapacity || capacity > MaxCapacity || capacity&(capacity-1) != 0 {
		return fmt.Errorf("rcqb: capacity %d is not a power of two in [%d, %d]", capacity, MinCapacity, MaxCapacity)
	}
	return nil
}

// Size returns the bytes a queue of capacity slots needs in a shared region, for
// DefaultLayout.
func Size(capacity int) (int, error) {
	return SizeLayout(capacity, DefaultLayout)
}

// SizeLayout returns the bytes a queue of capacity slots needs with layout l.
func SizeLayout(capacity int, l Layout) (int, error) {
	if err := checkCapacity(capacity); err != nil {
		return 0, err
	}
	ss, err := l.slotSize()
	if err != nil {
		return 0, err
	}
	return HeaderSize + capacity*ss, nil
}

func log2(n int) uint { return uint(bits.TrailingZeros64(uint64(n))) }
