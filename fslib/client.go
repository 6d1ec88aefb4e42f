package fslib

import (
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// Client is an application's view of one filesystem: the os-like functions of this
// package, as methods. It is safe for concurrent use.
type Client struct {
	fs     libservices.FS
	closed atomic.Bool
	locks  lockTable
}

// New returns a Client over fsys: an in-process stack of libservices, or (through
// Dial) the tenant's service. The Client owns fsys from now on: Close closes it.
func New(fsys libservices.FS) *Client {
	return &Client{fs: fsys}
}

// Close closes the FS if it implements libservices.Closer (a remote FS disconnects,
// a passthrough FS closes its root), returning the FS's error (a syscall.Errno).
// Files still open are not closed: see the package documentation. A second Close
// returns os.ErrClosed.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return os.ErrClosed
	}
	if cl, ok := c.fs.(libservices.Closer); ok {
		return libservices.Errno(cl.CloseFS())
	}
	return nil
}

func closedErr(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: os.ErrClosed}
}

// Stat returns the FileInfo of name, following a final symbolic link.
func (c *Client) Stat(name string) (fs.FileInfo, error) {
	if c.closed.Load() {
		return nil, closedErr("stat", name)
	}
	// Allocated before the call so that the FS fills the Attr in place: the only
	// allocation of a Stat, which the returned interface needs anyway.
	fi := &fileInfo{name: basename(name)}
	if err := c.fs.Stat(name, &fi.attr); err != nil {
		return nil, pathErr("stat", name, err)
	}
	return fi, nil
}

// Lstat returns the FileInfo of name, not following a final symbolic link.
func (c *Client) Lstat(name string) (fs.FileInfo, error) {
	return c.lstat(name, basename(name))
}

func (c *Client) lstat(name, base string) (fs.FileInfo, error) {
	if c.closed.Load() {
		return nil, closedErr("lstat", name)
	}
	fi := &fileInfo{name: base}
	if err := c.fs.Lstat(name, &fi.attr); err != nil {
		return nil, pathErr("lstat", name, err)
	}
	return fi, nil
}

// Mkdir creates directory name with permission bits perm (no umask).
func (c *Client) Mkdir(name string, perm fs.FileMode) error {
	if c.closed.Load() {
		return closedErr("mkdir", name)
	}
	return pathErr("mkdir", name, c.fs.Mkdir(name, sysMode(perm)))
}

// MkdirAll creates directory name and any missing parents with perm (no umask),
// and succeeds if name already is a directory; the algorithm and errors are
// os.MkdirAll's.
func (c *Client) MkdirAll(name string, perm fs.FileMode) error {
	fi, err := c.Stat(name)
	if err == nil {
		if fi.IsDir() {
			return nil
		}
		return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.ENOTDIR}
	}
	if c.closed.Load() {
		return err
	}
	i := len(name) - 1
	for i >= 0 && name[i] == '/' {
		i--
	}
	for i >= 0 && name[i] != '/' {
		i--
	}
	if i < 0 {
		i = 0
	}
	if parent := name[:i]; parent != "" {
		if err := c.MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := c.Mkdir(name, perm); err != nil {
		// "foo/." and a racing creator end here with an existing directory.
		if fi, err1 := c.Lstat(name); err1 == nil && fi.IsDir() {
			return nil
		}
		return err
	}
	return nil
}

// Remove removes the file or empty directory name. Like os.Remove it tries unlink
// and then rmdir (two FS calls for a directory: cheaper on average than a Stat
// first), and reports rmdir's error unless it is ENOTDIR.
func (c *Client) Remove(name string) error {
	if c.closed.Load() {
		return closedErr("remove", name)
	}
	e := c.fs.Unlink(name)
	if e == nil {
		return nil
	}
	e1 := c.fs.Rmdir(name)
	if e1 == nil {
		return nil
	}
	if e1 != syscall.ENOTDIR {
		e = e1
	}
	return pathErr("remove", name, e)
}

