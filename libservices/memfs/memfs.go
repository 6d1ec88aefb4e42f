// Package memfs is an in-memory libservices.FS: an inode table of directories,
// regular files with sparse page-granular data, and symbolic links.
//
// It is a real libservice (`- memfs: {size: 64MiB}`) for scratch filesystems and the
// model that metamorphic tests compare stacks against. It is not persistent.
//
// Invariants: a directory's Nlink is 2 plus its number of subdirectories; a regular
// file's Nlink is its number of names; a page of a file lies wholly below
// MaxFileSize; the bytes allocated in pages never exceed the size budget. Memfs
// applies no permission checks (the service runs as its tenant's owner) and no
// umask; atime is not updated by reads (as with the noatime mount option).
//
// Lock order: FS.mu alone. One RWMutex per FS guards the whole inode table and all
// data: memfs favours obviously correct over scalable; put a cache above it.
//
// It is not on the default stack, and nothing measures it on its own yet;
// its conformance run is `go test ./libservices/memfs`.
package memfs

import (
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/internal/invariants"
	"github.com/polytropon/polytropon/libservices"
)

// PageSize is the granularity of file data allocation.
const PageSize = 4096

// MaxFileSize is the largest file size, like ext4 with 4 KiB blocks (16 TiB).
const MaxFileSize = 1 << 44

// Limits on extended attributes, as Linux.
const (
	xattrNameMax  = 255
	xattrValueMax = 64 << 10
)

// Options configure an FS.
type Options struct {
	// Size is the budget for file data in bytes (whole pages); 0 means 1 GiB.
	Size libservices.ByteSize `yaml:"size"`
	// Inodes is the most inodes; 0 means 1<<20.
	Inodes uint64 `yaml:"inodes"`
	// Now is the clock for timestamps; nil means the wall clock.
	Now func() libservices.Timespec `yaml:"-"`
}

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	if o.Size < 0 {
		return errorString("size: must not be negative")
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

type page [PageSize]byte

type inode struct {
	ino    uint64
	mode   uint32
	nlink  uint32
	uid    uint32
	gid    uint32
	size   int64
	atime  libservices.Timespec
	mtime  libservices.Timespec
	ctime  libservices.Timespec
	pages  map[int64]*page   // regular files
	kids   map[string]*inode // directories
	parent *inode            // directories: the directory holding it (root: itself)
	target string            // symlinks
	xattrs map[string][]byte
	opens  int // open handles; an unlinked file's pages are freed when it reaches 0
}

func (n *inode) isDir() bool     { return n.mode&syscall.S_IFMT == syscall.S_IFDIR }
func (n *inode) isSymlink() bool { return n.mode&syscall.S_IFMT == syscall.S_IFLNK }
func (n *inode) isReg() bool     { return n.mode&syscall.S_IFMT == syscall.S_IFREG }

// FS is an in-memory filesystem.
type FS struct {
	now       func() libservices.Timespec
	maxPages  int64
	maxInodes uint64
	id        [2]uint64

	// mu guards everything below and every inode reachable from root.
	mu      sync.RWMutex
	root    *inode
	nextIno uint64
	inodes  uint64
	pages   int64
}

var (
	_ libservices.FS       = (*FS)(nil)
	_ libservices.Reshaper = (*FS)(nil)
)

// Reshapes implements libservices.Reshaper: every change is to what it was
// asked to change, so the count stays 0.
func (*FS) Reshapes() (uint64, bool) { return 0, true }

var fsCounter atomic.Uint64

// New returns an empty FS whose root directory has mode 0755.
func New(o Options) *FS {
	f := &FS{now: o.Now, maxPages: int64(o.Size) / PageSize, maxInodes: o.Inodes, nextIno: 1}
	if f.now == nil {
		f.now = wallClock
	}
	if o.Size == 0 {
		f.maxPages = (1 << 30) / PageSize
	}
	if f.maxInodes == 0 {
		f.maxInodes = 1 << 20
	}
	f.id = [2]uint64{0x6d656d6673, fsCounter.Add(1)}
	f.root = f.newInode(syscall.S_IFDIR | 0o755)
	f.root.parent = f.root
	return f
}

func init() {
	libservices.Register("memfs", libservices.Leaf, func(o *Options, _ []libservices.FS, _ *libservices.Env) (libservices.FS, error) {
		return New(*o), nil
	})
}

func wallClock() libservices.Timespec {
	t := time.Now()
	return libservices.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// Identity implements libservices.Identifier: unique to this FS value.
func (f *FS) Identity() [2]uint64 { return f.id }

// newInodeLocked allocates an inode; the caller checks the inode budget.
func (f *FS) newInode(mode uint32) *inode {
	now := f.now()
	n := &inode{ino: f.nextIno, mode: mode, nlink: 1, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()),
		atime: now, mtime: now, ctime: now}
	f.nextIno++
	f.inodes++
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		n.kids = map[string]*inode{}
		n.nlink = 2
	case syscall.S_IFREG:
		n.pages = map[int64]*page{}
	}
	return n
}

