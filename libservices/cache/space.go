package cache

import (
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// Space reservation of the write-back cache (see "Space" in the package doc).
//
// The cache may hold a page back only while
//
//	dirtyBytes + consumed <= base
//
// where dirtyBytes counts the pages held back (each a full page, whatever part
// of it was written), consumed counts every byte this cache has written to the
// store (flushed pages, a full page each, and bytes written through), and base
// is, from the store's last Statfs, its free space less a margin and less the
// hidden reserve, plus consumed as it was before that Statfs. So consumed since
// the Statfs is charged against the free space it reported, and a flush, which
// moves a page from dirtyBytes to consumed, leaves the sum unchanged: the page
// was reserved, now it is used.
//
// The write path compares the sum with soft, half way from the sum at the last
// Statfs to base: below it no system call is made. Past it the free space is
// read again before anything more is held back, so the figures are refreshed
// about log2(room/page) times as the store fills (more often the nearer it is
// to full), and on every write once nothing more fits.

const (
	// marginMin and marginMax bound the safety margin kept free on the store:
	// 1/128 of the store's size, for its metadata (extent and indirect blocks,
	// directory blocks of the files being written), block rounding and the
	// writes of others between two Statfs.
	marginMin = 4 * PageSize
	marginMax = 64 << 20

	// spaceStale is how old the free-space figure may get before a flush or
	// the flusher reads it again.
	spaceStale = time.Second

	// maxHeldEnd bounds the file offsets the cache holds back: a write that
	// ends past it writes through, so that the store decides EFBIG at write
	// (its largest file is 16 TiB on ext4 with 4 KiB blocks, 4 TiB with 1 KiB
	// blocks; memfs: 16 TiB).
	maxHeldEnd = 1 << 40

	// noSpace is base before the first Statfs and after a failed one:
	// nothing fits, so the next write reads the free space again.
	noSpace = math.MinInt64 / 4
	// unlimited is the free space of a store whose Statfs reports no size
	// (Blocks == 0: a tmpfs mounted with size=0, some FUSE filesystems).
	unlimited = math.MaxInt64 / 4
)

// space is a write-back cache's reservation against its backing store.
type space struct {
	base     atomic.Int64
	soft     atomic.Int64
	consumed atomic.Int64
	// readAt is when the free space was last read (nanoseconds since
	// processStart); 0 before the first read.
	readAt atomic.Int64
	// writeThroughs counts writes not held back for want of space.
	writeThroughs atomic.Int64

	// mu serialises the updates of base from a Statfs, and guards hidden.
	// A leaf: nothing is locked under it (the inner Statfs takes the inner
	// FS's own locks only).
	mu sync.Mutex
	// hidden is the free space the store reported when it last refused a
	// write with ENOSPC or EDQUOT, lowered to what it reports since when
	// that is less: space that Statfs shows but that is not ours (a user
	// quota, which statfs does not see; another writer's reservations).
	// Only what is freed beyond it counts as free.
	hidden int64
}

var processStart = time.Now()

func sinceStart() int64 { return int64(time.Since(processStart)) }

// reserve reserves need bytes (whole pages) for pages about to be held back,
// counting them in dirtyBytes, and reports whether they fit. Far from full
// (below soft) it makes no system call; past soft it reads the store's free
// space once and decides on the new figures.
func (f *FS) reserve(need int64) bool {
	if need == 0 {
		return true
	}
	// dirtyBytes first, then consumed: a flush in between (consumed up, then
	// dirtyBytes down) is counted twice, never missed.
	d := f.dirtyBytes.Add(need)
	if d+f.space.consumed.Load() <= f.space.soft.Load() {
		return true
	}
	f.dirtyBytes.Add(-need)
	f.readSpace()
	d = f.dirtyBytes.Add(need)
	if d+f.space.consumed.Load() <= f.space.base.Load() {
		return true
	}
	f.dirtyBytes.Add(-need)
	f.space.writeThroughs.Add(1)
	return false
}

// unreserve returns reserved bytes that were not used.
func (f *FS) unreserve(bytes int64) {
	if bytes != 0 {
		f.dirtyBytes.Add(-bytes)
	}
}

// readSpace reads the store's free space and sets base from it.
func (f *FS) readSpace() {
	c0 := f.space.consumed.Load()
	var st libservices.Statfs
	if err := f.inner.Statfs(&st); err != nil {
		f.noSpace()
		return
	}
	f.setSpace(&st, c0, false)
}

// noSpace records a Statfs that failed: nothing fits, and the next write that
// needs space asks again.
func (f *FS) noSpace() {
	f.space.mu.Lock()
	f.space.base.Store(noSpace)
	f.space.soft.Store(noSpace)
	f.space.mu.Unlock()
}

// readSpaceIfStale reads the store's free space when the last figure is older
// than spaceStale: a flush and the flusher call it, so that other writers'
// use of the store is seen within about that time.
func (f *FS) readSpaceIfStale() {
	if !f.writeBack {
		return
	}
	if at := f.space.readAt.Load(); at == 0 || sinceStart()-at > int64(spaceStale) {
		f.readSpace()
	}
}

// setSpace sets base from a Statfs taken when consumed was c0 (read before
// the Statfs: bytes written during it are then charged even if the Statfs
// already saw them, never the other way round). With refused set, the store
// has just refused a write: everything it reports free becomes hidden.
func (f *FS) setSpace(st *libservices.Statfs, c0 int64, refused bool) {
	avail, total := int64(unlimited), int64(unlimited)
	unit := st.Frsize
	if unit <= 0 {
		unit = st.Bsize
	}
	if st.Blocks != 0 && unit > 0 {
		avail = int64(min(st.Bavail, uint64(unlimited/unit))) * unit
		total = int64(min(st.Blocks, uint64(unlimited/unit))) * unit
	}
	margin := min(max(total/128, marginMin), marginMax)
	f.space.mu.Lock()
	if refused {
		f.space.hidden = avail
	} else {
		f.space.hidden = min(f.space.hidden, avail)
	}
	base := avail - f.space.hidden - margin + c0
	used := f.dirtyBytes.Load() + f.space.consumed.Load()
	f.space.base.Store(base)
	f.space.soft.Store(min(base, used+max(0, base-used)/2))
	f.space.readAt.Store(sinceStart())
	f.space.mu.Unlock()
}

// refused is called when the store answered a write with err: ENOSPC or
// EDQUOT make whatever the store still reports free hidden, so that the
// cache writes through until space is freed (see "Space" in the package doc).
func (f *FS) refused(err error) {
	if !f.writeBack || err != syscall.ENOSPC && err != syscall.EDQUOT {
		return
	}
	c0 := f.space.consumed.Load()
	var st libservices.Statfs
	if f.inner.Statfs(&st) != nil {
		f.noSpace()
		return
	}
	f.setSpace(&st, c0, true)
}

// Statfs implements libservices.FS: the inner's, less what this cache holds
// back (as ext4 counts its delayed allocations), which also refreshes the
// cache's figure of the free space at no extra cost.
func (f *FS) Statfs(st *libservices.Statfs) error {
	c0 := f.space.consumed.Load()
	if err := f.inner.Statfs(st); err != nil {
		return err
	}
	if !f.writeBack {
		return nil
	}
	f.setSpace(st, c0, false)
	unit := st.Frsize
	if unit <= 0 {
		unit = st.Bsize
	}
	if held := f.dirtyBytes.Load(); held > 0 && unit > 0 && st.Blocks != 0 {
		blocks := uint64((held + unit - 1) / unit)
		st.Bfree -= min(st.Bfree, blocks)
		st.Bavail -= min(st.Bavail, blocks)
	}
	return nil
}

// newPages is how many bytes of new dirty pages a write of n bytes at off
// needs: the pages of the range that are not dirty already. Called with in.mu
// held.
func newPages(in *inode, off int64, n int) int64 {
	first, last := off/PageSize, (off+int64(n)-1)/PageSize
	if len(in.dirty) == 0 {
		return (last - first + 1) * PageSize
	}
	var need int64
	for idx := first; idx <= last; idx++ {
		if in.dirty[idx] == nil {
			need += PageSize
		}
	}
	return need
}
