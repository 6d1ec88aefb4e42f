// Package passthrough is a libservices.FS over a host directory (a branch): every
// operation becomes the matching *at system call on a file descriptor resolved
// inside the branch.
//
// Confinement: a path is resolved by openat2(2) relative to the branch's root
// descriptor with RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS, or relative to a cached
// directory inside the branch (below) with rules that cannot leave it.
// RESOLVE_IN_ROOT is RESOLVE_BENEATH's sibling that, instead of failing with
// EXDEV, scopes absolute symlinks and ".." to the branch root, like a chroot:
// container images are full of absolute symlinks (/lib -> usr/lib,
// /etc/alternatives/...) that must resolve inside the image, and the
// libservices contract resolves them so on every FS. Either way neither a path,
// a symlink nor ".." can reach outside the branch, and /proc magic links are
// refused. Namespace operations resolve the parent directory and then act on
// (parent fd, final name) with *at calls that do not follow a final symlink;
// operations that follow a final symlink (Stat, Open, Setattr, xattrs) resolve
// the whole path to a descriptor and act on that inode through fstat,
// fchownat(AT_EMPTY_PATH) or its /proc/self/fd entry, never on a path the
// kernel would resolve again outside the branch.
//
// # Directory cache (resolve once)
//
// What is cached: O_PATH descriptors of directories, keyed by their clean path
// in the branch, at most Options.DirCacheSize of them (yaml dir_cache_size,
// default 1024), least recently used first out. A name whose parent is cached
// costs one system call: Lstat is one fstatat, an open one openat2, a create,
// unlink, mkdir or rename one *at call on the parent's descriptor. Only a
// directory reached through real directories is cached: a miss resolves the
// parent with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, and a path that crosses a
// symbolic link (ELOOP) is remembered by a marker entry (no descriptor) and
// resolved from the root with RESOLVE_IN_ROOT every time, as before the cache,
// so that absolute symlinks keep their branch-root meaning and a key is always
// the path of a real directory. A marker is never wrong, only slower: it sends
// the path to the full resolution.
//
// The final component is resolved relative to the cached descriptor either by
// a *at call that does not follow it (fstatat AT_SYMLINK_NOFOLLOW, unlinkat,
// mkdirat, renameat, ...) or, where the contract follows a final symlink, by
// openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS; a
// final symlink (ELOOP, or S_IFLNK from fstatat for Stat) goes to the full
// resolution from the root. Clean refuses ".." and "/" in a name, so nothing
// resolved relative to a cached directory leaves that directory.
//
// How long, and revalidation: an entry is used for Options.DirRevalidate (yaml
// dir_revalidate, default 1s, at most 1m; 0 disables the cache: every use
// resolves from the root, as NFS's actimeo=0). After that the path is resolved
// again from the branch root, and the entry is replaced by what that finds.
// This is NFS's attribute-cache timeout, with the resolution itself as the
// revalidation: comparing the directory's ctime or mtime would not do, since a
// rename of an ancestor changes neither. The service's own Rename and Rmdir
// drop the entries of the names they change and everything below them at once
// (own changes are never stale), and so do Setattr of the mode or owner and
// the xattr calls for the entries below the name, whose search permission they
// may change.
//
// What can happen within the bound, when something other than this FS (the
// host, another service) renames or removes a cached directory: operations on
// the old path reach the directory where it now is (or fail with ENOENT on a
// removed one) until the entry expires. If the directory was moved out of the
// branch, its names stay reachable for up to the bound, and a file created or
// renamed into it lands where the directory now is. That stays safe: the
// reach is only that directory's own subtree (no "..", no symlink is followed
// from a cached descriptor), a directory that was inside the branch when it
// was resolved, and the service runs with the tenant's own uid, so the kernel
// allows it nothing there that it could not do with its own credentials. A
// revalidation after the bound never reaches outside: it is a resolution from
// the root. A cached descriptor also skips the search-permission checks of its
// ancestors, so the cache assumes one identity: a passthrough called by threads
// of different credentials (the kernel reference of the permission cases) must
// set dir_revalidate to 0.
//
// File descriptors: the cache holds at most dir_cache_size descriptors per FS
// beside the root's, which the service's fd_reserve must cover (ReservedFDs
// says how many); when an open fails with EMFILE or ENFILE, the FS empties its
// cache and tries once more, so the cache never costs a client its file.
//
// Every system call goes through one counted indirection (FS.sys): tests count
// an FS's calls with Options.Syscalls, or a whole stack's with CountSyscalls
// (see Syscalls). The system calls of each operation are pinned by
// TestSyscallCounts (-v
// prints them, with the cache and with every use resolved from the root), and
// its time measured by the benchmarks (BenchmarkLstat, BenchmarkOpenClose,
// BenchmarkCreateUnlink, BenchmarkLstatParallel), as root:
//
//	go test ./libservices/passthrough -run TestSyscallCounts -v
//	go test ./libservices/passthrough -run '^$' -bench . -benchmem
//
// Own Rename, Rmdir and a mode or owner change look up how many entries lie at
// or below the name (dirCache.trees, a count per path prefix): nothing for a
// file, a map lookup; otherwise they scan the cache, each shard in turn, to
// drop those entries: O(entries), paid only when a cached directory moves.
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
// Invariants: the root descriptor is open from New until CloseFS; a cached
// descriptor is open while the cache or a call holds a reference to it, and is
// closed by whoever drops the last one; an entry inserted by a resolution that
// raced an own rename or removal of a directory is refused (dirCache.gen).
//
// Lock order: dirShard.mu (one shard at a time, never two) before
// dirCache.treeMu, which is also taken alone; neither is held across a system
// call, and descriptors are closed after the mutexes are released. The hit
// path takes one shard's mu only. A Handle's descriptor is closed once,
// guarded by an atomic flag.
package passthrough

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
)

