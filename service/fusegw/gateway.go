package fusegw

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/invariants"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
)

// maxDepth bounds the names walked to build a path: a path of PathMax bytes has at
// most PathMax/2 components. A longer chain is a cycle left by renames made behind
// the kernel's back, and its nodes get no path (ESTALE) until looked up again.
const maxDepth = libservices.PathMax / 2

// dentry is one name of a node: the directory it was looked up in, and the name.
type dentry struct {
	parent *node
	name   string
}

// stamp identifies one version of a file's content: what the kernel's cached
// attributes and pages belong to (see Open).
type stamp struct {
	mtime, ctime libservices.Timespec
	size         int64
}

func stampOf(a *libservices.Attr) stamp { return stamp{mtime: a.Mtime, ctime: a.Ctime, size: a.Size} }

// saw records that the kernel is given a as n's attributes.
func (g *gateway) saw(n *node, a *libservices.Attr) {
	g.mu.Lock()
	n.stamp = stampOf(a)
	g.mu.Unlock()
}

// node is a file as the kernel knows it, under the kernel's node ID.
type node struct {
	id  uint64
	ino uint64
	typ uint32 // S_IFMT bits; a node never changes type

	// Guarded by gateway.mu.
	lookups uint64           // the kernel's lookup count; 0 = forgotten
	names   []dentry         // newest last
	kids    map[string]*node // directories: names looked up in it
	path    string           // cached path ("" = none), valid when pathGen == gateway.gen
	pathGen uint64
	open    []*handle // open file handles (not directory handles)
	stamp   stamp     // the content version of the attributes the kernel got last
	// noCapsUntil: until then (Unix ns), the file is known to have no
	// security.capability attribute, which the kernel asks for before every
	// write (see GetXAttr).
	noCapsUntil int64
}

// gateway is the fuse.RawFileSystem serving one libservices.FS. Operations not
// implemented here answer ENOSYS (the embedded default), which the kernel
// remembers and then handles itself (POLL, LSEEK, COPY_FILE_RANGE, STATX); locks
// and ACCESS are never sent (no lock capability, default_permissions).
type gateway struct {
	fuse.RawFileSystem
	fs      libservices.FS
	acc     *access.Checker     // fs's permission rules, for a caller that walked its path (Walked)
	quota   Quota               // nil: unlimited
	creds   *credCache          // callers' groups and capabilities
	flusher libservices.Flusher // nil unless the FS holds data back
	log     *zap.Logger
	server  atomic.Pointer[fuse.Server] // set by Init, for notifications

	entryTimeout    time.Duration
	attrTimeout     time.Duration
	negativeTimeout time.Duration
	directIO        bool

	mu     sync.Mutex
	nodes  map[uint64]*node // by kernel node ID
	byIno  map[uint64]*node // by inode number: names of one file share a node
	root   *node
	nextID uint64
	gen    uint64 // bumped by every change of a name: invalidates cached paths

	hmu   sync.RWMutex
	files []*handle // by file handle number; files[0] is never used
	free  []uint64
	shut  bool // no more handles: the server has stopped
}

func newGateway(fsys libservices.FS, root *libservices.Attr, o *Options, log *zap.Logger) *gateway {
	acc := o.Access
	if acc == nil || acc.FS() != fsys {
		acc = access.New(fsys, access.Options{NoMemo: true})
	}
	g := &gateway{
		RawFileSystem:   fuse.NewDefaultRawFileSystem(),
		fs:              fsys,
		acc:             acc.Walked(),
		quota:           o.Quota,
		creds:           newCredCache(),
		log:             log,
		entryTimeout:    timeout(o.EntryTimeout, DefaultEntryTimeout),
		attrTimeout:     timeout(o.AttrTimeout, DefaultAttrTimeout),
		negativeTimeout: timeout(o.NegativeTimeout, 0),
		directIO:        o.DirectIO,
		nodes:           map[uint64]*node{},
		byIno:           map[uint64]*node{},
		nextID:          fuse.FUSE_ROOT_ID + 1,
		gen:             1,
		files:           []*handle{nil},
	}
	// FLUSH is the last moment an application can learn that a write-back
	// layer failed to write its data (see libservices.Flusher).
	if fl, ok := fsys.(libservices.Flusher); ok && fl.HoldsBack() {
		g.flusher = fl
	}
	g.root = &node{id: fuse.FUSE_ROOT_ID, ino: root.Ino, typ: syscall.S_IFDIR, lookups: 1, path: ".", pathGen: ^uint64(0)}
	g.nodes[g.root.id] = g.root
	g.byIno[root.Ino] = g.root
	return g
}

