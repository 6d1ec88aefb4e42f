package fslib

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// ErrWriteAtInAppendMode is returned (in a PathError) by WriteAt on a File opened
// with O_APPEND, as os does: the FS would append whatever the offset (Linux pwrite),
// which is never what a caller of WriteAt means.
var ErrWriteAtInAppendMode = errors.New("fslib: invalid use of WriteAt on file opened with O_APPEND")

// pathErr wraps the errno of a failed FS call. The FS promises a syscall.Errno;
// libservices.Errno turns anything else into EIO so that a misbehaving FS cannot
// break the errors.Is contract of our callers.
func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	if err != os.ErrClosed {
		err = libservices.Errno(err)
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func linkErr(op, oldname, newname string, err error) error {
	return &os.LinkError{Op: op, Old: oldname, New: newname, Err: libservices.Errno(err)}
}

// fileInfo is the fs.FileInfo of a Stat, Lstat or File.Stat: the name as os gives
// it (the last element of the name asked for) and the Attr the FS filled, which Sys
// returns.
type fileInfo struct {
	name string
	attr libservices.Attr
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.attr.Size }
func (fi *fileInfo) Mode() fs.FileMode  { return fileMode(fi.attr.Mode) }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.attr.Mtime.Sec, fi.attr.Mtime.Nsec) }
func (fi *fileInfo) IsDir() bool        { return fi.attr.IsDir() }

// Sys returns the *libservices.Attr the FS filled in.
func (fi *fileInfo) Sys() any { return &fi.attr }

// fileMode converts stat(2) mode bits to an fs.FileMode, as os does on Linux.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFBLK:
		mode |= fs.ModeDevice
	case syscall.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		mode |= fs.ModeDir
	case syscall.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		mode |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&syscall.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&syscall.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// sysMode converts an fs.FileMode to the permission bits the FS takes (perm plus
// setuid, setgid, sticky), as os's syscallMode; the type bits are ignored.
func sysMode(m fs.FileMode) uint32 {
	o := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		o |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		o |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		o |= syscall.S_ISVTX
	}
	return o
}

// basename is the last element of name with trailing slashes removed, as os names
// a FileInfo ("/" for a name of slashes only, "." for "").
func basename(name string) string {
	i := len(name) - 1
	for i > 0 && name[i] == '/' {
		name = name[:i]
		i--
	}
	for i--; i >= 0; i-- {
		if name[i] == '/' {
			name = name[i+1:]
			break
		}
	}
	if name == "" {
		return "."
	}
	return name
}

// joinName names an entry of directory dir (a name as the caller gave it, not
// cleaned: cleaning would resolve ".." lexically, which the FS refuses on purpose).
func joinName(dir, name string) string {
	if dir == "" || dir[len(dir)-1] == '/' {
		return dir + name
	}
	return dir + "/" + name
}

// dirEntry is an fs.DirEntry from a listing; Info is an Lstat of the entry, taken
// when asked for, as os does on Linux.
type dirEntry struct {
	c    *Client
	dir  string
	name string
	typ  fs.FileMode
}

func (d *dirEntry) Name() string               { return d.name }
func (d *dirEntry) IsDir() bool                { return d.typ.IsDir() }
func (d *dirEntry) Type() fs.FileMode          { return d.typ }
func (d *dirEntry) Info() (fs.FileInfo, error) { return d.c.lstat(joinName(d.dir, d.name), d.name) }
func (d *dirEntry) String() string             { return fs.FormatDirEntry(d) }
