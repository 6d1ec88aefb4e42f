package asuser

import "github.com/polytropon/polytropon/libservices"

// fsAs is a libservices.FS whose every call runs on a Thread.
type fsAs struct {
	in libservices.FS
	t  *Thread
}

// FS returns in with every call made on t: over a passthrough FS, the kernel
// checks each call against t's caller (see the package doc).
func FS(in libservices.FS, t *Thread) libservices.FS { return &fsAs{in: in, t: t} }

var _ libservices.FS = (*fsAs)(nil)

// Unwrap implements libservices.Wrapper.
func (f *fsAs) Unwrap() libservices.FS { return f.in }

func (f *fsAs) do(fn func() error) (err error) {
	f.t.Do(func() { err = fn() })
	return err
}

func (f *fsAs) Lstat(name string, a *libservices.Attr) error {
	return f.do(func() error { return f.in.Lstat(name, a) })
}

func (f *fsAs) Stat(name string, a *libservices.Attr) error {
	return f.do(func() error { return f.in.Stat(name, a) })
}

func (f *fsAs) Mkdir(name string, mode uint32) error {
	return f.do(func() error { return f.in.Mkdir(name, mode) })
}

func (f *fsAs) Unlink(name string) error { return f.do(func() error { return f.in.Unlink(name) }) }

func (f *fsAs) Rmdir(name string) error { return f.do(func() error { return f.in.Rmdir(name) }) }

func (f *fsAs) Rename(oldname, newname string) error {
	return f.do(func() error { return f.in.Rename(oldname, newname) })
}

func (f *fsAs) Link(oldname, newname string) error {
	return f.do(func() error { return f.in.Link(oldname, newname) })
}

func (f *fsAs) Symlink(target, name string) error {
	return f.do(func() error { return f.in.Symlink(target, name) })
}

func (f *fsAs) Readlink(name string) (s string, err error) {
	err = f.do(func() (e error) { s, e = f.in.Readlink(name); return e })
	return s, err
}

func (f *fsAs) ReadDir(name string) (ents []libservices.DirEntry, err error) {
	err = f.do(func() (e error) { ents, e = f.in.ReadDir(name); return e })
	return ents, err
}

func (f *fsAs) Setattr(name string, sa *libservices.SetAttr) error {
	return f.do(func() error { return f.in.Setattr(name, sa) })
}

func (f *fsAs) Statfs(st *libservices.Statfs) error {
	return f.do(func() error { return f.in.Statfs(st) })
}

func (f *fsAs) Getxattr(name, attr string, dest []byte) (n int, err error) {
	err = f.do(func() (e error) { n, e = f.in.Getxattr(name, attr, dest); return e })
	return n, err
}

func (f *fsAs) Setxattr(name, attr string, data []byte, flags int) error {
	return f.do(func() error { return f.in.Setxattr(name, attr, data, flags) })
}

func (f *fsAs) Listxattr(name string) (names []string, err error) {
	err = f.do(func() (e error) { names, e = f.in.Listxattr(name); return e })
	return names, err
}

func (f *fsAs) Removexattr(name, attr string) error {
	return f.do(func() error { return f.in.Removexattr(name, attr) })
}

func (f *fsAs) Open(name string, flags int, mode uint32) (h libservices.Handle, err error) {
	err = f.do(func() (e error) { h, e = f.in.Open(name, flags, mode); return e })
	return h, err
}

func (f *fsAs) ReadAt(h libservices.Handle, p []byte, off int64) (n int, err error) {
	err = f.do(func() (e error) { n, e = f.in.ReadAt(h, p, off); return e })
	return n, err
}

func (f *fsAs) WriteAt(h libservices.Handle, p []byte, off int64) (n int, err error) {
	err = f.do(func() (e error) { n, e = f.in.WriteAt(h, p, off); return e })
	return n, err
}

func (f *fsAs) Fstat(h libservices.Handle, a *libservices.Attr) error {
	return f.do(func() error { return f.in.Fstat(h, a) })
}

func (f *fsAs) Ftruncate(h libservices.Handle, size int64) error {
	return f.do(func() error { return f.in.Ftruncate(h, size) })
}

func (f *fsAs) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	return f.do(func() error { return f.in.Fallocate(h, mode, off, length) })
}

func (f *fsAs) Fsync(h libservices.Handle) error { return f.do(func() error { return f.in.Fsync(h) }) }

func (f *fsAs) Fdatasync(h libservices.Handle) error {
	return f.do(func() error { return f.in.Fdatasync(h) })
}

func (f *fsAs) Close(h libservices.Handle) error { return f.do(func() error { return f.in.Close(h) }) }