// Options configure an FS.
type Options struct {
	// Dir is the host directory that is the branch's root.
	Dir string `yaml:"dir"`
	// ReadOnly makes every modification fail with EROFS.
	ReadOnly bool `yaml:"readonly"`
	// DirCacheSize bounds the directory descriptors the FS caches (see the
	// package doc); 0 means DefaultDirCacheSize, at most MaxDirCacheSize.
	DirCacheSize int `yaml:"dir_cache_size"`
	// DirRevalidate is how long a cached directory is used before its path is
	// resolved again from the branch root, e.g. "1s" or "250ms"; nil means
	// DefaultDirRevalidate, 0 resolves every use from the root (no cache), at
	// most MaxDirRevalidate. A pointer, so that 0 is not the default.
	DirRevalidate *libservices.Duration `yaml:"dir_revalidate"`
	// Syscalls, for tests, counts the FS's system calls (see Syscalls).
	Syscalls *Syscalls `yaml:"-"`
}

// Defaults and bounds of the directory cache.
const (
	DefaultDirCacheSize  = 1024
	MaxDirCacheSize      = 1 << 16
	DefaultDirRevalidate = time.Second
	// MaxDirRevalidate bounds how long a host's rename can go unseen.
	MaxDirRevalidate = time.Minute
)

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	if o.Dir == "" {
		return errorString("dir: required")
	}
	if o.DirCacheSize < 0 || o.DirCacheSize > MaxDirCacheSize {
		return errorString(fmt.Sprintf("dir_cache_size: %d, want 0 (default %d) to %d", o.DirCacheSize, DefaultDirCacheSize, MaxDirCacheSize))
	}
	if d := o.DirRevalidate; d != nil && (*d < 0 || time.Duration(*d) > MaxDirRevalidate) {
		return errorString(fmt.Sprintf("dir_revalidate: %v, want 0 (every use) to %v", time.Duration(*d), MaxDirRevalidate))
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

// epoch is the origin of the cache's monotonic clock.
var epoch = time.Now()

// FS is a branch over a host directory.
type FS struct {
	root     int
	readOnly bool
	id       [2]uint64
	closed   atomic.Bool
	dc       *dirCache // nil: every path resolved from the root
	calls    *Syscalls // nil: not counted
	// clock returns monotonic nanoseconds; tests replace it.
	clock func() int64
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
	if err := o.Validate(); err != nil {
		return nil, errorString("passthrough: " + err.Error())
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
	f := &FS{root: fd, readOnly: o.ReadOnly, id: [2]uint64{st.Dev, st.Ino}, calls: o.Syscalls,
		clock: func() int64 { return int64(time.Since(epoch)) }}
	if f.calls == nil {
		f.calls = newSyscalls.Load()
	}
	ttl := DefaultDirRevalidate
	if o.DirRevalidate != nil {
		ttl = time.Duration(*o.DirRevalidate)
	}
	size := o.DirCacheSize
	if size == 0 {
		size = DefaultDirCacheSize
	}
	if ttl > 0 {
		f.dc = newDirCache(size, int64(ttl), func(fd int) { f.close(fd) })
	}
	return f, nil
}

// ReservedFDs returns the most descriptors the FS holds besides its open
// handles: the root's and the directory cache's bound. The service's
// fd_reserve must cover the sum over its branches.
func (f *FS) ReservedFDs() int {
	n := 1
	if f.dc != nil {
		for i := range f.dc.shards {
			n += f.dc.shards[i].max
		}
	}
	return n
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
	if f.dc != nil {
		f.dc.purge()
	}
	return libservices.Errno(f.close(f.root))
}

// Identity implements libservices.Identifier: the device and inode of the root.
func (f *FS) Identity() [2]uint64 { return f.id }

// openat2 is openat2(2) with O_CLOEXEC, retried on EINTR and EAGAIN (a rename
// racing the resolution); on EMFILE or ENFILE the directory cache gives its
// descriptors back and the call is tried once more.
func (f *FS) openat2(dirfd int, name string, flags int, mode uint32, resolve uint64) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode & 0o7777)
	}
	purged := false
	for i := 0; ; i++ {
		f.sys(sysOpenat2)
		fd, err := unix.Openat2(dirfd, name, &how)
		if (err == unix.EINTR || err == unix.EAGAIN) && i < retries {
			continue
		}
		if (err == unix.EMFILE || err == unix.ENFILE) && !purged && f.dc != nil && f.dc.len() > 0 {
			purged = true
			f.dc.purge()
			continue
		}
		return fd, libservices.Errno(err)
	}
}

