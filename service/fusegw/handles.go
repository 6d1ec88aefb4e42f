package fusegw

import (
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
)

// handle is an open file or directory, under the file handle number the kernel
// passes back.
type handle struct {
	h     libservices.Handle // nil for a directory
	node  *node
	flags int         // the libservices open flags
	file  access.File // what the Checker remembers of the open file
	// uid is the caller that opened the handle, counted by the Quota when
	// counted is set.
	uid     uint32
	counted bool

	// users counts the requests using h; RELEASE waits for them before Close,
	// since a request whose caller was killed may still run when the kernel
	// releases the file.
	users sync.WaitGroup

	// Directories: the ReadDir snapshot served by READDIR, taken at offset 0.
	dmu    sync.Mutex
	ents   []libservices.DirEntry
	listed bool
	dotdot uint64 // inode number of the parent at the snapshot
}

// openFlags are the open(2) flags passed to the FS. The kernel has dealt with the
// others: O_DIRECT and O_NOATIME are its business (and O_DIRECT below would
// refuse the unaligned requests FUSE may send), O_CREAT and O_EXCL only make sense
// in CREATE, and FUSE strips O_TRUNC (it truncates with a SETATTR).
const openFlags = libservices.O_ACCMODE | libservices.O_APPEND | libservices.O_TRUNC | unix.O_SYNC | unix.O_DSYNC

// keepCacheAge is how old a file's ctime must be for its cached pages to be kept
// across opens: timestamps come from a coarse clock, so two changes within one tick
// can leave equal stamps, but not two changes a second apart.
const keepCacheAge = time.Second

// borrowLocked returns one of n's open file handles, counted as in use, or nil.
func (n *node) borrowLocked() *handle {
	for _, h := range n.open {
		h.users.Add(1)
		return h
	}
	return nil
}

// acquire returns the handle fh, counted as in use (the caller calls users.Done),
// or nil.
func (g *gateway) acquire(fh uint64) *handle {
	g.hmu.RLock()
	var h *handle
	if fh < uint64(len(g.files)) {
		h = g.files[fh]
	}
	if h != nil {
		h.users.Add(1)
	}
	g.hmu.RUnlock()
	return h
}

// register gives h a file handle number; false once the server has stopped.
func (g *gateway) register(h *handle) (uint64, bool) {
	g.hmu.Lock()
	if g.shut {
		g.hmu.Unlock()
		return 0, false
	}
	var fh uint64
	if k := len(g.free); k > 0 {
		fh = g.free[k-1]
		g.free = g.free[:k-1]
		g.files[fh] = h
	} else {
		fh = uint64(len(g.files))
		g.files = append(g.files, h)
	}
	g.hmu.Unlock()
	if h.h != nil {
		g.mu.Lock()
		h.node.open = append(h.node.open, h)
		g.mu.Unlock()
	}
	return fh, true
}

// unregister removes fh from the tables and waits until no request uses it.
func (g *gateway) unregister(fh uint64) *handle {
	g.hmu.Lock()
	var h *handle
	if fh > 0 && fh < uint64(len(g.files)) {
		if h = g.files[fh]; h != nil {
			g.files[fh] = nil
			g.free = append(g.free, fh)
		}
	}
	g.hmu.Unlock()
	if h == nil {
		return nil
	}
	g.forgetOpen(h)
	h.users.Wait()
	return h
}

func (g *gateway) forgetOpen(h *handle) {
	if h.h == nil {
		return
	}
	g.mu.Lock()
	for i, o := range h.node.open {
		if o == h {
			h.node.open = append(h.node.open[:i], h.node.open[i+1:]...)
			break
		}
	}
	g.mu.Unlock()
}

// shutdown closes the handles the kernel never released (the connection ended
// with files open: an aborted or killed mount), so that write-back layers flush
// them. It runs once the server has answered its last request.
func (g *gateway) shutdown() {
	g.hmu.Lock()
	g.shut = true
	hs := g.files
	g.files, g.free = nil, nil
	g.hmu.Unlock()
	for _, h := range hs {
		if h == nil {
			continue
		}
		g.forgetOpen(h)
		h.users.Wait()
		if h.h != nil {
			if err := g.fs.Close(h.h); err != nil {
				g.log.Warn("closing a file left open at unmount failed", zap.Error(err))
			}
		}
		g.uncount(h)
	}
	g.creds.close()
}

// count asks the Quota for a handle of in's caller; h records it.
func (g *gateway) count(in *fuse.InHeader, h *handle) fuse.Status {
	h.uid = in.Uid
	if g.quota == nil {
		return fuse.OK
	}
	if e := g.quota.Acquire(in.Uid); e != 0 {
		return fuse.Status(e)
	}
	h.counted = true
	return fuse.OK
}

