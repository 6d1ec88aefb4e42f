package cache

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// Options configure a cache FS.
type Options struct {
	// Size is the page store's budget in bytes (ignored when Shared names a store
	// that exists already).
	Size libservices.ByteSize `yaml:"size"`
	// Policy is "writethrough" (the default) or "writeback".
	Policy string `yaml:"policy"`
	// DirtyLimit bounds write-back dirty bytes; 0 means a quarter of Size.
	DirtyLimit libservices.ByteSize `yaml:"dirty_limit"`
	// FlushInterval is how often write-back flushes, e.g. "5s"; 0 means 5s, and a
	// negative interval means never (tests).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// Shared names a store shared with the other caches built with the same Env.
	Shared string `yaml:"shared"`
	// Attrs is the most names cached (positive and negative entries); 0
	// means 65536.
	Attrs int `yaml:"attrs"`
	// AttrTimeout is how long the attributes of a name (Lstat, and Stat of
	// what is not a symbolic link) and a symbolic link's target are served
	// from the cache without asking the FS below, e.g. "1s"; absent means 1s,
	// "0s" caches no names at all (nor listings). It bounds how long a change
	// made below the cache (not through it) can go unseen.
	AttrTimeout *libservices.Duration `yaml:"attr_timeout"`
	// NegativeTimeout is the same for a name found missing (ENOENT); absent
	// means 1s, "0s" caches no absence.
	NegativeTimeout *libservices.Duration `yaml:"negative_timeout"`
	// DirTimeout is the same for a directory listing (ReadDir); absent means
	// 1s, "0s" caches no listing.
	DirTimeout *libservices.Duration `yaml:"dir_timeout"`
	// MaxSize is the most the page store may grow to at run time (Resize, e.g.
	// by a pool's elasticity); 0 means Size: the store cannot grow.
	MaxSize libservices.ByteSize `yaml:"max_size"`
}

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	switch o.Policy {
	case "", "writethrough", "writeback":
	default:
		return errorString(`policy: unknown policy "` + o.Policy + `" (known: writethrough, writeback)`)
	}
	if o.Size < 0 || o.Size > 0 && o.Size < 16*PageSize || o.Size > MaxStoreSize {
		return errorString("size: must be between 64KiB and 64GiB")
	}
	if o.DirtyLimit < 0 {
		return errorString("dirty_limit: must not be negative")
	}
	if o.Attrs < 0 {
		return errorString("attrs: must not be negative")
	}
	for _, t := range []struct {
		key string
		d   *libservices.Duration
	}{{"attr_timeout", o.AttrTimeout}, {"negative_timeout", o.NegativeTimeout}, {"dir_timeout", o.DirTimeout}} {
		if t.d != nil && (*t.d < 0 || time.Duration(*t.d) > maxTimeout) {
			return errorString(t.key + ": must be between 0s (no caching) and 1h, not " + t.d.String())
		}
	}
	if o.MaxSize < 0 || o.MaxSize > MaxStoreSize || o.MaxSize > 0 && o.MaxSize < o.Size {
		return errorString("max_size: must be between size and 64GiB")
	}
	return nil
}

// defaultTimeout is the timeout of a cached name, absence or listing when the
// configuration gives none: a change made below the cache shows within a
// second, as with NFS's acregmin-like defaults and FUSE's entry_timeout.
const defaultTimeout = time.Second

// maxTimeout is the longest timeout accepted: past it a change made below the
// cache could stay unseen for longer than anyone would wait for it.
const maxTimeout = time.Hour

func timeoutOr(d *libservices.Duration) time.Duration {
	if d == nil {
		return defaultTimeout
	}
	return time.Duration(*d)
}

type errorString string

func (e errorString) Error() string { return string(e) }

