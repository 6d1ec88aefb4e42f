package access

import (
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// View is the FS as one caller sees it through a Checker: a libservices.FS
// whose every call is checked for that caller. Its handles are its own (a
// wrapper holding the FS's handle and its File); a handle of another FS gets
// EBADF.
//
// A View also remembers the last directory its caller was allowed to search a
// file in, so that a Stat or Lstat of another file there (the common case: a
// program's files share a few directories) costs one string comparison and two
// atomic loads on top of the FS's own call: no hash, no permission check. A
// server keeps one View per client and instance (service/handler.go).
type View struct {
	c    *Checker
	cr   *Cred
	last atomic.Pointer[dirEntry] // a searchable directory with no link on its path
}

var (
	_ libservices.FS      = (*View)(nil)
	_ libservices.Wrapper = (*View)(nil)
)

// As returns the FS as cr sees it. cr must stay unchanged while the View is in
// use.
func (c *Checker) As(cr *Cred) *View { return &View{c: c, cr: cr} }

// Unwrap implements libservices.Wrapper.
func (v *View) Unwrap() libservices.FS { return v.c.fs }

type viewFile struct {
	v *View
	h libservices.Handle
	f File
}

func (v *View) file(h libservices.Handle) (*viewFile, error) {
	vf, ok := h.(*viewFile)
	if !ok || vf == nil || vf.v != v {
		return nil, syscall.EBADF
	}
	return vf, nil
}

// Lstat implements libservices.FS: Checker.Lstat.
func (v *View) Lstat(name string, a *libservices.Attr) error {
	if v.fast(name) {
		return v.c.fs.Lstat(name, a)
	}
	return v.slow(name, a, false)
}

// Stat implements libservices.FS: Checker.Stat.
func (v *View) Stat(name string, a *libservices.Attr) error {
	if v.fast(name) {
		if err := v.c.fs.Lstat(name, a); err != nil || !a.IsSymlink() {
			return err
		}
	}
	return v.slow(name, a, true)
}

// fast reports whether name is canonical and lies directly in the View's last
// directory, still valid (same generation): then the caller may search every
// directory on its way, and name is its own resolved path.
func (v *View) fast(name string) bool {
	e := v.last.Load()
	if e == nil {
		return false
	}
	dir, ok := canonicalDir(name)
	return ok && dir == e.path && e.gen == generation.Load()
}

// slow is Lstat or Stat through the Checker, remembering the directory for
// fast when the caller may search it and it has no symbolic link on its way.
func (v *View) slow(name string, a *libservices.Attr, follow bool) error {
	c := v.c
	if c.unchecked || c.walked || c.memo == nil || v.cr == nil {
		if follow {
			return c.Stat(v.cr, name, a)
		}
		return c.Lstat(v.cr, name, a)
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if dir, ok := canonicalDir(clean); ok {
		gen := generation.Load()
		if _, _, err := c.resolveDir(v.cr, dir); err == nil {
			if e := c.memo.get(dir, gen); e != nil && e.resolved == e.path {
				v.last.Store(e)
			}
		}
	}
	if follow {
		_, _, err = c.lookupFollow(v.cr, clean, a)
		return err
	}
	p, _, err := c.lookup(v.cr, clean)
	if err != nil {
		return err
	}
	return c.fs.Lstat(p, a)
}

// canonicalDir returns the directory of name ("." for a name at the root) when
// name is a canonical path other than the root (libservices.Clean would return
// it unchanged): one pass over its bytes.
func canonicalDir(name string) (string, bool) {
	i := canonicalDirEnd(name)
	switch {
	case i == -2:
		return "", false
	case i == -1:
		return ".", true
	}
	return name[:i], true
}

// canonicalDirEnd returns the index of the last "/" of name when name is
// canonical, -1 when it is canonical and has none, -2 when it is not canonical
// or is the root.
func canonicalDirEnd(name string) int {
	if len(name) == 0 || len(name) >= libservices.PathMax {
		return -2
	}
	last, start := -1, 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) {
			c := name[i]
			if c == 0 {
				return -2
			}
			if c != '/' {
				continue
			}
			last = i
		}
		n := i - start
		if n == 0 || n > libservices.NameMax || name[start] == '.' && (n == 1 || n == 2 && name[start+1] == '.') {
			return -2
		}
		start = i + 1
	}
	return last
}
func (v *View) Mkdir(name string, mode uint32) error { return v.c.Mkdir(v.cr, name, mode) }
func (v *View) Unlink(name string) error             { return v.c.Unlink(v.cr, name) }
func (v *View) Rmdir(name string) error              { return v.c.Rmdir(v.cr, name) }
func (v *View) Rename(o, n string) error             { return v.c.Rename(v.cr, o, n) }
func (v *View) Link(o, n string) error               { return v.c.Link(v.cr, o, n) }
func (v *View) Symlink(target, name string) error    { return v.c.Symlink(v.cr, target, name) }
func (v *View) Readlink(name string) (string, error) { return v.c.Readlink(v.cr, name) }
func (v *View) ReadDir(name string) ([]libservices.DirEntry, error) {
	return v.c.ReadDir(v.cr, name)
}
func (v *View) Setattr(name string, sa *libservices.SetAttr) error {
	return v.c.Setattr(v.cr, name, sa)
}
func (v *View) Statfs(st *libservices.Statfs) error { return v.c.Statfs(v.cr, ".", st) }
func (v *View) Getxattr(name, attr string, dest []byte) (int, error) {
	return v.c.Getxattr(v.cr, name, attr, dest)
}
func (v *View) Setxattr(name, attr string, data []byte, flags int) error {
	return v.c.Setxattr(v.cr, name, attr, data, flags)
}
func (v *View) Listxattr(name string) ([]string, error) { return v.c.Listxattr(v.cr, name) }
func (v *View) Removexattr(name, attr string) error     { return v.c.Removexattr(v.cr, name, attr) }

