package service

import (
	"errors"
	"sync"
	"syscall"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/ipc/wire"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
)

// handler joins the back driver to the instances: it is the back.Handler of a
// Service.
type handler struct {
	mounts *mountTable
	log    *zap.Logger
	m      *metrics
	status func() []byte // the status document for OpStatus
}

var (
	_ back.Handler      = (*handler)(nil)
	_ back.ClientOpener = (*handler)(nil)
)

// object is what a client handle stands for: an open file or directory of one
// instance, or a lock.
type object struct {
	inst *instance
	h    libservices.Handle // nil for a lock
	path string             // instance-relative, resolved at open: ReadDir's argument
	lock bool
	ino  uint64      // a lock's key
	file access.File // what the instance's Checker remembers of the open file

	mu   sync.Mutex // guards list
	list []libservices.DirEntry
}

// clientState is a client's object table. The back driver's handle table maps the
// client-visible handle (with its generation) to an index here.
type clientState struct {
	// cred is the client's identity from the handshake (the ClientCtx's, which
	// lives as long as the client): every request is checked against it.
	cred *access.Cred
	// views are the instances as the client sees them (by instance.idx): a
	// stat goes through the View, which remembers the client's last directory.
	views []*access.View

	mu   sync.Mutex
	objs []*object
	free []uint32
}

func (cs *clientState) add(o *object) uint64 {
	o.inst.open.Add(1)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if n := len(cs.free); n > 0 {
		i := cs.free[n-1]
		cs.free = cs.free[:n-1]
		cs.objs[i] = o
		return uint64(i)
	}
	cs.objs = append(cs.objs, o)
	return uint64(len(cs.objs) - 1)
}

func (cs *clientState) get(i uint64) *object {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if i >= uint64(len(cs.objs)) {
		return nil
	}
	return cs.objs[i]
}

func (cs *clientState) remove(i uint64) *object {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if i >= uint64(len(cs.objs)) || cs.objs[i] == nil {
		return nil
	}
	o := cs.objs[i]
	cs.objs[i] = nil
	cs.free = append(cs.free, uint32(i))
	o.inst.open.Add(-1)
	return o
}

// ClientOpened gives the client its object table and credentials before its
// first request.
func (h *handler) ClientOpened(c *back.ClientCtx) {
	cs := &clientState{cred: &c.Cred, views: make([]*access.View, len(h.mounts.all))}
	for i, in := range h.mounts.all {
		cs.views[i] = in.acc.As(cs.cred)
	}
	c.Value = cs
	h.m.clients.Inc()
}

// ClientGone closes what a disconnected (or killed) client left open and releases
// its locks.
func (h *handler) ClientGone(c *back.ClientCtx) {
	h.m.clients.Dec()
	cs, _ := c.Value.(*clientState)
	if cs == nil {
		return
	}
	var left []uint64
	c.Handles(func(hd, obj uint64) { left = append(left, hd) })
	for _, hd := range left {
		if obj, ok := c.ReleaseHandle(hd); ok {
			if o := cs.remove(obj); o != nil {
				if err := h.closeObject(c, o); err != nil {
					h.log.Warn("closing a gone client's handle", zap.Int32("pid", c.PID),
						zap.String("fs", o.inst.name), zap.String("path", o.path), zap.Error(err))
				}
			}
		}
	}
	if len(left) > 0 {
		h.log.Info("client gone; closed its handles", zap.Int32("pid", c.PID), zap.Int("handles", len(left)))
	}
}

func (h *handler) closeObject(c *back.ClientCtx, o *object) error {
	if o.lock {
		o.inst.locks.release(o.ino, c)
		return nil
	}
	return o.inst.fs.Close(o.h)
}

func status(err error) int32 {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return -int32(e)
	}
	return -int32(syscall.EIO)
}

func neg(e syscall.Errno) int32 { return -int32(e) }

// Handle serves one validated request.
func (h *handler) Handle(c *back.ClientCtx, d *wire.Desc, data []byte) int32 {
	t := h.m.start()
	st := h.serve(c, d, data)
	h.m.done(d.Op, t, st)
	return st
}

