// Package pebblevfs adapts an fslib.Client to Pebble's vfs.FS, so that a Pebble
// store (github.com/cockroachdb/pebble/v2) keeps its files in the tenant's
// filesystem service, or in any in-process stack of libservices:
//
//	opts := &pebble.Options{}
//	pebblevfs.Configure(opts, client) // FS, and no sync_file_range emulation
//	db, err := pebble.Open("db", opts)
//
// It is a thin adapter: every call is one or a few fslib calls, and fslib's
// semantics apply (no umask, names resolved by the FS from its root, errors as
// *fs.PathError with a syscall.Errno, which Pebble's oserror checks understand).
// Names are slash-separated (PathJoin and friends are package path's).
//
// Choices, each explained where it is made: files are created with mode 0644 (the
// 0666 Pebble asks of the OS, less the usual umask, which fslib does not apply);
// Preallocate tolerates an FS without fallocate; SyncTo is a full fdatasync;
// Sync of a directory tolerates an FS that cannot fsync a directory handle; Fd is
// vfs.InvalidFd, so Pebble's fd-based paths (fadvise, sync_file_range) stay off;
// Lock is fslib's Client.Lock: the FS's lock where it has one (fslib.Locker),
// otherwise an in-process lock that excludes only users of the same Client.
//
// Invariants: an FS holds only its Client; a File holds only its fslib.File and
// whether it is a directory. Lock order: no locks of its own (fslib's apply).
package pebblevfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/libservices"
)

// fileMode is what created files get: Pebble asks the OS for 0666 and relies on
// the process umask (usually 022) to take group and other write away; fslib
// applies no umask, so the adapter asks for the result directly.
const fileMode = 0o644

// createRetries bounds Create's remove-and-retry loop against a name that keeps
// reappearing (another creator), which vfs.Default would retry forever.
const createRetries = 16

// FS is a vfs.FS over an fslib.Client.
type FS struct {
	c *fslib.Client
}

var _ vfs.FS = (*FS)(nil)

// New returns a vfs.FS over c. Closing c is the caller's business (after the
// Pebble store is closed).
func New(c *fslib.Client) *FS { return &FS{c: c} }

// Create implements vfs.FS: the file is created anew (O_EXCL), an existing one
// removed first so that the new file is a new inode even when the old name is a
// hard link, as vfs.Default.
func (f *FS) Create(name string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	for i := 0; ; i++ {
		file, err := f.c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
		if err == nil {
			return &File{f: file}, nil
		}
		if !errors.Is(err, fs.ErrExist) || i >= createRetries {
			return nil, err
		}
		if err := f.c.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
}

// Link implements vfs.FS.
func (f *FS) Link(oldname, newname string) error { return f.c.Link(oldname, newname) }

// Open implements vfs.FS. The options need a descriptor (Fd), which there is
// not; they are applied anyway, as vfs.Default does, and find none.
func (f *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.c.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	vf := &File{f: file}
	for _, o := range opts {
		o.Apply(vf)
	}
	return vf, nil
}

// OpenReadWrite implements vfs.FS: read-write, created if missing.
func (f *FS) OpenReadWrite(name string, _ vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.c.OpenFile(name, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, err
	}
	vf := &File{f: file}
	for _, o := range opts {
		o.Apply(vf)
	}
	return vf, nil
}

// OpenDir implements vfs.FS: the directory opened read-only, for Sync.
func (f *FS) OpenDir(name string) (vfs.File, error) {
	file, err := f.c.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return &File{f: file, dir: true}, nil
}

// Remove implements vfs.FS (a file or an empty directory).
func (f *FS) Remove(name string) error { return f.c.Remove(name) }

// RemoveAll implements vfs.FS.
func (f *FS) RemoveAll(name string) error { return f.c.RemoveAll(name) }

// Rename implements vfs.FS. It is fslib's (and os's) Rename: replacing a file
// works, replacing a directory is EEXIST.
func (f *FS) Rename(oldname, newname string) error { return f.c.Rename(oldname, newname) }

// ReuseForWrite implements vfs.FS by renaming oldname to newname and opening it
// for writing without truncation, as vfs.Default.
func (f *FS) ReuseForWrite(oldname, newname string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	if err := f.c.Rename(oldname, newname); err != nil {
		return nil, err
	}
	file, err := f.c.OpenFile(newname, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, err
	}
	return &File{f: file}, nil
}

// MkdirAll implements vfs.FS; perm is applied without a umask.
func (f *FS) MkdirAll(dir string, perm os.FileMode) error { return f.c.MkdirAll(dir, perm) }

// Lock implements vfs.FS with fslib's Client.Lock (see the package doc for
// what it excludes).
func (f *FS) Lock(name string) (io.Closer, error) { return f.c.Lock(name) }

// List implements vfs.FS: the names in dir, sorted.
func (f *FS) List(dir string) ([]string, error) { return f.c.ReadDirNames(dir) }

// Stat implements vfs.FS.
func (f *FS) Stat(name string) (vfs.FileInfo, error) {
	fi, err := f.c.Stat(name)
	if err != nil {
		return nil, err
	}
	return fileInfo{fi}, nil
}

// PathBase implements vfs.FS.
func (f *FS) PathBase(p string) string { return path.Base(p) }

// PathJoin implements vfs.FS.
func (f *FS) PathJoin(elem ...string) string { return path.Join(elem...) }

// PathDir implements vfs.FS.
func (f *FS) PathDir(p string) string { return path.Dir(p) }

// GetDiskUsage implements vfs.FS from the statistics of the filesystem that
// holds p (fslib's StatfsPath: over a service, the instance p is in).
func (f *FS) GetDiskUsage(p string) (vfs.DiskUsage, error) {
	var st libservices.Statfs
	if err := f.c.StatfsPath(p, &st); err != nil {
		return vfs.DiskUsage{}, err
	}
	// Block counts are in fragment units (f_frsize) on Linux; Bsize is the
	// preferred I/O size, equal on most filesystems but not all.
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	total := st.Blocks * unit
	return vfs.DiskUsage{
		AvailBytes: st.Bavail * unit,
		TotalBytes: total,
		UsedBytes:  total - st.Bfree*unit,
	}, nil
}

// Unwrap implements vfs.FS: this FS wraps no other vfs.FS.
func (f *FS) Unwrap() vfs.FS { return nil }

// fileInfo adds DeviceID to fslib's FileInfo. The libservices contract has no
// device numbers, so it is the zero DeviceID, as vfs's in-memory FS reports.
type fileInfo struct{ fs.FileInfo }

func (fileInfo) DeviceID() vfs.DeviceID { return vfs.DeviceID{} }

// File is a vfs.File over an fslib.File.
type File struct {
	f   *fslib.File
	dir bool
}

var _ vfs.File = (*File)(nil)

// Close implements vfs.File.
func (f *File) Close() error { return f.f.Close() }

// Read implements vfs.File.
func (f *File) Read(p []byte) (int, error) { return f.f.Read(p) }

// ReadAt implements vfs.File.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// Write implements vfs.File.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// WriteAt implements vfs.File.
func (f *File) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }

// Preallocate implements vfs.File with fallocate(FALLOC_FL_KEEP_SIZE). It is an
// optimisation Pebble may ask for and an FS may not offer: EOPNOTSUPP is success.
func (f *File) Preallocate(off, length int64) error {
	if length <= 0 {
		return nil // fallocate(2) would say EINVAL; there is nothing to reserve
	}
	err := f.f.Fallocate(libservices.FallocKeepSize, off, length)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return nil
	}
	return err
}

// Stat implements vfs.File.
func (f *File) Stat() (vfs.FileInfo, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return nil, err
	}
	return fileInfo{fi}, nil
}

// Sync implements vfs.File: fsync. For a directory (OpenDir) an FS that cannot
// fsync a directory handle answers EINVAL (Linux's answer for a file that does
// not support syncing), EISDIR or EBADF; that is success here. Pebble syncs a
// directory to make creations and renames in it durable before it relies on
// them; an FS without directory fsync offers no stronger primitive for that (its
// namespace operations are as durable as they will get), so failing would make
// Pebble unusable on it without making anything more durable.
func (f *File) Sync() error {
	err := f.f.Sync()
	if f.dir && (errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EBADF)) {
		return nil
	}
	return err
}

// SyncData implements vfs.File: fdatasync.
func (f *File) SyncData() error {
	if f.dir {
		return f.Sync()
	}
	return f.f.Datasync()
}

// SyncTo implements vfs.File. The contract has no sync_file_range, so the whole
// file's data is synced (fdatasync) and fullSync is true; a directory's SyncTo is
// a no-op that returns false, as vfs requires.
func (f *File) SyncTo(length int64) (fullSync bool, err error) {
	if f.dir {
		return false, nil
	}
	if err := f.f.Datasync(); err != nil {
		return false, err
	}
	return true, nil
}

// Prefetch implements vfs.File: a no-op. Read-ahead belongs to the FS (a cache
// libservice), which the contract gives no hint to pass on.
func (f *File) Prefetch(offset, length int64) error { return nil }

// Fd implements vfs.File: there is no descriptor.
func (f *File) Fd() uintptr { return vfs.InvalidFd }

// Configure sets o up for a store on c: the adapter as its FS, and no
// BytesPerSync or WALBytesPerSync. Those ask Pebble to start the kernel's
// write-back early with sync_file_range, which does not make data durable; a
// file without a descriptor (Fd is vfs.InvalidFd here) gets a full fdatasync
// instead every BytesPerSync bytes (512 KiB by default), which on the direct path
// is a round trip that also flushes the service's write-back cache, and makes
// sstable writes several times slower than on the kernel path. The service's
// cache decides write-back itself; every durability point Pebble needs (WAL
// syncs, the end of a flush or compaction, the manifest) still syncs.
func Configure(o *pebble.Options, c *fslib.Client) {
	o.FS = New(c)
	o.BytesPerSync = 0
	o.WALBytesPerSync = 0
}