// timeout maps an Options duration: 0 is the default, negative is none.
func timeout(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (g *gateway) String() string { return "polytropon" }

// Init implements fuse.RawFileSystem.
func (g *gateway) Init(s *fuse.Server) { g.server.Store(s) }

// status converts a libservices error (a syscall.Errno by contract) for the kernel.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	e, ok := err.(syscall.Errno)
	if !ok {
		e = syscall.EIO // the contract says Errno; anything else is a broken FS
	}
	return fuse.Status(e)
}

// staleStatus is status for an operation on a node by its path: a path that no
// longer leads to a file, or leads through a non-directory, means the node's path
// is stale, and ESTALE makes the kernel look it up again.
func staleStatus(err error) fuse.Status {
	if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ELOOP {
		return fuse.Status(syscall.ESTALE)
	}
	return status(err)
}

func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

func fillAttr(a *libservices.Attr, o *fuse.Attr) {
	o.Ino = a.Ino
	o.Size = uint64(a.Size)
	o.Blocks = uint64(a.Blocks)
	o.Atime, o.Atimensec = uint64(a.Atime.Sec), uint32(a.Atime.Nsec)
	o.Mtime, o.Mtimensec = uint64(a.Mtime.Sec), uint32(a.Mtime.Nsec)
	o.Ctime, o.Ctimensec = uint64(a.Ctime.Sec), uint32(a.Ctime.Nsec)
	o.Mode = a.Mode
	o.Nlink = a.Nlink
	o.Uid, o.Gid = a.Uid, a.Gid
	o.Rdev = uint32(a.Rdev)
	o.Blksize = uint32(a.Blksize)
}

func (g *gateway) entryOut(n *node, a *libservices.Attr, out *fuse.EntryOut) {
	out.NodeId = n.id
	out.Generation = 0
	fillAttr(a, &out.Attr)
	out.SetEntryTimeout(g.entryTimeout)
	out.SetAttrTimeout(g.attrTimeout)
}

func (g *gateway) attrOut(a *libservices.Attr, out *fuse.AttrOut) {
	fillAttr(a, &out.Attr)
	out.SetTimeout(g.attrTimeout)
}

// --- the node table; every function named *Locked needs g.mu ---

// pathLocked returns the path of n from its newest name, caching it (and its
// ancestors') until the next name change; ok is false for a node with no path.
func (g *gateway) pathLocked(n *node) (string, bool) {
	if n == g.root {
		return ".", true
	}
	if n.pathGen == g.gen {
		return n.path, n.path != ""
	}
	var chain []*node
	cur := n
	for cur != g.root && cur.pathGen != g.gen {
		if len(cur.names) == 0 || len(chain) >= maxDepth {
			for _, c := range append(chain, cur) {
				c.path, c.pathGen = "", g.gen
			}
			return "", false
		}
		chain = append(chain, cur)
		cur = cur.names[len(cur.names)-1].parent
	}
	base := "."
	if cur != g.root {
		if cur.path == "" {
			for _, c := range chain {
				c.path, c.pathGen = "", g.gen
			}
			return "", false
		}
		base = cur.path
	}
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		base = join(base, c.names[len(c.names)-1].name)
		c.path, c.pathGen = base, g.gen
	}
	return n.path, true
}

