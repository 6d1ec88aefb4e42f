// Package cache is a libservices.FS that caches another: a user-level page cache
// (4 KiB pages in a Store with a fixed byte budget, CLOCK replacement) and a
// name and attribute cache (Lstat results, absences, link targets and
// listings by path, for a bounded time), both read on a hit without a system
// call, an allocation or a lock other than one shard's read lock. It is
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
// the file's ctime when the cache first opened it (from the name cache when
// fresh, see Open below), so two containers over one read-only image branch
// share its pages, and a file changed behind the cache's back between opens
// more than the attribute timeout apart gets a new epoch. Coherence assumes
// that while a file is open through a cache, nobody writes it except through
// that cache.
//
// # Names and attributes
//
// Contract: a name's Lstat result (its attributes, or ENOENT), a symbolic
// link's target and a directory's listing are served from memory, with no call
// to the FS below, for a bounded time after the cache fetched them: the
// attribute timeout (Options.AttrTimeout, yaml attr_timeout, default 1s) for
// attributes and link targets, the negative timeout (negative_timeout, 1s)
// for an absence, the directory timeout (dir_timeout, 1s) for a listing; "0s"
// turns each off, and attr_timeout 0s turns the whole name cache off. Every
// change made through this cache is seen at once by every later call through
// it; a change made below it (on the host, by another instance over the same
// store) is seen by every lookup that starts more than the timeout after the
// change (the time counts from the start of the fetch that is served), and
// may go unseen until then, as with NFS's attribute cache (acregmin,
// acdirmin) or FUSE's entry and attribute timeouts. Stat of a name that is a
// symbolic link, Getxattr and Listxattr always go below.
//
// What is kept: a tree of dentries, one per path, each under its parent's
// (see dentry in names.go), so that a path is resolved once: a cached path
// never passes through a symbolic link, a path below a name cached as absent
// is ENOENT and below a file ENOTDIR without a call, and a lookup whose
// parent is not cached looks the parent up first. An index by path (64 shards
// under read/write locks) serves hits; an index by inode number finds every
// name a file is cached under. At most Options.Attrs dentries (default
// 65536), a leaf evicted first. A path through a symbolic link is not cached
// at all: the FS below resolves it on every call.
//
// Invalidation, per entry (there is no global generation): a create, mkdir,
// symlink or link drops the new name's dentry and makes its parent's
// attributes (mtime, nlink) and listing stale; unlink and rmdir the same for
// the name and, through the inode index, every other name of the file
// (nlink); rename both names, both parents and everything cached below a
// renamed directory (found through the tree's child maps, at the cost of what
// is cached there); setattr, xattr changes, a written-through write, a
// truncate and the flush of a file's last dirty page every name of the file.
// Before a change the cache resolves the names' parents (a hit, usually), so
// that the change can be placed; one it cannot place (made through a symbolic
// link: a create that follows one, a path whose parent cannot be cached)
// drops every name. The directories a union copies up beside a change (its
// Reshaper count moves) go stale too; an inner FS that cannot say what it
// reshaped (no Reshaper, or known = false) makes every change drop every
// name. A file a union copies up gets a new inode number: a writable open
// that sees it drops the name and its directory's listing; after a copy-up by
// setattr or an xattr change the name follows at once, but a cached listing
// may show the old number until the directory timeout.
//
// Races: every change takes a number from one counter (seq) after the FS
// below made it, and stamps what it changed (the parent's dentry, the inode's
// shard) with it before dropping entries; a lookup takes seq before asking the
// FS below and installs its answer only if nothing it depends on (its parent,
// its own dentry, its inode's shard, everything) carries a later stamp, with
// the check and the install under the locks the change takes. So a lookup
// that raced a change never installs what the change made stale. A change
// that reaches a file's other names (unlink, rename, link, setattr) finds the
// file's inode before it runs; if a rename through this cache may have made
// the name another file meanwhile (the name's dentry was removed, or its
// parent's entries changed), it cannot tell which file it changed, and drops
// every name.
//
// Write-back: a file with dirty pages reports the cache's size and times over
// whatever is cached for it (overlay); the flush of its last dirty page makes
// its cached names stale before overlay stops correcting them.
//
// Open: an open of an existing file (no O_CREAT, O_TRUNC or O_APPEND) looks
// the name up through the cache, a hit or a Lstat below that caches it (in
// place of the Fstat below after the open), fails at once with ENOENT when the
// name is cached as absent, and takes the file's inode number, ctime (the page
// epoch) and size from the cached attributes, after checking that the entry
// did not change during the open. So an open that starts within the attribute
// timeout after a change made below the cache may see the file as it was (its
// earlier size, pages of its earlier epoch) for the life of that handle; opens
// after the timeout see the change, as NFS's close-to-open consistency holds
// after acregmin. A write through such a handle lands at the offset it names.
// Appending opens Fstat (an append is placed at the size they read), and so do
// creating and truncating ones, which cache what a create (without O_TRUNC)
// leaves. A truncating open looks the file up only when a write-back cache
// holds dirty pages (to lock them against the flusher), through the cache.
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
//   - Every dentry but the root is in its parent's child map and in the
//     path index, and its parent was a directory when it was installed;
//     removing a dentry removes everything below it.
//   - A dentry is served (hit) only while its expiry, set from the start of
//     the fetch that filled it plus the timeout, is in the future.
//   - A dentry with attributes is on its inode's list (inoShard) exactly once.
//
// # Lock order
//
// inode.mu, then a Store shard's mu or Store.allocMu (never both shard and
// allocMu at once, except allocMu then the shard of an evicted page); or
// inode.mu, then space.mu, under which only the inner FS's Statfs runs.
// Names: inode.mu, then treeMu, then an inode shard's mu (inoShard), then an
// index shard's mu (dentShard); at most one of each kind at a time, except
// that install may take a second inode shard's mu after releasing the first.
// No call to the inner FS is made under any of them. A hit takes one index
// shard's read lock only. FS.inodesMu, space.mu are leaves otherwise.
//
// # Measuring
//
//	go test -run XXX -bench Cached -benchmem -benchtime=1000000x -count 3 ./libservices/cache
//
// measures a cached 4 KiB read, a cached Stat and a parallel read over memfs
// with 16 hot pages, a 4 KiB write held back into dirty pages (Write4K) and a
// streaming 4 KiB append over /dev/shm flushed every MiB (Write4KAppend).
//
//	go test -run XXX -bench Name -benchmem -benchtime=20000x ./libservices/cache
//
// measures the name cache over memfs and over a host directory on /var/tmp: a
// cached Lstat, a Lstat after a create and unlink in another directory, a
// create and unlink, a read-only open and close; lookups/op is the metadata
// calls that reached the FS below per operation (the goal: 0 for a cached
// name, a cached absence and an open of a cached name).
// Goals: a read hit <= 300 ns, and 0 allocations for a read hit, a Stat hit
// (positive or negative) and a held-back write (TestHitPathAllocs,
// TestNameStatAllocs and TestWritePathAllocs check the allocations in every
// run). A Stat hit reads the monotonic clock once, for the timeout. Figures,
// with their machine and date, are in docs/results/.
package cache
