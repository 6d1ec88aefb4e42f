// Package libservices is the filesystem contract between a tenant's filesystem
// service and the libservices it stacks (union, cache, passthrough, memfs, and later
// local, Ceph and key-value filesystems), plus the registry that builds a stack from
// configuration.
//
// It is not an implementation: each libservice lives in its own subpackage and
// asserts conformance (`var _ libservices.FS = (*FS)(nil)`); libservices/fstest is
// the one conformance suite every implementation passes, and that suite is also run
// against the host kernel (tmpfs and ext4 directories through passthrough) so that
// the errno it expects is the kernel's.
//
// # The contract in short
//
//   - Namespace operations take a path; data operations take a Handle from Open.
//   - Errors are syscall.Errno and nothing else (nil on success), so that the
//     direct path and FUSE can hand them to applications unchanged.
//   - Results are written into caller-owned structures (Attr, Statfs) and buffers,
//     so that a cached Stat or ReadAt allocates nothing.
//   - A libservice that wraps others implements Wrapper (one inner FS) or
//     MultiWrapper (several, e.g. union), and forwards the optional capabilities
//     that concern handles (Flusher).
//
// # Paths
//
// A path names a file relative to the root of the FS. Clean documents exactly how a
// path is interpreted; in short: "/" separates components, a leading "/" is
// ignored (the FS root is the only root), "." and empty components are dropped, the
// root itself is "." (also "/"), "" is ENOENT, a NUL byte is EINVAL, a ".."
// component is EINVAL (a libservice never resolves ".." lexically, so a path can
// not name anything outside the FS; symbolic link targets may contain "..", and
// they are resolved inside the FS, clamped at its root like a chroot), a component
// longer than NameMax bytes is ENAMETOOLONG, and a path longer than PathMax bytes is
// ENAMETOOLONG. A trailing "/" is dropped, like any empty component.
//
// Operations that would remove, replace or create the root return: Rmdir EBUSY,
// Unlink EISDIR, Rename (either side) EBUSY, Mkdir, Symlink and Link EEXIST.
//
// # Concurrency
//
// Every method of an FS is safe for concurrent use by several goroutines. Operations
// on one Handle may run concurrently, with the semantics of pread/pwrite on one file
// description: overlapping concurrent ReadAt and WriteAt calls may observe each
// other partially (no atomicity beyond what the FS below gives); non-overlapping
// ones are independent. Close must not race with other operations on the same
// handle; after Close every operation on the handle returns EBADF.
//
// # Lock order
//
// This package holds one lock, the registry's (registryMu), taken alone.
package libservices

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// NameMax is the longest file name component, in bytes (Linux NAME_MAX).
const NameMax = 255

// PathMax is the longest path, in bytes, including the terminating NUL the kernel
// counts (Linux PATH_MAX).
const PathMax = 4096

// Handle is an open file of one FS, returned by Open and passed back to the data
// operations of the same FS. Its dynamic type belongs to the FS that created it
// (usually a pointer to an unexported struct, so that passing it costs no
// allocation); a handle from another FS, or nil, gets EBADF.
type Handle any

// Attr is the attribute set of a file, filled in by Lstat, Stat and Fstat.
type Attr struct {
	Ino     uint64 // unique within the FS while the file exists
	Mode    uint32 // file type (S_IFMT bits) and permission bits, as in stat(2)
	Nlink   uint32
	Uid     uint32
	Gid     uint32
	Rdev    uint64
	Size    int64
	Blocks  int64 // 512-byte units actually allocated
	Blksize int32
	Atime   Timespec
	Mtime   Timespec
	Ctime   Timespec
}

// Timespec is a time in seconds and nanoseconds since the Unix epoch.
type Timespec struct {
	Sec  int64
	Nsec int64
}

// Before reports whether t is strictly earlier than u.
func (t Timespec) Before(u Timespec) bool {
	return t.Sec < u.Sec || t.Sec == u.Sec && t.Nsec < u.Nsec
}

// IsDir reports whether a describes a directory.
func (a *Attr) IsDir() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// IsRegular reports whether a describes a regular file.
func (a *Attr) IsRegular() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFREG }

// IsSymlink reports whether a describes a symbolic link.
func (a *Attr) IsSymlink() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// SetAttr says which attributes Setattr changes (Valid) and to what.
type SetAttr struct {
	Valid uint32 // SetMode | SetUid | ...
	Mode  uint32 // permission bits only (07777); the file type never changes
	Uid   uint32
	Gid   uint32
	Size  int64
	Atime Timespec
	Mtime Timespec
}