const (
	// inRoot is the full resolution from the root: symlinks and ".." scoped to
	// the branch.
	inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS
	// realDirs resolves only through real directories: a miss of the cache,
	// whose keys must be real paths.
	realDirs = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS
)

// openBeneath resolves name (clean) inside the branch from the root.
func (f *FS) openBeneath(clean string, flags int, mode uint32) (int, error) {
	return f.openat2(f.root, clean, flags, mode, inRoot)
}

// dirRef is a resolved directory: fd, and what to release after use.
type dirRef struct {
	fd  int
	ent *dirEnt // cached: release the reference
	tmp bool    // resolved for this call: close
	// viaLink: the path crosses a symbolic link (a marker of the cache), so
	// names in it are resolved from the root.
	viaLink bool
}

func (f *FS) release(d dirRef) {
	switch {
	case d.ent != nil:
		f.dc.release(d.ent)
	case d.tmp:
		f.close(d.fd)
	}
}

// openDir returns an O_PATH descriptor of directory dir (clean), from the cache
// when it holds a fresh one. When dir crosses a symbolic link (viaLink), it
// resolves dir from the root for this call only if resolveLinks is set: a
// caller that resolves the whole path from the root anyway needs no parent.
func (f *FS) openDir(dir string, resolveLinks bool) (dirRef, error) {
	if libservices.IsRoot(dir) {
		return dirRef{fd: f.root}, nil
	}
	const flags = unix.O_PATH | unix.O_DIRECTORY
	if f.dc == nil {
		fd, err := f.openBeneath(dir, flags, 0)
		return dirRef{fd: fd, tmp: true}, err
	}
	now := f.clock()
	viaLink := func() (dirRef, error) {
		if !resolveLinks {
			return dirRef{fd: -1, viaLink: true}, nil
		}
		fd, err := f.openBeneath(dir, flags, 0)
		return dirRef{fd: fd, tmp: true, viaLink: true}, err
	}
	if e := f.dc.get(dir, now); e != nil {
		if e.fd >= 0 {
			return dirRef{fd: e.fd, ent: e}, nil
		}
		return viaLink()
	}
	gen := f.dc.gen.Load()
	fd, err := f.openat2(f.root, dir, flags, 0, realDirs)
	if err == syscall.ELOOP || err == syscall.EXDEV {
		// A symbolic link on the way: resolve it as the contract says, and
		// remember not to try the real-directory way until the entry expires.
		f.dc.put(dir, -1, gen, now)
		return viaLink()
	}
	if err != nil {
		return dirRef{}, err
	}
	if e := f.dc.put(dir, fd, gen, now); e != nil {
		return dirRef{fd: fd, ent: e}, nil
	}
	return dirRef{fd: fd, tmp: true}, nil
}