// pathOf copies the request's path out of shared memory (the client may rewrite it
// at any time) and resolves it in the mount table.
func (h *handler) pathOf(b []byte) (*instance, string, syscall.Errno) {
	return h.mounts.resolve(string(b))
}

func (h *handler) serve(c *back.ClientCtx, d *wire.Desc, data []byte) int32 {
	cs := c.Value.(*clientState)
	switch d.Op {
	case wire.OpRead, wire.OpWrite, wire.OpFsync, wire.OpClose, wire.OpReaddir,
		wire.OpTruncate, wire.OpFstat, wire.OpFallocate:
		return h.serveHandle(c, cs, d, data)
	case wire.OpMounts:
		return h.serveMounts(data)
	case wire.OpStatus:
		doc := h.status()
		if len(doc) > len(data) {
			return neg(syscall.ERANGE)
		}
		return int32(copy(data, doc))
	case wire.OpRename, wire.OpLink, wire.OpSymlink:
		return h.serveTwoPaths(cs, d, data)
	case wire.OpSetattr:
		return h.serveSetattr(cs, d, data)
	case wire.OpGetxattr, wire.OpSetxattr, wire.OpRemovexattr:
		return h.serveXattr(cs, d, data)
	}
	in, p, e := h.pathOf(data[:d.Aux])
	if e != 0 {
		return neg(e)
	}
	acc, cr := in.acc, cs.cred
	switch d.Op {
	case wire.OpStat, wire.OpLstat:
		a := attrs.Get().(*libservices.Attr)
		defer attrs.Put(a)
		var err error
		if v := cs.views[in.idx]; d.Op == wire.OpStat {
			err = v.Stat(p, a)
		} else {
			err = v.Lstat(p, a)
		}
		if err != nil {
			return status(err)
		}
		putAttr(data, a)
		return 0
	case wire.OpOpen, wire.OpCreate:
		flags := int(d.Flags)
		if d.Op == wire.OpCreate {
			flags = libservices.O_CREAT | libservices.O_EXCL | libservices.O_RDWR
		}
		o := &object{inst: in}
		fh, err := acc.Open(cr, p, flags, d.Mode, &o.file)
		if err != nil {
			return status(err)
		}
		o.h, o.path = fh, o.file.Path()
		return h.newHandle(c, cs, d, o)
	case wire.OpMkdir:
		return status(acc.Mkdir(cr, p, d.Mode))
	case wire.OpUnlink:
		return status(acc.Unlink(cr, p))
	case wire.OpRmdir:
		return status(acc.Rmdir(cr, p))
	case wire.OpReadlink:
		target, err := acc.Readlink(cr, p)
		if err != nil {
			return status(err)
		}
		if len(target) > len(data) {
			return neg(syscall.ENAMETOOLONG)
		}
		return int32(copy(data, target))
	case wire.OpStatfs:
		var s libservices.Statfs
		if err := acc.Statfs(cr, p, &s); err != nil {
			return status(err)
		}
		r := wire.Statfs{Type: s.Type, Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
			Files: s.Files, Free: s.Ffree, Namelen: s.Namelen, Frsize: s.Frsize}
		r.Put(data)
		return 0
	case wire.OpListxattr:
		names, err := acc.Listxattr(cr, p)
		if err != nil {
			return status(err)
		}
		n := 0
		for _, name := range names {
			if n+len(name)+1 > len(data) {
				return neg(syscall.ERANGE)
			}
			n += copy(data[n:], name)
			data[n] = 0
			n++
		}
		return int32(n)
	case wire.OpLock:
		// Keyed by inode, so that every name of the file shares one lock.
		var a libservices.Attr
		if err := acc.Stat(cr, p, &a); err != nil {
			return status(err)
		}
		if a.IsDir() {
			return neg(syscall.EISDIR)
		}
		if e := in.locks.acquire(a.Ino, c); e != 0 {
			return neg(e)
		}
		st := h.newHandle(c, cs, d, &object{inst: in, path: p, lock: true, ino: a.Ino})
		if st < 0 {
			in.locks.release(a.Ino, c)
		}
		return st
	}
	return neg(syscall.ENOSYS)
}