// addNameLocked records that the kernel knows child as parent/name, now its
// newest name: the name a lookup just confirmed is the one to trust (the kernel
// looks a path up again after an ESTALE, and another name of the file may be the
// stale one).
func (g *gateway) addNameLocked(parent *node, name string, child *node) {
	old := parent.kids[name]
	if old == child {
		last := len(child.names) - 1
		if d := child.names[last]; d.parent == parent && d.name == name {
			return
		}
		for i, d := range child.names {
			if d.parent == parent && d.name == name {
				copy(child.names[i:], child.names[i+1:])
				child.names[last] = d
				break
			}
		}
		g.gen++
		return
	}
	if old != nil {
		g.removeNameLocked(parent, name, old)
	}
	if parent.kids == nil {
		parent.kids = map[string]*node{}
	}
	parent.kids[name] = child
	if len(child.names) > 0 {
		g.gen++ // its newest name, so its path and its descendants', change
	}
	child.names = append(child.names, dentry{parent, name})
}

func (g *gateway) removeNameLocked(parent *node, name string, child *node) {
	if parent.kids[name] == child {
		delete(parent.kids, name)
	}
	for i, d := range child.names {
		if d.parent == parent && d.name == name {
			child.names = append(child.names[:i], child.names[i+1:]...)
			break
		}
	}
	g.gen++
}

// dropNameLocked forgets whatever the kernel knew as parent/name.
func (g *gateway) dropNameLocked(parent *node, name string) {
	if old := parent.kids[name]; old != nil {
		g.removeNameLocked(parent, name, old)
	}
}

// lookedUpLocked returns the node for the file a describes, found as parent/name,
// and counts one kernel lookup of it. Nodes are shared by inode number, so hard
// links are one node; a known inode number with another file type is a new file
// that reused the number.
func (g *gateway) lookedUpLocked(parent *node, name string, a *libservices.Attr) *node {
	typ := a.Mode & syscall.S_IFMT
	n := g.byIno[a.Ino]
	if n == nil || n.typ != typ || n == g.root {
		n = &node{id: g.nextID, ino: a.Ino, typ: typ}
		g.nextID++
		g.nodes[n.id] = n
		if g.byIno[a.Ino] != g.root {
			g.byIno[a.Ino] = n
		}
	}
	n.lookups++
	n.stamp = stampOf(a)
	g.addNameLocked(parent, name, n)
	g.checkLocked()
	return n
}

// checkLocked verifies the node table's invariants (see the package doc); it
// walks the whole table, so only builds with the invariants tag run it.
func (g *gateway) checkLocked() {
	if !invariants.Enabled {
		return
	}
	invariants.Check(g.nodes[g.root.id] == g.root && g.root.lookups > 0, "the root left the node table")
	for id, n := range g.nodes {
		invariants.Check(n.id == id, "node %d filed under %d", n.id, id)
		invariants.Check(n.lookups > 0 || n == g.root, "node %d (ino %d) is in the table with no lookup", id, n.ino)
		for _, d := range n.names {
			invariants.Check(d.parent.kids[d.name] == n, "node %d has the name %q in %d, which maps it to another node", id, d.name, d.parent.id)
		}
		for name, kid := range n.kids {
			found := false
			for _, d := range kid.names {
				found = found || d.parent == n && d.name == name
			}
			invariants.Check(found, "%d/%q maps to node %d, which lacks that name", id, name, kid.id)
			invariants.Check(g.nodes[kid.id] == kid, "%d/%q maps to node %d, which was forgotten", id, name, kid.id)
		}
	}
	for ino, n := range g.byIno {
		invariants.Check(n.ino == ino && g.nodes[n.id] == n, "inode %d maps to a node that is not in the table", ino)
	}
}

