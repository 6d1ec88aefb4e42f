package cache

import (
	"math"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/internal/invariants"
	"github.com/polytropon/polytropon/libservices"
)

// Write-back: a write lands in per-file dirty pages (inode.dirty) and returns;
// the pages reach the inner FS on Fsync/Fdatasync, on Close of a writable handle,
// when the FS's dirty bytes pass the dirty limit (the writing file is flushed
// synchronously), on every flush interval (a goroutine owned by the FS, stopped
// by CloseFS), before anything that changes a file's size wholesale, and before
// a write of the file that is written through for want of space (space.go).
// Dirty pages are kept outside the shared Store, so they are never evicted and
// never seen by another cache sharing the Store before they are written.

// pagePool recycles the pages of dirty data: a streaming writer gets back the
// pages its flushes wrote, instead of allocating 4 KiB per page written.
var pagePool = sync.Pool{New: func() any { return new([PageSize]byte) }}

// holdLocked holds a write back in dirty pages if the store has room for the
// new ones (held), and flushes the file when the cache's dirty bytes pass the
// dirty limit. The caller checked off and len(p). Called with in.mu held.
func (f *FS) holdLocked(ch *handle, p []byte, off int64) (n int, held bool, err error) {
	in := ch.in
	if pg := dirtyPage(in, off, len(p)); pg != nil {
		// The common rewrite: one page, dirty already, so nothing to reserve,
		// and one map lookup as before reservations.
		n = copy(pg[off%PageSize:], p)
		f.heldLocked(ch, off+int64(n))
	} else if need := newPages(in, off, len(p)); f.reserve(need) {
		n, err = f.writeLocked(ch, p, off, need)
	} else {
		return 0, false, nil
	}
	if err == nil && f.dirtyBytes.Load() > f.dirtyLimit {
		// A failure keeps the pages dirty, to be retried and reported at the
		// next fsync or close (this write is held and acknowledged); it also
		// turns the cache to write-through (refused).
		f.flushLocked(in, ch.inner)
	}
	return n, true, err
}

// writeLocked stores p at off in dirty pages. reserved is the bytes reserve
// counted for the pages it creates (newPages); what is not used is returned.
// The caller checked off and len(p). Called with in.mu held.
func (f *FS) writeLocked(ch *handle, p []byte, off int64, reserved int64) (int, error) {
	in := ch.in
	if in.dirty == nil {
		in.dirty = map[int64]*[PageSize]byte{}
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		idx := pos / PageSize
		inPage := int(pos % PageSize)
		chunk := min(PageSize-inPage, len(p)-done)
		pg := in.dirty[idx]
		if pg == nil {
			pg = pagePool.Get().(*[PageSize]byte)
			if err := f.startPage(ch, pg, idx, chunk); err != nil {
				pagePool.Put(pg)
				f.unreserve(reserved)
				// The bytes before are held: the size covers them, or they
				// would be acknowledged and then dropped by the flush.
				if done > 0 {
					f.heldLocked(ch, off+int64(done))
				}
				return done, err
			}
			in.dirty[idx] = pg
			reserved -= PageSize
			if in.ndirty.Add(1) == 1 {
				f.dirtyInodes.Add(1)
			}
		}
		copy(pg[inPage:inPage+chunk], p[done:done+chunk])
		done += chunk
	}
	// newPages counted the pages created here, under the same hold of in.mu.
	invariants.Check(reserved == 0, "cache: %d bytes reserved but not used", reserved)
	f.unreserve(reserved)
	f.heldLocked(ch, off+int64(len(p)))
	return len(p), nil
}

// heldLocked records a write held back through ch that ended at end: the size
// the cache reports, the file's times, and the handle a flush may use. Called
// with in.mu held.
func (f *FS) heldLocked(ch *handle, end int64) {
	in := ch.in
	if end > in.size.Load() {
		in.size.Store(end)
	}
	in.wtime = now()
	in.wh = ch.inner
}

