package access

import (
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// View is the FS as one caller sees it through a Checker: a libservices.FS
// whose every call is checked for that caller. Its handles are its own (a
// wrapper holding the FS's handle and its File); a handle of another FS gets
// EBADF.
type View struct {
	c  *Checker
	cr *Cred
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

func (v *View) Lstat(name string, a *libservices.Attr) error { return v.c.Lstat(v.cr, name, a) }
func (v *View) Stat(name string, a *libservices.Attr) error  { return v.c.Stat(v.cr, name, a) }
func (v *View) Mkdir(name string, mode uint32) error         { return v.c.Mkdir(v.cr, name, mode) }
func (v *View) Unlink(name string) error                     { return v.c.Unlink(v.cr, name) }
func (v *View) Rmdir(name string) error                      { return v.c.Rmdir(v.cr, name) }
func (v *View) Rename(o, n string) error                     { return v.c.Rename(v.cr, o, n) }
func (v *View) Link(o, n string) error                       { return v.c.Link(v.cr, o, n) }
func (v *View) Symlink(target, name string) error            { return v.c.Symlink(v.cr, target, name) }
func (v *View) Readlink(name string) (string, error)         { return v.c.Readlink(v.cr, name) }
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
