// Package passthrough is a libservices.FS over a host directory (a branch): every
// operation becomes the matching *at system call on a file descriptor resolved
// inside the branch.
//
// Confinement: every path is resolved by openat2(2) relative to the branch's root
// descriptor with RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS. RESOLVE_IN_ROOT is
// RESOLVE_BENEATH's sibling that, instead of failing with EXDEV, scopes absolute
// symlinks and ".." to the branch root, like a chroot: container images are full of
// absolute symlinks (/lib -> usr/lib, /etc/alternatives/...) that must resolve
// inside the image, and the libservices contract resolves them so on every FS.
// Either way neither a path, a symlink nor ".." can reach outside the branch, and
// /proc magic links are refused. Namespace operations resolve the parent directory
// that way and then act on (parent fd, final name) with *at calls that do not
// follow a final symlink; operations that follow a final symlink (Stat, Setattr,
// xattrs) resolve the whole path to an O_PATH descriptor and act on that inode
// through fstat, fchownat(AT_EMPTY_PATH) or its /proc/self/fd entry, never on a
// path the kernel would resolve again outside the branch.
//
// The kernel is the reference for the conformance suite, so passthrough adds no
// semantics of its own except what the contract fixes: paths (libservices.Clean),
// operations on the root, modes applied without the process umask (a created
// file or directory whose mode the umask would have masked is chmod'ed), and the
// read-only option (EROFS for every modification, and otherwise the answers of
// a read-only mount, which TestReadOnlyOpenMatchesKernel checks). A file created
// by O_CREAT through a dangling symlink is not supported (EEXIST), since creation
// is done with O_EXCL to know when to fix the mode.
//
// Invariants: the root descriptor is open from New until CloseFS. Lock order: no
// locks; a Handle's descriptor is closed once, guarded by an atomic flag.
package passthrough

import (
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
)

// Options configure an FS.
type Options struct {
	// Dir is the host directory that is the branch's root.
	Dir string `yaml:"dir"`
	// ReadOnly makes every modification fail with EROFS.
	ReadOnly bool `yaml:"readonly"`
}

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	if o.Dir == "" {
		return errorString("dir: required")
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

func init() {
	libservices.Register("passthrough", libservices.Leaf, func(o *Options, _ []libservices.FS, _ *libservices.Env) (libservices.FS, error) {
		f, err := New(*o)
		if err != nil {
			return nil, err
		}
		return f, nil
	})
}

// umask is the process umask read once at start: passthrough undoes it for the
// files it creates, since the contract applies no umask.
var umask = func() uint32 {
	old := unix.Umask(0)
	unix.Umask(old)
	return uint32(old)
}()

// retries bounds the retries of a call interrupted (EINTR) or raced by a rename
// during openat2 resolution (EAGAIN).
const retries = 16

// FS is a branch over a host directory.
type FS struct {
	root     int
	readOnly bool
	id       [2]uint64
	closed   atomic.Bool
}

var (
	_ libservices.FS       = (*FS)(nil)
	_ libservices.Reshaper = (*FS)(nil)
)

// Reshapes implements libservices.Reshaper: every change is to what it was
// asked to change, so the count stays 0.
func (*FS) Reshapes() (uint64, bool) { return 0, true }

// New opens the branch at o.Dir, which must be a directory.
func New(o Options) (*FS, error) {
	if o.Dir == "" {
		return nil, errorString("passthrough: empty dir")
	}
	fd, err := unix.Open(o.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		pe := &pathError{op: "open", path: o.Dir, err: err}
		if err == unix.ENOENT {
			// The first error a new configuration meets: the service makes no
			// branch directories (a typo must not become an empty branch).
			pe.fix = "create the branch directory first"
		}
		return nil, pe
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &pathError{op: "stat", path: o.Dir, err: err}
	}
	if err := unix.Access("/proc/self/fd", unix.X_OK); err != nil {
		unix.Close(fd)
		return nil, &pathError{op: "access", path: "/proc/self/fd (needed to act on resolved files)", err: err}
	}
	return &FS{root: fd, readOnly: o.ReadOnly, id: [2]uint64{st.Dev, st.Ino}}, nil
}

type pathError struct {
	op, path string
	err      error
	fix      string // what to do, when there is one thing to do
}

func (e *pathError) Error() string {
	s := "passthrough: " + e.op + " " + e.path + ": " + e.err.Error()
	if e.fix != "" {
		s += " (" + e.fix + ")"
	}
	return s
}
func (e *pathError) Unwrap() error { return e.err }

// CloseFS implements libservices.Closer.
func (f *FS) CloseFS() error {
	if !f.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	return libservices.Errno(unix.Close(f.root))
}

// Identity implements libservices.Identifier: the device and inode of the root.
func (f *FS) Identity() [2]uint64 { return f.id }

// openBeneath resolves name (clean) inside the branch.
func (f *FS) openBeneath(clean string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode & 0o7777)
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(f.root, clean, &how)
		if (err == unix.EINTR || err == unix.EAGAIN) && i < retries {
			continue
		}
		return fd, libservices.Errno(err)
	}
}