// parent resolves the directory holding clean's final component.
func (f *FS) parent(clean string) (d dirRef, base string, err error) {
	dir, base := libservices.Split(clean)
	d, err = f.openDir(dir, true)
	if err != nil {
		return dirRef{}, "", err
	}
	return d, base, nil
}

// openPath opens clean (following a final symlink inside the branch) with
// flags: one openat2 relative to a cached parent, the full resolution from the
// root where a symlink is involved.
func (f *FS) openPath(clean string, flags int, mode uint32) (int, error) {
	fd, _, err := f.openPathReal(clean, flags, mode)
	return fd, err
}

// openPathReal is openPath that also says whether clean is the path of what it
// opened (no symbolic link crossed), so that the cache's key of it is known.
func (f *FS) openPathReal(clean string, flags int, mode uint32) (fd int, real bool, err error) {
	if f.dc == nil || libservices.IsRoot(clean) {
		fd, err := f.openBeneath(clean, flags, mode)
		return fd, libservices.IsRoot(clean), err
	}
	dir, base := libservices.Split(clean)
	d, err := f.openDir(dir, false)
	if err != nil {
		return -1, false, err
	}
	if d.viaLink {
		fd, err := f.openBeneath(clean, flags, mode)
		return fd, false, err
	}
	fd, err = f.openat2(d.fd, base, flags, mode, realDirs)
	f.release(d)
	if err == syscall.ELOOP || err == syscall.EXDEV {
		// A final symlink (or O_NOFOLLOW on one: the full resolution says
		// ELOOP again).
		fd, err := f.openBeneath(clean, flags, mode)
		return fd, false, err
	}
	return fd, true, err
}

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// retry counts one system call of kind k per try of fn.
func (f *FS) retry(k sysKind, fn func() error) error {
	for i := 0; ; i++ {
		f.sys(k)
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
		if err := f.fstat(f.root, &st); err != nil {
			return libservices.Errno(err)
		}
		fillAttr(&st, a)
		return nil
	}
	d, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer f.release(d)
	if err := f.retry(sysFstatat, func() error { return unix.Fstatat(d.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
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
	var st unix.Stat_t
	if f.dc != nil && !libservices.IsRoot(clean) {
		// One fstatat that does not follow: done unless the name is a symlink,
		// whose target only the full resolution may follow.
		dir, base := libservices.Split(clean)
		d, err := f.openDir(dir, false)
		if err != nil {
			return err
		}
		if !d.viaLink {
			err = f.retry(sysFstatat, func() error { return unix.Fstatat(d.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) })
			f.release(d)
			if err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFLNK {
				fillAttr(&st, a)
				return nil
			}
		}
	}
	fd, err := f.openBeneath(clean, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer f.close(fd)
	if err := f.fstat(fd, &st); err != nil {
		return libservices.Errno(err)
	}
	fillAttr(&st, a)
	return nil
}

// fixMode undoes the umask on a just-created file, opened as fd (any kind).
func (f *FS) fixMode(fd int, mode uint32) error {
	if mode&umask == 0 {
		return nil
	}
	return f.retry(sysFchmodat, func() error { return unix.Chmod(procPath(fd), mode&0o7777) })
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
	d, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer f.release(d)
	if f.readOnly {
		return f.roError(d.fd, base, syscall.EEXIST)
	}
	if err := f.retry(sysMkdirat, func() error { return unix.Mkdirat(d.fd, base, mode&0o7777) }); err != nil {
		return err
	}
	if mode&umask == 0 {
		return nil
	}
	f.sys(sysOpenat)
	fd, err := unix.Openat(d.fd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return libservices.Errno(err)
	}
	defer f.close(fd)
	return f.fixMode(fd, mode)
}

// roError is the error of a creating operation on a read-only branch: the
// kernel reports EEXIST (or existErr) before EROFS when the name exists.
func (f *FS) roError(dfd int, base string, existErr error) error {
	var st unix.Stat_t
	if f.fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
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
	d, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer f.release(d)
	if f.readOnly {
		return f.roError(d.fd, base, syscall.EEXIST)
	}
	return f.retry(sysSymlinkat, func() error { return unix.Symlinkat(target, d.fd, base) })
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
	d, base, err := f.parent(clean)
	if err != nil {
		return "", err
	}
	defer f.release(d)
	var buf [libservices.PathMax]byte
	var n int
	if err := f.retry(sysReadlinkat, func() (e error) { n, e = unix.Readlinkat(d.fd, base, buf[:]); return e }); err != nil {
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
	d, base, err := f.parent(clean)
	if err != nil {
		return err
	}
	defer f.release(d)
	if f.readOnly {
		return f.roRemoveError(d.fd, base)
	}
	err = f.retry(sysUnlinkat, func() error { return unix.Unlinkat(d.fd, base, flags) })
	if err == nil && flags&unix.AT_REMOVEDIR != 0 && f.dc != nil {
		f.dc.dropTree(clean)
	}
	return err
}

func (f *FS) roRemoveError(dfd int, base string) error {
	var st unix.Stat_t
	if err := f.fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
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
	od, obase, err := f.parent(oc)
	if err != nil {
		return err
	}
	defer f.release(od)
	nd, nbase, err := f.parent(nc)
	if err != nil {
		return err
	}
	defer f.release(nd)
	if f.readOnly {
		return f.roRemoveError(od.fd, obase)
	}
	err = f.retry(sysRenameat, func() error { return unix.Renameat(od.fd, obase, nd.fd, nbase) })
	if err == nil && f.dc != nil {
		// The old name's subtree moved, and the new name's (an empty
		// directory it replaced) is gone.
		f.dc.dropTree(oc)
		f.dc.dropTree(nc)
	}
	return err
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
	od, obase, err := f.parent(oc)
	if err != nil {
		return err
	}
	defer f.release(od)
	// linkat(2) looks the old name up completely before the new one's parent:
	// keep its errno when both are wrong.
	var st unix.Stat_t
	if err := f.fstatat(od.fd, obase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return libservices.Errno(err)
	}
	nd, nbase, err := f.parent(nc)
	if err != nil {
		return err
	}
	defer f.release(nd)
	if f.readOnly {
		if err := f.roRemoveError(od.fd, obase); err != syscall.EROFS {
			return err
		}
		return f.roError(nd.fd, nbase, syscall.EEXIST)
	}
	return f.retry(sysLinkat, func() error { return unix.Linkat(od.fd, obase, nd.fd, nbase, 0) })
}

// ReadDir implements libservices.FS.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	fd, err := f.openPath(clean, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer f.close(fd)
	var out []libservices.DirEntry
	buf := make([]byte, 32<<10)
	for {
		var n int
		if err := f.retry(sysGetdents, func() (e error) { n, e = unix.Getdents(fd, buf); return e }); err != nil {
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
	fd, real, err := f.openPathReal(clean, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer f.close(fd)
	if f.readOnly {
		return syscall.EROFS
	}
	if sa.Valid&(libservices.SetMode|libservices.SetUid|libservices.SetGid) != 0 {
		defer f.permsChanged(clean, real, fd)
	}
	p := procPath(fd)
	if sa.Valid&libservices.SetSize != 0 {
		if err := f.retry(sysTruncate, func() error { return unix.Truncate(p, sa.Size) }); err != nil {
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
		if err := f.retry(sysFchownat, func() error { return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH) }); err != nil {
			return err
		}
	}
	if sa.Valid&libservices.SetMode != 0 {
		if err := f.retry(sysFchmodat, func() error { return unix.Chmod(p, sa.Mode&0o7777) }); err != nil {
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
		if err := f.retry(sysUtimensat, func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0) }); err != nil {
			return err
		}
	}
	return nil
}

// permsChanged drops the cached directories below clean, opened as fd, after
// a change that may have changed who may search it (mode, owner, ACL): a
// resolution from the root checks search permission on the way again. When
// clean is the real path, what lies below it is known to the cache (and is
// usually nothing: a file). When a symlink was crossed, where the target is
// cached is not known: if it is a directory, the whole cache goes (chmod
// through a symlink is rare).
func (f *FS) permsChanged(clean string, real bool, fd int) {
	if f.dc == nil {
		return
	}
	if real {
		f.dc.dropBelow(clean)
		return
	}
	var st unix.Stat_t
	if f.fstat(fd, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return
	}
	f.dc.dropBelow(".")
}

// Statfs implements libservices.FS.
func (f *FS) Statfs(st *libservices.Statfs) error {
	var s unix.Statfs_t
	if err := f.retry(sysFstatfs, func() error { return unix.Fstatfs(f.root, &s) }); err != nil {
		return err
	}
	*st = libservices.Statfs{Type: s.Type, Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
		Files: s.Files, Ffree: s.Ffree, Namelen: s.Namelen, Frsize: s.Frsize}
	return nil
}

func (f *FS) resolvePath(name string) (clean string, real bool, fd int, err error) {
	clean, err = libservices.Clean(name)
	if err != nil {
		return "", false, -1, err
	}
	fd, real, err = f.openPathReal(clean, unix.O_PATH, 0)
	return clean, real, fd, err
}

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	_, _, fd, err := f.resolvePath(name)
	if err != nil {
		return 0, err
	}
	defer f.close(fd)
	var n int
	if err := f.retry(sysGetxattr, func() (e error) { n, e = unix.Getxattr(procPath(fd), attr, dest); return e }); err != nil {
		return 0, err // the raw call reports -1
	}
	return n, nil
}

// aclChange reports whether setting or removing attr may change permissions
// (a POSIX ACL, or any system.* attribute a filesystem may give meaning).
func aclChange(attr string) bool { return strings.HasPrefix(attr, "system.") }

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	clean, real, fd, err := f.resolvePath(name)
	if err != nil {
		return err
	}
	defer f.close(fd)
	if f.readOnly {
		return syscall.EROFS
	}
	if aclChange(attr) {
		defer f.permsChanged(clean, real, fd)
	}
	return f.retry(sysSetxattr, func() error { return unix.Setxattr(procPath(fd), attr, data, flags) })
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) {
	_, _, fd, err := f.resolvePath(name)
	if err != nil {
		return nil, err
	}
	defer f.close(fd)
	p := procPath(fd)
	for i := 0; i < retries; i++ {
		f.sys(sysListxattr)
		n, err := unix.Listxattr(p, nil)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, libservices.Errno(err)
		}
		buf := make([]byte, n)
		f.sys(sysListxattr)
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
	clean, real, fd, err := f.resolvePath(name)
	if err != nil {
		return err
	}
	defer f.close(fd)
	if f.readOnly {
		return syscall.EROFS
	}
	if aclChange(attr) {
		defer f.permsChanged(clean, real, fd)
	}
	return f.retry(sysRemovexattr, func() error { return unix.Removexattr(procPath(fd), attr) })
}
