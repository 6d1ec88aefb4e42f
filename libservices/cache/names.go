package cache

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// The name and attribute cache: see "Names and attributes" in the package doc
// for what it keeps, for how long, and the rules that keep it right.

const (
	dentShards = 64
	inoShards  = 64
)

// dentry is what the cache knows of one path: its Lstat result (attributes or
// ENOENT), and for a symbolic link its target, for a directory its listing.
// Every dentry but the root hangs under its parent's dentry, which was a
// directory (not a symbolic link) when the child was cached: so a cached path
// never passes through a symbolic link, and removing a directory's dentry
// removes everything cached below it.
type dentry struct {
	path string // clean path, the preimage of hash
	name string // last component of path
	hash uint64

	// Guarded by FS.treeMu.
	parent   *dentry
	children map[string]*dentry
	dead     bool   // removed from the tree and the index
	stamp    uint64 // FS.seq at the last change of this name, its entries or attributes

	// Guarded by the index shard's mu (hash). Written only with treeMu held,
	// or with the inode shard's mu held for exp alone (inoChanged).
	exp    int64 // the Lstat result is served until then (FS.clock)
	err    syscall.Errno
	attr   libservices.Attr
	link   string // symbolic link target, when linkOK
	linkOK bool
	dir    []libservices.DirEntry // listing, when dirExp is in the future
	dirExp int64

	// Guarded by the inode shard's mu of ino.
	ino       uint64  // listed under ino in FS.inos (when aliased)
	nextAlias *dentry // the next dentry of the same inode
	aliased   bool
}

// dentShard is one shard of the path index; hits take only its read lock.
type dentShard struct {
	mu sync.RWMutex
	m  map[uint64]*dentry
	_  [40]byte
}

// inoShard lists the dentries of the inodes that hash to it, so that a change
// to a file (a write, a chmod, a link) finds every name it is cached under.
type inoShard struct {
	mu    sync.Mutex
	stamp uint64             // FS.seq at the last change of an inode of this shard
	m     map[uint64]*dentry // the first dentry of each inode; nextAlias links the others
	_     [32]byte
}

// names is the state of the name cache, embedded in FS.
type names struct {
	attrTTL, negTTL, dirTTL int64 // nanoseconds; attrTTL 0: nothing is cached
	maxDents                int
	clock                   func() int64 // monotonic nanoseconds; tests replace it

	// seq counts changes; a lookup takes it before asking the FS below and
	// caches the answer only if nothing it depends on was stamped later.
	seq atomic.Uint64

	// treeMu guards the tree (parent, children, dead, stamp), root, allStamp,
	// ndents and evictHand; it is never held across a call to the inner FS.
	treeMu    sync.Mutex
	root      *dentry
	allStamp  uint64 // FS.seq when everything was last dropped
	ndents    int
	evictHand int

	dents [dentShards]dentShard
	inos  [inoShards]inoShard

	dirHits, dirMisses atomic.Int64
}

func (f *FS) initNames(o *Options) {
	f.attrTTL = int64(timeoutOr(o.AttrTimeout))
	f.negTTL = int64(timeoutOr(o.NegativeTimeout))
	f.dirTTL = int64(timeoutOr(o.DirTimeout))
	f.maxDents = o.Attrs
	if f.maxDents == 0 {
		f.maxDents = 65536
	}
	f.clock = nanotime
	for i := range f.dents {
		f.dents[i].m = map[uint64]*dentry{}
	}
	for i := range f.inos {
		f.inos[i].m = map[uint64]*dentry{}
	}
	f.newRootLocked()
}

// newRootLocked installs a fresh root dentry: a directory whose attributes are
// not known yet (expired), so that children can hang under it at once.
func (f *FS) newRootLocked() {
	r := &dentry{path: ".", name: ".", hash: f.hashOf(".")}
	r.attr.Mode = syscall.S_IFDIR
	f.root = r
	sh := f.shardOf(r.hash)
	sh.mu.Lock()
	sh.m[r.hash] = r
	sh.mu.Unlock()
}

func (f *FS) hashOf(clean string) uint64 { return maphash.String(f.seed, clean) }

func (f *FS) shardOf(h uint64) *dentShard { return &f.dents[h%dentShards] }

func (f *FS) inoShardOf(ino uint64) *inoShard {
	return &f.inos[(ino*0x9E3779B97F4A7C15)>>58%inoShards]
}

// next returns a new change number, for stamps.
func (f *FS) next() uint64 { return f.seq.Add(1) }

