package wire

import "syscall"

// Limits describe where a client's buffers may lie: the data area [DataLo, DataHi) of
// that client's arena, in arena offsets.
type Limits struct {
	DataLo, DataHi uint32
}

// Error is a validation failure: the field at fault and why. Errno is what the service
// answers (EINVAL, or ENAMETOOLONG for an over-long path). Errors are predeclared
// values so that rejecting a descriptor allocates nothing.
type Error struct {
	Field  string
	Reason string
	Errno  syscall.Errno
}

func (e *Error) Error() string { return "wire: bad descriptor: " + e.Field + ": " + e.Reason }

var (
	errVersion    = &Error{"version", "unsupported protocol version", syscall.EINVAL}
	errOp         = &Error{"op", "unknown opcode", syscall.EINVAL}
	errFlags      = &Error{"flags", "flags not allowed for this op", syscall.EINVAL}
	errMode       = &Error{"mode", "mode bits not allowed for this op", syscall.EINVAL}
	errHandle     = &Error{"handle", "handle given to an op that takes none", syscall.EINVAL}
	errOffset     = &Error{"offset", "offset given to an op that takes none", syscall.EINVAL}
	errOffsetMax  = &Error{"offset", "offset or end of range beyond 2^63", syscall.EINVAL}
	errLength     = &Error{"length", "length not allowed for this op", syscall.EINVAL}
	errIOSize     = &Error{"length", "read or write longer than MaxIO", syscall.EINVAL}
	errBuffer     = &Error{"bufoff", "buffer outside the client's data area", syscall.EINVAL}
	errPathLen    = &Error{"aux", "path length zero or above the buffer length", syscall.EINVAL}
	errPathMax    = &Error{"aux", "path longer than PathMax", syscall.ENAMETOOLONG}
	errAux        = &Error{"aux", "aux given to an op that takes none", syscall.EINVAL}
	errRecordSize = &Error{"length", "buffer too small for the reply record", syscall.EINVAL}
	errNameLen    = &Error{"offset", "xattr name length zero or above NameMax", syscall.EINVAL}
)

// opKind says which fields an op uses; Validate requires every other field to be zero,
// so that a future version can give them meaning without ambiguity.
type opKind uint8

const (
	kindNone    opKind = iota // no fields (nop)
	kindPath                  // path in buffer; Aux = path length; Length = capacity
	kindRename                // two paths back to back; Aux = len(first); Length = total
	kindIO                    // Handle, Offset, Length bytes of buffer
	kindHandle                // Handle only
	kindRecord                // Handle, buffer of at least the reply record (fstat)
	kindDir                   // Handle, Offset = cookie, buffer receives entries
	kindResize                // Handle, Offset = new size
	kindSetattr               // Setattr record || path; Aux = path length; Offset = size
	kindXattr                 // path || name [|| value]; Aux = len(path), Offset = len(name)
	kindFalloc                // Handle, Offset, buffer holds the u64 length
	kindBuf                   // buffer receives a reply (service queries)
)

type opRule struct {
	kind      opKind
	flags     uint32 // allowed Flags bits
	mode      bool   // Mode may be non-zero
	minLength uint32 // smallest buffer (reply record)
}