// Forget implements fuse.RawFileSystem.
func (g *gateway) Forget(id, nlookup uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.nodes[id]
	if n == nil || n == g.root {
		return
	}
	if nlookup < n.lookups {
		n.lookups -= nlookup
		return
	}
	n.lookups = 0
	for _, d := range n.names {
		if d.parent.kids[d.name] == n {
			delete(d.parent.kids, d.name)
		}
	}
	n.names = nil
	for name, kid := range n.kids {
		for i, d := range kid.names {
			if d.parent == n && d.name == name {
				kid.names = append(kid.names[:i], kid.names[i+1:]...)
				break
			}
		}
	}
	n.kids = nil
	delete(g.nodes, id)
	if g.byIno[n.ino] == n {
		delete(g.byIno, n.ino)
	}
	g.gen++
	g.checkLocked()
}

// nodePath returns node id and its path.
func (g *gateway) nodePath(id uint64) (*node, string, fuse.Status) {
	g.mu.Lock()
	n := g.nodes[id]
	if n == nil {
		g.mu.Unlock()
		return nil, "", fuse.Status(syscall.ESTALE)
	}
	p, ok := g.pathLocked(n)
	g.mu.Unlock()
	if !ok {
		return n, "", fuse.Status(syscall.ESTALE)
	}
	return n, p, fuse.OK
}

// checked reports whether a, the attributes found at n's path, are n's.
func (n *node) checked(a *libservices.Attr) bool {
	return a.Ino == n.ino && a.Mode&syscall.S_IFMT == n.typ
}

// verifiedPath returns n's path after checking that it still names n; a is
// filled with its attributes.
func (g *gateway) verifiedPath(id uint64, a *libservices.Attr) (*node, string, fuse.Status) {
	n, p, st := g.nodePath(id)
	if st != fuse.OK {
		return nil, "", st
	}
	if err := g.fs.Lstat(p, a); err != nil {
		return nil, "", staleStatus(err)
	}
	if !n.checked(a) {
		return nil, "", fuse.Status(syscall.ESTALE)
	}
	return n, p, fuse.OK
}

// statNode fills a with the attributes of node id: through one of its open files
// when it has one (an open unlinked file has no path), else by path.
func (g *gateway) statNode(id uint64, a *libservices.Attr) fuse.Status {
	g.mu.Lock()
	n := g.nodes[id]
	if n == nil {
		g.mu.Unlock()
		return fuse.Status(syscall.ESTALE)
	}
	var p string
	ok := false
	h := n.borrowLocked()
	if h == nil {
		p, ok = g.pathLocked(n)
	}
	g.mu.Unlock()
	if h != nil {
		err := g.fs.Fstat(h.h, a)
		h.users.Done()
		if err != nil {
			return status(err)
		}
	} else {
		if !ok {
			return fuse.Status(syscall.ESTALE)
		}
		if err := g.fs.Lstat(p, a); err != nil {
			return staleStatus(err)
		}
		if !n.checked(a) {
			return fuse.Status(syscall.ESTALE)
		}
	}
	g.saw(n, a)
	return fuse.OK
}

// --- attributes ---

// attrs recycles the Attr of the hot requests (LOOKUP, GETATTR, OPEN): passed to
// an interface method, a local one would escape to the heap every time.
var attrs = sync.Pool{New: func() any { return new(libservices.Attr) }}

// GetAttr implements fuse.RawFileSystem.
func (g *gateway) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	a := attrs.Get().(*libservices.Attr)
	defer attrs.Put(a)
	if in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		if h := g.acquire(in.Fh()); h != nil {
			if h.h != nil {
				err := g.fs.Fstat(h.h, a)
				h.users.Done()
				if err != nil {
					return status(err)
				}
				g.saw(h.node, a)
				g.attrOut(a, out)
				return fuse.OK
			}
			h.users.Done()
		}
	}
	if st := g.statNode(in.NodeId, a); st != fuse.OK {
		return st
	}
	g.attrOut(a, out)
	return fuse.OK
}

