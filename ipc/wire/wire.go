package wire

import (
	"encoding/binary"
	"errors"
	"syscall"
)

// Version is the descriptor and handshake protocol version.
const Version = 3

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
// transport answers itself (for benchmarks and liveness), OpLock (advisory whole-file
// locks held by a client until it closes the lock handle or disconnects), and two
// service queries (OpMounts, OpStatus).
const (
	OpInvalid     Op = 0
	OpNop         Op = 1
	OpStat        Op = 2  // path -> Stat record in the buffer (follows a final symlink)
	OpOpen        Op = 3  // path, Flags (O_*), Mode -> Result = handle
	OpCreate      Op = 4  // path, Mode -> Result = handle (O_CREAT|O_EXCL|O_RDWR)
	OpRead        Op = 5  // Handle, Offset, Length -> Status = bytes read
	OpWrite       Op = 6  // Handle, Offset, Length -> Status = bytes written
	OpFsync       Op = 7  // Handle; Flags = FsyncData for fdatasync
	OpClose       Op = 8  // Handle
	OpMkdir       Op = 9  // path, Mode
	OpUnlink      Op = 10 // path
	OpRmdir       Op = 11 // path
	OpRename      Op = 12 // old path || new path, Aux = len(old)
	OpReaddir     Op = 13 // Handle, Offset = cookie -> Dirent records, Result = next cookie
	OpTruncate    Op = 14 // Handle, Offset = new size
	OpFstat       Op = 15 // Handle -> Stat record in the buffer
	OpLstat       Op = 16 // path -> Stat record (does not follow a final symlink)
	OpLink        Op = 17 // old path || new path, Aux = len(old)
	OpSymlink     Op = 18 // target || link path, Aux = len(target)
	OpReadlink    Op = 19 // path -> target at the start of the buffer, Status = length
	OpSetattr     Op = 20 // Setattr record || path, Aux = len(path), Flags = Set* bits, Mode, Offset = size
	OpStatfs      Op = 21 // path -> Statfs record
	OpGetxattr    Op = 22 // path || name || room, Aux = len(path), Offset = len(name) -> value in the room, Status = length
	OpSetxattr    Op = 23 // path || name || value; Flags = XattrCreate|XattrReplace
	OpListxattr   Op = 24 // path -> NUL-terminated names, Status = length
	OpRemovexattr Op = 25 // path || name
	OpFallocate   Op = 26 // Handle, Offset, Flags = mode, buffer = u64 length
	OpLock        Op = 27 // path -> Result = lock handle (EAGAIN when held); OpClose releases
	OpMounts      Op = 28 // buffer <- Mount records, Status = bytes
	OpStatus      Op = 29 // buffer <- JSON service status, Status = bytes
	opCount       Op = 30
)

var opNames = [opCount]string{"invalid", "nop", "stat", "open", "create", "read", "write", "fsync",
	"close", "mkdir", "unlink", "rmdir", "rename", "readdir", "truncate", "fstat", "lstat", "link",
	"symlink", "readlink", "setattr", "statfs", "getxattr", "setxattr", "listxattr", "removexattr",
	"fallocate", "lock", "mounts", "status"}

// NumOps is the number of opcodes (for per-op tables indexed by Op).
const NumOps = int(opCount)

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
		syscall.O_APPEND | syscall.O_DIRECTORY | syscall.O_NOFOLLOW | syscall.O_NOATIME
	// ModeMask are the permission bits a create or mkdir may carry.
	ModeMask = 0o7777
)

// Flags of other ops.
const (
	// FsyncData makes OpFsync an fdatasync.
	FsyncData = 1
	// XattrSizeOnly makes OpGetxattr return the value's length without the value.
	XattrSizeOnly = 1
	// XattrCreate and XattrReplace are setxattr(2)'s flags.
	XattrCreate  = 1
	XattrReplace = 2
	// SetattrMask are the valid bits of OpSetattr's Flags (libservices.Set*).
	SetattrMask = 0xff
	// FallocateMask are the fallocate(2) modes OpFallocate may carry (KEEP_SIZE,
	// PUNCH_HOLE); the FS decides which combinations it supports.
	FallocateMask = 0x3
	// NameMax bounds an xattr name.
	NameMax = 255
)

// Limits of the protocol.
const (
	// PathMax bounds a path (PATH_MAX).
	PathMax = 4096
	// MaxIO bounds one read or write.
	MaxIO = 1 << 20
)