// lstat fills a with clean's Lstat result: from the cache when fresh (a hit:
// one shard's read lock, no allocation), else from the inner FS, caching it.
func (f *FS) lstat(clean string, a *libservices.Attr) error {
	if f.attrTTL == 0 {
		return f.inner.Lstat(clean, a)
	}
	h := f.hashOf(clean)
	sh := f.shardOf(h)
	now := f.clock()
	sh.mu.RLock()
	if d := sh.m[h]; d != nil && d.path == clean && now < d.exp {
		errno := d.err
		if errno == 0 {
			*a = d.attr
		}
		sh.mu.RUnlock()
		f.attrHits.Add(1)
		if errno != 0 {
			return errno
		}
		return nil
	}
	sh.mu.RUnlock()
	f.attrMisses.Add(1)
	_, err := f.fetch(clean, h, a)
	return err
}

// fetch asks the inner FS for clean's Lstat result and caches it when its
// parent is cached as a directory and nothing it depends on changed during the
// call. It returns clean's dentry when one is cached after the call. When the
// cache knows (fresh) that an ancestor is missing or not a directory, it
// answers ENOENT or ENOTDIR without asking.
func (f *FS) fetch(clean string, h uint64, a *libservices.Attr) (*dentry, error) {
	s0 := f.seq.Load()
	start := f.clock()
	var parent *dentry
	if clean != "." {
		dir, _ := libservices.Split(clean)
		var err error
		parent, err = f.dirNode(dir)
		if parent == nil {
			if err != nil {
				return nil, err
			}
			// Through a symbolic link, or an ancestor the cache cannot hold:
			// the inner FS resolves it, and nothing is cached.
			return nil, f.inner.Lstat(clean, a)
		}
	}
	err := f.inner.Lstat(clean, a)
	var errno syscall.Errno
	switch e := err.(type) {
	case nil:
	case syscall.Errno:
		if e != syscall.ENOENT {
			return nil, err // only absence is worth remembering
		}
		errno = e
	default:
		return nil, err
	}
	return f.install(parent, clean, h, a, errno, s0, start), err
}

// dirNode returns the dentry of directory dir, looking it up if needed. A
// cached directory serves even when its attributes have expired: it only
// anchors its children (each has its own expiry). With a nil dentry, err is
// ENOENT or ENOTDIR when that is what a path below dir gets, and nil when the
// inner FS must resolve such a path (dir is a symbolic link, or uncacheable).
func (f *FS) dirNode(dir string) (*dentry, error) {
	h := f.hashOf(dir)
	sh := f.shardOf(h)
	now := f.clock()
	sh.mu.RLock()
	if d := sh.m[h]; d != nil && d.path == dir {
		if d.err == 0 && d.attr.IsDir() {
			sh.mu.RUnlock()
			return d, nil
		}
		if now < d.exp {
			var err error
			if d.err != 0 {
				err = d.err
			} else if !d.attr.IsSymlink() {
				err = syscall.ENOTDIR
			}
			sh.mu.RUnlock()
			return nil, err
		}
	}
	sh.mu.RUnlock()
	var a libservices.Attr
	d, err := f.fetch(dir, h, &a)
	switch {
	case err == syscall.ENOENT || err == syscall.ENOTDIR:
		return nil, err
	case err != nil || a.IsSymlink():
		return nil, nil
	case !a.IsDir():
		return nil, syscall.ENOTDIR
	}
	return d, nil
}