// SetAttr implements fuse.RawFileSystem.
func (g *gateway) SetAttr(_ <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	var h *handle
	if in.Valid&fuse.FATTR_FH != 0 {
		if h = g.acquire(in.Fh); h != nil && h.h == nil {
			h.users.Done()
			h = nil
		}
	}
	if h != nil {
		defer h.users.Done()
	}
	if in.Valid&fuse.FATTR_SIZE != 0 && in.Size > 1<<63-1 {
		return fuse.Status(syscall.EFBIG)
	}
	// O_TRUNC reaches us as a SETATTR of the new handle, which may be read-only
	// (open(O_RDONLY|O_TRUNC) truncates on Linux): Ftruncate a writable handle only,
	// and truncate a read-only one's file by path.
	writable := h != nil && h.flags&libservices.O_ACCMODE != libservices.O_RDONLY
	var a libservices.Attr
	attrBits := in.Valid &^ (fuse.FATTR_FH | fuse.FATTR_LOCKOWNER | fuse.FATTR_CTIME)
	if writable && attrBits == fuse.FATTR_SIZE {
		// ftruncate(2): through the handle, which also works for an open file that
		// has no path any more.
		if err := g.ftruncate(&in.InHeader, h, int64(in.Size)); err != nil {
			return status(err)
		}
		if err := g.fs.Fstat(h.h, &a); err != nil {
			return status(err)
		}
		g.saw(h.node, &libservices.Attr{}) // see the end of SetAttr
		g.attrOut(&a, out)
		return fuse.OK
	}
	var cur libservices.Attr
	n, p, st := g.verifiedPath(in.NodeId, &cur)
	if st != fuse.OK {
		return st
	}
	var sa libservices.SetAttr
	if in.Valid&fuse.FATTR_MODE != 0 {
		sa.Valid |= libservices.SetMode
		sa.Mode = in.Mode & 0o7777
	}
	if in.Valid&fuse.FATTR_UID != 0 {
		sa.Valid |= libservices.SetUid
		sa.Uid = in.Uid
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		sa.Valid |= libservices.SetGid
		sa.Gid = in.Gid
	}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			sa.Valid |= libservices.SetAtimeNow
		} else {
			sa.Valid |= libservices.SetAtime
			sa.Atime = libservices.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			sa.Valid |= libservices.SetMtimeNow
		} else {
			sa.Valid |= libservices.SetMtime
			sa.Mtime = libservices.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		if writable {
			if err := g.ftruncate(&in.InHeader, h, int64(in.Size)); err != nil {
				return status(err)
			}
		} else {
			sa.Valid |= libservices.SetSize
			sa.Size = int64(in.Size)
		}
	}
	// An empty SETATTR is the kernel's clearing of set-ID bits after a write or
	// chown (see access.Setattr): the Checker decides what it clears.
	if sa.Valid != 0 || attrBits == 0 && n.typ == syscall.S_IFREG {
		if n.typ == syscall.S_IFLNK {
			// Setattr follows a final symlink: it cannot change the link itself.
			if !unchanged(&cur, &sa) {
				return fuse.ENOSYS
			}
		} else if err := g.acc.Setattr(g.creds.get(&in.InHeader), p, &sa); err != nil {
			return staleStatus(err)
		}
	}
	if h != nil {
		if err := g.fs.Fstat(h.h, &a); err != nil {
			return status(err)
		}
	} else if st := g.statNode(in.NodeId, &a); st != fuse.OK {
		return st
	}
	// The kernel takes a SETATTR reply without comparing mtimes (it drops no
	// pages), so these attributes are not a version it has checked its pages
	// against: the next open must not keep them.
	g.saw(n, &libservices.Attr{})
	g.attrOut(&a, out)
	return fuse.OK
}