// uncount gives h's handle back to the Quota.
func (g *gateway) uncount(h *handle) {
	if h.counted {
		h.counted = false
		g.quota.Release(h.uid)
	}
}

// opened compares a, the attributes of the file n just opened, with those the
// kernel got last (close-to-open consistency, as NFS). The same version, old
// enough to be trusted (see the package doc), keeps the kernel's pages
// (FOPEN_KEEP_CACHE); another version means the file changed behind the kernel's
// back, and the kernel's attributes (its size, which bounds reads) are
// invalidated before the open returns.
func (g *gateway) opened(n *node, a *libservices.Attr) uint32 {
	if g.directIO {
		return fuse.FOPEN_DIRECT_IO // no pages to keep or to invalidate
	}
	s := stampOf(a)
	old := time.Since(time.Unix(a.Ctime.Sec, a.Ctime.Nsec)) > keepCacheAge
	g.mu.Lock()
	same := n.stamp == s
	n.stamp = s
	g.mu.Unlock()
	if same {
		if old {
			return fuse.FOPEN_KEEP_CACHE
		}
		return 0
	}
	if srv := g.server.Load(); srv != nil {
		srv.InodeNotify(n.id, -1, 0) // attributes only: never waits on pages
	}
	return 0
}

// Open implements fuse.RawFileSystem.
func (g *gateway) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, p, st := g.nodePath(in.NodeId)
	if st != fuse.OK {
		return st
	}
	// O_NOFOLLOW: the node is not a symlink, so a symlink at its path is another
	// file that took its name (ELOOP, reported as stale).
	flags := int(in.Flags)&openFlags | libservices.O_NOFOLLOW
	h := &handle{node: n, flags: flags}
	if st := g.count(&in.InHeader, h); st != fuse.OK {
		return st
	}
	lh, err := g.acc.Open(g.creds.get(&in.InHeader), p, flags, 0, &h.file)
	if err != nil {
		g.uncount(h)
		if err == syscall.EISDIR {
			return fuse.Status(syscall.ESTALE) // a directory took the file's name
		}
		return staleStatus(err)
	}
	h.h = lh
	a := attrs.Get().(*libservices.Attr)
	defer attrs.Put(a)
	if err := g.fs.Fstat(lh, a); err != nil {
		g.fs.Close(lh)
		g.uncount(h)
		return status(err)
	}
	if !n.checked(a) {
		g.fs.Close(lh)
		g.uncount(h)
		return fuse.Status(syscall.ESTALE)
	}
	fh, ok := g.register(h)
	if !ok {
		g.fs.Close(lh)
		g.uncount(h)
		return fuse.Status(syscall.ENOTCONN)
	}
	out.Fh = fh
	out.OpenFlags = g.opened(n, a) | g.noFlush()
	return fuse.OK
}

// Create implements fuse.RawFileSystem.
func (g *gateway) Create(_ <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	var pa, a libservices.Attr
	parent, dir, st := g.verifiedPath(in.NodeId, &pa)
	if st != fuse.OK {
		return st
	}
	p := join(dir, name)
	// The kernel creates only where it saw no file: O_NOFOLLOW turns a symlink
	// created there behind its back into ESTALE, and the kernel then looks the
	// name up again and follows the link itself.
	flags := int(in.Flags)&(openFlags|libservices.O_EXCL) | libservices.O_CREAT | libservices.O_NOFOLLOW
	h := &handle{flags: flags &^ (libservices.O_CREAT | libservices.O_EXCL)}
	if st := g.count(&in.InHeader, h); st != fuse.OK {
		return st
	}
	lh, err := g.acc.Open(g.creds.get(&in.InHeader), p, flags, in.Mode&0o7777, &h.file)
	if err != nil {
		g.uncount(h)
		if err == syscall.ELOOP {
			return fuse.Status(syscall.ESTALE)
		}
		return status(err)
	}
	h.h = lh
	if err := g.fs.Fstat(lh, &a); err != nil {
		g.fs.Close(lh)
		g.uncount(h)
		return status(err)
	}
	g.mu.Lock()
	n := g.lookedUpLocked(parent, name, &a)
	g.mu.Unlock()
	h.node = n
	fh, ok := g.register(h)
	if !ok {
		g.fs.Close(lh)
		g.uncount(h)
		return fuse.Status(syscall.ENOTCONN)
	}
	g.entryOut(n, &a, &out.EntryOut)
	out.Fh = fh
	out.OpenFlags = g.noFlush()
	if g.directIO {
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	}
	return fuse.OK
}