// install caches clean's Lstat result (a, or errno ENOENT) under parent (nil
// for the root), fetched by a call that started at start when seq was s0. It
// does nothing when something the result depends on was stamped after s0:
// the parent's entries, the name, the inode, or everything.
func (f *FS) install(parent *dentry, clean string, h uint64, a *libservices.Attr, errno syscall.Errno, s0 uint64, start int64) *dentry {
	ttl := f.attrTTL
	if errno != 0 {
		ttl = f.negTTL
		if ttl == 0 {
			return nil
		}
	}
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if f.allStamp > s0 || parent != nil && (parent.dead || parent.stamp > s0) {
		return nil
	}
	_, base := libservices.Split(clean)
	var d *dentry
	if parent == nil {
		d = f.root
	} else {
		d = parent.children[base]
	}
	if d != nil && d.stamp > s0 {
		return nil
	}
	fresh := d == nil
	if fresh {
		if f.ndents >= f.maxDents {
			f.evictLocked()
			if parent.dead {
				return nil
			}
		}
		d = &dentry{path: clean, name: base, hash: h, parent: parent}
	} else if d.err == 0 && d.attr.IsDir() && (errno != 0 || !a.IsDir()) {
		f.removeChildrenLocked(d) // no longer a directory: nothing below it holds
	}
	var ino uint64
	if errno == 0 {
		ino = a.Ino
	}
	if !fresh {
		f.unaliasOtherLocked(d, ino, errno == 0)
	} else if other := f.indexed(h); other != nil {
		f.removeLocked(other) // a hash collision: the newer path wins
		if parent.dead {
			return nil
		}
	}
	is := f.inoShardOf(ino)
	is.mu.Lock()
	if errno == 0 && is.stamp > s0 {
		is.mu.Unlock()
		if !fresh {
			f.expire(d) // unlisted from its old inode above: it must not serve
		}
		return nil
	}
	if errno == 0 {
		f.aliasLocked(is, d, a)
	}
	sh := f.shardOf(h)
	sh.mu.Lock()
	if !fresh && (errno != 0 || d.err != 0 || d.attr.Ino != a.Ino || !a.IsSymlink()) {
		d.link, d.linkOK = "", false
	}
	if errno != 0 || !a.IsDir() {
		d.dir, d.dirExp = nil, 0
	}
	d.err = errno
	if errno == 0 {
		d.attr = *a
	} else {
		d.attr = libservices.Attr{}
	}
	d.exp = start + ttl
	if fresh {
		sh.m[h] = d
	}
	sh.mu.Unlock()
	is.mu.Unlock()
	if fresh {
		if parent.children == nil {
			parent.children = map[string]*dentry{}
		}
		parent.children[base] = d
		f.ndents++
	}
	return d
}

// unaliasOtherLocked takes d off the inode list it is on unless that is
// ino's (when positive). Called with treeMu held.
func (f *FS) unaliasOtherLocked(d *dentry, ino uint64, positive bool) {
	if !d.aliased || positive && d.ino == ino {
		return
	}
	is := f.inoShardOf(d.ino)
	is.mu.Lock()
	f.unaliasLocked(is, d)
	is.mu.Unlock()
}

// aliasLocked lists d under a.Ino in is, whose mu is held.
func (f *FS) aliasLocked(is *inoShard, d *dentry, a *libservices.Attr) {
	if !d.aliased {
		d.ino, d.aliased = a.Ino, true
		d.nextAlias = is.m[a.Ino]
		is.m[a.Ino] = d
	}
}

// unaliasLocked takes d off its inode list in is, whose mu is held.
func (f *FS) unaliasLocked(is *inoShard, d *dentry) {
	if !d.aliased {
		return
	}
	if is.m[d.ino] == d {
		if d.nextAlias == nil {
			delete(is.m, d.ino)
		} else {
			is.m[d.ino] = d.nextAlias
		}
	} else {
		for e := is.m[d.ino]; e != nil; e = e.nextAlias {
			if e.nextAlias == d {
				e.nextAlias = d.nextAlias
				break
			}
		}
	}
	d.aliased, d.nextAlias = false, nil
}

// expire makes d's attributes and listing stale (it stays as an anchor).
func (f *FS) expire(d *dentry) {
	sh := f.shardOf(d.hash)
	sh.mu.Lock()
	d.exp, d.dirExp, d.dir = 0, 0, nil
	sh.mu.Unlock()
}

// removeLocked drops d and everything below it from the tree, the index and
// the inode lists. The root is only emptied and expired. Called with treeMu
// held.
func (f *FS) removeLocked(d *dentry) {
	if d == f.root {
		f.removeChildrenLocked(d)
		f.expire(d)
		return
	}
	f.removeChildrenLocked(d)
	if d.aliased {
		is := f.inoShardOf(d.ino)
		is.mu.Lock()
		f.unaliasLocked(is, d)
		is.mu.Unlock()
	}
	sh := f.shardOf(d.hash)
	sh.mu.Lock()
	if sh.m[d.hash] == d {
		delete(sh.m, d.hash)
	}
	sh.mu.Unlock()
	if p := d.parent; p != nil && p.children[d.name] == d {
		delete(p.children, d.name)
	}
	d.dead = true
	f.ndents--
}

// indexed returns the dentry the index holds under h, whatever its path.
func (f *FS) indexed(h uint64) *dentry {
	sh := f.shardOf(h)
	sh.mu.RLock()
	d := sh.m[h]
	sh.mu.RUnlock()
	return d
}