var opRules = [opCount]opRule{
	OpNop:         {kind: kindNone},
	OpStat:        {kind: kindPath, minLength: StatSize},
	OpOpen:        {kind: kindPath, flags: OpenFlagsMask, mode: true},
	OpCreate:      {kind: kindPath, mode: true},
	OpRead:        {kind: kindIO},
	OpWrite:       {kind: kindIO},
	OpFsync:       {kind: kindHandle, flags: FsyncData},
	OpClose:       {kind: kindHandle},
	OpMkdir:       {kind: kindPath, mode: true},
	OpUnlink:      {kind: kindPath},
	OpRmdir:       {kind: kindPath},
	OpRename:      {kind: kindRename},
	OpReaddir:     {kind: kindDir, minLength: DirentHeaderSize + 255},
	OpTruncate:    {kind: kindResize},
	OpFstat:       {kind: kindRecord, minLength: StatSize},
	OpLstat:       {kind: kindPath, minLength: StatSize},
	OpLink:        {kind: kindRename},
	OpSymlink:     {kind: kindRename},
	OpReadlink:    {kind: kindPath},
	OpSetattr:     {kind: kindSetattr, flags: SetattrMask, mode: true},
	OpStatfs:      {kind: kindPath, minLength: StatfsSize},
	OpGetxattr:    {kind: kindXattr, flags: XattrSizeOnly},
	OpSetxattr:    {kind: kindXattr, flags: XattrCreate | XattrReplace},
	OpListxattr:   {kind: kindPath},
	OpRemovexattr: {kind: kindXattr},
	OpFallocate:   {kind: kindFalloc, flags: FallocateMask, minLength: 8},
	OpLock:        {kind: kindPath},
	OpMounts:      {kind: kindBuf, minLength: MountHeaderSize + 1},
	OpStatus:      {kind: kindBuf, minLength: 2},
}

// TakesHandle reports whether op names an open handle, whose ownership the service
// checks after Validate.
func TakesHandle(op Op) bool {
	if op >= opCount || op == OpInvalid {
		return false
	}
	switch opRules[op].kind {
	case kindIO, kindHandle, kindRecord, kindDir, kindResize, kindFalloc:
		return true
	}
	return false
}

const maxOffset = 1<<63 - 1

// Validate checks every field of d against the protocol and against l, the data area
// of the client that sent it. It returns nil or an *Error; it never panics and never
// allocates.
func Validate(d *Desc, l Limits) *Error {
	if d.Version != Version {
		return errVersion
	}
	if d.Op == OpInvalid || d.Op >= opCount {
		return errOp
	}
	r := &opRules[d.Op]
	if d.Flags&^r.flags != 0 {
		return errFlags
	}
	if !r.mode && d.Mode != 0 || d.Mode&^ModeMask != 0 {
		return errMode
	}
	takesHandle := TakesHandle(d.Op)
	if !takesHandle && d.Handle != 0 {
		return errHandle
	}
	switch r.kind {
	case kindIO, kindDir, kindResize, kindFalloc, kindSetattr:
		if d.Offset > maxOffset {
			return errOffsetMax
		}
	case kindXattr:
		if d.Offset == 0 || d.Offset > NameMax {
			return errNameLen
		}
	default:
		if d.Offset != 0 {
			return errOffset
		}
	}
	switch r.kind {
	case kindNone, kindHandle, kindResize:
		if d.Length != 0 || d.BufOff != 0 {
			return errLength
		}
		if d.Aux != 0 {
			return errAux
		}
		return nil
	case kindIO:
		if d.Length > MaxIO {
			return errIOSize
		}
		if d.Offset+uint64(d.Length) > maxOffset {
			return errOffsetMax
		}
		if d.Aux != 0 {
			return errAux
		}
	case kindRecord, kindDir, kindFalloc, kindBuf:
		if d.Aux != 0 {
			return errAux
		}
	case kindPath:
		if d.Aux == 0 || d.Aux > d.Length {
			return errPathLen
		}
		if d.Aux > PathMax {
			return errPathMax
		}
	case kindRename:
		if d.Aux == 0 || d.Aux >= d.Length {
			return errPathLen
		}
		if d.Aux > PathMax || d.Length-d.Aux > PathMax {
			return errPathMax
		}
	case kindSetattr:
		if d.Aux == 0 || uint64(d.Aux)+SetattrSize > uint64(d.Length) {
			return errPathLen
		}
		if d.Aux > PathMax {
			return errPathMax
		}
	case kindXattr:
		if d.Aux == 0 || uint64(d.Aux)+d.Offset > uint64(d.Length) {
			return errPathLen
		}
		if d.Aux > PathMax {
			return errPathMax
		}
	}
	if d.Length < r.minLength {
		return errRecordSize
	}
	// 64-bit arithmetic: BufOff+Length cannot wrap.
	if d.BufOff < l.DataLo || uint64(d.BufOff)+uint64(d.Length) > uint64(l.DataHi) {
		return errBuffer
	}
	return nil
}
