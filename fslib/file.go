package fslib

import (
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// What a File does after each write: O_DSYNC and O_SYNC, implemented here.
const (
	syncNone uint8 = iota
	syncData
	syncFull
)

// File is an open file of a Client, with the methods of os.File that the
// libservices contract can carry. See the package documentation for its
// concurrency rules.
type File struct {
	c        *Client
	h        libservices.Handle
	name     string
	append   bool
	syncMode uint8

	// hmu is held shared by every operation that passes h to the FS and
	// exclusively by Close, so that the FS never sees h after its Close.
	hmu    sync.RWMutex
	closed bool // guarded by hmu

	// mu serializes Read, Write, Seek and the directory methods, which share the
	// offset and the listing (os.File serializes them too).
	mu     sync.Mutex
	off    int64
	offEnd bool                   // off is the end of the file: set by an O_APPEND write, resolved by Fstat
	listed bool                   // dir holds the listing, taken at the first directory method
	dir    []libservices.DirEntry // sorted by name
	dirPos int
}

// Name returns the name the file was opened by.
func (f *File) Name() string { return f.name }

// acquire takes hmu shared for an operation on h, or reports the File (or its
// Client) closed. On success the caller releases with f.hmu.RUnlock.
func (f *File) acquire(op string) error {
	f.hmu.RLock()
	if f.closed || f.c.closed.Load() {
		f.hmu.RUnlock()
		return closedErr(op, f.name)
	}
	return nil
}

// pread is one FS.ReadAt, checked: a count outside [0, len(p)] from the FS would
// make the callers' slicing panic, so it becomes EIO.
func (f *File) pread(p []byte, off int64) (int, error) {
	n, err := f.c.fs.ReadAt(f.h, p, off)
	if n < 0 || n > len(p) {
		return 0, syscall.EIO
	}
	return n, err
}

// readFull reads until p is full, the FS returns 0 (end of file) or an error: the
// FS may return short counts (a pread capped by the kernel, a split transfer).
func (f *File) readFull(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := f.pread(p[done:], off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
		if n == 0 {
			break
		}
	}
	return done, nil
}

// writeFull writes all of p unless the FS fails or makes no progress (a short
// write without an error, reported by the callers as io.ErrShortWrite). It calls
// the FS at least once, so that an empty write to a file not open for writing is
// EBADF, as write(2) and os.File.Write.
func (f *File) writeFull(p []byte, off int64) (int, error) {
	done := 0
	for first := true; first || done < len(p); first = false {
		n, err := f.c.fs.WriteAt(f.h, p[done:], off+int64(done))
		if n < 0 || n > len(p)-done {
			return done, syscall.EIO
		}
		done += n
		if err != nil {
			return done, err
		}
		if n == 0 {
			break
		}
	}
	return done, nil
}

// afterWrite makes a write durable for O_SYNC and O_DSYNC files.
func (f *File) afterWrite() error {
	switch f.syncMode {
	case syncFull:
		return f.c.fs.Fsync(f.h)
	case syncData:
		return f.c.fs.Fdatasync(f.h)
	}
	return nil
}

// resolveEnd turns the "end of file" offset an O_APPEND write left into a number.
func (f *File) resolveEnd() error {
	if !f.offEnd {
		return nil
	}
	var a libservices.Attr
	if err := f.c.fs.Fstat(f.h, &a); err != nil {
		return err
	}
	f.off, f.offEnd = a.Size, false
	return nil
}

// Read reads up to len(p) bytes at the file offset and advances it; at end of file
// it returns 0, io.EOF. It returns fewer than len(p) bytes only at end of file or
// with an error.
func (f *File) Read(p []byte) (int, error) {
	if f == nil {
		return 0, os.ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.acquire("read"); err != nil {
		return 0, err
	}
	defer f.hmu.RUnlock()
	if err := f.resolveEnd(); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := f.readFull(p, f.off)
	f.off += int64(n)
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// ReadAt reads len(p) bytes at off, not using the file offset; fewer than len(p)
// come with io.EOF at end of file, or with an error. It may run concurrently with
// every other method but Close.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if f == nil {
		return 0, os.ErrInvalid
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: f.name, Err: syscall.EINVAL}
	}
	if err := f.acquire("read"); err != nil {
		return 0, err
	}
	n, err := f.readFull(p, off)
	f.hmu.RUnlock()
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Write writes p at the file offset (at the end of the file with O_APPEND) and
// advances it. A short write without an FS error is io.ErrShortWrite.
func (f *File) Write(p []byte) (int, error) {
	if f == nil {
		return 0, os.ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.acquire("write"); err != nil {
		return 0, err
	}
	defer f.hmu.RUnlock()
	var n int
	var err error
	if f.append {
		// The FS appends whatever the offset (libservices WriteAt, like Linux
		// pwrite on an O_APPEND file); where it appended is known only by a
		// Fstat, which is deferred until the offset is needed.
		n, err = f.writeFull(p, 0)
		if n > 0 {
			f.offEnd = true // Linux moves the offset only when it writes
		}
	} else {
		if err = f.resolveEnd(); err == nil {
			n, err = f.writeFull(p, f.off)
			f.off += int64(n)
		}
	}
	if err == nil && n > 0 {
		err = f.afterWrite()
	}
	if err != nil {
		return n, pathErr("write", f.name, err)
	}
	if n != len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// WriteAt writes p at off, not using the file offset. It may run concurrently with
// every other method but Close. On a file opened with O_APPEND it is
// ErrWriteAtInAppendMode, as with os.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if f == nil {
		return 0, os.ErrInvalid
	}
	if f.append {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: ErrWriteAtInAppendMode}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: syscall.EINVAL}
	}
	if len(p) == 0 {
		return 0, nil // as os: no FS call, hence no EBADF
	}
	if err := f.acquire("write"); err != nil {
		return 0, err
	}
	n, err := f.writeFull(p, off)
	if err == nil && n > 0 {
		err = f.afterWrite()
	}
	f.hmu.RUnlock()
	if err != nil {
		return n, pathErr("write", f.name, err)
	}
	if n != len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// Seek sets the file offset for the next Read or Write: relative to the start