// parent resolves the directory holding clean's final component.
func (f *FS) parent(clean string) (dirfd int, base string, err error) {
	dir, base := libservices.Split(clean)
	fd, err := f.openBeneath(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", err
	}
	return fd, base, nil
}

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func retry(fn func() error) error {
	for i := 0; ; i++ {
		err := fn()
		if err == unix.EINTR && i < retries {
			continue
		}
		return libservices.Errno(err)
	}
}

func fillAttr(st *unix.Stat_t, a *libservices.Attr) {
	*a = libservices.Attr{Ino: st.Ino, Mode: st.Mode, Nlink: uint32(st.Nlink), Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blocks: st.Blocks, Blksize: int32(st.Blksize),
		Atime: libservices.Timespec{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec},
		Mtime: libservices.Timespec{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec},
		Ctime: libservices.Timespec{Sec: st.Ctim.Sec, Nsec: st.Ctim.Nsec}}
}

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if libservices.IsRoot(clean) {
		if err := unix.Fstat(f.root, &st); err != nil {
			return libservices.Errno(err)
		}
		fillAttr(&st, a)
		return nil
	}
	dfd, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := retry(func() error { return unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return err
	}
	fillAttr(&st, a)
	return nil
}

// Stat implements libservices.FS.
func (f *FS) Stat(name string, a *libservices.Attr) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	fd, err := f.openBeneath(clean, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return libservices.Errno(err)
	}
	fillAttr(&st, a)
	return nil
}

// fixMode undoes the umask on a just-created file, opened as fd (any kind).
func fixMode(fd int, mode uint32) error {
	if mode&umask == 0 {
		return nil
	}
	return retry(func() error { return unix.Chmod(procPath(fd), mode&0o7777) })
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if libservices.IsRoot(clean) {
		return syscall.EEXIST
	}
	dfd, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if f.readOnly {
		return f.roError(dfd, base, syscall.EEXIST)
	}
	if err := retry(func() error { return unix.Mkdirat(dfd, base, mode&0o7777) }); err != nil {
		return err
	}
	if mode&umask == 0 {
		return nil
	}
	fd, err := unix.Openat(dfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return libservices.Errno(err)
	}
	defer unix.Close(fd)
	return fixMode(fd, mode)
}

// roError is the error of a creating operation on a read-only branch: the
// kernel reports EEXIST (or existErr) before EROFS when the name exists.
func (f *FS) roError(dfd int, base string, existErr error) error {
	var st unix.Stat_t
	if unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return existErr
	}
	return syscall.EROFS
}

// Symlink implements libservices.FS.
func (f *FS) Symlink(target, name string) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if libservices.IsRoot(clean) {
		return syscall.EEXIST
	}
	dfd, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if f.readOnly {
		return f.roError(dfd, base, syscall.EEXIST)
	}
	return retry(func() error { return unix.Symlinkat(target, dfd, base) })
}

// Readlink implements libservices.FS.
func (f *FS) Readlink(name string) (string, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return "", err
	}
	if libservices.IsRoot(clean) {
		return "", syscall.EINVAL
	}
	dfd, base, err := f.parent(clean)
	if err != nil {
		return "", err
	}
	defer unix.Close(dfd)
	var buf [libservices.PathMax]byte
	var n int
	if err := retry(func() (e error) { n, e = unix.Readlinkat(dfd, base, buf[:]); return e }); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error { return f.remove(name, syscall.EISDIR, 0) }

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error { return f.remove(name, syscall.EBUSY, unix.AT_REMOVEDIR) }

// remove is unlinkat(2) with flags on name beneath the branch; rootErr is what
// removing the root itself returns (Unlink EISDIR, Rmdir EBUSY).
func (f *FS) remove(name string, rootErr syscall.Errno, flags int) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if libservices.IsRoot(clean) {
		return rootErr
	}
	dfd, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if f.readOnly {
		return f.roRemoveError(dfd, base)
	}
	return retry(func() error { return unix.Unlinkat(dfd, base, flags) })
}

func (f *FS) roRemoveError(dfd int, base string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return libservices.Errno(err)
	}
	return syscall.EROFS
}

// Rename implements libservices.FS.
func (f *FS) Rename(oldname, newname string) error {
	oc, err := libservices.Clean(oldname)
	if err != nil {
		return err
	}
	nc, err := libservices.Clean(newname)
	if err != nil {
		return err
	}
	if libservices.IsRoot(oc) || libservices.IsRoot(nc) {
		return syscall.EBUSY
	}
	ofd, obase, err := f.parent(oc)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, nbase, err := f.parent(nc)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if f.readOnly {
		return f.roRemoveError(ofd, obase)
	}
	return retry(func() error { return unix.Renameat(ofd, obase, nfd, nbase) })
}

