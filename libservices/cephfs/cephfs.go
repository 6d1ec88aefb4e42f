//go:build ceph

package cephfs

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	gocephfs "github.com/ceph/go-ceph/cephfs"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
)

// superMagic is CephFS's f_type (CEPH_SUPER_MAGIC).
const superMagic = 0x00c36400

// FS is a CephFS subtree as a libservices.FS.
type FS struct {
	sm     *sharedMount
	m      *gocephfs.MountInfo
	closed atomic.Bool
}

var _ libservices.FS = (*FS)(nil)
var _ libservices.Closer = (*FS)(nil)

// sharedMount is one libcephfs mount and the number of FS values using it.
type sharedMount struct {
	opts Options
	mu   sync.Mutex // guards m and refs
	m    *gocephfs.MountInfo
	refs int
}

func (s *sharedMount) acquire() (*gocephfs.MountInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		m, err := mount(s.opts)
		if err != nil {
			return nil, err
		}
		s.m = m
	}
	s.refs++
	return s.m, nil
}

func (s *sharedMount) release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return nil
	}
	m := s.m
	s.m = nil
	return unmount(m)
}

// New mounts the CephFS described by o (which must be valid) and returns it as an
// FS; with o.Shared and a non-nil shared, equal options share one mount.
func New(o Options, shared *libservices.Shared) (*FS, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("cephfs: %w", err)
	}
	c := o.withDefaults()
	var sm *sharedMount
	if c.Shared && shared != nil {
		key := "cephfs\x00" + c.Conf + "\x00" + c.ClientID + "\x00" + c.Keyring + "\x00" + c.FSName + "\x00" + c.Root +
			"\x00" + strconv.FormatInt(int64(c.CacheSize), 10) + "\x00" + strconv.Itoa(c.CacheInodes) + "\x00" + c.MountTimeout.String()
		obj, err := shared.GetOrCreate(key, func() (any, error) { return &sharedMount{opts: c}, nil })
		if err != nil {
			return nil, err
		}
		sm = obj.(*sharedMount)
	} else {
		sm = &sharedMount{opts: c}
	}
	m, err := sm.acquire()
	if err != nil {
		return nil, err
	}
	return &FS{sm: sm, m: m}, nil
}

func build(o Options, env *libservices.Env) (libservices.FS, error) {
	var shared *libservices.Shared
	if env != nil {
		shared = env.Shared
	}
	f, err := New(o, shared)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// mount creates and mounts one libcephfs client.
func mount(c Options) (*gocephfs.MountInfo, error) {
	m, err := gocephfs.CreateMountWithId(c.ClientID)
	if err != nil {
		return nil, fmt.Errorf("cephfs: create client %q: %w", c.ClientID, err)
	}
	fail := func(what string, err error) (*gocephfs.MountInfo, error) {
		m.Release()
		return nil, fmt.Errorf("cephfs: %s: %w", what, err)
	}
	if err := m.ReadConfigFile(c.Conf); err != nil {
		return fail("read conf "+c.Conf, err)
	}
	set := func(k, v string) error {
		if err := m.SetConfigOption(k, v); err != nil {
			return fmt.Errorf("set %s=%s: %w", k, v, err)
		}
		return nil
	}
	secs := strconv.Itoa(max(1, int(c.MountTimeout.Seconds()+0.5)))
	opts := [][2]string{{"client_mount_timeout", secs}, {"rados_mon_op_timeout", secs}}
	if c.Keyring != "" {
		opts = append(opts, [2]string{"keyring", c.Keyring})
	}
	if c.CacheSize > 0 {
		opts = append(opts, [2]string{"client_oc_size", strconv.FormatInt(int64(c.CacheSize), 10)})
	}
	if c.CacheInodes > 0 {
		opts = append(opts, [2]string{"client_cache_size", strconv.Itoa(c.CacheInodes)})
	}
	for _, kv := range opts {
		if err := set(kv[0], kv[1]); err != nil {
			return fail("config", err)
		}
	}
	if c.FSName != "" {
		if err := m.SelectFilesystem(c.FSName); err != nil {
			return fail("select filesystem "+c.FSName, err)
		}
	}
	if err := m.MountWithRoot(c.Root); err != nil {
		mon, _ := m.GetConfigOption("mon_host")
		what := fmt.Sprintf("mount %s (fs %q, root %s) as client.%s via the monitors at %s (timeout %v)",
			c.Conf, c.FSName, c.Root, c.ClientID, mon, c.MountTimeout)
		if errors.Is(err, gocephfs.ErrNotExist) {
			what = fmt.Sprintf("mount %s: root %s does not exist in fs %q", c.Conf, c.Root, c.FSName)
		}
		return fail(what, err)
	}
	// After the mount: ceph_umask needs the client to exist.
	setUmask0(m)
	return m, nil
}

func unmount(m *gocephfs.MountInfo) error {
	err := m.Unmount()
	if rerr := m.Release(); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("cephfs: unmount: %w", err)
	}
	return nil
}

