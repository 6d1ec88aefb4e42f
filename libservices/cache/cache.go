// Package cache is a libservices.FS that caches another: a user-level page cache
// (4 KiB pages in a Store with a fixed byte budget, CLOCK replacement) and an
// attribute cache (Lstat/Stat results by path), both read on a hit without a
// system call, an allocation or a lock other than one shard's read lock.
//
// Policy: write-through. Every write, truncate and namespace change goes to the
// wrapped FS before it returns, and updates or invalidates what is cached.
// Write-back (a dirty limit, flushes on fsync, close and an interval) is not
// implemented yet: a configuration asking for it is rejected.
//
// Sharing: a Store may serve several cache FSes (`shared: NAME` in the
// configuration). Page keys are (backing FS identity, inode, epoch, page index);
// the epoch is the file's ctime when the cache first opened it, so two containers
// over one read-only image branch share its pages, and a file changed behind the
// cache's back between opens gets a new epoch. Coherence assumes that while a
// file is open through a cache, nobody writes it except through that cache.
//
// Attribute cache: entries carry the cache's generation, which every modification
// through this cache bumps after the modification completes, so an entry fetched
// before a change is never served after it.
//
// Invariants: a cached page holds exactly the file's bytes (zeros past its end as
// the cache saw it) for its key; every slot mapped in a Store shard is in use by
// its policy (checked by Store walks under -tags invariants).
//
// Lock order: inode.mu, then a Store shard's mu or Store.allocMu (never both
// shard and allocMu at once, except allocMu then the shard of an evicted page);
// FS.inodesMu and an attribute shard's mu are leaves.
//
// Performance (go test -bench . -benchmem ./libservices/cache), AMD EPYC 9B14
// (2 vCPUs), 2026-11-21: see BENCHMARKS at the end of this comment.
//
// BENCHMARKS
package cache

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// Options configure a cache FS.
type Options struct {
	// Size is the page store's budget in bytes (ignored when Shared names a store
	// that exists already).
	Size libservices.ByteSize `yaml:"size"`
	// Policy is "writethrough" (the default).
	Policy string `yaml:"policy"`
	// Shared names a store shared with the other caches built with the same Env.
	Shared string `yaml:"shared"`
	// Attrs is the most attribute entries cached; 0 means 65536.
	Attrs int `yaml:"attrs"`
}

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	switch o.Policy {
	case "", "writethrough":
	case "writeback":
		return errorString(`policy: "writeback" is not implemented yet; use writethrough`)
	default:
		return errorString(`policy: unknown policy "` + o.Policy + `" (known: writethrough)`)
	}
	if o.Size < 0 || o.Size > 0 && o.Size < 16*PageSize {
		return errorString("size: must be at least 64KiB")
	}
	if o.Attrs < 0 {
		return errorString("attrs: must not be negative")
	}
	return nil
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
			v, err := env.Shared.GetOrCreate("cache.store/"+o.Shared, func() (any, error) { return NewStore(size), nil })
			if err != nil {
				return nil, err
			}
			st = v.(*Store)
		} else {
			st = NewStore(size)
		}
		return New(inner[0], st, *o), nil
	})
}

const attrShards = 64

type attrEntry struct {
	path string
	gen  uint64
	err  syscall.Errno
	attr libservices.Attr
}

type attrShard struct {
	mu sync.RWMutex
	m  map[uint64]*attrEntry
	_  [40]byte
}

// inode is the cache's state for a file open through it.
type inode struct {
	mu    sync.Mutex // serialises writers and cache fills of this file
	key   pageKey    // idx unused; epoch may change
	epoch atomic.Uint64
	size  atomic.Int64
	refs  int // guarded by FS.inodesMu
}

// FS is a caching layer over an inner FS.
type FS struct {
	inner    libservices.FS
	store    *Store
	id       [2]uint64
	seed     maphash.Seed
	attrsMax int

	gen   atomic.Uint64
	attrs [attrShards]attrShard

	inodesMu sync.Mutex
	inodes   map[uint64]*inode
}

var _ libservices.FS = (*FS)(nil)

var instances atomic.Uint64

// New returns a write-through cache over inner using store.
func New(inner libservices.FS, store *Store, o Options) *FS {
	f := &FS{inner: inner, store: store, seed: maphash.MakeSeed(), attrsMax: o.Attrs, inodes: map[uint64]*inode{}}
	if f.attrsMax == 0 {
		f.attrsMax = 65536
	}
	if id, ok := inner.(libservices.Identifier); ok {
		f.id = id.Identity()
	} else {
		f.id = [2]uint64{0xcac4e, instances.Add(1)}
	}
	for i := range f.attrs {
		f.attrs[i].m = map[uint64]*attrEntry{}
	}
	return f
}

// Unwrap implements libservices.Wrapper.
func (f *FS) Unwrap() libservices.FS { return f.inner }