// Link implements libservices.FS.
func (f *FS) Link(oldname, newname string) error {
	oc, err := libservices.Clean(oldname)
	if err != nil {
		return err
	}
	nc, err := libservices.Clean(newname)
	if err != nil {
		return err
	}
	if libservices.IsRoot(nc) {
		return syscall.EEXIST
	}
	if libservices.IsRoot(oc) {
		return syscall.EPERM
	}
	ofd, obase, err := f.parent(oc)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	// linkat(2) looks the old name up completely before the new one's parent:
	// keep its errno when both are wrong.
	var st unix.Stat_t
	if err := unix.Fstatat(ofd, obase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return libservices.Errno(err)
	}
	nfd, nbase, err := f.parent(nc)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if f.readOnly {
		if err := f.roRemoveError(ofd, obase); err != syscall.EROFS {
			return err
		}
		return f.roError(nfd, nbase, syscall.EEXIST)
	}
	return retry(func() error { return unix.Linkat(ofd, obase, nfd, nbase, 0) })
}

// ReadDir implements libservices.FS.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	fd, err := f.openBeneath(clean, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []libservices.DirEntry
	buf := make([]byte, 32<<10)
	for {
		var n int
		if err := retry(func() (e error) { n, e = unix.Getdents(fd, buf); return e }); err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(b[16]) | int(b[17])<<8
			if reclen < 19 || reclen > len(b) {
				return nil, syscall.EIO
			}
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			typ := b[18]
			nameb := b[19:reclen]
			for i, c := range nameb {
				if c == 0 {
					nameb = nameb[:i]
					break
				}
			}
			if s := string(nameb); s != "." && s != ".." {
				out = append(out, libservices.DirEntry{Name: s, Ino: ino, Type: uint32(typ) << 12})
			}
			b = b[reclen:]
		}
	}
}

// Setattr implements libservices.FS.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	fd, err := f.openBeneath(clean, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if f.readOnly {
		return syscall.EROFS
	}
	p := procPath(fd)
	if sa.Valid&libservices.SetSize != 0 {
		if err := retry(func() error { return unix.Truncate(p, sa.Size) }); err != nil {
			return err
		}
	}
	if sa.Valid&(libservices.SetUid|libservices.SetGid) != 0 {
		uid, gid := -1, -1
		if sa.Valid&libservices.SetUid != 0 {
			uid = int(sa.Uid)
		}
		if sa.Valid&libservices.SetGid != 0 {
			gid = int(sa.Gid)
		}
		if err := retry(func() error { return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH) }); err != nil {
			return err
		}
	}
	if sa.Valid&libservices.SetMode != 0 {
		if err := retry(func() error { return unix.Chmod(p, sa.Mode&0o7777) }); err != nil {
			return err
		}
	}
	if sa.Valid&(libservices.SetAtime|libservices.SetMtime|libservices.SetAtimeNow|libservices.SetMtimeNow) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		switch {
		case sa.Valid&libservices.SetAtimeNow != 0:
			ts[0].Nsec = unix.UTIME_NOW
		case sa.Valid&libservices.SetAtime != 0:
			ts[0] = unix.Timespec{Sec: sa.Atime.Sec, Nsec: sa.Atime.Nsec}
		}
		switch {
		case sa.Valid&libservices.SetMtimeNow != 0:
			ts[1].Nsec = unix.UTIME_NOW
		case sa.Valid&libservices.SetMtime != 0:
			ts[1] = unix.Timespec{Sec: sa.Mtime.Sec, Nsec: sa.Mtime.Nsec}
		}
		if err := retry(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0) }); err != nil {
			return err
		}
	}
	return nil
}

// Statfs implements libservices.FS.
func (f *FS) Statfs(st *libservices.Statfs) error {
	var s unix.Statfs_t
	if err := retry(func() error { return unix.Fstatfs(f.root, &s) }); err != nil {
		return err
	}
	*st = libservices.Statfs{Type: s.Type, Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
		Files: s.Files, Ffree: s.Ffree, Namelen: s.Namelen, Frsize: s.Frsize}
	return nil
}

func (f *FS) resolvePath(name string) (int, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return -1, err
	}
	return f.openBeneath(clean, unix.O_PATH, 0)
}

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	fd, err := f.resolvePath(name)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var n int
	if err := retry(func() (e error) { n, e = unix.Getxattr(procPath(fd), attr, dest); return e }); err != nil {
		return 0, err // the raw call reports -1
	}
	return n, nil
}

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	fd, err := f.resolvePath(name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if f.readOnly {
		return syscall.EROFS
	}
	return retry(func() error { return unix.Setxattr(procPath(fd), attr, data, flags) })
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) {
	fd, err := f.resolvePath(name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	p := procPath(fd)
	for i := 0; i < retries; i++ {
		n, err := unix.Listxattr(p, nil)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, libservices.Errno(err)
		}
		buf := make([]byte, n)
		n, err = unix.Listxattr(p, buf)
		if err == unix.ERANGE || err == unix.EINTR {
			continue // grew in between
		}
		if err != nil {
			return nil, libservices.Errno(err)
		}
		var out []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					out = append(out, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return out, nil
	}
	return nil, syscall.EAGAIN
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	fd, err := f.resolvePath(name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if f.readOnly {
		return syscall.EROFS
	}
	return retry(func() error { return unix.Removexattr(procPath(fd), attr) })
}
