package cache

import (
	"math"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
	"golang.org/x/sys/unix"
)

type handle struct {
	fs     *FS
	inner  libservices.Handle
	in     *inode // nil for anything but a regular file: not cached
	flags  int
	direct bool // write-back cache, but this handle writes through
	closed atomic.Bool
}

// Open implements libservices.FS.
func (f *FS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	innerFlags := flags
	direct := false
	if f.writeBack && flags&libservices.O_ACCMODE != libservices.O_RDONLY {
		// Dirty pages are filled by reading and flushed at explicit offsets: the
		// inner handle must be readable and must not append (appends are placed
		// at the cache's size). Where it cannot be readable, the handle writes
		// through.
		innerFlags = flags&^(libservices.O_ACCMODE|libservices.O_APPEND) | libservices.O_RDWR
	}
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	creates := flags&(libservices.O_CREAT|libservices.O_TRUNC) != 0
	// An open of an existing file needs no Fstat: the file is looked up
	// through the cache (a hit, or a Lstat below that caches the name instead
	// of an Fstat after the open), and a name cached as absent fails at once
	// (see "Open" in the package doc). The entry is read again after the open,
	// to be sure that nothing changed it meanwhile through this cache. An
	// appending open asks below: an append lands at the size it reads.
	var a libservices.Attr
	var known *dentry
	if flags&(libservices.O_CREAT|libservices.O_TRUNC|libservices.O_APPEND) == 0 &&
		flags&(unix.O_PATH|unix.O_TMPFILE&^unix.O_DIRECTORY) == 0 && f.attrTTL != 0 {
		switch err := f.lstat(clean, &a); {
		case err == syscall.ENOENT:
			return nil, err
		case err == nil && !a.IsSymlink():
			known = f.freshAttr(clean, &a)
		}
	}
	// An open that may create or truncate changes clean's entry in its
	// parent (a new name) or the file's attributes: the parent is resolved
	// first, so that only what it changes is dropped. Where the open would
	// follow a symbolic link to create its target, the change cannot be
	// placed: exact is false and everything is dropped after it.
	var p *dentry
	var r reshape
	exact := false
	if creates && f.attrTTL != 0 {
		r = f.reshapes()
		if flags&libservices.O_CREAT != 0 {
			p = f.parentFor(clean)
			if flags&libservices.O_EXCL != 0 {
				exact = p != nil // never follows a final link
			} else if lerr := f.lstat(clean, &a); p != nil && (lerr == syscall.ENOENT || lerr == nil && !a.IsSymlink()) {
				exact = true
			}
		}
	}
	// A truncating open of a file whose dirty pages this cache holds runs under
	// the file's lock, so that the flusher cannot write old pages back between the
	// truncation below and the discard here. (A rename racing between this Stat
	// and the open can still name another file; that one is then unprotected.)
	// Only a write-back cache with dirty files needs to know the file first.
	var locked *inode
	if flags&libservices.O_TRUNC != 0 && f.dirtyInodes.Load() > 0 {
		var sa libservices.Attr
		if f.Stat(clean, &sa) == nil && sa.IsRegular() {
			f.inodesMu.Lock()
			locked = f.inodes[sa.Ino]
			if locked != nil {
				locked.refs++ // keeps it in the table while we wait for its lock
			}
			f.inodesMu.Unlock()
		}
	}
	if locked != nil {
		locked.mu.Lock()
	}
	ih, err := f.inner.Open(clean, innerFlags, mode)
	if err == syscall.EACCES && innerFlags != flags {
		direct = true
		ih, err = f.inner.Open(clean, flags, mode)
	}
	if locked != nil {
		if err == nil {
			f.discardLocked(locked)
			locked.epoch.Add(1 << 32)
			locked.size.Store(0)
		}
		locked.mu.Unlock()
		f.inodesMu.Lock()
		locked.refs--
		if locked.refs == 0 && f.inodes[locked.key.ino] == locked {
			delete(f.inodes, locked.key.ino) // its last handle closed meanwhile
		}
		f.inodesMu.Unlock()
	}
	var s1 uint64
	var start int64
	if creates && f.attrTTL != 0 {
		switch {
		case flags&libservices.O_CREAT == 0:
			// A truncation changes no name: the file's names go stale below,
			// once its inode is known.
			f.named(r, false, nameChange{nil, clean})
		case exact:
			f.named(r, err == nil, nameChange{p, clean})
		default:
			f.named(r, err == nil, nameChange{nil, clean})
		}
		s1, start = f.seq.Load(), f.clock()
	}
	if err != nil {
		return nil, err
	}
	if known != nil {
		var b libservices.Attr
		if f.freshAttr(clean, &b) != known || b.Ino != a.Ino {
			known = nil
		} else {
			a = b
		}
	}
	if known == nil {
		if err := f.inner.Fstat(ih, &a); err != nil {
			f.inner.Close(ih)
			return nil, err
		}
		if f.attrTTL != 0 {
			// A writable open may make the name another file (a union
			// copies a lower file up, with a new inode number).
			f.renamed(clean, &a)
		}
		if creates && f.attrTTL != 0 {
			if flags&libservices.O_TRUNC != 0 {
				// Size and times, under every name of the file. (Not cached
				// from this Fstat: a write between it and this stamp would
				// be missed.)
				f.inoChanged(a.Ino)
			} else if exact {
				// What a create leaves is cached (s1 was taken before the
				// Fstat): a stat that follows costs nothing.
				f.installOpened(p, clean, &a, s1, start)
			}
		}
	}
	h := &handle{fs: f, inner: ih, flags: flags, direct: direct}
	if a.IsRegular() {
		f.inodesMu.Lock()
		in := f.inodes[a.Ino]
		if in == nil {
			in = &inode{key: pageKey{fs0: f.id[0], fs1: f.id[1], ino: a.Ino}}
			in.epoch.Store(uint64(a.Ctime.Sec)<<32 ^ uint64(a.Ctime.Nsec))
			in.size.Store(a.Size)
			f.inodes[a.Ino] = in
		} else if flags&libservices.O_TRUNC != 0 && in != locked {
			in.mu.Lock()
			f.discardLocked(in)
			in.epoch.Add(1 << 32)
			in.size.Store(a.Size)
			in.mu.Unlock()
		}
		in.refs++
		f.inodesMu.Unlock()
		h.in = in
	}
	return h, nil
}