// readResult hands the bytes read to the server without an allocation per READ:
// the server calls Done once it has written them to the kernel.
type readResult struct{ data []byte }

var readResults = sync.Pool{New: func() any { return new(readResult) }}

func (r *readResult) Bytes([]byte) ([]byte, fuse.Status) { return r.data, fuse.OK }
func (r *readResult) Size() int                          { return len(r.data) }
func (r *readResult) Done() {
	r.data = nil
	readResults.Put(r)
}

// fileHandle acquires fh, which must be an open file.
func (g *gateway) fileHandle(fh uint64) (*handle, fuse.Status) {
	h := g.acquire(fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if h.h == nil {
		h.users.Done()
		return nil, fuse.Status(syscall.EISDIR)
	}
	return h, fuse.OK
}

// Read implements fuse.RawFileSystem.
func (g *gateway) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, st := g.fileHandle(in.Fh)
	if st != fuse.OK {
		return nil, st
	}
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	n, err := g.fs.ReadAt(h.h, buf, int64(in.Offset))
	h.users.Done()
	if err != nil {
		return nil, status(err)
	}
	r := readResults.Get().(*readResult)
	r.data = buf[:n]
	return r, fuse.OK
}

// Write implements fuse.RawFileSystem. With page caching the kernel clears
// set-ID bits itself before a write (a SETATTR); with direct I/O it asks the FS
// to (FUSE_WRITE_KILL_SUIDGID, when the writer has no CAP_FSETID), which costs
// one atomic load for a file known to have none.
func (g *gateway) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h, st := g.fileHandle(in.Fh)
	if st != fuse.OK {
		return 0, st
	}
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 && !g.acc.NoSec(&h.file) {
		if st := g.removePrivs(&in.InHeader, h); st != fuse.OK {
			h.users.Done()
			return 0, st
		}
	}
	n, err := g.fs.WriteAt(h.h, data, int64(in.Offset))
	h.users.Done()
	if err != nil {
		return 0, status(err)
	}
	return uint32(n), fuse.OK
}

// removePrivs clears the set-ID bits a write by in's caller removes from h's
// file, found by the node's current path. A file with no path (unlinked while
// open) needs none cleared, or the write is refused (see
// access.Checker.RemovePrivs).
func (g *gateway) removePrivs(in *fuse.InHeader, h *handle) fuse.Status {
	g.mu.Lock()
	p, ok := g.pathLocked(h.node)
	g.mu.Unlock()
	if !ok {
		p = "" // no name: ENOENT if the Checker looks for one
	}
	return status(g.acc.RemovePrivsAt(g.creds.get(in), &h.file, h.h, p))
}

// noFlush spares the kernel the FLUSH of every close(2) when there is nothing to
// flush (no libservices.Flusher that holds data back).
func (g *gateway) noFlush() uint32 {
	if g.flusher == nil {
		return fuse.FOPEN_NOFLUSH
	}
	return 0
}

// Flush implements fuse.RawFileSystem.
func (g *gateway) Flush(_ <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if g.flusher == nil {
		return fuse.OK
	}
	h, st := g.fileHandle(in.Fh)
	if st != fuse.OK {
		return st
	}
	err := g.flusher.Flush(h.h)
	h.users.Done()
	return status(err)
}

// Release implements fuse.RawFileSystem.
func (g *gateway) Release(_ <-chan struct{}, in *fuse.ReleaseIn) {
	h := g.unregister(in.Fh)
	if h == nil {
		return
	}
	g.uncount(h)
	if h.h == nil {
		return
	}
	if err := g.fs.Close(h.h); err != nil {
		// The kernel does not wait for RELEASE: nobody can be told.
		g.log.Warn("close failed after the last close(2) of a file", zap.Uint64("ino", h.node.ino), zap.Error(err))
	}
}

// Fsync implements fuse.RawFileSystem.
func (g *gateway) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, st := g.fileHandle(in.Fh)
	if st != fuse.OK {
		return st
	}
	var err error
	if in.FsyncFlags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		err = g.fs.Fdatasync(h.h)
	} else {
		err = g.fs.Fsync(h.h)
	}
	h.users.Done()
	return status(err)
}

// Fallocate implements fuse.RawFileSystem.
func (g *gateway) Fallocate(_ <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h, st := g.fileHandle(in.Fh)
	if st != fuse.OK {
		return st
	}
	err := g.fs.Fallocate(h.h, in.Mode, int64(in.Offset), int64(in.Length))
	h.users.Done()
	return status(err)
}