// (io.SeekStart), the current offset (io.SeekCurrent) or the end of the file
// (io.SeekEnd, which costs a Fstat). A negative result is EINVAL. On a directory
// it also drops the listing, so that the next ReadDir lists it afresh (os.File
// does the same).
func (f *File) Seek(offset int64, whence int) (int64, error) {
	if f == nil {
		return 0, os.ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.acquire("seek"); err != nil {
		return 0, err
	}
	defer f.hmu.RUnlock()
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		if err := f.resolveEnd(); err != nil {
			return 0, pathErr("seek", f.name, err)
		}
		base = f.off
	case io.SeekEnd:
		var a libservices.Attr
		if err := f.c.fs.Fstat(f.h, &a); err != nil {
			return 0, pathErr("seek", f.name, err)
		}
		base = a.Size
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: syscall.EINVAL}
	}
	pos := base + offset
	if pos < 0 || (offset > 0 && pos < base) {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: syscall.EINVAL}
	}
	f.off, f.offEnd = pos, false
	f.listed, f.dir, f.dirPos = false, nil, 0
	return pos, nil
}

// Stat returns the FileInfo of the open file.
func (f *File) Stat() (fs.FileInfo, error) {
	if f == nil {
		return nil, os.ErrInvalid
	}
	if err := f.acquire("stat"); err != nil {
		return nil, err
	}
	fi := &fileInfo{name: basename(f.name)}
	err := f.c.fs.Fstat(f.h, &fi.attr)
	f.hmu.RUnlock()
	if err != nil {
		return nil, pathErr("stat", f.name, err)
	}
	return fi, nil
}

// Handle operations, written out rather than through a helper taking a func: a
// method value of the FS interface would allocate on every call.

// Sync makes the file's data and metadata durable in the FS below (fsync).
func (f *File) Sync() error {
	if f == nil {
		return os.ErrInvalid
	}
	if err := f.acquire("sync"); err != nil {
		return err
	}
	err := f.c.fs.Fsync(f.h)
	f.hmu.RUnlock()
	return pathErr("sync", f.name, err)
}

// Datasync makes the file's data durable, and the metadata needed to read it
// (fdatasync).
func (f *File) Datasync() error {
	if f == nil {
		return os.ErrInvalid
	}
	if err := f.acquire("datasync"); err != nil {
		return err
	}
	err := f.c.fs.Fdatasync(f.h)
	f.hmu.RUnlock()
	return pathErr("datasync", f.name, err)
}

// Truncate changes the size of the open file (which must be open for writing);
// the offset is unchanged.
func (f *File) Truncate(size int64) error {
	if f == nil {
		return os.ErrInvalid
	}
	if err := f.acquire("truncate"); err != nil {
		return err
	}
	err := f.c.fs.Ftruncate(f.h, size)
	f.hmu.RUnlock()
	return pathErr("truncate", f.name, err)
}