// ftruncate truncates through the writable handle h for in's caller, clearing
// set-ID bits as the Checker says (the kernel computes only some of them).
func (g *gateway) ftruncate(in *fuse.InHeader, h *handle, size int64) error {
	if size >= 0 && !g.acc.NoSec(&h.file) {
		if st := g.removePrivs(in, h); st != fuse.OK {
			return syscall.Errno(st)
		}
	}
	return g.fs.Ftruncate(h.h, size)
}

// unchanged reports whether sa would leave a as it is (only ownership can be
// compared: times and modes requested for a symlink always differ or are
// meaningless).
func unchanged(a *libservices.Attr, sa *libservices.SetAttr) bool {
	if sa.Valid&^(libservices.SetUid|libservices.SetGid) != 0 {
		return false
	}
	return (sa.Valid&libservices.SetUid == 0 || sa.Uid == a.Uid) && (sa.Valid&libservices.SetGid == 0 || sa.Gid == a.Gid)
}

// StatFs implements fuse.RawFileSystem.
func (g *gateway) StatFs(_ <-chan struct{}, _ *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	var st libservices.Statfs
	if err := g.fs.Statfs(&st); err != nil {
		return status(err)
	}
	*out = fuse.StatfsOut{Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail, Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), NameLen: uint32(st.Namelen), Frsize: uint32(st.Frsize)}
	return fuse.OK
}

// --- names ---

// Lookup implements fuse.RawFileSystem.
func (g *gateway) Lookup(_ <-chan struct{}, in *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	parent, dir, st := g.nodePath(in.NodeId)
	if st != fuse.OK {
		return st
	}
	a := attrs.Get().(*libservices.Attr)
	defer attrs.Put(a)
	if err := g.fs.Lstat(join(dir, name), a); err != nil {
		if err == syscall.ENOENT {
			g.mu.Lock()
			g.dropNameLocked(parent, name)
			g.mu.Unlock()
			if g.negativeTimeout > 0 {
				// A zero node ID with an entry timeout is a cached negative entry.
				*out = fuse.EntryOut{}
				out.SetEntryTimeout(g.negativeTimeout)
				return fuse.OK
			}
		}
		return status(err)
	}
	g.mu.Lock()
	n := g.lookedUpLocked(parent, name, a)
	g.mu.Unlock()
	g.entryOut(n, a, out)
	return fuse.OK
}

// created finishes an operation that created p as parent/name (the Checker gave
// it its owner): it looks it up and fills out.
func (g *gateway) created(parent *node, p, name string, a *libservices.Attr, out *fuse.EntryOut) fuse.Status {
	if err := g.fs.Lstat(p, a); err != nil {
		return status(err)
	}
	g.mu.Lock()
	n := g.lookedUpLocked(parent, name, a)
	g.mu.Unlock()
	g.entryOut(n, a, out)
	return fuse.OK
}

// Mkdir implements fuse.RawFileSystem.
func (g *gateway) Mkdir(_ <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	var pa, a libservices.Attr
	parent, dir, st := g.verifiedPath(in.NodeId, &pa)
	if st != fuse.OK {
		return st
	}
	p := join(dir, name)
	if err := g.acc.Mkdir(g.creds.get(&in.InHeader), p, in.Mode&0o7777); err != nil {
		return status(err)
	}
	return g.created(parent, p, name, &a, out)
}

// Mknod implements fuse.RawFileSystem: regular files only, the contract has no
// device, FIFO or socket.
func (g *gateway) Mknod(_ <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if t := in.Mode & syscall.S_IFMT; t != syscall.S_IFREG && t != 0 {
		return fuse.EPERM
	}
	var pa, a libservices.Attr
	parent, dir, st := g.verifiedPath(in.NodeId, &pa)
	if st != fuse.OK {
		return st
	}
	p := join(dir, name)
	h, err := g.acc.Open(g.creds.get(&in.InHeader), p, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_EXCL|libservices.O_NOFOLLOW, in.Mode&0o7777, nil)
	if err != nil {
		return status(err)
	}
	if err := g.fs.Close(h); err != nil {
		return status(err)
	}
	return g.created(parent, p, name, &a, out)
}