func (n *inode) fill(a *libservices.Attr) {
	*a = libservices.Attr{Ino: n.ino, Mode: n.mode, Nlink: n.nlink, Uid: n.uid, Gid: n.gid,
		Size: n.size, Blksize: PageSize, Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime}
	switch {
	case n.isReg():
		a.Blocks = int64(len(n.pages)) * (PageSize / 512)
	case n.isDir():
		a.Size = PageSize
		a.Blocks = PageSize / 512
	case n.isSymlink():
		a.Size = int64(len(n.target))
	}
}

// walkLocked resolves a clean path. It returns the directory holding the final
// component and its name, and the final inode (nil, with a nil error, when only the
// final component is missing). follow says whether a final symlink is followed.
// When the path resolves to a directory by ".." or "/" from a symlink, or is the
// root, base is "" (such a name can be neither created nor removed).
func (f *FS) walkLocked(clean string, follow bool) (dir *inode, base string, n *inode, err error) {
	if clean == "." {
		return nil, "", f.root, nil
	}
	comps := strings.Split(clean, "/")
	cur := f.root
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			if len(comps) == 0 {
				return nil, "", cur, nil
			}
			continue
		case "..":
			cur = cur.parent
			if len(comps) == 0 {
				return nil, "", cur, nil
			}
			continue
		}
		if !cur.isDir() {
			return nil, "", nil, syscall.ENOTDIR
		}
		last := len(comps) == 0
		child := cur.kids[c]
		if child == nil {
			if last {
				return cur, c, nil, nil
			}
			return nil, "", nil, syscall.ENOENT
		}
		if child.isSymlink() && (!last || follow) {
			links++
			if links > libservices.MaxSymlinks {
				return nil, "", nil, syscall.ELOOP
			}
			t := child.target
			if strings.HasPrefix(t, "/") {
				cur = f.root
			}
			tc := strings.Split(t, "/")
			if len(comps) == 0 && (len(tc) == 0 || tc[len(tc)-1] == "") {
				// A target ending in "/" must name a directory.
				tc = append(tc, ".")
			}
			comps = append(tc, comps...)
			continue
		}
		if last {
			return cur, c, child, nil
		}
		if !child.isDir() {
			return nil, "", nil, syscall.ENOTDIR
		}
		cur = child
	}
	return nil, "", cur, nil
}

func (f *FS) lookup(name string, follow bool) (*inode, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	_, _, n, err := f.walkLocked(clean, follow)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, syscall.ENOENT
	}
	return n, nil
}

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.lookup(name, false)
	if err != nil {
		return err
	}
	n.fill(a)
	return nil
}

// Stat implements libservices.FS.
func (f *FS) Stat(name string, a *libservices.Attr) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return err
	}
	n.fill(a)
	return nil
}

// parentFor resolves name for an operation that creates or removes its final
// component, which is never followed.
func (f *FS) parentFor(name string) (dir *inode, base string, n *inode, err error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, "", nil, err
	}
	return f.walkLocked(clean, false)
}

func (f *FS) touchDirLocked(d *inode) {
	now := f.now()
	d.mtime, d.ctime = now, now
}

func (f *FS) createLocked(dir *inode, base string, mode uint32) (*inode, error) {
	if f.inodes >= f.maxInodes {
		return nil, syscall.ENOSPC
	}
	n := f.newInode(mode)
	dir.kids[base] = n
	if n.isDir() {
		n.parent = dir
		dir.nlink++
	}
	f.touchDirLocked(dir)
	return n, nil
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base, n, err := f.parentFor(name)
	if err != nil {
		return err
	}
	if n != nil || base == "" {
		return syscall.EEXIST
	}
	_, err = f.createLocked(dir, base, syscall.S_IFDIR|mode&0o7777)
	return err
}