// Stat record, written at the start of the buffer by OpStat, OpLstat and OpFstat:
// the whole of libservices.Attr.
const (
	StatOffIno       = 0  // u64
	StatOffSize      = 8  // i64
	StatOffBlocks    = 16 // i64, 512-byte units
	StatOffMode      = 24 // u32, S_IFMT | permissions
	StatOffNlink     = 28 // u32
	StatOffUID       = 32 // u32
	StatOffGID       = 36 // u32
	StatOffBlksize   = 40 // i32
	StatOffRdev      = 48 // u64 (44..47 padding)
	StatOffAtimeSec  = 56 // i64
	StatOffMtimeSec  = 64 // i64
	StatOffCtimeSec  = 72 // i64
	StatOffAtimeNsec = 80 // u32
	StatOffMtimeNsec = 84 // u32
	StatOffCtimeNsec = 88 // u32
	StatSize         = 96 // 92..95 padding
)

// Statfs record, written by OpStatfs (statfs(2) units).
const (
	StatfsOffType    = 0
	StatfsOffBsize   = 8
	StatfsOffBlocks  = 16
	StatfsOffBfree   = 24
	StatfsOffBavail  = 32
	StatfsOffFiles   = 40
	StatfsOffFfree   = 48
	StatfsOffNamelen = 56
	StatfsOffFrsize  = 64
	StatfsSize       = 72 // every field 8 bytes
)

// Setattr record, at the start of OpSetattr's buffer, before the path.
const (
	SetattrOffUID       = 0  // u32
	SetattrOffGID       = 4  // u32
	SetattrOffAtimeSec  = 8  // i64
	SetattrOffMtimeSec  = 16 // i64
	SetattrOffAtimeNsec = 24 // u32
	SetattrOffMtimeNsec = 28 // u32
	SetattrSize         = 32
)

// Directory entry record, packed back to back by OpReaddir: a header then the name.
const (
	DirentOffNameLen = 0 // u16
	DirentOffType    = 2 // u8: DT_* value (3: padding)
	DirentOffIno     = 4 // u64
	DirentHeaderSize = 12
)

// Mount record, packed back to back by OpMounts: a header, the instance name, then
// its mount prefix.
const (
	MountOffNameLen   = 0 // u16
	MountOffPrefixLen = 2 // u16
	MountHeaderSize   = 4
)

// Arena header, at offset 0 of every client arena, written by the service before the
// arena is passed. The client reads it; the service keeps its own copy of these values
// and never re-reads them, so a client that rewrites its header harms only itself.
//
//	0 u32 magic      4 u32 version    8 u32 descriptors   12 u32 descriptor 0 offset
//	16 u32 data area offset           20 u32 slot bytes   24 u64 arena size
//	32 u32 ring offset                36 u32 ring capacity (entries)   40..63 reserved
//
// The arena: header | submission ring (RingCap entries of RingEntrySize bytes) |
// descriptors (DescSize-aligned) | data area (page-aligned).
const (
	ArenaMagic        = 0x504f4c59 // "POLY"
	ArenaOffMagic     = 0          // u32
	ArenaOffVersion   = 4          // u32
	ArenaOffNumDesc   = 8          // u32
	ArenaOffDescOff   = 12         // u32: offset of descriptor 0
	ArenaOffDataOff   = 16         // u32: start of the data area
	ArenaOffSlotBytes = 20         // u32: default buffer size per descriptor
	ArenaOffSize      = 24         // u64: arena size
	ArenaOffRingOff   = 32         // u32: offset of the submission ring
	ArenaOffRingCap   = 36         // u32: ring entries (a power of two)
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
	Ino                          uint64
	Size, Blocks                 int64
	Mode, Nlink, UID, GID        uint32
	Blksize                      int32
	Rdev                         uint64
	AtimeSec, MtimeSec, CtimeSec int64
	AtimeNsec, MtimeNsec         uint32
	CtimeNsec                    uint32
}