func (f *FS) handle(h libservices.Handle) (*handle, error) {
	ch, ok := h.(*handle)
	if !ok || ch == nil || ch.fs != f || ch.closed.Load() {
		return nil, syscall.EBADF
	}
	return ch, nil
}

// ReadAt implements libservices.FS. The hit path copies from the store under one
// shard's read lock.
func (f *FS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	ch, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	in := ch.in
	if ch.flags&libservices.O_ACCMODE == libservices.O_WRONLY {
		return 0, syscall.EBADF // the inner handle may be readable: see Open
	}
	if in == nil {
		return f.inner.ReadAt(ch.inner, p, off)
	}
	if off < 0 || off+int64(len(p)) < 0 {
		return 0, syscall.EINVAL
	}
	if in.ndirty.Load() > 0 {
		return f.readDirty(ch, p, off)
	}
	size := in.size.Load()
	if off >= size {
		return 0, nil
	}
	if rest := size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	k := in.key
	k.epoch = in.epoch.Load()
	done, hits := 0, int64(0)
	for done < len(p) {
		pos := off + int64(done)
		k.idx = pos / PageSize
		inPage := int(pos % PageSize)
		chunk := min(PageSize-inPage, len(p)-done)
		if f.store.read(&k, p[done:done+chunk], inPage) {
			hits++
		} else {
			f.pageMisses.Add(1)
			if err := f.fill(ch, &k, p[done:done+chunk], inPage); err != nil {
				f.pageHits.Add(hits)
				return done, err
			}
		}
		done += chunk
	}
	// One shared-counter update per call, not per page.
	f.pageHits.Add(hits)
	return done, nil
}

// fill reads page k.idx from the inner FS, copies its bytes from inPage into
// dst, and inserts it into the store. The inode lock keeps a concurrent write from
// landing between the read and the insert.
func (f *FS) fill(ch *handle, k *pageKey, dst []byte, inPage int) error {
	in := ch.in
	in.mu.Lock()
	defer in.mu.Unlock()
	var page [PageSize]byte
	if _, err := f.inner.ReadAt(ch.inner, page[:], k.idx*PageSize); err != nil {
		return err
	}
	copy(dst, page[inPage:])
	// Bytes past what was read are zero: the file's end, as the cache knows it.
	// A page read under an epoch that has since changed is not kept.
	if k.epoch == in.epoch.Load() {
		f.store.insert(k, page[:])
	}
	return nil
}

