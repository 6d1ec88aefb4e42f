package access

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/libservices"
)

// File is what a Checker remembers of a file between Open and the handle's
// later calls. The caller keeps one beside each handle Open returns (in the
// object that holds the handle, so that it costs no allocation) and passes it to
// WriteAt, Ftruncate, Fallocate and RemovePrivs. The zero File is valid: it
// knows nothing, so every write looks at the file's mode.
type File struct {
	path     string // the file's resolved path at open, to clear set-ID bits by
	writable bool   // opened for writing: only such a handle clears bits
	// noSec is the generation at which the file was seen without set-ID bits
	// (the kernel's S_NOSEC); a write then needs no look at its mode.
	noSec atomic.Uint64
}

// Path returns the resolved path the file was opened at.
func (f *File) Path() string { return f.path }

func (f *File) set(path string, flags int) {
	f.path = path
	f.writable = flags&libservices.O_ACCMODE != libservices.O_RDONLY
	f.noSec.Store(0)
}

// badOpenFlags are refused before any lookup, as build_open_flags does.
func badOpenFlags(flags int) bool {
	return flags&unix.O_PATH != 0 || flags&(unix.O_TMPFILE&^unix.O_DIRECTORY) != 0 ||
		flags&libservices.O_ACCMODE == 3 ||
		flags&libservices.O_CREAT != 0 && flags&libservices.O_DIRECTORY != 0
}

// createRetries bounds the retries of an O_CREAT open that races another
// creator of the same name.
const createRetries = 8