// nodeLocked returns the dentry of path, nil if none. Called with treeMu held
// (so that it stays in the tree).
func (f *FS) nodeLocked(path string) *dentry {
	if d := f.indexed(f.hashOf(path)); d != nil && d.path == path {
		return d
	}
	return nil
}

func (f *FS) removeChildrenLocked(d *dentry) {
	for _, c := range d.children {
		f.removeLocked(c)
	}
}

// evictLocked drops one dentry to make room: a leaf if one of a few taken at
// random is, else the last one's subtree (never the root). Called with treeMu
// held.
func (f *FS) evictLocked() {
	var victim *dentry
	for try := 0; try < dentShards && victim == nil; try++ {
		sh := &f.dents[f.evictHand%dentShards]
		f.evictHand++
		sh.mu.RLock()
		n := 0
		for _, d := range sh.m { // map order is random enough
			if d == f.root {
				continue
			}
			victim = d
			if len(d.children) == 0 || n == 7 {
				break
			}
			n++
		}
		sh.mu.RUnlock()
	}
	if victim != nil {
		f.removeLocked(victim)
	}
}

// dropAllLocked forgets every name: for a change the cache cannot place (made
// through a symbolic link, or by an inner FS that cannot tell what it
// reshaped). Called with treeMu held.
func (f *FS) dropAllLocked(v uint64) {
	f.allStamp = max(f.allStamp, v)
	for i := range f.inos {
		is := &f.inos[i]
		is.mu.Lock()
		is.stamp = max(is.stamp, v)
		clear(is.m)
		is.mu.Unlock()
	}
	for i := range f.dents {
		sh := &f.dents[i]
		sh.mu.Lock()
		for _, d := range sh.m {
			d.dead, d.aliased, d.nextAlias = true, false, nil
		}
		clear(sh.m)
		sh.mu.Unlock()
	}
	f.ndents = 0
	f.newRootLocked()
}

// touchLocked records a change of directory d's entries: its attributes
// (mtime, nlink) and listing go stale, and lookups in flight under it are not
// cached. Called with treeMu held.
func (f *FS) touchLocked(d *dentry, v uint64) {
	d.stamp = max(d.stamp, v)
	f.expire(d)
}

// inoChanged records a change of inode ino's attributes (a write, a truncate,
// a chmod, a new or removed link): every name it is cached under goes stale,
// and lookups in flight that find it are not cached. It takes no tree lock,
// so that writes do not contend on one.
func (f *FS) inoChanged(ino uint64) {
	if f.attrTTL == 0 {
		return
	}
	v := f.next()
	is := f.inoShardOf(ino)
	is.mu.Lock()
	is.stamp = max(is.stamp, v)
	for d := is.m[ino]; d != nil; d = d.nextAlias {
		sh := f.shardOf(d.hash)
		sh.mu.Lock()
		d.exp = 0
		sh.mu.Unlock()
	}
	is.mu.Unlock()
}

// reshape is the inner FS's count of side effects on directories (see
// libservices.Reshaper) before a change.
type reshape struct {
	count uint64
	known bool
}

func (f *FS) reshapes() reshape {
	if f.attrTTL == 0 {
		return reshape{}
	}
	if r, ok := f.inner.(libservices.Reshaper); ok {
		c, known := r.Reshapes()
		return reshape{c, known}
	}
	return reshape{}
}

// parentFor resolves the parent directory of clean through the cache, before
// an operation changes clean's entry in it. nil when the path may pass through
// a symbolic link or its parent cannot be cached: the change is then not
// placed, and everything is forgotten after it.
func (f *FS) parentFor(clean string) *dentry {
	if f.attrTTL == 0 || clean == "." {
		return nil
	}
	dir, _ := libservices.Split(clean)
	d, _ := f.dirNode(dir)
	return d
}

// inoOf returns the inode clean names (not following a final symbolic link),
// before a change to the name that must reach the other names of the file
// (its nlink, its ctime): from clean's dentry, else from the inner FS, since
// another name of the file may be cached, or be on its way into the cache. 0
// when there is none. p is clean's parent from parentFor. The guard tells
// after the change whether the name may have named another file meanwhile.
func (f *FS) inoOf(p *dentry, clean string) (uint64, guard) {
	if f.attrTTL == 0 {
		return 0, guard{}
	}
	g := guard{p: p, s: f.seq.Load()}
	h := f.hashOf(clean)
	sh := f.shardOf(h)
	sh.mu.RLock()
	d := sh.m[h]
	if d != nil && d.path == clean {
		ino, ok := d.attr.Ino, d.err == 0
		sh.mu.RUnlock()
		if ok {
			return ino, guard{n: d}
		}
		return 0, g
	}
	sh.mu.RUnlock()
	var a libservices.Attr
	if f.inner.Lstat(clean, &a) != nil {
		return 0, g
	}
	return a.Ino, g
}