// Put writes s at the start of b (at least StatSize bytes).
func (s *Stat) Put(b []byte) {
	_ = b[StatSize-1]
	le.PutUint64(b[StatOffIno:], s.Ino)
	le.PutUint64(b[StatOffSize:], uint64(s.Size))
	le.PutUint64(b[StatOffBlocks:], uint64(s.Blocks))
	le.PutUint32(b[StatOffMode:], s.Mode)
	le.PutUint32(b[StatOffNlink:], s.Nlink)
	le.PutUint32(b[StatOffUID:], s.UID)
	le.PutUint32(b[StatOffGID:], s.GID)
	le.PutUint32(b[StatOffBlksize:], uint32(s.Blksize))
	le.PutUint32(b[StatOffBlksize+4:], 0)
	le.PutUint64(b[StatOffRdev:], s.Rdev)
	le.PutUint64(b[StatOffAtimeSec:], uint64(s.AtimeSec))
	le.PutUint64(b[StatOffMtimeSec:], uint64(s.MtimeSec))
	le.PutUint64(b[StatOffCtimeSec:], uint64(s.CtimeSec))
	le.PutUint32(b[StatOffAtimeNsec:], s.AtimeNsec)
	le.PutUint32(b[StatOffMtimeNsec:], s.MtimeNsec)
	le.PutUint32(b[StatOffCtimeNsec:], s.CtimeNsec)
	le.PutUint32(b[StatOffCtimeNsec+4:], 0)
}

// Get reads s from the start of b.
func (s *Stat) Get(b []byte) {
	_ = b[StatSize-1]
	s.Ino = le.Uint64(b[StatOffIno:])
	s.Size = int64(le.Uint64(b[StatOffSize:]))
	s.Blocks = int64(le.Uint64(b[StatOffBlocks:]))
	s.Mode = le.Uint32(b[StatOffMode:])
	s.Nlink = le.Uint32(b[StatOffNlink:])
	s.UID = le.Uint32(b[StatOffUID:])
	s.GID = le.Uint32(b[StatOffGID:])
	s.Blksize = int32(le.Uint32(b[StatOffBlksize:]))
	s.Rdev = le.Uint64(b[StatOffRdev:])
	s.AtimeSec = int64(le.Uint64(b[StatOffAtimeSec:]))
	s.MtimeSec = int64(le.Uint64(b[StatOffMtimeSec:]))
	s.CtimeSec = int64(le.Uint64(b[StatOffCtimeSec:]))
	s.AtimeNsec = le.Uint32(b[StatOffAtimeNsec:])
	s.MtimeNsec = le.Uint32(b[StatOffMtimeNsec:])
	s.CtimeNsec = le.Uint32(b[StatOffCtimeNsec:])
}

// Statfs is a decoded statfs record.
type Statfs struct {
	Type, Bsize                        int64
	Blocks, Bfree, Bavail, Files, Free uint64
	Namelen, Frsize                    int64
}

// Put writes s at the start of b (at least StatfsSize bytes).
func (s *Statfs) Put(b []byte) {
	_ = b[StatfsSize-1]
	le.PutUint64(b[StatfsOffType:], uint64(s.Type))
	le.PutUint64(b[StatfsOffBsize:], uint64(s.Bsize))
	le.PutUint64(b[StatfsOffBlocks:], s.Blocks)
	le.PutUint64(b[StatfsOffBfree:], s.Bfree)
	le.PutUint64(b[StatfsOffBavail:], s.Bavail)
	le.PutUint64(b[StatfsOffFiles:], s.Files)
	le.PutUint64(b[StatfsOffFfree:], s.Free)
	le.PutUint64(b[StatfsOffNamelen:], uint64(s.Namelen))
	le.PutUint64(b[StatfsOffFrsize:], uint64(s.Frsize))
}

// Get reads s from the start of b.
func (s *Statfs) Get(b []byte) {
	_ = b[StatfsSize-1]
	s.Type = int64(le.Uint64(b[StatfsOffType:]))
	s.Bsize = int64(le.Uint64(b[StatfsOffBsize:]))
	s.Blocks = le.Uint64(b[StatfsOffBlocks:])
	s.Bfree = le.Uint64(b[StatfsOffBfree:])
	s.Bavail = le.Uint64(b[StatfsOffBavail:])
	s.Files = le.Uint64(b[StatfsOffFiles:])
	s.Free = le.Uint64(b[StatfsOffFfree:])
	s.Namelen = int64(le.Uint64(b[StatfsOffNamelen:]))
	s.Frsize = int64(le.Uint64(b[StatfsOffFrsize:]))
}

// Setattr is a decoded setattr record (the fields that do not fit the descriptor).
type Setattr struct {
	UID, GID             uint32
	AtimeSec, MtimeSec   int64
	AtimeNsec, MtimeNsec uint32
}