// readDirty is ReadAt for a file with dirty pages: under the inode lock, dirty
// pages first, then the store, then the inner FS.
func (f *FS) readDirty(ch *handle, p []byte, off int64) (int, error) {
	in := ch.in
	in.mu.Lock()
	defer in.mu.Unlock()
	size := in.size.Load()
	if off >= size {
		return 0, nil
	}
	if rest := size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	k := in.key
	k.epoch = in.epoch.Load()
	for done := 0; done < len(p); {
		pos := off + int64(done)
		k.idx = pos / PageSize
		inPage := int(pos % PageSize)
		chunk := min(PageSize-inPage, len(p)-done)
		dst := p[done : done+chunk]
		if pg := in.dirty[k.idx]; pg != nil {
			copy(dst, pg[inPage:])
		} else if !f.store.read(&k, dst, inPage) {
			var page [PageSize]byte
			if _, err := f.inner.ReadAt(ch.inner, page[:], k.idx*PageSize); err != nil {
				return done, err
			}
			copy(dst, page[inPage:])
			f.store.insert(&k, page[:])
		}
		done += chunk
	}
	return len(p), nil
}

// WriteAt implements libservices.FS: write-through, then update cached pages;
// or, write-back, into dirty pages when the store has room for them (see
// "Space" in the package doc), else write-through after the file's dirty pages.
func (f *FS) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	ch, err := f.handle(h)
	if err != nil {
		return 0, err
	}
	in := ch.in
	if in == nil {
		return f.inner.WriteAt(ch.inner, p, off)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if f.writeBack && !ch.direct {
		if ch.flags&libservices.O_ACCMODE == libservices.O_RDONLY {
			return 0, syscall.EBADF
		}
		if ch.flags&libservices.O_APPEND != 0 {
			off = in.size.Load()
		}
		if off < 0 || off+int64(len(p)) < 0 {
			return 0, syscall.EINVAL
		}
		if len(p) == 0 {
			return 0, nil
		}
		// Nothing reaches the store's size until the data does: the size a
		// held-back write sets is the cache's (overlay) until its pages are
		// written, in page order, so the store never has a size that covers
		// data it did not take.
		if off+int64(len(p)) <= maxHeldEnd {
			if n, held, err := f.holdLocked(ch, p, off); held {
				return n, err
			}
		}
		// Written through, after the pages held back for this file, so that
		// the store takes this file's data in order and never gets a size
		// past data it has not taken.
		if err := f.flushLocked(in, ch.inner); err != nil {
			return 0, err
		}
	} else if ch.direct {
		if err := f.flushLocked(in, nil); err != nil {
			return 0, err
		}
	}
	if ch.flags&libservices.O_APPEND != 0 && (ch.direct || !f.writeBack) {
		var a libservices.Attr
		if err := f.inner.Fstat(ch.inner, &a); err != nil {
			return 0, err
		}
		off = a.Size
	}
	n, err := f.inner.WriteAt(ch.inner, p, off)
	if f.writeBack {
		f.space.consumed.Add(int64(n))
		if err != nil {
			f.refused(err)
		}
	}
	if n > 0 {
		k := in.key
		k.epoch = in.epoch.Load()
		for done := 0; done < n; {
			pos := off + int64(done)
			k.idx = pos / PageSize
			inPage := int(pos % PageSize)
			chunk := min(PageSize-inPage, n-done)
			f.store.update(&k, inPage, p[done:done+chunk])
			done += chunk
		}
		if end := off + int64(n); end > in.size.Load() {
			in.size.Store(end)
		}
		f.inoChanged(in.key.ino) // size and times, written through
	}
	return n, err
}

// Fstat implements libservices.FS.
func (f *FS) Fstat(h libservices.Handle, a *libservices.Attr) error {
	ch, err := f.handle(h)
	if err != nil {
		return err
	}
	if err := f.inner.Fstat(ch.inner, a); err != nil {
		return err
	}
	f.overlay(a)
	return nil
}

// Ftruncate implements libservices.FS.
func (f *FS) Ftruncate(h libservices.Handle, size int64) error {
	ch, err := f.handle(h)
	if err != nil {
		return err
	}
	return f.resize(ch, keptBelow(size), func() error { return f.inner.Ftruncate(ch.inner, size) })
}

// keptBelow is the offset below which a truncation to size keeps a file's
// data; the pages from there on need not be written before it.
func keptBelow(size int64) int64 {
	if size < 0 {
		return math.MaxInt64 // EINVAL below: nothing is cut
	}
	return size
}