// A guard says whether a name still named the file found for it, when a
// change through the name is done: its dentry was not removed (every change of
// the name, or of a directory above it, removes it) or, without one, its
// parent's entries did not change since s. The zero guard never holds.
type guard struct {
	n, p *dentry
	s    uint64
}

// heldLocked reports whether the name may not have been swapped. Called with
// treeMu held.
func (g guard) heldLocked() bool {
	if g.n != nil {
		return !g.n.dead
	}
	return g.p != nil && !g.p.dead && g.p.stamp <= g.s
}

// settle ends a change of the file ino found through a name under g: every
// name of the file goes stale, or, when the name may have named another file
// during the change (a rename racing it), every name at all.
func (f *FS) settle(ino uint64, g guard) {
	if f.attrTTL == 0 {
		return
	}
	f.treeMu.Lock()
	held := g.heldLocked()
	if !held {
		f.dropAllLocked(f.next())
	}
	f.treeMu.Unlock()
	if held && ino != 0 {
		f.inoChanged(ino)
	}
}

// named records that an operation changed the entries name of directory p
// (nil: not placed, everything is forgotten): name's dentry and everything
// below it go, p's attributes and listing go stale. Then, if the inner FS
// reshaped directories meanwhile, the ancestors of paths go stale too.
func (f *FS) named(before reshape, changed bool, changes ...nameChange) {
	if f.attrTTL == 0 {
		return
	}
	after := f.reshapes()
	v := f.next()
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if !after.known || !before.known {
		f.dropAllLocked(v)
		return
	}
	if changed {
		for _, c := range changes {
			if c.p == nil {
				f.dropAllLocked(v)
				return
			}
		}
		for _, c := range changes {
			p := c.p
			if p.dead {
				// Evicted or replaced since parentFor: what is cached under
				// that path now is another dentry's, if any.
				if p = f.nodeLocked(p.path); p == nil {
					// Nothing is: only lookups in flight, which would
					// cache the directory anew above their answer, matter.
					f.allStamp = max(f.allStamp, v)
					continue
				}
			}
			_, base := libservices.Split(c.path)
			if d := p.children[base]; d != nil {
				f.removeLocked(d)
			}
			f.touchLocked(p, v)
		}
	}
	if after.count != before.count {
		for _, c := range changes {
			f.ancestorsChangedLocked(c.path, v)
		}
	}
}

// nameChange is one name an operation changes: its path and its parent's
// dentry from parentFor.
type nameChange struct {
	p    *dentry
	path string
}