// removeAllRounds bounds how often RemoveAll lists a directory again when entries
// keep appearing in it (a concurrent creator), so that it cannot loop forever.
const removeAllRounds = 16

// RemoveAll removes name and everything below it, succeeding if name does not
// exist; like os.RemoveAll it removes what it can and returns the first error. The
// root is refused (EINVAL), as are names ending in "." (as os).
func (c *Client) RemoveAll(name string) error {
	if name == "" {
		return nil // as os: compatibility with callers that pass ""
	}
	if c.closed.Load() {
		return closedErr("RemoveAll", name)
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return pathErr("RemoveAll", name, err)
	}
	if libservices.IsRoot(clean) || name == "." || strings.HasSuffix(name, "/.") {
		return &fs.PathError{Op: "RemoveAll", Path: name, Err: syscall.EINVAL}
	}
	return c.removeAll(name)
}

func (c *Client) removeAll(name string) error {
	err := c.Remove(name)
	if err == nil || isErrno(err, syscall.ENOENT) {
		return nil
	}
	var a libservices.Attr
	if lerr := c.fs.Lstat(name, &a); lerr != nil {
		if lerr == syscall.ENOENT {
			return nil
		}
		return pathErr("lstat", name, lerr)
	}
	if !a.IsDir() {
		return err
	}
	var first error
	for round := 0; ; round++ {
		ents, lerr := c.fs.ReadDir(name)
		if lerr != nil {
			if lerr == syscall.ENOENT {
				return nil
			}
			return pathErr("readdirent", name, lerr)
		}
		for _, e := range ents {
			if cerr := c.removeAll(joinName(name, e.Name)); cerr != nil && first == nil {
				first = cerr
			}
		}
		rerr := c.fs.Rmdir(name)
		if rerr == nil || rerr == syscall.ENOENT {
			return nil
		}
		if first != nil {
			return first
		}
		if rerr != syscall.ENOTEMPTY || round+1 >= removeAllRounds {
			return pathErr("remove", name, rerr)
		}
	}
}

func isErrno(err error, e syscall.Errno) bool {
	pe, ok := err.(*fs.PathError)
	return ok && pe.Err == e
}

// Rename renames (moves) oldname to newname, replacing newname if it is not a
// directory. As os.Rename (not rename(2)), an existing directory at newname is
// EEXIST even when empty: code written against os relies on that.
func (c *Client) Rename(oldname, newname string) error {
	if c.closed.Load() {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: os.ErrClosed}
	}
	var na libservices.Attr
	if err := c.fs.Lstat(newname, &na); err == nil && na.IsDir() {
		var oa libservices.Attr
		if err := c.fs.Lstat(oldname, &oa); err != nil {
			return linkErr("rename", oldname, newname, err)
		} else if newname == oldname || oa.Ino != na.Ino {
			return linkErr("rename", oldname, newname, syscall.EEXIST)
		}
	}
	if err := c.fs.Rename(oldname, newname); err != nil {
		return linkErr("rename", oldname, newname, err)
	}
	return nil
}

// Link creates newname as a hard link to oldname.
func (c *Client) Link(oldname, newname string) error {
	if c.closed.Load() {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: os.ErrClosed}
	}
	if err := c.fs.Link(oldname, newname); err != nil {
		return linkErr("link", oldname, newname, err)
	}
	return nil
}

// Symlink creates newname as a symbolic link to oldname. The FS resolves targets
// inside itself: an absolute target is relative to the FS root.
func (c *Client) Symlink(oldname, newname string) error {
	if c.closed.Load() {
		return &os.LinkError{Op: "symlink", Old: oldname, New: newname, Err: os.ErrClosed}
	}
	if err := c.fs.Symlink(oldname, newname); err != nil {
		return linkErr("symlink", oldname, newname, err)
	}
	return nil
}