// Symlink implements libservices.FS.
func (f *FS) Symlink(target, name string) error {
	if target == "" {
		return syscall.ENOENT
	}
	if strings.IndexByte(target, 0) >= 0 {
		return syscall.EINVAL
	}
	if len(target) >= libservices.PathMax {
		return syscall.ENAMETOOLONG
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base, n, err := f.parentFor(name)
	if err != nil {
		return err
	}
	if n != nil || base == "" {
		return syscall.EEXIST
	}
	s, err := f.createLocked(dir, base, syscall.S_IFLNK|0o777)
	if err != nil {
		return err
	}
	s.target = target
	return nil
}

// Readlink implements libservices.FS.
func (f *FS) Readlink(name string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.lookup(name, false)
	if err != nil {
		return "", err
	}
	if !n.isSymlink() {
		return "", syscall.EINVAL
	}
	return n.target, nil
}

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base, n, err := f.parentFor(name)
	if err != nil {
		return err
	}
	if n == nil {
		return syscall.ENOENT
	}
	if n.isDir() {
		return syscall.EISDIR
	}
	if base == "" {
		return syscall.EISDIR
	}
	delete(dir.kids, base)
	f.dropLinkLocked(n)
	f.touchDirLocked(dir)
	return nil
}

func (f *FS) dropLinkLocked(n *inode) {
	n.nlink--
	n.ctime = f.now()
	if n.nlink == 0 {
		f.inodes--
		if n.opens == 0 {
			f.freePagesLocked(n)
		}
	}
}

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, base, n, err := f.parentFor(name)
	if err != nil {
		return err
	}
	if n == nil {
		return syscall.ENOENT
	}
	if !n.isDir() {
		return syscall.ENOTDIR
	}
	if base == "" {
		return syscall.EBUSY
	}
	if len(n.kids) != 0 {
		return syscall.ENOTEMPTY
	}
	delete(dir.kids, base)
	dir.nlink--
	n.nlink = 0
	f.inodes--
	f.touchDirLocked(dir)
	return nil
}

func isAncestor(a, n *inode) bool {
	for i := 0; ; i++ {
		if n == a {
			return true
		}
		if n.parent == n {
			return false
		}
		n = n.parent
		invariants.Check(i < 1<<20, "memfs: directory parent chain does not reach the root")
	}
}

// Rename implements libservices.FS.
func (f *FS) Rename(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	odir, obase, on, err := f.parentFor(oldname)
	if err != nil {
		return err
	}
	ndir, nbase, nn, err := f.parentFor(newname)
	if err != nil {
		return err
	}
	if on == nil {
		return syscall.ENOENT
	}
	if obase == "" || nbase == "" {
		return syscall.EBUSY
	}
	if on.isDir() && isAncestor(on, ndir) {
		return syscall.EINVAL
	}
	if nn == on {
		return nil // both names are links to one file: POSIX says do nothing
	}
	if nn != nil {
		if nn.isDir() && isAncestor(nn, odir) {
			return syscall.ENOTEMPTY
		}
		switch {
		case on.isDir() && !nn.isDir():
			return syscall.ENOTDIR
		case !on.isDir() && nn.isDir():
			return syscall.EISDIR
		case nn.isDir() && len(nn.kids) != 0:
			return syscall.ENOTEMPTY
		}
		if nn.isDir() {
			ndir.nlink--
			nn.nlink = 0
			f.inodes--
		} else {
			f.dropLinkLocked(nn)
		}
	}
	delete(odir.kids, obase)
	ndir.kids[nbase] = on
	if on.isDir() && odir != ndir {
		odir.nlink--
		ndir.nlink++
		on.parent = ndir
	}
	on.ctime = f.now()
	f.touchDirLocked(odir)
	f.touchDirLocked(ndir)
	return nil
}

// Link implements libservices.FS.
func (f *FS) Link(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// linkat(2) looks the old name up completely before the new one.
	_, _, on, err := f.parentFor(oldname)
	if err != nil {
		return err
	}
	if on == nil {
		return syscall.ENOENT
	}
	ndir, nbase, nn, err := f.parentFor(newname)
	if err != nil {
		return err
	}
	if nn != nil || nbase == "" {
		return syscall.EEXIST
	}
	if on.isDir() {
		return syscall.EPERM
	}
	ndir.kids[nbase] = on
	on.nlink++
	on.ctime = f.now()
	f.touchDirLocked(ndir)
	return nil
}

// ReadDir implements libservices.FS.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	out := make([]libservices.DirEntry, 0, len(n.kids))
	for k, c := range n.kids {
		out = append(out, libservices.DirEntry{Name: k, Ino: c.ino, Type: c.mode & syscall.S_IFMT})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Setattr implements libservices.FS.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return err
	}
	return f.setattrLocked(n, sa)
}

