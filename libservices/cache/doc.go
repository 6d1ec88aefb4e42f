// Package cache is a libservices.FS that caches another: a user-level page cache
// (4 KiB pages in a Store with a fixed byte budget, CLOCK replacement) and an
// attribute cache (Lstat/Stat results by path), both read on a hit without a
// system call, an allocation or a lock other than one shard's read lock. It is
// not a store: what it holds back lives in memory until it is written to the FS
// below (the store), and it is coherent with other writers of the store only as
// described under Sharing.
//
// # Policies
//
// Write-through (the default): every write, truncate and namespace change goes
// to the wrapped FS before it returns, and updates or invalidates what is
// cached. Write-back: writes stay in per-file dirty pages until fsync, close,
// the dirty limit or the flush interval (see writeback.go), as long as the store
// has room for them (see Space); namespace changes are still write-through.
//
// # Sharing
//
// A Store may serve several cache FSes (`shared: NAME` in the configuration).
// Page keys are (backing FS identity, inode, epoch, page index); the epoch is
// the file's ctime when the cache first opened it, so two containers over one
// read-only image branch share its pages, and a file changed behind the cache's
// back between opens gets a new epoch. Coherence assumes that while a file is
// open through a cache, nobody writes it except through that cache.
//
// # Attribute and dentry cache
//
// Lstat and Stat results by path, including ENOENT (negative entries), bounded
// by Options.Attrs. ReadDir, Readlink and xattrs go to the inner FS. Entries
// carry the cache's generation, which every modification through this cache
// bumps after the modification completes, so an entry fetched before a change
// is never served after it.
//
// # Space (write-back)
//
// Contract: the cache never acknowledges a write that the store could not take
// at that moment as far as the store's Statfs and its own refusals tell; a
// write that does not fit is written through, so that the store's own error
// (ENOSPC, EDQUOT, or a short count as pwrite(2) gives) reaches the caller at
// write, as ext4 answers at write with delayed allocation. Data the store has
// taken (fsynced or not) is never lost or truncated by a later failure.
//
// Reservation (space.go): every page held back counts 4 KiB against the
// store's free space (Statfs: Bavail * Frsize), less a margin of 1/128 of the
// store's size (at least 16 KiB, at most 64 MiB) for its metadata, block
// rounding and other writers; every byte the cache has written since that
// Statfs counts too. The count is conservative: a page that overwrites blocks
// the store has already allocated counts as new space (the cache cannot tell
// without a system call per page, and on a copy-on-write store it is new
// space). Too much reserved only means writing through earlier near full.
// The figure of the free space is read again when the reservation passes half
// of the room left at the last reading, when nothing more fits, every second
// by the flusher (and by a flush once it is a second old), and on every Statfs
// through the cache, which reports the store's free space less what the cache
// holds back (as ext4 does for delayed allocations).
//
// Near full (a write's new pages do not fit): the file's held pages are
// written first, in order, then the write goes to the store. If those pages do
// not fit either, the write fails with their error and nothing of it is taken.
//
// Sizes: a held-back write that extends a file changes the size this cache
// reports (overlaid on the store's attributes) and nothing in the store; the
// store's file grows only as the pages are written, in ascending page order,
// and a flush stops at the first page the store refuses. So the size of a file
// in the store never covers data the store did not take (except what truncate
// and fallocate set, which go to the store at once), also after a crash. A write
// that failed changes no size the cache reports; a short write-through
// acknowledges and sizes only what landed. Writes that end past 1 TiB are not
// held back, so that the store decides EFBIG at write.
//
// When the store refuses a write-back anyway (another writer used the space
// between two readings, or a limit that Statfs does not show: a user quota,
// which gives EDQUOT): the refused page and those after it stay dirty, and the
// free space the store still reports is taken as not ours (hidden): until more
// than that is freed, every write goes through to the store and meets its error
// at write. The refusal is reported by the next fsync, fdatasync, Flush or
// close of the file, each of which tries the pages again and reports success
// if they land meanwhile (an error means: some acknowledged data is still not
// in the store). Exactly, a reader sees:
//
//   - through this cache, while any handle of the file is open through it:
//     everything acknowledged, and a size that covers exactly that;
//   - through the store (the kernel, another instance, a fresh cache): the
//     pages that landed, which are the held pages in ascending order up to
//     the first refused one, over what the store had before (fsynced data
//     included), and a size that covers only landed data;
//   - after the last close of the file, which reported the error: the store's
//     view; the pages that never landed are gone.
//
// The reservation is a best effort against other writers of the store (the
// kernel path, other instances, other tenants) and against limits Statfs does
// not show: what they take between two readings, beyond the margin, can make
// a write-back fail as above; the dirty limit bounds what can be lost that
// way, and the failure is always reported. A store whose Statfs reports no size
// (Blocks == 0) is taken as unlimited until it refuses. Considered and not
// done: reserving with fallocate(FALLOC_FL_KEEP_SIZE) as pages are dirtied
// would make the store itself reserve (quotas included), but costs a system
// call on the first write into every range of a file, overwrites included,
// leaves allocated blocks past EOF after a crash (charged to the tenant), makes
// holes allocated and ctime change before the data lands, and reserves nothing
// for overwrites on copy-on-write stores.
//
// # Invariants
//
//   - A cached page holds exactly the file's bytes (zeros past its end as the
//     cache saw it) for its key.
//   - Every slot mapped in a Store shard is in use by its policy (checked by
//     Store walks under -tags invariants).
//   - dirtyBytes is 4 KiB per dirty page, plus reservations of a write in
//     progress (checked when quiescent under -tags invariants); a write creates
//     exactly the pages it reserved.
//   - dirtyBytes + consumed <= base whenever a page is added to a file's dirty
//     pages, base being set from the store's last Statfs.
//   - The store's size of a file is at most the end of data written to it
//     or the size set by truncate or fallocate.
//
// # Lock order
//
// inode.mu, then a Store shard's mu or Store.allocMu (never both shard and
// allocMu at once, except allocMu then the shard of an evicted page); or
// inode.mu, then space.mu, under which only the inner FS's Statfs runs.
// FS.inodesMu, space.mu and an attribute shard's mu are leaves otherwise.
//
// # Measuring
//
//	go test -run XXX -bench Cached -benchmem -benchtime=1000000x -count 3 ./libservices/cache
//
// measures a cached 4 KiB read, a cached Stat and a parallel read over memfs
// with 16 hot pages, a 4 KiB write held back into dirty pages (Write4K) and a
// streaming 4 KiB append over /dev/shm flushed every MiB (Write4KAppend).
// Goals: a read hit <= 300 ns, and 0 allocations for a read hit, a Stat hit
// and a held-back write (TestHitPathAllocs and TestWritePathAllocs check the
// allocations in every run). Figures, with their machine and date, are in
// docs/results/.
package cache