// CloseFS implements libservices.Closer: it releases this FS's use of the mount,
// unmounting when it was the last.
func (f *FS) CloseFS() error {
	if !f.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	return f.sm.release()
}

// Mount returns the libcephfs mount (shared with other FS values when Shared).
func (f *FS) Mount() *gocephfs.MountInfo { return f.m }

// errno turns a go-ceph error into the syscall.Errno the contract wants.
func errno(err error) error {
	if err == nil {
		return nil
	}
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		c := ce.ErrorCode()
		if c < 0 {
			c = -c
		}
		if c == 0 {
			return syscall.EIO
		}
		return syscall.Errno(c)
	}
	return libservices.Errno(err)
}

// lpath resolves name without following a final symlink.
func (f *FS) lpath(name string) (string, error) {
	var a libservices.Attr
	p, _, err := f.resolve(name, false, &a)
	return p, err
}

// fpath resolves name following a final symlink; it must exist.
func (f *FS) fpath(name string, a *libservices.Attr) (string, error) {
	p, ok, err := f.resolve(name, true, a)
	if err == nil && !ok {
		err = syscall.ENOENT
	}
	return p, err
}

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error {
	p, _, err := f.resolve(name, false, a)
	if err != nil {
		return err
	}
	return statx(f.m, p, true, a)
}

// Stat implements libservices.FS.
func (f *FS) Stat(name string, a *libservices.Attr) error {
	_, ok, err := f.resolveAttr(name, true, a, true)
	if err == nil && !ok {
		err = syscall.ENOENT
	}
	return err
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error {
	p, err := f.lpath(name)
	if err != nil {
		return err
	}
	if p == "/" {
		return syscall.EEXIST
	}
	return errno(f.m.MakeDir(p, mode&0o7777))
}

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error {
	p, err := f.lpath(name)
	if err != nil {
		return err
	}
	if p == "/" {
		return syscall.EISDIR
	}
	return errno(f.m.Unlink(p))
}

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error {
	p, err := f.lpath(name)
	if err != nil {
		return err
	}
	if p == "/" {
		return syscall.EBUSY
	}
	return errno(f.m.RemoveDir(p))
}

// Rename implements libservices.FS.
func (f *FS) Rename(oldname, newname string) error {
	op, err := f.lpath(oldname)
	if err != nil {
		return err
	}
	np, err := f.lpath(newname)
	if err != nil {
		return err
	}
	if op == "/" || np == "/" {
		return syscall.EBUSY
	}
	return errno(f.m.Rename(op, np))
}

// Link implements libservices.FS.
func (f *FS) Link(oldname, newname string) error {
	op, err := f.lpath(oldname)
	if err != nil {
		return err
	}
	var a libservices.Attr
	if err := statx(f.m, op, true, &a); err != nil {
		return err // link(2) reports a missing source before a bad target
	}
	np, err := f.lpath(newname)
	if err != nil {
		return err
	}
	if np == "/" {
		return syscall.EEXIST
	}
	dir, base := libservices.Split(np[1:])
	if dir == "." {
		dir = ""
	}
	return linkNoFollow(f.m, op, "/"+dir, base)
}

// Symlink implements libservices.FS.
func (f *FS) Symlink(target, name string) error {
	p, err := f.lpath(name)
	if err != nil {
		return err
	}
	if p == "/" {
		return syscall.EEXIST
	}
	if target == "" {
		return syscall.ENOENT
	}
	return errno(f.m.Symlink(target, p))
}

// Readlink implements libservices.FS.
func (f *FS) Readlink(name string) (string, error) {
	p, err := f.lpath(name)
	if err != nil {
		return "", err
	}
	s, err := f.m.Readlink(p)
	return s, errno(err)
}

// ReadDir implements libservices.FS.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) {
	var a libservices.Attr
	p, err := f.fpath(name, &a)
	if err != nil {
		return nil, err
	}
	d, err := f.m.OpenDir(p)
	if err != nil {
		return nil, errno(err)
	}
	defer d.Close()
	var out []libservices.DirEntry
	for {
		e, err := d.ReadDir()
		if err != nil {
			return nil, errno(err)
		}
		if e == nil {
			return out, nil
		}
		n := e.Name()
		if n == "." || n == ".." {
			continue
		}
		out = append(out, libservices.DirEntry{Name: n, Ino: uint64(e.Inode()), Type: uint32(e.DType()) << 12})
	}
}