// dirtyPage returns the dirty page that holds all of the n bytes at off, or
// nil when they span pages or the page is not dirty. Called with in.mu held.
func dirtyPage(in *inode, off int64, n int) *[PageSize]byte {
	if in.dirty == nil || int(off%PageSize)+n > PageSize {
		return nil
	}
	return in.dirty[off/PageSize]
}

// startPage fills a recycled page with page idx's current bytes, before a
// write of chunk bytes into it: cached, or from the inner FS, zeros past the
// file's end. A write of the whole page needs none of them. Called with in.mu
// held.
func (f *FS) startPage(ch *handle, pg *[PageSize]byte, idx int64, chunk int) error {
	if chunk == PageSize {
		return nil
	}
	in := ch.in
	size := in.size.Load()
	if idx*PageSize >= size {
		clear(pg[:])
		return nil
	}
	k := in.key
	k.epoch = in.epoch.Load()
	k.idx = idx
	if !f.store.read(&k, pg[:], 0) {
		n, err := f.inner.ReadAt(ch.inner, pg[:], idx*PageSize)
		if err != nil {
			return err
		}
		clear(pg[n:]) // past the inner file's end (a hole the cache holds the size of)
	}
	if end := size - idx*PageSize; end < PageSize {
		clear(pg[end:]) // past EOF reads as zeros even if stale bytes were cached
	}
	return nil
}

