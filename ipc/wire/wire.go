package wire

import (
	"encoding/binary"
	"errors"
	"syscall"
)

// Version is the descriptor and handshake protocol version.
const Version = 1

// DescSize is the size of a descriptor; descriptors are DescSize-aligned in the arena.
const DescSize = 64

// Descriptor field offsets and sizes (bytes).
const (
	OffVersion = 0
	OffOp      = 2
	OffFlags   = 4
	OffReqID   = 8
	OffHandle  = 16
	OffOffset  = 24
	OffBufOff  = 32
	OffLength  = 36
	OffAux     = 40
	OffStatus  = 44
	OffResult  = 48
	OffState   = 56
	OffMode    = 60

	SizeVersion = 2
	SizeOp      = 2
	SizeFlags   = 4
	SizeReqID   = 8
	SizeHandle  = 8
	SizeOffset  = 8
	SizeBufOff  = 4
	SizeLength  = 4
	SizeAux     = 4
	SizeStatus  = 4
	SizeResult  = 8
	SizeState   = 4
	SizeMode    = 4
)

// Op is a descriptor opcode. Zero is deliberately invalid so that a zeroed descriptor
// is rejected.
type Op uint16

// Opcodes. They cover the filesystem contract (libservices.FS) plus OpNop, which the
// transport answers itself (for benchmarks and liveness).
const (
	OpInvalid  Op = 0
	OpNop      Op = 1
	OpStat     Op = 2  // path -> Stat record in the buffer
	OpOpen     Op = 3  // path, Flags (O_*), Mode -> Result = handle
	OpCreate   Op = 4  // path, Mode -> Result = handle (O_CREAT|O_EXCL|O_RDWR)
	OpRead     Op = 5  // Handle, Offset, Length -> Status = bytes read
	OpWrite    Op = 6  // Handle, Offset, Length -> Status = bytes written
	OpFsync    Op = 7  // Handle
	OpClose    Op = 8  // Handle
	OpMkdir    Op = 9  // path, Mode
	OpUnlink   Op = 10 // path
	OpRmdir    Op = 11 // path
	OpRename   Op = 12 // old path || new path, Aux = len(old)
	OpReaddir  Op = 13 // Handle, Offset = cookie -> Dirent records, Result = next cookie
	OpTruncate Op = 14 // Handle, Offset = new size
	OpFstat    Op = 15 // Handle -> Stat record in the buffer
	opCount    Op = 16
)

var opNames = [opCount]string{"invalid", "nop", "stat", "open", "create", "read", "write", "fsync",
	"close", "mkdir", "unlink", "rmdir", "rename", "readdir", "truncate", "fstat"}

func (o Op) String() string {
	if o < opCount {
		return opNames[o]
	}
	return "op?"
}

// Descriptor states (the State word).
const (
	StateFree      = 0
	StateSubmitted = 1
	StateSleeping  = 2
	StateDone      = 3
)

// Open flags accepted in Flags (Linux values, so that a C client passes its own).
const (
	OpenFlagsMask = syscall.O_ACCMODE | syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC |
		syscall.O_APPEND | syscall.O_DIRECTORY
	// ModeMask are the permission bits a create or mkdir may carry.
	ModeMask = 0o7777
)

// Limits of the protocol.
const (
	// PathMax bounds a path (PATH_MAX).
	PathMax = 4096
	// MaxIO bounds one read or write.
	MaxIO = 1 << 20
)

// Stat record, written at the start of the buffer by OpStat and OpFstat.
const (
	StatOffIno     = 0
	StatOffSize    = 8
	StatOffMtimeNs = 16
	StatOffMode    = 24
	StatOffNlink   = 28
	StatOffUID     = 32
	StatOffGID     = 36
	StatSize       = 40
)

// Directory entry record, packed back to back by OpReaddir: a header then the name.
const (
	DirentOffNameLen = 0 // u16
	DirentOffType    = 2 // u8: DT_* value
	DirentHeaderSize = 4
)

// Arena header, at offset 0 of every client arena, written by the service before the
// arena is passed and read-only by convention afterwards (the service keeps its own
// copy of these values and never re-reads them).
const (
	ArenaMagic        = 0x504f4c59 // "POLY"
	ArenaOffMagic     = 0          // u32
	ArenaOffVersion   = 4          // u32
	ArenaOffNumDesc   = 8          // u32
	ArenaOffDescOff   = 12         // u32: offset of descriptor 0
	ArenaOffDataOff   = 16         // u32: start of the data area
	ArenaOffSlotBytes = 20         // u32: default buffer size per descriptor
	ArenaOffSize      = 24         // u64: arena size
	ArenaHeaderSize   = 64
)

// Desc is a decoded descriptor: the service's private copy, or the client's request
// before it is encoded.
type Desc struct {
	Version uint16
	Op      Op
	Flags   uint32
	ReqID   uint64
	Handle  uint64
	Offset  uint64
	BufOff  uint32
	Length  uint32
	Aux     uint32
	Status  int32
	Result  uint64
	State   uint32
	Mode    uint32
}

var le = binary.LittleEndian