// newHandle registers o for the client and puts the handle in d.Result; when the
// client's table is full, o is closed again and the client gets EMFILE.
func (h *handler) newHandle(c *back.ClientCtx, cs *clientState, d *wire.Desc, o *object) int32 {
	i := cs.add(o)
	hd, e := c.NewHandle(i)
	if e != 0 {
		cs.remove(i)
		if !o.lock {
			_ = o.inst.fs.Close(o.h)
		}
		return neg(e)
	}
	d.Result = hd
	return 0
}

func (h *handler) serveHandle(c *back.ClientCtx, cs *clientState, d *wire.Desc, data []byte) int32 {
	if d.Op == wire.OpClose {
		i, ok := c.ReleaseHandle(d.Handle)
		if !ok {
			return neg(syscall.EBADF)
		}
		o := cs.remove(i)
		if o == nil {
			return neg(syscall.EBADF)
		}
		return status(h.closeObject(c, o))
	}
	i, ok := c.Object(d.Handle)
	if !ok {
		return neg(syscall.EBADF)
	}
	o := cs.get(i)
	if o == nil || o.lock {
		return neg(syscall.EBADF)
	}
	fs, acc := o.inst.fs, o.inst.acc
	switch d.Op {
	case wire.OpRead:
		n, err := fs.ReadAt(o.h, data, int64(d.Offset))
		if err != nil {
			return status(err)
		}
		return int32(n)
	case wire.OpWrite:
		n, err := acc.WriteAt(cs.cred, &o.file, o.h, data, int64(d.Offset))
		if err != nil && n == 0 {
			return status(err)
		}
		// A short write reports its count; the client's next request gets the
		// error, as write(2) does.
		return int32(n)
	case wire.OpFsync:
		if d.Flags&wire.FsyncData != 0 {
			return status(fs.Fdatasync(o.h))
		}
		return status(fs.Fsync(o.h))
	case wire.OpTruncate:
		return status(acc.Ftruncate(cs.cred, &o.file, o.h, int64(d.Offset)))
	case wire.OpFstat:
		a := attrs.Get().(*libservices.Attr)
		defer attrs.Put(a)
		if err := fs.Fstat(o.h, a); err != nil {
			return status(err)
		}
		putAttr(data, a)
		return 0
	case wire.OpFallocate:
		length := wire.GetU64(data)
		if length == 0 || length > 1<<63-1 || d.Offset+length > 1<<63-1 {
			return neg(syscall.EINVAL)
		}
		return status(acc.Fallocate(cs.cred, &o.file, o.h, d.Flags, int64(d.Offset), int64(length)))
	case wire.OpReaddir:
		return h.serveReaddir(o, d, data)
	}
	return neg(syscall.ENOSYS)
}

// serveReaddir pages through a listing taken when the client asks for cookie 0: the
// cookie is an index into it, so entries are neither repeated nor skipped however
// many batches the client needs.
func (h *handler) serveReaddir(o *object, d *wire.Desc, data []byte) int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d.Offset == 0 || o.list == nil {
		list, err := o.inst.fs.ReadDir(o.path)
		if err != nil {
			return status(err)
		}
		if list == nil {
			list = []libservices.DirEntry{}
		}
		o.list = list
	}
	i := d.Offset
	n := 0
	for ; i < uint64(len(o.list)); i++ {
		e := &o.list[i]
		k := wire.PutDirent(data[n:], e.Name, dtype(e.Type), e.Ino)
		if k == 0 {
			break
		}
		n += k
	}
	if n == 0 && i < uint64(len(o.list)) {
		return neg(syscall.EINVAL) // cannot happen: the buffer holds a longest name
	}
	d.Result = i
	return int32(n)
}

func dtype(mode uint32) uint8 {
	return uint8((mode & syscall.S_IFMT) >> 12)
}

func (h *handler) serveTwoPaths(cs *clientState, d *wire.Desc, data []byte) int32 {
	first := string(data[:d.Aux])
	second := string(data[d.Aux:d.Length])
	in2, p2, e := h.mounts.resolve(second)
	if e != 0 {
		return neg(e)
	}
	if d.Op == wire.OpSymlink {
		// The target is link content, not a path the service resolves.
		return status(in2.acc.Symlink(cs.cred, first, p2))
	}
	in1, p1, e := h.mounts.resolve(first)
	if e != 0 {
		return neg(e)
	}
	if in1 != in2 {
		return neg(syscall.EXDEV)
	}
	if d.Op == wire.OpRename {
		return status(in1.acc.Rename(cs.cred, p1, p2))
	}
	return status(in1.acc.Link(cs.cred, p1, p2))
}