// CloseFS implements libservices.Closer.
func (f *FS) CloseFS() error {
	if c, ok := f.inner.(libservices.Closer); ok {
		return c.CloseFS()
	}
	return nil
}

// Identity implements libservices.Identifier, forwarding the inner identity.
func (f *FS) Identity() [2]uint64 { return f.id }

// changed invalidates the attribute cache; called after every modification.
func (f *FS) changed() { f.gen.Add(1) }

func (f *FS) statCached(name string, a *libservices.Attr, follow bool) error {
	clean, err := libservices.Clean(name)
	if err != nil {
		return err
	}
	h := maphash.String(f.seed, clean)
	if follow {
		h = h*31 + 1
	}
	sh := &f.attrs[h%attrShards]
	gen := f.gen.Load()
	sh.mu.RLock()
	e := sh.m[h]
	if e != nil && e.gen == gen && e.path == clean {
		errno := e.err
		if errno == 0 {
			*a = e.attr
		}
		sh.mu.RUnlock()
		if errno != 0 {
			return errno
		}
		return nil
	}
	sh.mu.RUnlock()
	if follow {
		err = f.inner.Stat(clean, a)
	} else {
		err = f.inner.Lstat(clean, a)
	}
	ne := &attrEntry{path: clean, gen: gen}
	switch e := err.(type) {
	case nil:
		ne.attr = *a
	case syscall.Errno:
		if e != syscall.ENOENT {
			return err // only absence is worth remembering
		}
		ne.err = e
	default:
		return err
	}
	sh.mu.Lock()
	if len(sh.m) >= f.attrsMax/attrShards+1 {
		for k := range sh.m { // drop one arbitrary entry: the cache is bounded
			delete(sh.m, k)
			break
		}
	}
	sh.m[h] = ne
	sh.mu.Unlock()
	return err
}

// Lstat implements libservices.FS.
func (f *FS) Lstat(name string, a *libservices.Attr) error { return f.statCached(name, a, false) }

// Stat implements libservices.FS.
func (f *FS) Stat(name string, a *libservices.Attr) error { return f.statCached(name, a, true) }

func (f *FS) after(err error) error {
	f.changed()
	return err
}

// Mkdir implements libservices.FS.
func (f *FS) Mkdir(name string, mode uint32) error { return f.after(f.inner.Mkdir(name, mode)) }

// Unlink implements libservices.FS.
func (f *FS) Unlink(name string) error { return f.after(f.inner.Unlink(name)) }

// Rmdir implements libservices.FS.
func (f *FS) Rmdir(name string) error { return f.after(f.inner.Rmdir(name)) }

// Rename implements libservices.FS.
func (f *FS) Rename(o, n string) error { return f.after(f.inner.Rename(o, n)) }

// Link implements libservices.FS.
func (f *FS) Link(o, n string) error { return f.after(f.inner.Link(o, n)) }

// Symlink implements libservices.FS.
func (f *FS) Symlink(t, n string) error { return f.after(f.inner.Symlink(t, n)) }

// Readlink implements libservices.FS.
func (f *FS) Readlink(name string) (string, error) { return f.inner.Readlink(name) }

// ReadDir implements libservices.FS.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) { return f.inner.ReadDir(name) }

// Statfs implements libservices.FS.
func (f *FS) Statfs(st *libservices.Statfs) error { return f.inner.Statfs(st) }

// Getxattr implements libservices.FS.
func (f *FS) Getxattr(name, attr string, dest []byte) (int, error) {
	return f.inner.Getxattr(name, attr, dest)
}

// Listxattr implements libservices.FS.
func (f *FS) Listxattr(name string) ([]string, error) { return f.inner.Listxattr(name) }

// Setxattr implements libservices.FS.
func (f *FS) Setxattr(name, attr string, data []byte, flags int) error {
	return f.after(f.inner.Setxattr(name, attr, data, flags))
}

// Removexattr implements libservices.FS.
func (f *FS) Removexattr(name, attr string) error {
	return f.after(f.inner.Removexattr(name, attr))
}

// Setattr implements libservices.FS. A size change drops the file's cached pages.
func (f *FS) Setattr(name string, sa *libservices.SetAttr) error {
	if sa.Valid&libservices.SetSize == 0 {
		return f.after(f.inner.Setattr(name, sa))
	}
	var a libservices.Attr
	if err := f.inner.Stat(name, &a); err != nil {
		return err
	}
	f.inodesMu.Lock()
	in := f.inodes[a.Ino]
	f.inodesMu.Unlock()
	if in != nil {
		in.mu.Lock()
		defer in.mu.Unlock()
	}
	err := f.inner.Setattr(name, sa)
	if in != nil && err == nil {
		in.epoch.Add(1 << 32)
		in.size.Store(sa.Size)
	}
	return f.after(err)
}