// Setattr implements libservices.FS.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	var a libservices.Attr
	p, err := f.fpath(name, &a)
	if err != nil {
		return err
	}
	if sa.Valid&libservices.SetSize != 0 && a.IsDir() {
		return syscall.EISDIR
	}
	return setattr(f.m, p, sa)
}

// Statfs implements libservices.FS.
func (f *FS) Statfs(st *libservices.Statfs) error {
	s, err := f.m.StatFS("/")
	if err != nil {
		return errno(err)
	}
	*st = libservices.Statfs{Type: superMagic, Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
		Files: s.Files, Ffree: s.Ffree, Namelen: s.Namemax, Frsize: s.Frsize}
	return nil
}

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	var a libservices.Attr
	p, err := f.fpath(name, &a)
	if err != nil {
		return 0, err
	}
	v, err := f.m.GetXattr(p, attr)
	if err != nil {
		return 0, errno(err)
	}
	if len(dest) == 0 {
		return len(v), nil
	}
	if len(v) > len(dest) {
		return 0, syscall.ERANGE
	}
	return copy(dest, v), nil
}

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	var a libservices.Attr
	p, err := f.fpath(name, &a)
	if err != nil {
		return err
	}
	if flags&^(libservices.XattrCreate|libservices.XattrReplace) != 0 {
		return syscall.EINVAL
	}
	if data == nil {
		data = []byte{}
	}
	return errno(f.m.SetXattr(p, attr, data, gocephfs.XattrFlags(flags)))
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) {
	var a libservices.Attr
	p, err := f.fpath(name, &a)
	if err != nil {
		return nil, err
	}
	l, err := f.m.ListXattr(p)
	return l, errno(err)
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	var a libservices.Attr
	p, err := f.fpath(name, &a)
	if err != nil {
		return err
	}
	return errno(f.m.RemoveXattr(p, attr))
}

// handle is an open file. closed is set once by Close; the contract forbids Close
// racing with other operations on the same handle, so it only has to make later
// calls EBADF.
type handle struct {
	fs     *FS
	f      *gocephfs.File
	flags  int
	isDir  bool // libcephfs blocks forever in ceph_read on a directory
	closed atomic.Bool
}

func (f *FS) handle(h libservices.Handle) (*handle, error) {
	fh, ok := h.(*handle)
	if !ok || fh == nil || fh.fs != f || fh.closed.Load() {
		return nil, syscall.EBADF
	}
	return fh, nil
}

const unsupportedOpen = unix.O_PATH | unix.O_TMPFILE&^unix.O_DIRECTORY