// --- directories ---

// OpenDir implements fuse.RawFileSystem.
func (g *gateway) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	var a libservices.Attr
	n, p, st := g.verifiedPath(in.NodeId, &a)
	if st != fuse.OK {
		return st
	}
	if err := g.acc.Opendir(g.creds.get(&in.InHeader), p); err != nil {
		return staleStatus(err)
	}
	h := &handle{node: n}
	if st := g.count(&in.InHeader, h); st != fuse.OK {
		return st
	}
	fh, ok := g.register(h)
	if !ok {
		g.uncount(h)
		return fuse.Status(syscall.ENOTCONN)
	}
	out.Fh = fh
	return fuse.OK
}

// dirHandle acquires fh, which must be an open directory.
func (g *gateway) dirHandle(fh uint64) (*handle, fuse.Status) {
	h := g.acquire(fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if h.h != nil {
		h.users.Done()
		return nil, fuse.ENOTDIR
	}
	return h, fuse.OK
}

// ReadDir implements fuse.RawFileSystem.
func (g *gateway) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return g.readDir(in, out, false)
}

// ReadDirPlus implements fuse.RawFileSystem.
func (g *gateway) ReadDirPlus(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return g.readDir(in, out, true)
}

// readDir serves the directory's snapshot from in.Offset, which is an index into
// ".", "..", and the snapshot: any offset the kernel kept is valid.
func (g *gateway) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	h, st := g.dirHandle(in.Fh)
	if st != fuse.OK {
		return st
	}
	defer h.users.Done()
	h.dmu.Lock()
	defer h.dmu.Unlock()
	g.mu.Lock()
	dir, ok := g.pathLocked(h.node)
	dotdot := h.node.ino
	if k := len(h.node.names); k > 0 {
		dotdot = h.node.names[k-1].parent.ino
	}
	g.mu.Unlock()
	if in.Offset == 0 || !h.listed {
		if !ok {
			return fuse.Status(syscall.ESTALE)
		}
		ents, err := g.fs.ReadDir(dir)
		if err != nil {
			return staleStatus(err)
		}
		h.ents, h.listed, h.dotdot = ents, true, dotdot
	}
	a := attrs.Get().(*libservices.Attr)
	defer attrs.Put(a)
	for i := in.Offset; i < uint64(len(h.ents))+2; i++ {
		e := fuse.DirEntry{Mode: syscall.S_IFDIR, Off: i + 1}
		switch i {
		case 0:
			e.Name, e.Ino = ".", h.node.ino
		case 1:
			e.Name, e.Ino = "..", h.dotdot
		default:
			de := &h.ents[i-2]
			e.Name, e.Ino, e.Mode = de.Name, de.Ino, de.Type
		}
		if !plus {
			if !out.AddDirEntry(e) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if i < 2 || !ok {
			continue // the kernel ignores the entry of "." and ".."; node ID 0 = no lookup
		}
		if g.fs.Lstat(join(dir, e.Name), a) != nil {
			continue // gone since the snapshot: listed, not looked up
		}
		g.mu.Lock()
		n := g.lookedUpLocked(h.node, e.Name, a)
		g.mu.Unlock()
		g.entryOut(n, a, eo)
		if a.Mode&syscall.S_IFMT != e.Mode&syscall.S_IFMT {
			out.FixMode(a.Mode)
		}
	}
	return fuse.OK
}

// ReleaseDir implements fuse.RawFileSystem.
func (g *gateway) ReleaseDir(in *fuse.ReleaseIn) {
	if h := g.unregister(in.Fh); h != nil {
		g.uncount(h)
	}
}

// FsyncDir implements fuse.RawFileSystem: the directory is opened for the call,
// since the contract reads directories by path.
func (g *gateway) FsyncDir(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, st := g.dirHandle(in.Fh)
	if st != fuse.OK {
		return st
	}
	defer h.users.Done()
	g.mu.Lock()
	p, ok := g.pathLocked(h.node)
	g.mu.Unlock()
	if !ok {
		return fuse.Status(syscall.ESTALE)
	}
	d, err := g.fs.Open(p, libservices.O_RDONLY|libservices.O_DIRECTORY|libservices.O_NOFOLLOW, 0)
	if err != nil {
		return staleStatus(err)
	}
	if in.FsyncFlags&1 != 0 {
		err = g.fs.Fdatasync(d)
	} else {
		err = g.fs.Fsync(d)
	}
	if cerr := g.fs.Close(d); err == nil {
		err = cerr
	}
	return status(err)
}