// Fallocate is fallocate(2) on the open file: mode 0, libservices.FallocKeepSize
// or FallocPunchHole|FallocKeepSize.
func (f *File) Fallocate(mode uint32, off, length int64) error {
	if f == nil {
		return os.ErrInvalid
	}
	if err := f.acquire("fallocate"); err != nil {
		return err
	}
	err := f.c.fs.Fallocate(f.h, mode, off, length)
	f.hmu.RUnlock()
	return pathErr("fallocate", f.name, err)
}

// Close releases the file. It waits for operations in flight on the File, and
// reports the FS's Close error (a write-back layer's flush failure, for one). A
// second Close returns os.ErrClosed.
func (f *File) Close() error {
	if f == nil {
		return os.ErrInvalid
	}
	f.hmu.Lock()
	if f.closed {
		f.hmu.Unlock()
		return closedErr("close", f.name)
	}
	f.closed = true
	f.hmu.Unlock()
	// Every user of h held hmu and is gone; later ones see closed. The handle is
	// released even when the Client is closed, so that an FS that outlives the
	// Client does not keep it.
	return pathErr("close", f.name, f.c.fs.Close(f.h))
}

// nextEntries returns the next n entries of the listing (all remaining for n <=
// 0), listing the directory at the first call; io.EOF when n > 0 and none remain.
// The caller holds f.mu.
func (f *File) nextEntries(n int) ([]libservices.DirEntry, error) {
	if err := f.acquire("readdirent"); err != nil {
		return nil, err
	}
	f.hmu.RUnlock()
	if !f.listed {
		ents, err := f.c.list(f.name)
		if err != nil {
			if pe, ok := err.(*fs.PathError); ok && pe.Op == "open" {
				pe.Op = "readdirent" // the file is open: the listing failed, not an open
			}
			return nil, err
		}
		f.dir, f.dirPos, f.listed = ents, 0, true
	}
	rest := f.dir[f.dirPos:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		if len(rest) > n {
			rest = rest[:n]
		}
	}
	f.dirPos += len(rest)
	return rest, nil
}

// ReadDir returns the next n entries of the directory (all remaining for n <= 0,
// then never io.EOF), sorted by name; with n > 0 it returns io.EOF once none
// remain, as os.File.ReadDir.
func (f *File) ReadDir(n int) ([]fs.DirEntry, error) {
	if f == nil {
		return nil, os.ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ents, err := f.nextEntries(n)
	if err != nil {
		return nil, err
	}
	return f.c.dirEntries(f.name, ents), nil
}

// Readdirnames is ReadDir returning names only.
func (f *File) Readdirnames(n int) ([]string, error) {
	if f == nil {
		return nil, os.ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ents, err := f.nextEntries(n)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Name
	}
	return out, nil
}

// Readdir is ReadDir returning the FileInfo of each entry (an Lstat each; entries
// removed in the meantime are left out, as os does).
func (f *File) Readdir(n int) ([]fs.FileInfo, error) {
	if f == nil {
		return nil, os.ErrInvalid
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ents, err := f.nextEntries(n)
	if err != nil {
		return nil, err
	}
	out := make([]fs.FileInfo, 0, len(ents))
	for _, e := range ents {
		fi, err := f.c.lstat(joinName(f.name, e.Name), e.Name)
		if err != nil {
			if isErrno(err, syscall.ENOENT) {
				continue
			}
			return out, err
		}
		out = append(out, fi)
	}
	return out, nil
}

var (
	_ io.ReadWriteSeeker = (*File)(nil)
	_ io.ReaderAt        = (*File)(nil)
	_ io.WriterAt        = (*File)(nil)
	_ io.StringWriter    = (*File)(nil)
	_ fs.ReadDirFile     = (*File)(nil)
)

// fstat is Fstat under the File's closing discipline, with the FS's errno.
func (f *File) fstat(a *libservices.Attr) error {
	if err := f.acquire("stat"); err != nil {
		return err
	}
	err := f.c.fs.Fstat(f.h, a)
	f.hmu.RUnlock()
	return err
}

// preadChecked is one FS.ReadAt under the File's closing discipline, its error as a
// PathError.
func (f *File) preadChecked(p []byte, off int64) (int, error) {
	if err := f.acquire("read"); err != nil {
		return 0, err
	}
	n, err := f.pread(p, off)
	f.hmu.RUnlock()
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	return n, nil
}