func init() {
	libservices.Register("cache", libservices.Single, func(o *Options, inner []libservices.FS, env *libservices.Env) (libservices.FS, error) {
		size := int64(o.Size)
		if size == 0 {
			size = 64 << 20
		}
		var st *Store
		if o.Shared != "" && env.Shared != nil {
			v, err := env.Shared.GetOrCreate("cache.store/"+o.Shared, func() (any, error) { return NewResizableStore(size, int64(o.MaxSize)), nil })
			if err != nil {
				return nil, err
			}
			st = v.(*Store)
		} else {
			st = NewResizableStore(size, int64(o.MaxSize))
		}
		if o.DirtyLimit == 0 {
			o.DirtyLimit = libservices.ByteSize(size / 4)
		}
		return New(inner[0], st, *o), nil
	})
}

// inode is the cache's state for a file open through it.
type inode struct {
	mu    sync.Mutex // serialises writers and cache fills of this file
	key   pageKey    // idx unused; epoch may change
	epoch atomic.Uint64
	size  atomic.Int64
	refs  int // guarded by FS.inodesMu

	// Write-back state, guarded by mu; ndirty mirrors len(dirty) for lock-free
	// checks on the read path.
	dirty  map[int64]*[PageSize]byte
	ndirty atomic.Int32
	wh     libservices.Handle // a writable inner handle that flushes can use
	wtime  libservices.Timespec
	order  []int64 // flushLocked's scratch: the dirty page indexes, sorted
}

// FS is a caching layer over an inner FS.
type FS struct {
	inner   libservices.FS
	innerFl libservices.Flusher // inner's, when it holds data back; else nil
	store   *Store
	id      [2]uint64
	seed    maphash.Seed

	names

	inodesMu sync.Mutex
	inodes   map[uint64]*inode

	// Hit and miss counters for metrics (libservices.CounterReporter).
	pageHits, pageMisses, attrHits, attrMisses atomic.Int64

	writeBack  bool
	dirtyLimit int64
	// dirtyBytes counts the pages held back, and pages reserved for a write
	// about to hold them (see space.go).
	dirtyBytes  atomic.Int64
	space       space
	dirtyInodes atomic.Int64
	stop        chan struct{}
	flusherDone chan struct{}
	closeOnce   sync.Once
}

var (
	_ libservices.FS       = (*FS)(nil)
	_ libservices.Flusher  = (*FS)(nil)
	_ libservices.Reshaper = (*FS)(nil)
)

var instances atomic.Uint64

// New returns a cache over inner using store, with o's policy. A write-back cache
// with a positive flush interval owns a flusher goroutine until CloseFS.
func New(inner libservices.FS, store *Store, o Options) *FS {
	f := &FS{inner: inner, store: store, seed: maphash.MakeSeed(), inodes: map[uint64]*inode{},
		writeBack: o.Policy == "writeback", dirtyLimit: int64(o.DirtyLimit)}
	if f.dirtyLimit == 0 {
		f.dirtyLimit = 16 << 20
	}
	if f.writeBack {
		interval := o.FlushInterval
		if interval == 0 {
			interval = 5 * time.Second
		}
		if interval > 0 {
			f.stop, f.flusherDone = make(chan struct{}), make(chan struct{})
			go f.flusher(interval)
		}
	}
	if fl, ok := inner.(libservices.Flusher); ok && fl.HoldsBack() {
		f.innerFl = fl
	}
	if id, ok := inner.(libservices.Identifier); ok {
		f.id = id.Identity()
	} else {
		f.id = [2]uint64{0xcac4e, instances.Add(1)}
	}
	f.initNames(&o)
	// The free space is read at the first write that needs it.
	f.space.base.Store(noSpace)
	f.space.soft.Store(noSpace)
	return f
}

// Counters implements libservices.CounterReporter: page, attribute (Lstat,
// Stat, Readlink) and listing (ReadDir) cache hits and misses, the dirty
// bytes a write-back cache holds, and how many writes it wrote through
// instead for want of space on the store.
func (f *FS) Counters(fn func(name string, value int64)) {
	fn("cache_page_hits", f.pageHits.Load())
	fn("cache_page_misses", f.pageMisses.Load())
	fn("cache_attr_hits", f.attrHits.Load())
	fn("cache_attr_misses", f.attrMisses.Load())
	fn("cache_dir_hits", f.dirHits.Load())
	fn("cache_dir_misses", f.dirMisses.Load())
	fn("cache_dirty_bytes", f.dirtyBytes.Load())
	fn("cache_space_writethroughs", f.space.writeThroughs.Load())
}