// Open implements libservices.FS.
func (f *FS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	if flags&unsupportedOpen != 0 {
		return nil, syscall.EINVAL
	}
	var a libservices.Attr
	nofollow := flags&libservices.O_NOFOLLOW != 0
	p, exists, err := f.resolve(name, !nofollow, &a)
	if err != nil {
		return nil, err
	}
	if nofollow {
		switch err := statx(f.m, p, true, &a); err {
		case nil:
			exists = true
		case syscall.ENOENT:
		default:
			return nil, err
		}
	}
	creat, excl, dir := flags&libservices.O_CREAT != 0, flags&libservices.O_EXCL != 0, flags&libservices.O_DIRECTORY != 0
	if exists {
		switch {
		case creat && excl:
			return nil, syscall.EEXIST
		case a.IsSymlink(): // only with O_NOFOLLOW
			if dir {
				return nil, syscall.ENOTDIR
			}
			return nil, syscall.ELOOP
		case dir && !a.IsDir():
			return nil, syscall.ENOTDIR
		case a.IsDir() && creat && dir:
			return nil, syscall.EINVAL
		case a.IsDir() && (flags&libservices.O_ACCMODE != libservices.O_RDONLY || creat || flags&libservices.O_TRUNC != 0):
			return nil, syscall.EISDIR
		}
	} else {
		switch {
		case !creat:
			return nil, syscall.ENOENT
		case dir:
			return nil, syscall.EINVAL
		}
	}
	fl, err := f.m.Open(p, flags&^libservices.O_NOFOLLOW, mode&0o7777)
	if err != nil {
		return nil, errno(err)
	}
	return &handle{fs: f, f: fl, flags: flags, isDir: exists && a.IsDir()}, nil
}

// ReadAt implements libservices.FS.
func (f *FS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	fh, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if off+int64(len(p)) < off {
		return 0, syscall.EINVAL
	}
	if fh.flags&libservices.O_ACCMODE == libservices.O_WRONLY {
		return 0, syscall.EBADF
	}
	if fh.isDir {
		return 0, syscall.EISDIR
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := fh.f.ReadAt(p, off)
	if err != nil {
		if n == 0 && isEOF(err) {
			return 0, nil
		}
		return n, errno(err)
	}
	return n, nil
}

// WriteAt implements libservices.FS.
func (f *FS) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	fh, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if fh.flags&libservices.O_ACCMODE == libservices.O_RDONLY {
		return 0, syscall.EBADF
	}
	if off+int64(len(p)) < off {
		return 0, syscall.EINVAL
	}
	if len(p) == 0 {
		return 0, nil
	}
	if fh.flags&libservices.O_APPEND != 0 {
		// libcephfs honours O_APPEND only for writes at the file position
		// (offset -1), as write(2) does.
		n, err := fh.f.Write(p)
		return n, errno(err)
	}
	n, err := fh.f.WriteAt(p, off)
	return n, errno(err)
}

// Fstat implements libservices.FS.
func (f *FS) Fstat(h libservices.Handle, a *libservices.Attr) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	return fstatx(f.m, fileFd(fh.f), a)
}

// Ftruncate implements libservices.FS.
func (f *FS) Ftruncate(h libservices.Handle, size int64) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	if size < 0 || fh.flags&libservices.O_ACCMODE == libservices.O_RDONLY {
		return syscall.EINVAL
	}
	return errno(fh.f.Truncate(size))
}

// Fallocate implements libservices.FS.
func (f *FS) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	switch mode {
	case 0, libservices.FallocKeepSize, libservices.FallocPunchHole | libservices.FallocKeepSize:
	default:
		return syscall.EOPNOTSUPP
	}
	if off < 0 || length <= 0 {
		return syscall.EINVAL
	}
	if fh.flags&libservices.O_ACCMODE == libservices.O_RDONLY {
		return syscall.EBADF
	}
	return errno(fh.f.Fallocate(gocephfs.FallocFlags(mode), off, length))
}

// Fsync implements libservices.FS.
func (f *FS) Fsync(h libservices.Handle) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	return errno(fh.f.Fsync(gocephfs.SyncAll))
}

// Fdatasync implements libservices.FS.
func (f *FS) Fdatasync(h libservices.Handle) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	return errno(fh.f.Fsync(gocephfs.SyncDataOnly))
}

// Close implements libservices.FS.
func (f *FS) Close(h libservices.Handle) error {
	fh, err := f.handle(h)
	if err != nil {
		return err
	}
	if !fh.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	return errno(fh.f.Close())
}