// Readlink returns the target of symbolic link name (EINVAL if it is not one).
func (c *Client) Readlink(name string) (string, error) {
	if c.closed.Load() {
		return "", closedErr("readlink", name)
	}
	t, err := c.fs.Readlink(name)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	return t, nil
}

func (c *Client) setattr(op, name string, sa *libservices.SetAttr) error {
	if c.closed.Load() {
		return closedErr(op, name)
	}
	return pathErr(op, name, c.fs.Setattr(name, sa))
}

// Truncate changes the size of file name, following a symbolic link.
func (c *Client) Truncate(name string, size int64) error {
	return c.setattr("truncate", name, &libservices.SetAttr{Valid: libservices.SetSize, Size: size})
}

// Chmod sets the permission bits of name (perm, setuid, setgid, sticky),
// following a symbolic link.
func (c *Client) Chmod(name string, mode fs.FileMode) error {
	return c.setattr("chmod", name, &libservices.SetAttr{Valid: libservices.SetMode, Mode: sysMode(mode)})
}

// Chown changes the owner and group of name, following a symbolic link; -1 leaves
// one unchanged.
func (c *Client) Chown(name string, uid, gid int) error {
	sa := libservices.SetAttr{Uid: uint32(uid), Gid: uint32(gid)}
	if uid != -1 {
		sa.Valid |= libservices.SetUid
	}
	if gid != -1 {
		sa.Valid |= libservices.SetGid
	}
	return c.setattr("chown", name, &sa)
}

// Chtimes sets the access and modification times of name, following a symbolic
// link; a zero time.Time leaves that time unchanged, as os.Chtimes.
func (c *Client) Chtimes(name string, atime, mtime time.Time) error {
	var sa libservices.SetAttr
	if !atime.IsZero() {
		sa.Valid |= libservices.SetAtime
		sa.Atime = libservices.Timespec{Sec: atime.Unix(), Nsec: int64(atime.Nanosecond())}
	}
	if !mtime.IsZero() {
		sa.Valid |= libservices.SetMtime
		sa.Mtime = libservices.Timespec{Sec: mtime.Unix(), Nsec: int64(mtime.Nanosecond())}
	}
	return c.setattr("chtimes", name, &sa)
}

// Statfs fills st with the FS's statistics (libservices.FS.Statfs: one filesystem
// holds every name, so there is no name argument).
func (c *Client) Statfs(st *libservices.Statfs) error {
	if c.closed.Load() {
		return closedErr("statfs", ".")
	}
	return pathErr("statfs", ".", c.fs.Statfs(st))
}

// pathStatfser is a libservices.FS whose names span several filesystems, each
// with its own statistics: a service's namespace, where every instance is
// mounted at its own path.
type pathStatfser interface {
	statfsPath(name string, st *libservices.Statfs) error
}

// StatfsPath fills st with the statistics of the filesystem that holds name,
// as statfs(2) does; it fails as Stat would where name does not exist. Over a
// service (Dial) this is the way to ask: the service's namespace holds several
// instances, and Statfs, with no name, asks about the namespace's root, which
// is none of them unless DialOptions.Prefix names one.
func (c *Client) StatfsPath(name string, st *libservices.Statfs) error {
	if c.closed.Load() {
		return closedErr("statfs", name)
	}
	if p, ok := c.fs.(pathStatfser); ok {
		return pathErr("statfs", name, p.statfsPath(name, st))
	}
	var a libservices.Attr
	if err := c.fs.Stat(name, &a); err != nil {
		return pathErr("statfs", name, err)
	}
	return pathErr("statfs", name, c.fs.Statfs(st))
}

