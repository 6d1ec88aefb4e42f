package cache

import (
	"sort"

	"github.com/polytropon/polytropon/internal/invariants"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// Write-back: a write lands in per-file dirty pages (inode.dirty) and returns;
// the pages reach the inner FS on Fsync/Fdatasync, on Close of a writable handle,
// when the FS's dirty bytes pass the dirty limit (the writing file is flushed
// synchronously), on every flush interval (a goroutine owned by the FS, stopped
// by CloseFS), and before anything that changes a file's size wholesale. Dirty
// pages are kept outside the shared Store, so they are never evicted and never
// seen by another cache sharing the Store before they are written.

// writeLocked stores p at off in dirty pages. Called with in.mu held.
func (f *FS) writeLocked(ch *handle, p []byte, off int64) (int, error) {
	in := ch.in
	if off < 0 || off+int64(len(p)) < 0 {
		return 0, syscall.EINVAL
	}
	if len(p) == 0 {
		return 0, nil
	}
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
			pg = new([PageSize]byte)
			if idx*PageSize < in.size.Load() {
				// Start from the page's current bytes: cached, or from the inner FS.
				k := in.key
				k.epoch = in.epoch.Load()
				k.idx = idx
				if !f.store.read(&k, pg[:], 0) {
					if _, err := f.inner.ReadAt(ch.inner, pg[:], idx*PageSize); err != nil {
						return done, err
					}
				}
				if end := in.size.Load() - idx*PageSize; end < PageSize {
					clear(pg[end:]) // past EOF reads as zeros even if stale bytes were cached
				}
			}
			in.dirty[idx] = pg
			f.dirtyBytes.Add(PageSize)
			if in.ndirty.Add(1) == 1 {
				f.dirtyInodes.Add(1)
			}
		}
		copy(pg[inPage:inPage+chunk], p[done:done+chunk])
		done += chunk
	}
	if end := off + int64(len(p)); end > in.size.Load() {
		in.size.Store(end)
	}
	in.wtime = now()
	in.wh = ch.inner
	return len(p), nil
}

func now() libservices.Timespec {
	t := time.Now()
	return libservices.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// flushLocked writes in's dirty pages to the inner FS through h (a writable inner
// handle), in page order, and moves them into the Store. Called with in.mu held.
func (f *FS) flushLocked(in *inode, h libservices.Handle) error {
	if len(in.dirty) == 0 {
		return nil
	}
	if h == nil {
		h = in.wh
	}
	if h == nil {
		return syscall.EBADF // cannot happen: dirty pages imply an open writer
	}
	idxs := make([]int64, 0, len(in.dirty))
	for idx := range in.dirty {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
	size := in.size.Load()
	k := in.key
	k.epoch = in.epoch.Load()
	for _, idx := range idxs {
		pg := in.dirty[idx]
		n := min(int64(PageSize), size-idx*PageSize)
		if n > 0 {
			if _, err := f.inner.WriteAt(h, pg[:n], idx*PageSize); err != nil {
				// The pages written so far are clean now, this one and the
				// rest stay dirty for the next flush.
				f.changed()
				return err
			}
		}
		k.idx = idx
		f.store.update(&k, 0, pg[:])
		delete(in.dirty, idx)
		f.dirtyBytes.Add(-PageSize)
		if in.ndirty.Add(-1) == 0 {
			f.dirtyInodes.Add(-1)
		}
	}
	// The inner size may still be short of in.size only if the last bytes were
	// never written: impossible, since every size increase comes from a write.
	f.changed()
	return nil
}

// discardLocked drops in's dirty pages: the file was truncated to zero
// underneath, or its last handle closed after a failed flush (whose error Close
// reported).
func (f *FS) discardLocked(in *inode) {
	if len(in.dirty) == 0 {
		return
	}
	f.dirtyBytes.Add(-int64(len(in.dirty)) * PageSize)
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

func (f *FS) flusher(interval time.Duration) {
	defer close(f.flusherDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.FlushAll() // errors resurface on the file's next fsync or close
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