// ancestorsChangedLocked makes every cached directory above clean stale: a
// union copied them up, which may change their attributes. Called with treeMu
// held.
func (f *FS) ancestorsChangedLocked(clean string, v uint64) {
	d := f.root
	f.touchLocked(d, v)
	for rest := clean; rest != "" && d != nil; {
		comp := rest
		if i := indexSlash(rest); i >= 0 {
			comp, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if d = d.children[comp]; d != nil {
			f.touchLocked(d, v)
		}
	}
}

func indexSlash(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}

// stampName records a change of clean's attributes whose inode the cache
// does not know (nothing cached has it): lookups in flight under its parent
// are not cached. p nil: everything's lookups in flight.
func (f *FS) stampName(p *dentry) {
	v := f.next()
	f.treeMu.Lock()
	if p == nil || p.dead {
		f.allStamp = max(f.allStamp, v)
	} else {
		p.stamp = max(p.stamp, v)
	}
	f.treeMu.Unlock()
}

// freshAttr copies clean's cached attributes into a when they are fresh and
// describe a file that is not a symbolic link, and returns its dentry.
func (f *FS) freshAttr(clean string, a *libservices.Attr) *dentry {
	if f.attrTTL == 0 {
		return nil
	}
	h := f.hashOf(clean)
	sh := f.shardOf(h)
	now := f.clock()
	sh.mu.RLock()
	d := sh.m[h]
	if d == nil || d.path != clean || now >= d.exp || d.err != 0 || d.attr.IsSymlink() {
		d = nil
	} else {
		*a = d.attr
	}
	sh.mu.RUnlock()
	return d
}

// renamed drops clean's dentry when it names a file other than a (opened
// through clean, following links), and makes its parent's listing stale: a
// union copied the file up, or it was replaced below the cache.
func (f *FS) renamed(clean string, a *libservices.Attr) {
	h := f.hashOf(clean)
	sh := f.shardOf(h)
	sh.mu.RLock()
	d := sh.m[h]
	other := d != nil && d.path == clean && d.err == 0 && !d.attr.IsSymlink() && d.attr.Ino != a.Ino
	sh.mu.RUnlock()
	if !other {
		return
	}
	v := f.next()
	f.treeMu.Lock()
	if !d.dead {
		p := d.parent
		f.removeLocked(d)
		if p != nil {
			f.touchLocked(p, v)
		}
	}
	f.treeMu.Unlock()
}

// installOpened caches a, the attributes of the file an open just created or
// truncated at clean (known not to be a symbolic link), when nothing changed
// since s0.
func (f *FS) installOpened(p *dentry, clean string, a *libservices.Attr, s0 uint64, start int64) {
	if p != nil {
		f.install(p, clean, f.hashOf(clean), a, 0, s0, start)
	}
}

// Readlink implements libservices.FS: the target of a cached symbolic link is
// kept with its dentry, and goes with it.
func (f *FS) Readlink(name string) (string, error) {
	clean, err := libservices.Clean(name)
	if err != nil || f.attrTTL == 0 {
		return f.inner.Readlink(name)
	}
	h := f.hashOf(clean)
	sh := f.shardOf(h)
	now := f.clock()
	sh.mu.RLock()
	if d := sh.m[h]; d != nil && d.path == clean && now < d.exp {
		switch {
		case d.err != 0:
			sh.mu.RUnlock()
			return "", d.err
		case !d.attr.IsSymlink():
			sh.mu.RUnlock()
			return "", syscall.EINVAL
		case d.linkOK:
			s := d.link
			sh.mu.RUnlock()
			f.attrHits.Add(1)
			return s, nil
		}
	}
	sh.mu.RUnlock()
	f.attrMisses.Add(1)
	s0 := f.seq.Load()
	var a libservices.Attr
	if err := f.lstat(clean, &a); err != nil {
		return "", err
	}
	if !a.IsSymlink() {
		return "", syscall.EINVAL
	}
	s, err := f.inner.Readlink(clean)
	if err != nil {
		return "", err
	}
	f.treeMu.Lock()
	sh.mu.RLock()
	d := sh.m[h]
	sh.mu.RUnlock()
	if d != nil && d.path == clean && !d.dead && d.stamp <= s0 && f.allStamp <= s0 && (d.parent == nil || d.parent.stamp <= s0) {
		is := f.inoShardOf(a.Ino)
		is.mu.Lock()
		sh.mu.Lock()
		if is.stamp <= s0 && d.err == 0 && d.attr.Ino == a.Ino && d.attr.IsSymlink() {
			d.link, d.linkOK = s, true
		}
		sh.mu.Unlock()
		is.mu.Unlock()
	}
	f.treeMu.Unlock()
	return s, nil
}

// ReadDir implements libservices.FS: a cached directory keeps its listing for
// the directory timeout; every change of its entries through this cache
// drops it. Callers get a copy.
func (f *FS) ReadDir(name string) ([]libservices.DirEntry, error) {
	clean, err := libservices.Clean(name)
	if err != nil || f.attrTTL == 0 || f.dirTTL == 0 {
		return f.inner.ReadDir(name)
	}
	s0 := f.seq.Load()
	start := f.clock()
	d, _ := f.dirNode(clean)
	if d == nil {
		return f.inner.ReadDir(clean)
	}
	sh := f.shardOf(d.hash)
	now := f.clock()
	sh.mu.RLock()
	if now < d.dirExp {
		ents := slices.Clone(d.dir)
		sh.mu.RUnlock()
		f.dirHits.Add(1)
		return ents, nil
	}
	sh.mu.RUnlock()
	f.dirMisses.Add(1)
	ents, err := f.inner.ReadDir(clean)
	if err != nil {
		return nil, err
	}
	f.treeMu.Lock()
	if !d.dead && d.stamp <= s0 && f.allStamp <= s0 {
		sh.mu.Lock()
		if d.err == 0 && d.attr.IsDir() {
			d.dir, d.dirExp = slices.Clone(ents), start+f.dirTTL
		}
		sh.mu.Unlock()
	}
	f.treeMu.Unlock()
	return ents, nil
}