// Bits of SetAttr.Valid.
const (
	SetMode     uint32 = 1 << iota // chmod
	SetUid                         // chown, owner
	SetGid                         // chown, group
	SetSize                        // truncate
	SetAtime                       // utimensat, atime = SetAttr.Atime
	SetMtime                       // utimensat, mtime = SetAttr.Mtime
	SetAtimeNow                    // utimensat UTIME_NOW for atime
	SetMtimeNow                    // utimensat UTIME_NOW for mtime
)

// Statfs is the result of FS.Statfs, in the units of statfs(2).
type Statfs struct {
	Type    int64
	Bsize   int64
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Namelen int64
	Frsize  int64
}

// DirEntry is one entry of ReadDir. Type is the S_IFMT bits of the file's mode.
type DirEntry struct {
	Name string
	Ino  uint64
	Type uint32
}

// Flags for Open are the Linux open(2) flags: O_RDONLY, O_WRONLY, O_RDWR, O_CREAT,
// O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NOFOLLOW. Others (O_DIRECT, O_SYNC,
// O_CLOEXEC, O_NONBLOCK, O_LARGEFILE, O_NOATIME) are accepted and may be ignored;
// O_PATH and O_TMPFILE are EINVAL.
const (
	O_RDONLY    = unix.O_RDONLY
	O_WRONLY    = unix.O_WRONLY
	O_RDWR      = unix.O_RDWR
	O_ACCMODE   = unix.O_ACCMODE
	O_CREAT     = unix.O_CREAT
	O_EXCL      = unix.O_EXCL
	O_TRUNC     = unix.O_TRUNC
	O_APPEND    = unix.O_APPEND
	O_DIRECTORY = unix.O_DIRECTORY
	O_NOFOLLOW  = unix.O_NOFOLLOW
)

// Fallocate modes, as fallocate(2).
const (
	FallocKeepSize  = unix.FALLOC_FL_KEEP_SIZE
	FallocPunchHole = unix.FALLOC_FL_PUNCH_HOLE
)

// Setxattr flags, as setxattr(2).
const (
	XattrCreate  = unix.XATTR_CREATE
	XattrReplace = unix.XATTR_REPLACE
)

// FS is a filesystem libservice. See the package documentation for the path rules,
// the errno discipline and the concurrency rules.
type FS interface {
	// Lstat fills a with the attributes of name, not following a final symlink.
	Lstat(name string, a *Attr) error
	// Stat is Lstat that follows a final symbolic link (ELOOP after MaxSymlinks).
	Stat(name string, a *Attr) error

	// Mkdir creates a directory with permission bits mode&07777 (no umask).
	Mkdir(name string, mode uint32) error
	// Unlink removes a non-directory (EISDIR for a directory).
	Unlink(name string) error
	// Rmdir removes an empty directory (ENOTDIR, ENOTEMPTY).
	Rmdir(name string) error
	// Rename is rename(2): it atomically replaces newname if it exists, with the
	// errors of rename(2): EISDIR, ENOTDIR, ENOTEMPTY, EINVAL (into itself).
	Rename(oldname, newname string) error
	// Link makes newname a hard link to oldname (not following a final symlink of
	// oldname, like linkat without AT_SYMLINK_FOLLOW).
	Link(oldname, newname string) error
	// Symlink creates name as a symbolic link with content target.
	Symlink(target, name string) error
	// Readlink returns the content of the symbolic link name (EINVAL if not one).
	Readlink(name string) (string, error)
	// ReadDir returns the entries of directory name, without "." and "..", in no
	// particular order. Every entry that exists for the whole call is returned
	// exactly once.
	ReadDir(name string) ([]DirEntry, error)
	// Setattr changes the attributes selected by sa.Valid of name, following a
	// final symlink (like chmod, chown, truncate and utimensat without
	// AT_SYMLINK_NOFOLLOW). Any change updates ctime.
	Setattr(name string, sa *SetAttr) error
	// Statfs describes the filesystem that holds the root.
	Statfs(st *Statfs) error

	// Getxattr copies the value of extended attribute attr of name into dest and
	// returns its length; with len(dest) == 0 it returns the length only; ERANGE if
	// dest is too small, ENODATA if absent. Xattr operations follow a final symlink.
	Getxattr(name, attr string, dest []byte) (int, error)
	// Setxattr sets attr of name to data; flags is 0, XattrCreate or XattrReplace.
	Setxattr(name, attr string, data []byte, flags int) error
	// Listxattr returns the names of the extended attributes of name.
	Listxattr(name string) ([]string, error)
	// Removexattr removes attr of name (ENODATA if absent).
	Removexattr(name, attr string) error

	// Open opens name with open(2) flags; with O_CREAT it creates a regular file
	// with permission bits mode&07777 (no umask). This is also the create operation.
	Open(name string, flags int, mode uint32) (Handle, error)
	// ReadAt reads into p at off, like pread(2): a short count (possibly 0) at end
	// of file, never io.EOF. EBADF if h was not opened for reading, EISDIR on a
	// directory, EINVAL for a negative offset.
	ReadAt(h Handle, p []byte, off int64) (int, error)
	// WriteAt writes p at off, like pwrite(2); for a handle opened with O_APPEND
	// the data goes to the end of the file whatever off is (Linux pwrite). EFBIG
	// past the largest file size of the FS, EINVAL when off+len(p) overflows.
	WriteAt(h Handle, p []byte, off int64) (int, error)
	// Fstat fills a with the attributes of the open file.
	Fstat(h Handle, a *Attr) error
	// Ftruncate sets the size of the open file (EINVAL if not open for writing).
	Ftruncate(h Handle, size int64) error
	// Fallocate is fallocate(2) with mode 0, FallocKeepSize or
	// FallocPunchHole|FallocKeepSize; others are EOPNOTSUPP.
	Fallocate(h Handle, mode uint32, off, length int64) error
	// Fsync makes the data and metadata of the file durable in the FS below.
	Fsync(h Handle) error
	// Fdatasync makes the data durable (and the metadata needed to read it).
	Fdatasync(h Handle) error
	// Close releases the handle, after which it is EBADF. Close also flushes what
	// a write-back layer holds for the file, and reports a failure to do so.
	Close(h Handle) error
}