// Open implements libservices.FS.
func (v *View) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	vf := &viewFile{v: v}
	h, err := v.c.Open(v.cr, name, flags, mode, &vf.f)
	if err != nil {
		return nil, err
	}
	vf.h = h
	return vf, nil
}

func (v *View) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	vf, err := v.file(h)
	if err != nil {
		return 0, err
	}
	return v.c.fs.ReadAt(vf.h, p, off)
}

func (v *View) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	vf, err := v.file(h)
	if err != nil {
		return 0, err
	}
	return v.c.WriteAt(v.cr, &vf.f, vf.h, p, off)
}

func (v *View) Fstat(h libservices.Handle, a *libservices.Attr) error {
	vf, err := v.file(h)
	if err != nil {
		return err
	}
	return v.c.fs.Fstat(vf.h, a)
}

func (v *View) Ftruncate(h libservices.Handle, size int64) error {
	vf, err := v.file(h)
	if err != nil {
		return err
	}
	return v.c.Ftruncate(v.cr, &vf.f, vf.h, size)
}

func (v *View) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	vf, err := v.file(h)
	if err != nil {
		return err
	}
	return v.c.Fallocate(v.cr, &vf.f, vf.h, mode, off, length)
}

func (v *View) Fsync(h libservices.Handle) error {
	vf, err := v.file(h)
	if err != nil {
		return err
	}
	return v.c.fs.Fsync(vf.h)
}

func (v *View) Fdatasync(h libservices.Handle) error {
	vf, err := v.file(h)
	if err != nil {
		return err
	}
	return v.c.fs.Fdatasync(vf.h)
}

// Close implements libservices.FS.
func (v *View) Close(h libservices.Handle) error {
	vf, err := v.file(h)
	if err != nil {
		return err
	}
	if vf.h == nil {
		return syscall.EBADF
	}
	inner := vf.h
	vf.h = nil
	return v.c.fs.Close(inner)
}

// Inner returns the FS's own handle behind a View's handle (tests).
func (vf *viewFile) Inner() libservices.Handle { return vf.h }