func (f *FS) setattrLocked(n *inode, sa *libservices.SetAttr) error {
	if sa.Valid&libservices.SetSize != 0 {
		if n.isDir() {
			return syscall.EISDIR
		}
		if !n.isReg() {
			return syscall.EINVAL
		}
		if err := f.truncateLocked(n, sa.Size); err != nil {
			return err
		}
	}
	now := f.now()
	if sa.Valid&libservices.SetMode != 0 {
		n.mode = n.mode&syscall.S_IFMT | sa.Mode&0o7777
	}
	if sa.Valid&libservices.SetUid != 0 {
		n.uid = sa.Uid
	}
	if sa.Valid&libservices.SetGid != 0 {
		n.gid = sa.Gid
	}
	if sa.Valid&(libservices.SetUid|libservices.SetGid) != 0 && n.isReg() {
		// chown clears set-user-ID, and set-group-ID when group-executable, as Linux.
		n.mode &^= syscall.S_ISUID
		if n.mode&0o010 != 0 {
			n.mode &^= syscall.S_ISGID
		}
	}
	switch {
	case sa.Valid&libservices.SetAtimeNow != 0:
		n.atime = now
	case sa.Valid&libservices.SetAtime != 0:
		n.atime = sa.Atime
	}
	switch {
	case sa.Valid&libservices.SetMtimeNow != 0:
		n.mtime = now
	case sa.Valid&libservices.SetMtime != 0:
		n.mtime = sa.Mtime
	}
	n.ctime = now
	return nil
}

func (f *FS) truncateLocked(n *inode, size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	if size > MaxFileSize {
		return syscall.EFBIG
	}
	if size < n.size {
		// Drop whole pages past the end and zero the tail of the last one, so that
		// growing the file again reads zeros.
		last := size / PageSize
		for idx := range n.pages {
			if idx > last || idx == last && size%PageSize == 0 {
				delete(n.pages, idx)
				f.pages--
			}
		}
		if p := n.pages[last]; p != nil {
			clear(p[size%PageSize:])
		}
	}
	n.size = size
	now := f.now()
	n.mtime, n.ctime = now, now
	return nil
}

// Statfs implements libservices.FS.
func (f *FS) Statfs(st *libservices.Statfs) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	*st = libservices.Statfs{Type: 0x858458f6 /* RAMFS_MAGIC */, Bsize: PageSize, Frsize: PageSize,
		Blocks: uint64(f.maxPages), Bfree: uint64(f.maxPages - f.pages), Bavail: uint64(f.maxPages - f.pages),
		Files: f.maxInodes, Ffree: f.maxInodes - f.inodes, Namelen: libservices.NameMax}
	return nil
}

func checkXattrName(attr string) error {
	if attr == "" || len(attr) > xattrNameMax {
		return syscall.ERANGE
	}
	for _, ns := range []string{"user.", "trusted.", "security."} {
		if strings.HasPrefix(attr, ns) {
			if len(attr) == len(ns) {
				return syscall.EINVAL
			}
			return nil
		}
	}
	return syscall.EOPNOTSUPP
}

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	if err := checkXattrName(attr); err != nil {
		return 0, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return 0, err
	}
	v, ok := n.xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) == 0 {
		return len(v), nil
	}
	if len(dest) < len(v) {
		return 0, syscall.ERANGE
	}
	return copy(dest, v), nil
}

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	if err := checkXattrName(attr); err != nil {
		return err
	}
	if len(data) > xattrValueMax {
		return syscall.E2BIG
	}
	if flags&^(libservices.XattrCreate|libservices.XattrReplace) != 0 {
		return syscall.EINVAL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return err
	}
	_, exists := n.xattrs[attr]
	if flags&libservices.XattrCreate != 0 && exists {
		return syscall.EEXIST
	}
	if flags&libservices.XattrReplace != 0 && !exists {
		return syscall.ENODATA
	}
	if n.xattrs == nil {
		n.xattrs = map[string][]byte{}
	}
	n.xattrs[attr] = append([]byte(nil), data...)
	n.ctime = f.now()
	return nil
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(n.xattrs))
	for k := range n.xattrs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	if err := checkXattrName(attr); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name, true)
	if err != nil {
		return err
	}
	if _, ok := n.xattrs[attr]; !ok {
		return syscall.ENODATA
	}
	delete(n.xattrs, attr)
	n.ctime = f.now()
	return nil
}
