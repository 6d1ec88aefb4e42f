// Package fslib is the application library of the direct path: an os-like file API
// (Client, File, FileInfo) over a libservices.FS. Applications use it to reach their
// tenant's filesystem service over shared memory (the remote FS built by Dial), or an
// in-process stack of libservices (New): the code above the libservices.FS seam is
// the same either way, and so are its semantics.
//
// It is not a filesystem (the service and the libservices are) and not the transport
// (ipc/front). Client.FS adapts a Client to io/fs; package fslib/pebblevfs adapts it
// to Pebble's vfs.FS.
//
// # Semantics
//
// Functions and methods behave like their namesakes in package os, with these
// differences, each for a reason given where it is implemented:
//
//   - Names are resolved by the FS, relative to its root (libservices.Clean): a
//     leading "/" names the root, a trailing "/" is ignored (os would insist on a
//     directory), and a ".." component is EINVAL rather than resolved. There is
//     no working directory.
//   - No umask is applied: the perm of Mkdir, OpenFile and WriteFile is the mode the
//     file gets, as with libservices. Callers that want a umask mask perm themselves.
//   - Errors are *fs.PathError (and *os.LinkError for Rename, Link, Symlink, as os)
//     whose Err is the syscall.Errno from the FS, so errors.Is(err, fs.ErrNotExist)
//     and friends work. Exceptions, as os: io.EOF, io.ErrShortWrite, os.ErrClosed
//     (inside a PathError) for a closed File or Client, and fs.ErrInvalid from the
//     io/fs adapter; ErrWriteAtInAppendMode comes inside a PathError too, where os
//     returns its own bare.
//   - FileInfo.Sys returns *libservices.Attr (not *syscall.Stat_t: the contract has
//     no device number, and handing out the Attr the FS filled costs no allocation).
//   - Rename refuses to replace an existing directory (EEXIST), exactly like
//     os.Rename, although the FS's rename(2) semantics would replace an empty one.
//   - RemoveAll refuses the root (EINVAL), where os.RemoveAll("/") would empty it.
//   - O_SYNC and O_DSYNC are implemented here (Fsync or Fdatasync after each write
//     returns) instead of being passed to the FS, which may ignore them.
//   - Read fills p unless it reaches end of file or an error (it loops over short
//     transfers of the FS); os.File.Read on a pipe would return early.
//   - A directory File lists its entries with FS.ReadDir on the name it was opened
//     by (the contract has no handle-based directory read): the listing is taken at
//     the first ReadDir, Readdir or Readdirnames and paged from memory, so a rename
//     of the directory after Open is not seen, and entries come sorted by name.
//   - After an O_APPEND Write the offset is "end of file", resolved by Fstat the
//     next time it is needed (Read, Seek), so an appending Write costs one FS call.
//   - Over the direct path (Dial), a call to a service that is alive but does not
//     answer (stopped, deadlocked) fails with ETIMEDOUT after
//     DialOptions.CallTimeout, 30 s by default, like a soft NFS mount (its outcome
//     is unknown: a write may still land); a negative CallTimeout waits as long
//     as the service lives, like a hard mount. A service that died fails calls
//     with ENOTCONN, and the first call after it is back reconnects.
//
// # Concurrency
//
// A Client is safe for concurrent use. A File is too: ReadAt, WriteAt, Stat, Sync
// and Truncate run concurrently with each other (pread/pwrite semantics, see
// libservices); Read, Write, Seek and the directory methods share the offset and the
// listing and are serialized by the File's mutex, like os.File. Close waits for the
// operations in flight on the File to finish, then releases the handle; operations
// after Close return os.ErrClosed in a PathError. Close of the Client closes the FS
// (libservices.Closer) but not Files still open: their operations then fail with
// os.ErrClosed, and their Close still releases their handle.
//
// # Invariants
//
// A File's handle is passed to the FS only while File.hmu is held (shared by data
// operations, exclusive by Close) and File.closed is false, so the FS never sees a
// handle after its Close, as the contract requires. The Client caches nothing that a
// reconnect of a remote FS could invalidate, except the Files' handles; the
// in-process lock table is used only when the FS does not implement Locker.
//
// # Performance
//
// `go test -run '^$' -bench 'Stat|ReadAt4K' -benchmem -count 10 ./fslib`, over
// memfs, against the same calls on memfs directly. Read, Write, WriteAt and Sync
// allocate nothing; Stat allocates the FileInfo it returns (it escapes through
// the fs.FileInfo interface, so this API cannot avoid it). TestAllocs pins all of
// this. Figures with their machine and date: docs/results/2026-11-21/fslib-bench.md.
//
// # Lock order
//
// File.mu (offset, listing) before File.hmu (handle); the FS's own locks after
// both. Client.locks.mu (the in-process lock table) is taken alone, never while
// calling the FS.
package fslib