// Symlink implements fuse.RawFileSystem.
func (g *gateway) Symlink(_ <-chan struct{}, in *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	var pa, a libservices.Attr
	parent, dir, st := g.verifiedPath(in.NodeId, &pa)
	if st != fuse.OK {
		return st
	}
	p := join(dir, name)
	if err := g.acc.Symlink(g.creds.get(in), target, p); err != nil {
		return status(err)
	}
	return g.created(parent, p, name, &a, out)
}

// Link implements fuse.RawFileSystem.
func (g *gateway) Link(_ <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	var oa, pa, a libservices.Attr
	_, op, st := g.verifiedPath(in.Oldnodeid, &oa)
	if st != fuse.OK {
		if st == fuse.Status(syscall.ESTALE) {
			return fuse.ENOENT // linking an unlinked file, as link(2) of /proc/self/fd/N
		}
		return st
	}
	parent, dir, st := g.verifiedPath(in.NodeId, &pa)
	if st != fuse.OK {
		return st
	}
	p := join(dir, name)
	if err := g.acc.Link(g.creds.get(&in.InHeader), op, p); err != nil {
		return status(err)
	}
	if err := g.fs.Lstat(p, &a); err != nil {
		return status(err)
	}
	g.mu.Lock()
	n := g.lookedUpLocked(parent, name, &a)
	g.mu.Unlock()
	g.entryOut(n, &a, out)
	return fuse.OK
}

// Readlink implements fuse.RawFileSystem.
func (g *gateway) Readlink(_ <-chan struct{}, in *fuse.InHeader) ([]byte, fuse.Status) {
	n, p, st := g.nodePath(in.NodeId)
	if st != fuse.OK {
		return nil, st
	}
	if n.typ != syscall.S_IFLNK {
		return nil, fuse.EINVAL
	}
	target, err := g.fs.Readlink(p)
	if err != nil {
		return nil, staleStatus(err)
	}
	return []byte(target), fuse.OK
}

// Unlink implements fuse.RawFileSystem.
func (g *gateway) Unlink(_ <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	return g.remove(in, name, false)
}

// Rmdir implements fuse.RawFileSystem.
func (g *gateway) Rmdir(_ <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	return g.remove(in, name, true)
}

func (g *gateway) remove(in *fuse.InHeader, name string, isDir bool) fuse.Status {
	var pa libservices.Attr
	parent, dir, st := g.verifiedPath(in.NodeId, &pa)
	if st != fuse.OK {
		return st
	}
	cr := g.creds.get(in)
	var err error
	if isDir {
		err = g.acc.Rmdir(cr, join(dir, name))
	} else {
		err = g.acc.Unlink(cr, join(dir, name))
	}
	if err != nil {
		return status(err)
	}
	g.mu.Lock()
	g.dropNameLocked(parent, name)
	g.checkLocked()
	g.mu.Unlock()
	return fuse.OK
}

// Rename implements fuse.RawFileSystem. Flags (RENAME_NOREPLACE, RENAME_EXCHANGE,
// RENAME_WHITEOUT) are EINVAL: the contract has no atomic form of them.
func (g *gateway) Rename(_ <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if in.Flags != 0 {
		return fuse.EINVAL
	}
	var a libservices.Attr
	op, odir, st := g.verifiedPath(in.NodeId, &a)
	if st != fuse.OK {
		return st
	}
	np, ndir := op, odir
	if in.Newdir != in.NodeId {
		if np, ndir, st = g.verifiedPath(in.Newdir, &a); st != fuse.OK {
			return st
		}
	}
	if err := g.acc.Rename(g.creds.get(&in.InHeader), join(odir, oldName), join(ndir, newName)); err != nil {
		return status(err)
	}
	g.mu.Lock()
	moved := op.kids[oldName]
	g.dropNameLocked(np, newName)
	if moved != nil {
		g.removeNameLocked(op, oldName, moved)
		g.addNameLocked(np, newName, moved)
	}
	g.checkLocked()
	g.mu.Unlock()
	return fuse.OK
}