// Put writes s at the start of b (at least SetattrSize bytes).
func (s *Setattr) Put(b []byte) {
	_ = b[SetattrSize-1]
	le.PutUint32(b[SetattrOffUID:], s.UID)
	le.PutUint32(b[SetattrOffGID:], s.GID)
	le.PutUint64(b[SetattrOffAtimeSec:], uint64(s.AtimeSec))
	le.PutUint64(b[SetattrOffMtimeSec:], uint64(s.MtimeSec))
	le.PutUint32(b[SetattrOffAtimeNsec:], s.AtimeNsec)
	le.PutUint32(b[SetattrOffMtimeNsec:], s.MtimeNsec)
}

// Get reads s from the start of b.
func (s *Setattr) Get(b []byte) {
	_ = b[SetattrSize-1]
	s.UID = le.Uint32(b[SetattrOffUID:])
	s.GID = le.Uint32(b[SetattrOffGID:])
	s.AtimeSec = int64(le.Uint64(b[SetattrOffAtimeSec:]))
	s.MtimeSec = int64(le.Uint64(b[SetattrOffMtimeSec:]))
	s.AtimeNsec = le.Uint32(b[SetattrOffAtimeNsec:])
	s.MtimeNsec = le.Uint32(b[SetattrOffMtimeNsec:])
}

// PutU64 and GetU64 move the one-word argument records (OpFallocate's length).
func PutU64(b []byte, v uint64) { le.PutUint64(b, v) }

// GetU64 reads a one-word argument record.
func GetU64(b []byte) uint64 { return le.Uint64(b) }

// PutDirent appends one directory entry to b and returns the bytes used, or 0 when it
// does not fit (the caller then ends the batch).
func PutDirent(b []byte, name string, typ uint8, ino uint64) int {
	n := DirentHeaderSize + len(name)
	if len(name) == 0 || len(name) > 255 || n > len(b) {
		return 0
	}
	le.PutUint16(b[DirentOffNameLen:], uint16(len(name)))
	b[DirentOffType] = typ
	b[DirentOffType+1] = 0
	le.PutUint64(b[DirentOffIno:], ino)
	copy(b[DirentHeaderSize:], name)
	return n
}

// ErrBadDirent is returned by NextDirent for a record that does not fit its buffer.
var ErrBadDirent = errors.New("wire: malformed directory entry")

// NextDirent decodes the entry at the start of b and returns its name bytes, type,
// inode number and total size.
func NextDirent(b []byte) (name []byte, typ uint8, ino uint64, n int, err error) {
	if len(b) < DirentHeaderSize {
		return nil, 0, 0, 0, ErrBadDirent
	}
	l := int(le.Uint16(b[DirentOffNameLen:]))
	if l == 0 || DirentHeaderSize+l > len(b) {
		return nil, 0, 0, 0, ErrBadDirent
	}
	return b[DirentHeaderSize : DirentHeaderSize+l], b[DirentOffType], le.Uint64(b[DirentOffIno:]), DirentHeaderSize + l, nil
}

// PutMount appends one mount record to b and returns the bytes used, or 0 when it
// does not fit.
func PutMount(b []byte, name, prefix string) int {
	n := MountHeaderSize + len(name) + len(prefix)
	if len(name) == 0 || len(name) > 0xffff || len(prefix) > 0xffff || n > len(b) {
		return 0
	}
	le.PutUint16(b[MountOffNameLen:], uint16(len(name)))
	le.PutUint16(b[MountOffPrefixLen:], uint16(len(prefix)))
	copy(b[MountHeaderSize:], name)
	copy(b[MountHeaderSize+len(name):], prefix)
	return n
}

// ErrBadMount is returned by NextMount for a record that does not fit its buffer.
var ErrBadMount = errors.New("wire: malformed mount record")

// NextMount decodes the mount record at the start of b.
func NextMount(b []byte) (name, prefix []byte, n int, err error) {
	if len(b) < MountHeaderSize {
		return nil, nil, 0, ErrBadMount
	}
	nl, pl := int(le.Uint16(b[MountOffNameLen:])), int(le.Uint16(b[MountOffPrefixLen:]))
	n = MountHeaderSize + nl + pl
	if nl == 0 || n > len(b) {
		return nil, nil, 0, ErrBadMount
	}
	return b[MountHeaderSize : MountHeaderSize+nl], b[MountHeaderSize+nl : n], n, nil
}