// Fallocate implements libservices.FS.
func (f *FS) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	ch, err := f.handle(h)
	if err != nil {
		return err
	}
	return f.resize(ch, math.MaxInt64, func() error { return f.inner.Fallocate(ch.inner, mode, off, length) })
}

// resize runs an operation that may change size or contents wholesale, then
// drops the file's cached pages (a new epoch) and refreshes its size. Dirty
// pages are written first, except those from kept on, which a truncation cuts
// (they stay dirty if op fails): a full store does not stop a truncation that
// frees space.
func (f *FS) resize(ch *handle, kept int64, op func() error) error {
	in := ch.in
	if in == nil {
		return op() // not a regular file: nothing cached changes
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := f.flushBelowLocked(in, ch.inner, kept); err != nil {
		return err
	}
	err := op()
	if err == nil {
		f.discardLocked(in) // the pages past kept, cut by op
		var a libservices.Attr
		if err := f.inner.Fstat(ch.inner, &a); err != nil {
			return err
		}
		in.epoch.Add(1 << 32)
		in.size.Store(a.Size)
	}
	f.inoChanged(in.key.ino)
	return err
}

// Fsync implements libservices.FS: nothing is held back, so it is the inner's.
func (f *FS) Fsync(h libservices.Handle) error {
	ch, err := f.handle(h)
	if err != nil {
		return err
	}
	if err := f.flushHandle(ch); err != nil {
		return err
	}
	return f.inner.Fsync(ch.inner)
}

// Fdatasync implements libservices.FS.
func (f *FS) Fdatasync(h libservices.Handle) error {
	ch, err := f.handle(h)
	if err != nil {
		return err
	}
	if err := f.flushHandle(ch); err != nil {
		return err
	}
	return f.inner.Fdatasync(ch.inner)
}

// Close implements libservices.FS.
func (f *FS) Close(h libservices.Handle) error {
	ch, ok := h.(*handle)
	if !ok || ch == nil || ch.fs != f || !ch.closed.CompareAndSwap(false, true) {
		return syscall.EBADF
	}
	var flushErr error
	if in := ch.in; in != nil {
		in.mu.Lock()
		if in.ndirty.Load() > 0 && ch.flags&libservices.O_ACCMODE != libservices.O_RDONLY {
			flushErr = f.flushLocked(in, ch.inner)
		}
		if in.wh == ch.inner {
			in.wh = nil
		}
		in.mu.Unlock()
		f.inodesMu.Lock()
		in.refs--
		last := in.refs == 0
		if last && f.inodes[in.key.ino] == in {
			delete(f.inodes, in.key.ino)
		}
		f.inodesMu.Unlock()
		if last {
			// Pages still dirty here failed to flush when their writer closed,
			// which reported it; with no handle left nobody can write them, and
			// keeping them would keep them counted as dirty forever.
			in.mu.Lock()
			f.discardLocked(in)
			in.mu.Unlock()
		}
	}
	f.store.checkInvariants()
	f.checkDirtyAccounting()
	if err := f.inner.Close(ch.inner); err != nil {
		return err
	}
	return flushErr
}

// Flush implements libservices.Flusher: through a writable handle, the file's
// dirty pages go to the inner FS, which then flushes what it holds back. The
// pages belong to the file, not to one handle, so this writes those of every
// writer of the file, as Close does.
func (f *FS) Flush(h libservices.Handle) error {
	ch, err := f.handle(h)
	if err != nil {
		return err
	}
	if ch.flags&libservices.O_ACCMODE == libservices.O_RDONLY {
		return nil // nothing was written through it; see Close
	}
	if err := f.flushHandle(ch); err != nil {
		return err
	}
	if f.innerFl != nil {
		return f.innerFl.Flush(ch.inner)
	}
	return nil
}

// HoldsBack implements libservices.Flusher: a write-back cache, or any cache
// over an FS that holds data back.
func (f *FS) HoldsBack() bool { return f.writeBack || f.innerFl != nil }

// flushHandle writes the dirty pages of ch's file (before fsync).
func (f *FS) flushHandle(ch *handle) error {
	in := ch.in
	if in == nil || in.ndirty.Load() == 0 {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	h := ch.inner
	if ch.flags&libservices.O_ACCMODE == libservices.O_RDONLY {
		h = nil // fsync through a read-only handle flushes through the writer's
	}
	return f.flushLocked(in, h)
}