// Wrapper is implemented by a libservice stacked on exactly one other.
type Wrapper interface {
	Unwrap() FS
}

// MultiWrapper is implemented by a libservice stacked on several others (union:
// the upper branch first).
type MultiWrapper interface {
	Unwrap() []FS
}

// Identifier is an optional capability: an FS whose contents have a stable identity
// that outlives the FS value (a host directory: its device and inode) returns it, so
// that a shared cache can recognise two instances over the same data. FSes without
// it get an identity unique to the FS value.
type Identifier interface {
	Identity() [2]uint64
}

// Closer is an optional capability of an FS that owns resources (file
// descriptors, goroutines). Close releases them, flushing write-back data first;
// a stack closes from the top, and each layer closes what it wraps.
type Closer interface {
	CloseFS() error
}

// Flusher is an optional capability of an FS that may hold written data back (a
// write-back cache) or that wraps one. Close flushes too, but some callers cannot
// report Close's error: a FUSE gateway closes on RELEASE, whose reply the kernel
// drops, so it calls Flush on FLUSH (every close(2) of a descriptor), the last
// place where an application can be told that its data did not make it.
type Flusher interface {
	// Flush writes what the FS holds back for the open file h to the FS below and
	// reports a failure to do so, without closing h and without making anything
	// durable (that is Fsync). A layer that wraps others flushes its own data,
	// then forwards to the layer h belongs to. nil where nothing is held back
	// (a handle open only for reading holds nothing back); EBADF for a handle
	// that is not open.
	Flush(h Handle) error
	// HoldsBack reports whether Flush can ever have something to do: false for a
	// write-through cache or a union whose layers hold nothing back. It does not
	// change over the life of the FS, so a caller may ask once and never call
	// Flush when it is false.
	HoldsBack() bool
}

// Reshaper is an optional capability of an FS that says when its operations
// changed directories other than the names they were asked about. A union
// copies a lower directory (and its ancestors) up before it creates, removes or
// changes anything in it, and the copy may differ from the original (its
// owner, when the service may not give files away). Reshapes returns a count
// of such side effects, which only grows, and known = true; a caller that keeps
// state derived from directories' attributes (libservices/access's memo of
// directory walks) drops it when the count moves, and keeps it across a plain
// create or unlink otherwise. A wrapper answers for what it wraps (known =
// false when that cannot say); an FS without the capability may have reshaped
// at any change.
type Reshaper interface {
	Reshapes() (count uint64, known bool)
}

// CounterReporter is an optional capability of a libservice with counters worth
// exporting as metrics (a cache's hits and misses). Counters calls fn once per
// counter; names are snake_case and stable.
type CounterReporter interface {
	Counters(fn func(name string, value int64))
}

// MaxSymlinks is the number of symbolic links one resolution may follow before
// ELOOP, as Linux (MAXSYMLINKS).
const MaxSymlinks = 40