// CacheSize, CacheMaxSize and ResizeCache expose the page store's budget to the
// service (a pool's elasticity resizes it at run time; see Store.Resize).
func (f *FS) CacheSize() int64 { return f.store.Size() }

// CacheMaxSize is the most ResizeCache can set.
func (f *FS) CacheMaxSize() int64 { return f.store.MaxSize() }

// ResizeCache sets the page store's budget and returns the one it set.
func (f *FS) ResizeCache(sizeBytes int64) int64 { return f.store.Resize(sizeBytes) }

// Store returns the page store this cache uses (shared or its own).
func (f *FS) Store() *Store { return f.store }

// Unwrap implements libservices.Wrapper.
func (f *FS) Unwrap() libservices.FS { return f.inner }

// Reshapes implements libservices.Reshaper for the FS below: the cache itself
// changes nothing but what it is asked to.
func (f *FS) Reshapes() (uint64, bool) {
	if r, ok := f.inner.(libservices.Reshaper); ok {
		return r.Reshapes()
	}
	return 0, false
}

// CloseFS implements libservices.Closer: it stops the flusher, writes what is
// dirty, and closes the inner FS.
func (f *FS) CloseFS() error {
	var err error
	f.closeOnce.Do(func() {
		if f.stop != nil {
			close(f.stop)
			<-f.flusherDone
		}
		err = f.FlushAll()
		if c, ok := f.inner.(libservices.Closer); ok {
			if cerr := c.CloseFS(); err == nil {
				err = cerr
			}
		}
	})
	return err
}

// Identity implements libservices.Identifier, forwarding the inner identity.
func (f *FS) Identity() [2]uint64 { return f.id }

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if err := f.lstat(clean, a); err != nil {
		return err
	}
	f.overlay(a)
	return nil
}

// Stat implements libservices.FS: the cached Lstat result unless it is a
// symbolic link, which the inner FS follows (targets are not cached).
func (f *FS) Stat(name string, a *libservices.Attr) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if f.attrTTL == 0 {
		err = f.inner.Stat(clean, a)
	} else if err = f.lstat(clean, a); err == nil && a.IsSymlink() {
		err = f.inner.Stat(clean, a)
	}
	if err != nil {
		return err
	}
	f.overlay(a)
	return nil
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	p, r := f.parentFor(clean), f.reshapes()
	err = f.inner.Mkdir(clean, mode)
	f.named(r, err == nil, nameChange{p, clean})
	return err
}

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	p, r := f.parentFor(clean), f.reshapes()
	ino, g := f.inoOf(p, clean)
	err = f.inner.Unlink(clean)
	if err == nil {
		f.settle(ino, g) // its other names' nlink
	}
	f.named(r, err == nil, nameChange{p, clean})
	return err
}

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	p, r := f.parentFor(clean), f.reshapes()
	err = f.inner.Rmdir(clean)
	f.named(r, err == nil, nameChange{p, clean})
	return err
}

// Rename implements libservices.FS: both names go, with everything cached
// below them (a renamed directory's subtree), and both parents go stale.
func (f *FS) Rename(o, n string) error {
	co, err := libservices.Clean(o)
	if err != nil {
		return err
	}
	cn, err := libservices.Clean(n)
	if err != nil {
		return err
	}
	po, pn, r := f.parentFor(co), f.parentFor(cn), f.reshapes()
	ino, g := f.inoOf(po, co)
	replaced, gr := f.inoOf(pn, cn)
	err = f.inner.Rename(co, cn)
	if err == nil {
		f.settle(ino, g)       // ctime, under its other names
		f.settle(replaced, gr) // nlink, under its other names
	}
	f.named(r, err == nil, nameChange{po, co}, nameChange{pn, cn})
	return err
}