// Open is libservices.FS.Open for cr, in open(2)'s order (path_openat,
// do_open): search permission on the way; a final symbolic link followed
// (MayFollowLink) unless O_NOFOLLOW or O_CREAT|O_EXCL; for a missing name with
// O_CREAT, may_create in its directory, and the new file gets the mode (set-
// group-ID stripped as StripSGID says) and owner the kernel gives it (see
// Mkdir); for an existing one, EEXIST under O_EXCL, EISDIR and
// MayCreateInSticky under O_CREAT, ENOTDIR under O_DIRECTORY, then MayOpen;
// O_TRUNC by a caller without CAP_FSETID clears set-ID bits (KillPriv). f, when
// not nil, is filled for the handle's later calls.
func (c *Checker) Open(cr *Cred, name string, flags int, mode uint32, f *File) (libservices.Handle, error) {
	if c.unchecked {
		h, err := c.fs.Open(name, flags, mode)
		if err == nil && f != nil {
			f.set(name, flags)
		}
		return h, err
	}
	if cr == nil {
		return nil, errNoCred
	}
	if badOpenFlags(flags) {
		return nil, syscall.EINVAL
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	p, dir, err := c.lookup(cr, clean)
	if err != nil {
		return nil, err
	}
	create := flags&libservices.O_CREAT != 0
	excl := create && flags&libservices.O_EXCL != 0
	if create && permission(cr, dir, MayWrite|MayExec) == nil {
		// May create here: try that first, so that the common create costs
		// no lookup of a name that is absent (through a union, one per
		// branch). A name that exists (EEXIST) takes the path below, as if
		// this had not been tried: nothing was made.
		h, err := c.openCreate(cr, p, dir, flags, mode, true)
		if err == nil {
			if f != nil {
				f.set(p, flags)
			}
			return h, nil
		}
		if err != syscall.EEXIST || excl {
			return nil, err
		}
	}
	a := newAttr()
	defer freeAttr(a)
	links := 0
	for try := 0; ; try++ {
		err := c.fs.Lstat(p, a)
		if err == syscall.ENOENT && create {
			h, err := c.openCreate(cr, p, dir, flags, mode, excl)
			if err == syscall.EEXIST && !excl && try < createRetries {
				continue // created by someone else in between: open it
			}
			if err == nil && f != nil {
				f.set(p, flags)
			}
			return h, err
		}
		if err != nil {
			return nil, err
		}
		if excl {
			return nil, syscall.EEXIST
		}
		if !a.IsSymlink() || flags&libservices.O_NOFOLLOW != 0 {
			break
		}
		if c.walked {
			return nil, syscall.ELOOP
		}
		if err := mayFollowLink(c.prot, cr, dir, permOf(a)); err != nil {
			return nil, err
		}
		if p, dir, err = c.followFinal(cr, p, dir, &links); err != nil {
			return nil, err
		}
	}
	if create {
		if a.IsDir() {
			return nil, syscall.EISDIR
		}
		if err := mayCreateInSticky(c.prot, cr, dir, permOf(a)); err != nil {
			return nil, err
		}
	}
	if flags&libservices.O_DIRECTORY != 0 && !a.IsDir() {
		return nil, syscall.ENOTDIR
	}
	fp := permOf(a)
	if err := mayOpen(cr, fp, flags); err != nil {
		return nil, err
	}
	// O_NOFOLLOW: p was checked as a file other than a link; one put there since
	// (a concurrent rename) gets ELOOP rather than an unchecked follow.
	h, err := c.fs.Open(p, flags&^(libservices.O_CREAT|libservices.O_EXCL)|libservices.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	if flags&libservices.O_TRUNC != 0 {
		if kill := killPriv(cr, fp); kill != 0 {
			sa := libservices.SetAttr{Valid: libservices.SetMode, Mode: fp.mode & 0o7777 &^ kill}
			if err := c.fs.Setattr(p, &sa); err != nil {
				c.fs.Close(h)
				return nil, err
			}
			changed()
		}
	}
	if f != nil {
		f.set(p, flags)
	}
	return h, nil
}

// openCreate creates the regular file p in the directory of attributes dir
// for cr (O_EXCL below, so that only a file this call made is given away).
func (c *Checker) openCreate(cr *Cred, p string, dir perm, flags int, mode uint32, excl bool) (libservices.Handle, error) {
	if err := permission(cr, dir, MayWrite|MayExec); err != nil {
		return nil, err
	}
	m := stripSGID(cr, dir, syscall.S_IFREG|mode&0o7777)
	uid, gid, m := newOwner(cr, dir, m)
	// Created without set-ID bits: until own gives the file to cr they would be
	// the FS's owner's.
	before, known := c.shape()
	h, err := c.fs.Open(p, flags|libservices.O_EXCL, m&0o7777&^setID)
	if err != nil {
		return nil, err
	}
	c.settle(before, known, false, 0)
	c.own(p, h, uid, gid, m)
	return h, nil
}

// NoSec reports whether f is known to have no set-ID bits now, so that a write
// through it needs no RemovePrivs (one atomic load).
func (c *Checker) NoSec(f *File) bool { return f.noSec.Load() == generation.Load() }

// RemovePrivs is file_remove_privs for a write, truncate or fallocate by cr
// through h: it clears what KillPriv says. It is one atomic load when the file
// is known to have no set-ID bits; otherwise it looks at the file (Fstat) and
// clears the bits by the path f was opened at, after checking that the path
// still names the file: when it does not (renamed or unlinked since), the
// write is refused with EPERM rather than leave the bits.
func (c *Checker) RemovePrivs(cr *Cred, f *File, h libservices.Handle) error {
	if f == nil {
		return nil
	}
	return c.RemovePrivsAt(cr, f, h, f.path)
}

// RemovePrivsAt is RemovePrivs for a caller that knows the file's current path
// (a FUSE gateway follows renames through its nodes).
func (c *Checker) RemovePrivsAt(cr *Cred, f *File, h libservices.Handle, path string) error {
	if c.unchecked || f == nil || cr == nil || cr.Has(peercred.CapFsetid) {
		return nil
	}
	gen := generation.Load()
	if f.noSec.Load() == gen {
		return nil
	}
	a := newAttr()
	defer freeAttr(a)
	if err := c.fs.Fstat(h, a); err != nil {
		return err
	}
	if !a.IsRegular() || a.Mode&setID == 0 {
		f.noSec.Store(gen)
		return nil
	}
	kill := killPriv(cr, permOf(a))
	if kill == 0 {
		return nil
	}
	ino := a.Ino
	if err := c.fs.Lstat(path, a); err != nil || a.Ino != ino {
		return syscall.EPERM
	}
	sa := libservices.SetAttr{Valid: libservices.SetMode, Mode: a.Mode & 0o7777 &^ kill}
	err := c.fs.Setattr(path, &sa)
	changed()
	return err
}

// WriteAt is libservices.FS.WriteAt for cr through h, opened with f: RemovePrivs
// first, for a handle open for writing.
func (c *Checker) WriteAt(cr *Cred, f *File, h libservices.Handle, p []byte, off int64) (int, error) {
	if f != nil && f.writable {
		if err := c.RemovePrivs(cr, f, h); err != nil {
			return 0, err
		}
	}
	return c.fs.WriteAt(h, p, off)
}

// Ftruncate is libservices.FS.Ftruncate for cr through h: RemovePrivs first,
// for a handle open for writing.
func (c *Checker) Ftruncate(cr *Cred, f *File, h libservices.Handle, size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	if f != nil && f.writable {
		if err := c.RemovePrivs(cr, f, h); err != nil {
			return err
		}
	}
	return c.fs.Ftruncate(h, size)
}

// Fallocate is libservices.FS.Fallocate for cr through h: RemovePrivs first, for
// a handle open for writing.
func (c *Checker) Fallocate(cr *Cred, f *File, h libservices.Handle, mode uint32, off, length int64) error {
	if f != nil && f.writable {
		if err := c.RemovePrivs(cr, f, h); err != nil {
			return err
		}
	}
	return c.fs.Fallocate(h, mode, off, length)
}