// --- extended attributes ---

// capsAttr is the file capability attribute the kernel reads before every write
// to a FUSE file, to drop it (FUSE inodes never get S_NOSEC, which spares local
// filesystems the question).
const capsAttr = "security.capability"

// GetXAttr implements fuse.RawFileSystem. A file found without capsAttr is
// answered from the node for AttrTimeout, like its other attributes, instead of
// asking the FS before every write; setting or removing an attribute through the
// mount forgets that.
func (g *gateway) GetXAttr(_ <-chan struct{}, in *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	caps := attr == capsAttr && g.attrTimeout > 0
	var now int64
	if caps {
		now = time.Now().UnixNano()
	}
	g.mu.Lock()
	n := g.nodes[in.NodeId]
	if n == nil {
		g.mu.Unlock()
		return 0, fuse.Status(syscall.ESTALE)
	}
	if caps && now < n.noCapsUntil {
		g.mu.Unlock()
		return 0, fuse.ENODATA
	}
	p, ok := g.pathLocked(n)
	g.mu.Unlock()
	if !ok {
		return 0, fuse.Status(syscall.ESTALE)
	}
	if n.typ == syscall.S_IFLNK {
		return 0, fuse.ENODATA // the contract's xattr calls follow the link
	}
	sz, err := g.acc.Getxattr(g.creds.get(in), p, attr, dest)
	if err != nil {
		if caps && err == syscall.ENODATA {
			g.mu.Lock()
			n.noCapsUntil = now + int64(g.attrTimeout)
			g.mu.Unlock()
		}
		return 0, staleStatus(err)
	}
	return uint32(sz), fuse.OK
}

// xattrChanged forgets what GetXAttr knows of n's attributes.
func (g *gateway) xattrChanged(n *node) {
	g.mu.Lock()
	n.noCapsUntil = 0
	g.mu.Unlock()
}

// ListXAttr implements fuse.RawFileSystem.
func (g *gateway) ListXAttr(_ <-chan struct{}, in *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n, p, st := g.nodePath(in.NodeId)
	if st != fuse.OK {
		return 0, st
	}
	if n.typ == syscall.S_IFLNK {
		return 0, fuse.OK
	}
	names, err := g.acc.Listxattr(g.creds.get(in), p)
	if err != nil {
		return 0, staleStatus(err)
	}
	size := 0
	for _, x := range names {
		size += len(x) + 1
	}
	if len(dest) == 0 {
		return uint32(size), fuse.OK
	}
	if size > len(dest) {
		return uint32(size), fuse.ERANGE
	}
	off := 0
	for _, x := range names {
		off += copy(dest[off:], x)
		dest[off] = 0
		off++
	}
	return uint32(size), fuse.OK
}

// SetXAttr implements fuse.RawFileSystem.
func (g *gateway) SetXAttr(_ <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	n, p, st := g.nodePath(in.NodeId)
	if st != fuse.OK {
		return st
	}
	if n.typ == syscall.S_IFLNK {
		return fuse.EPERM // as Linux for user.* on a symlink
	}
	g.xattrChanged(n)
	return staleStatus(g.acc.Setxattr(g.creds.get(&in.InHeader), p, attr, data, int(in.Flags)))
}

// RemoveXAttr implements fuse.RawFileSystem.
func (g *gateway) RemoveXAttr(_ <-chan struct{}, in *fuse.InHeader, attr string) fuse.Status {
	n, p, st := g.nodePath(in.NodeId)
	if st != fuse.OK {
		return st
	}
	if n.typ == syscall.S_IFLNK {
		return fuse.ENODATA
	}
	g.xattrChanged(n)
	return staleStatus(g.acc.Removexattr(g.creds.get(in), p, attr))
}