func (h *handler) serveSetattr(cs *clientState, d *wire.Desc, data []byte) int32 {
	var r wire.Setattr
	r.Get(data)
	in, p, e := h.pathOf(data[wire.SetattrSize : wire.SetattrSize+d.Aux])
	if e != 0 {
		return neg(e)
	}
	sa := libservices.SetAttr{Valid: d.Flags, Mode: d.Mode, Uid: r.UID, Gid: r.GID, Size: int64(d.Offset),
		Atime: libservices.Timespec{Sec: r.AtimeSec, Nsec: int64(r.AtimeNsec)},
		Mtime: libservices.Timespec{Sec: r.MtimeSec, Nsec: int64(r.MtimeNsec)}}
	return status(in.acc.Setattr(cs.cred, p, &sa))
}

func (h *handler) serveXattr(cs *clientState, d *wire.Desc, data []byte) int32 {
	in, p, e := h.pathOf(data[:d.Aux])
	if e != 0 {
		return neg(e)
	}
	nameEnd := uint64(d.Aux) + d.Offset
	name := string(data[d.Aux:nameEnd])
	switch d.Op {
	case wire.OpGetxattr:
		var dest []byte
		if d.Flags&wire.XattrSizeOnly == 0 {
			dest = data[nameEnd:d.Length]
			if len(dest) == 0 {
				return neg(syscall.ERANGE)
			}
		}
		n, err := in.acc.Getxattr(cs.cred, p, name, dest)
		if err != nil {
			return status(err)
		}
		return int32(n)
	case wire.OpSetxattr:
		// Copied: the FS may keep the value, and the client may rewrite its buffer.
		value := append([]byte(nil), data[nameEnd:d.Length]...)
		return status(in.acc.Setxattr(cs.cred, p, name, value, int(d.Flags)))
	default:
		return status(in.acc.Removexattr(cs.cred, p, name))
	}
}

func (h *handler) serveMounts(data []byte) int32 {
	n := 0
	for _, in := range h.mounts.byLen {
		k := wire.PutMount(data[n:], in.name, in.prefix)
		if k == 0 {
			return neg(syscall.ERANGE)
		}
		n += k
	}
	return int32(n)
}

// attrs recycles the Attr of stat and fstat: passed to an interface method, a
// local one would escape to the heap on every request.
var attrs = sync.Pool{New: func() any { return new(libservices.Attr) }}

func putAttr(b []byte, a *libservices.Attr) {
	s := wire.Stat{Ino: a.Ino, Size: a.Size, Blocks: a.Blocks, Mode: a.Mode, Nlink: a.Nlink, UID: a.Uid, GID: a.Gid,
		Blksize: a.Blksize, Rdev: a.Rdev, AtimeSec: a.Atime.Sec, MtimeSec: a.Mtime.Sec, CtimeSec: a.Ctime.Sec,
		AtimeNsec: uint32(a.Atime.Nsec), MtimeNsec: uint32(a.Mtime.Nsec), CtimeNsec: uint32(a.Ctime.Nsec)}
	s.Put(b)
}

// lockTable holds an instance's advisory locks: whole-file, exclusive, not
// blocking (EAGAIN when held), owned by a client until it closes the lock handle or
// disconnects. They exclude only clients of this service; the FS below knows
// nothing of them.
type lockTable struct {
	mu     sync.Mutex
	owners map[uint64]*back.ClientCtx // by inode number
}

func (l *lockTable) acquire(key uint64, c *back.ClientCtx) syscall.Errno {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.owners == nil {
		l.owners = map[uint64]*back.ClientCtx{}
	}
	if _, held := l.owners[key]; held {
		return syscall.EAGAIN
	}
	l.owners[key] = c
	return 0
}

func (l *lockTable) release(key uint64, c *back.ClientCtx) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.owners[key] == c {
		delete(l.owners, key)
	}
}

func (l *lockTable) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.owners)
}