func now() libservices.Timespec {
	t := time.Now()
	return libservices.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// flushLocked writes in's dirty pages to the inner FS through h (a writable inner
// handle), in page order, and moves them into the Store. It stops at the first
// page the inner FS refuses: that page and those after it stay dirty, so the
// store's size never passes data it did not take (the pages before it landed in
// order). Called with in.mu held.
func (f *FS) flushLocked(in *inode, h libservices.Handle) error {
	return f.flushBelowLocked(in, h, math.MaxInt64)
}

// flushBelowLocked is flushLocked for the pages that start below offset below;
// the others stay dirty. Called with in.mu held.
func (f *FS) flushBelowLocked(in *inode, h libservices.Handle, below int64) error {
	if len(in.dirty) == 0 {
		return nil
	}
	if h == nil {
		h = in.wh
	}
	in.order = in.order[:0]
	for idx := range in.dirty {
		in.order = append(in.order, idx)
	}
	slices.Sort(in.order)
	size := in.size.Load()
	k := in.key
	k.epoch = in.epoch.Load()
	for _, idx := range in.order {
		if idx*PageSize >= below {
			break
		}
		if h == nil {
			// Its writers closed after a failed flush, and a reader keeps
			// the pages; nothing can write them until a writer opens.
			return syscall.EBADF
		}
		pg := in.dirty[idx]
		if n := min(int64(PageSize), size-idx*PageSize); n > 0 {
			if err := f.writePage(h, pg[:n], idx*PageSize); err != nil {
				// The pages written so far are clean now, this one and the
				// rest stay dirty for the next flush.
				f.refused(err)
				f.inoChanged(in.key.ino) // what landed changed the store's attributes
				return err
			}
		}
		k.idx = idx
		f.store.update(&k, 0, pg[:])
		delete(in.dirty, idx)
		if in.ndirty.Load() == 1 {
			// The store's attributes are the file's once its last dirty
			// page has landed, and the cached ones are not: they go
			// stale before overlay stops correcting them.
			f.inoChanged(in.key.ino)
		}
		// consumed before dirtyBytes: see reserve.
		f.space.consumed.Add(PageSize)
		f.dirtyBytes.Add(-PageSize)
		if in.ndirty.Add(-1) == 0 {
			f.dirtyInodes.Add(-1)
		}
		pagePool.Put(pg)
	}
	// The inner size may still be short of in.size only if the last bytes were
	// never written: impossible, since every size increase comes from a write.
	f.readSpaceIfStale()
	return nil
}

// writePage writes p at off, all of it: a short write (the store filled up
// in the middle of the page) is continued, so that the store's own error
// comes back.
func (f *FS) writePage(h libservices.Handle, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := f.inner.WriteAt(h, p, off)
		f.space.consumed.Add(int64(n))
		if err != nil {
			return err
		}
		if n == 0 {
			return syscall.EIO // a write that takes nothing and says nothing
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// discardLocked drops in's dirty pages: the file was truncated to zero
// underneath, or truncated below them, or its last handle closed after a failed
// flush (whose error Close reported).
func (f *FS) discardLocked(in *inode) {
	if len(in.dirty) == 0 {
		return
	}
	f.dirtyBytes.Add(-int64(len(in.dirty)) * PageSize)
	for _, pg := range in.dirty {
		pagePool.Put(pg)
	}
	clear(in.dirty)
	in.ndirty.Store(0)
	f.dirtyInodes.Add(-1)
}

// FlushAll writes every dirty page of this cache to the inner FS.
func (f *FS) FlushAll() error {
	f.inodesMu.Lock()
	var ins []*inode
	for _, in := range f.inodes {
		if in.ndirty.Load() > 0 {
			ins = append(ins, in)
		}
	}
	f.inodesMu.Unlock()
	var first error
	for _, in := range ins {
		in.mu.Lock()
		if err := f.flushLocked(in, nil); err != nil && first == nil {
			first = err
		}
		in.mu.Unlock()
	}
	return first
}

// flusher flushes every interval, and reads the store's free space every
// spaceStale, so that other writers' use of the store is seen within about
// that time even by a cache that writes nothing back meanwhile.
func (f *FS) flusher(interval time.Duration) {
	defer close(f.flusherDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	st := time.NewTicker(spaceStale)
	defer st.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.FlushAll() // errors resurface on the file's next fsync or close
		case <-st.C:
			f.readSpace()
		}
	}
}

// overlay corrects attributes of a file with dirty pages: its size and times are
// the cache's until the pages are written.
func (f *FS) overlay(a *libservices.Attr) {
	if f.dirtyInodes.Load() == 0 || !a.IsRegular() {
		return
	}
	f.inodesMu.Lock()
	in := f.inodes[a.Ino]
	f.inodesMu.Unlock()
	if in == nil || in.ndirty.Load() == 0 {
		return
	}
	in.mu.Lock()
	if len(in.dirty) > 0 {
		a.Size = in.size.Load()
		a.Mtime, a.Ctime = in.wtime, in.wtime
	}
	in.mu.Unlock()
}

// checkDirtyAccounting walks every open file and checks that the dirty byte and
// dirty file counters match the dirty pages. Expensive: invariants builds only.
func (f *FS) checkDirtyAccounting() {
	if !invariants.Enabled {
		return
	}
	f.inodesMu.Lock()
	ins := make([]*inode, 0, len(f.inodes))
	for _, in := range f.inodes {
		ins = append(ins, in)
	}
	f.inodesMu.Unlock()
	var bytes, files int64
	for _, in := range ins {
		in.mu.Lock()
		bytes += int64(len(in.dirty)) * PageSize
		invariants.Check(int(in.ndirty.Load()) == len(in.dirty) || len(in.dirty) == 0 && in.ndirty.Load() == 0,
			"cache: inode %d ndirty %d but %d dirty pages", in.key.ino, in.ndirty.Load(), len(in.dirty))
		if len(in.dirty) > 0 {
			files++
		}
		in.mu.Unlock()
	}
	// Files closed with their dirty pages flushed are gone from f.inodes, so the
	// counters can only be checked when nothing else is writing: compare when
	// this walk saw a quiescent state (no concurrent change of the counters).
	if b := f.dirtyBytes.Load(); b == bytes {
		invariants.Check(f.dirtyInodes.Load() == files, "cache: %d dirty files counted, %d found", f.dirtyInodes.Load(), files)
	}
}