// Link implements libservices.FS.
func (f *FS) Link(o, n string) error {
	co, err := libservices.Clean(o)
	if err != nil {
		return err
	}
	cn, err := libservices.Clean(n)
	if err != nil {
		return err
	}
	po, pn, r := f.parentFor(co), f.parentFor(cn), f.reshapes()
	ino, g := f.inoOf(po, co)
	err = f.inner.Link(co, cn)
	if err == nil {
		f.settle(ino, g) // every name of it gets a new nlink
	}
	f.named(r, err == nil, nameChange{pn, cn}, nameChange{po, co})
	return err
}

// Symlink implements libservices.FS.
func (f *FS) Symlink(t, n string) error {
	clean, err := libservices.Clean(n)
	if err != nil {
		return err
	}
	p, r := f.parentFor(clean), f.reshapes()
	err = f.inner.Symlink(t, clean)
	f.named(r, err == nil, nameChange{p, clean})
	return err
}

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	return f.inner.Getxattr(name, attr, dest)
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) { return f.inner.Listxattr(name) }

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	return f.attrsChange(name, func(clean string) error { return f.inner.Setxattr(clean, attr, data, flags) })
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	return f.attrsChange(name, func(clean string) error { return f.inner.Removexattr(clean, attr) })
}

// attrsChange runs op, which changes the attributes (ctime at least) of the
// file name resolves to, following a final symbolic link, then makes every
// cached name of that file stale.
func (f *FS) attrsChange(name string, op func(clean string) error) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	if f.attrTTL == 0 {
		return op(clean)
	}
	r := f.reshapes()
	var a libservices.Attr
	var ino uint64
	var g guard
	if d := f.freshAttr(clean, &a); d != nil {
		ino, g = a.Ino, guard{n: d}
	} else {
		g = guard{p: f.parentFor(clean), s: f.seq.Load()}
		if f.inner.Lstat(clean, &a) == nil {
			ino = a.Ino
		}
		if a.IsSymlink() {
			// The target may be anywhere, and change meanwhile: the change
			// cannot be placed (the zero guard drops every name).
			g, ino = guard{}, 0
		}
	}
	err = op(clean)
	f.settle(ino, g)
	f.named(r, false, nameChange{nil, clean})
	return err
}

// Setattr implements libservices.FS. A size change drops the file's cached
// pages; dirty pages of the file are written first, so that their times and size
// do not override the change, except those a truncation cuts (see resize). Only
// a change of size or times fails when they cannot be written; otherwise they
// stay dirty, for fsync and close to report.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	if sa.Valid&libservices.SetSize == 0 && f.dirtyInodes.Load() == 0 {
		return f.attrsChange(name, func(clean string) error { return f.inner.Setattr(clean, sa) })
	}
	var a libservices.Attr
	if err := f.inner.Stat(name, &a); err != nil {
		return err
	}
	f.inodesMu.Lock()
	in := f.inodes[a.Ino]
	f.inodesMu.Unlock()
	kept := int64(math.MaxInt64)
	if sa.Valid&libservices.SetSize != 0 {
		kept = keptBelow(sa.Size)
	}
	const ordered = libservices.SetSize | libservices.SetAtime | libservices.SetMtime |
		libservices.SetAtimeNow | libservices.SetMtimeNow
	if in != nil {
		in.mu.Lock()
		defer in.mu.Unlock()
		if err := f.flushBelowLocked(in, nil, kept); err != nil && sa.Valid&ordered != 0 {
			return err
		}
	}
	return f.attrsChange(name, func(clean string) error {
		err := f.inner.Setattr(clean, sa)
		if in != nil && err == nil && sa.Valid&libservices.SetSize != 0 {
			f.discardLocked(in) // the pages past kept, cut by the truncation
			in.epoch.Add(1 << 32)
			in.size.Store(sa.Size)
		}
		return err
	})
}