// list returns the entries of directory name sorted by name; its errors have Op
// "open", as os.ReadDir's (which opens with O_DIRECTORY).
func (c *Client) list(name string) ([]libservices.DirEntry, error) {
	if c.closed.Load() {
		return nil, closedErr("open", name)
	}
	ents, err := c.fs.ReadDir(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	slices.SortFunc(ents, func(a, b libservices.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	// Some filesystems do not report entry types (DT_UNKNOWN); as os, ask Lstat,
	// and drop an entry removed in the meantime.
	out := ents[:0]
	for _, e := range ents {
		if e.Type == 0 {
			var a libservices.Attr
			if err := c.fs.Lstat(joinName(name, e.Name), &a); err != nil {
				if err == syscall.ENOENT {
					continue
				}
				return nil, pathErr("lstat", joinName(name, e.Name), err)
			}
			e.Type = a.Mode & syscall.S_IFMT
		}
		out = append(out, e)
	}
	return out, nil
}

// dirEntries converts part of a listing of dir to fs.DirEntry values, with two
// allocations whatever the count.
func (c *Client) dirEntries(dir string, ents []libservices.DirEntry) []fs.DirEntry {
	des := make([]dirEntry, len(ents))
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		des[i] = dirEntry{c: c, dir: dir, name: e.Name, typ: fileMode(e.Type).Type()}
		out[i] = &des[i]
	}
	return out
}

// ReadDir returns the entries of directory name sorted by file name, like
// os.ReadDir. Entry types come from the listing; Info is an Lstat.
func (c *Client) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := c.list(name)
	if err != nil {
		return nil, err
	}
	return c.dirEntries(name, ents), nil
}

// ReadDirNames returns the names in directory name, sorted.
func (c *Client) ReadDirNames(name string) ([]string, error) {
	ents, err := c.list(name)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Name
	}
	return out, nil
}

// Open opens name for reading (a directory too).
func (c *Client) Open(name string) (*File, error) {
	return c.OpenFile(name, os.O_RDONLY, 0)
}

// Create creates or truncates name, opened for reading and writing, with mode
// 0666 (no umask) if it is created.
func (c *Client) Create(name string) (*File, error) {
	return c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// syncFlags are the open flags fslib implements itself. O_SYNC includes the
// O_DSYNC bit on Linux.
const syncFlags = syscall.O_SYNC | syscall.O_DSYNC

// OpenFile opens name with the os.O_* flags (which are Linux's open(2) flags, as
// the FS takes them); with O_CREATE a new file gets perm (no umask).
func (c *Client) OpenFile(name string, flag int, perm fs.FileMode) (*File, error) {
	if c.closed.Load() {
		return nil, closedErr("open", name)
	}
	// The FS may ignore O_SYNC and O_DSYNC (libservices); fslib syncs after each
	// write instead, so the guarantee holds on every FS.
	h, err := c.fs.Open(name, flag&^(syncFlags|syscall.O_CLOEXEC), sysMode(perm))
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	f := &File{c: c, h: h, name: name, append: flag&os.O_APPEND != 0}
	switch {
	case flag&syscall.O_SYNC == syscall.O_SYNC:
		f.syncMode = syncFull
	case flag&syscall.O_DSYNC != 0:
		f.syncMode = syncData
	}
	return f, nil
}

// ReadFile returns the contents of file name, like os.ReadFile.
func (c *Client) ReadFile(name string) ([]byte, error) {
	f, err := c.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := 512
	var a libservices.Attr
	if f.fstat(&a) == nil && a.IsRegular() && a.Size+1 > int64(size) && a.Size < 1<<40 {
		// One more than the size, so that the read that meets end of file is the
		// one that fills the buffer's last byte, not one that needs a bigger buffer.
		size = int(a.Size) + 1
	}
	data := make([]byte, 0, size)
	off := int64(0)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := f.preadChecked(data[len(data):cap(data)], off)
		data = data[:len(data)+n]
		off += int64(n)
		if err != nil {
			return data, err
		}
		if n == 0 {
			return data, nil
		}
	}
}

// WriteFile writes data to file name, creating it with perm (no umask) or
// truncating it, like os.WriteFile.
func (c *Client) WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err1 := f.Close(); err1 != nil && err == nil {
		err = err1
	}
	return err
}

var _ io.Closer = (*Client)(nil)