// Decode reads a descriptor from b (at least DescSize bytes). State is read with a
// plain load here; callers that synchronise on it use an atomic load instead.
func (d *Desc) Decode(b []byte) {
	_ = b[DescSize-1]
	d.Version = le.Uint16(b[OffVersion:])
	d.Op = Op(le.Uint16(b[OffOp:]))
	d.Flags = le.Uint32(b[OffFlags:])
	d.ReqID = le.Uint64(b[OffReqID:])
	d.Handle = le.Uint64(b[OffHandle:])
	d.Offset = le.Uint64(b[OffOffset:])
	d.BufOff = le.Uint32(b[OffBufOff:])
	d.Length = le.Uint32(b[OffLength:])
	d.Aux = le.Uint32(b[OffAux:])
	d.Status = int32(le.Uint32(b[OffStatus:]))
	d.Result = le.Uint64(b[OffResult:])
	d.State = le.Uint32(b[OffState:])
	d.Mode = le.Uint32(b[OffMode:])
}

// EncodeRequest writes the request fields of d into b and clears Status and Result.
// It leaves State alone: the caller publishes the request with an atomic store of
// StateSubmitted after this.
func (d *Desc) EncodeRequest(b []byte) {
	_ = b[DescSize-1]
	le.PutUint16(b[OffVersion:], d.Version)
	le.PutUint16(b[OffOp:], uint16(d.Op))
	le.PutUint32(b[OffFlags:], d.Flags)
	le.PutUint64(b[OffReqID:], d.ReqID)
	le.PutUint64(b[OffHandle:], d.Handle)
	le.PutUint64(b[OffOffset:], d.Offset)
	le.PutUint32(b[OffBufOff:], d.BufOff)
	le.PutUint32(b[OffLength:], d.Length)
	le.PutUint32(b[OffAux:], d.Aux)
	le.PutUint32(b[OffStatus:], 0)
	le.PutUint64(b[OffResult:], 0)
	le.PutUint32(b[OffMode:], d.Mode)
}

// PutReply writes the service's answer (before it publishes StateDone).
func PutReply(b []byte, status int32, result uint64) {
	_ = b[DescSize-1]
	le.PutUint32(b[OffStatus:], uint32(status))
	le.PutUint64(b[OffResult:], result)
}

// Reply reads the service's answer (after the client observed StateDone).
func Reply(b []byte) (status int32, result uint64) {
	_ = b[DescSize-1]
	return int32(le.Uint32(b[OffStatus:])), le.Uint64(b[OffResult:])
}

// Stat is a decoded stat record.
type Stat struct {
	Ino, Size   uint64
	MtimeNs     int64
	Mode, Nlink uint32
	UID, GID    uint32
}

// Put writes s at the start of b (at least StatSize bytes).
func (s *Stat) Put(b []byte) {
	_ = b[StatSize-1]
	le.PutUint64(b[StatOffIno:], s.Ino)
	le.PutUint64(b[StatOffSize:], s.Size)
	le.PutUint64(b[StatOffMtimeNs:], uint64(s.MtimeNs))
	le.PutUint32(b[StatOffMode:], s.Mode)
	le.PutUint32(b[StatOffNlink:], s.Nlink)
	le.PutUint32(b[StatOffUID:], s.UID)
	le.PutUint32(b[StatOffGID:], s.GID)
}

// Get reads s from the start of b.
func (s *Stat) Get(b []byte) {
	_ = b[StatSize-1]
	s.Ino = le.Uint64(b[StatOffIno:])
	s.Size = le.Uint64(b[StatOffSize:])
	s.MtimeNs = int64(le.Uint64(b[StatOffMtimeNs:]))
	s.Mode = le.Uint32(b[StatOffMode:])
	s.Nlink = le.Uint32(b[StatOffNlink:])
	s.UID = le.Uint32(b[StatOffUID:])
	s.GID = le.Uint32(b[StatOffGID:])
}

// PutDirent appends one directory entry to b and returns the bytes used, or 0 when it
// does not fit (the caller then ends the batch).
func PutDirent(b []byte, name string, typ uint8) int {
	n := DirentHeaderSize + len(name)
	if len(name) == 0 || len(name) > 255 || n > len(b) {
		return 0
	}
	le.PutUint16(b[DirentOffNameLen:], uint16(len(name)))
	b[DirentOffType] = typ
	b[DirentOffType+1] = 0
	copy(b[DirentHeaderSize:], name)
	return n
}

// ErrBadDirent is returned by NextDirent for a record that does not fit its buffer.
var ErrBadDirent = errors.New("wire: malformed directory entry")

// NextDirent decodes the entry at the start of b and returns its name bytes, type and
// total size.
func NextDirent(b []byte) (name []byte, typ uint8, n int, err error) {
	if len(b) < DirentHeaderSize {
		return nil, 0, 0, ErrBadDirent
	}
	l := int(le.Uint16(b[DirentOffNameLen:]))
	if l == 0 || DirentHeaderSize+l > len(b) {
		return nil, 0, 0, ErrBadDirent
	}
	return b[DirentHeaderSize : DirentHeaderSize+l], b[DirentOffType], DirentHeaderSize + l, nil
}
