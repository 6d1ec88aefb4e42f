package passthrough

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/polytropon/polytropon/libservices"
)

// dirCache maps the clean paths of directories inside the branch to O_PATH
// descriptors of them, so that a name in a known directory is one *at call. It
// is bounded (least recently used per shard) and its entries expire (see the
// package doc). It makes no system calls itself: the descriptors it drops are
// handed to a closer, the FS's counted close.
//
// An entry's descriptor is reference-counted: the cache holds one reference
// while the entry is in the map, and every user one from get to release, so
// that an entry evicted or dropped while a call uses it is closed only after
// that call (never a descriptor number that the kernel could reuse for
// another file under the call).
type dirCache struct {
	shards []dirShard
	mask   uint32
	ttl    int64 // nanoseconds an entry is used before resolving it again
	closer func(fd int)
	// gen counts own renames and removals of directories; an insert resolved
	// before one of them is refused (see put).
	gen atomic.Uint64

	// treeMu guards trees and orders put's check of gen against drops: a drop
	// bumps gen and reads trees under it, a put checks gen and counts its key
	// under it, so a drop that finds nothing below its path can skip the scan
	// and still miss no entry. Taken alone or inside a shard's mu.
	treeMu sync.Mutex
	// trees counts, for every path, the entries at or below it, so that an own
	// rename of a file (nothing cached below) costs a map lookup, not a scan.
	trees map[string]int32
}

// dirShard is one lock's share of the cache.
type dirShard struct {
	mu sync.Mutex
	// m, lru and n are guarded by mu. lru is a ring with a sentinel: lru.next
	// is the most recently used entry.
	m   map[string]*dirEnt
	lru dirEnt
	max int
	_   [40]byte // keeps the next shard's mu off this shard's cache line
}

// dirEnt is a cached directory, or a marker (fd -1) saying that the path
// crosses a symbolic link and is resolved from the root every time.
type dirEnt struct {
	key     string
	fd      int
	refs    atomic.Int32 // the cache's reference and its users'; 0: closed
	expires int64        // monotonic nanoseconds
	// prev and next are guarded by the shard's mu.
	prev, next *dirEnt
}

// newDirCache makes a cache of at most size entries whose entries live ttl
// nanoseconds; closer closes a descriptor the cache no longer needs.
func newDirCache(size int, ttl int64, closer func(fd int)) *dirCache {
	n := 1
	if size >= 256 {
		// Sharded only when each shard still holds enough for LRU to mean
		// something; small caches (tests) are one exact LRU.
		n = 16
	}
	c := &dirCache{shards: make([]dirShard, n), mask: uint32(n - 1), ttl: ttl, closer: closer, trees: make(map[string]int32)}
	for i := range c.shards {
		s := &c.shards[i]
		s.m = make(map[string]*dirEnt)
		s.lru.next, s.lru.prev = &s.lru, &s.lru
		s.max = size / n
		if i < size%n {
			s.max++
		}
	}
	return c
}

func (c *dirCache) shard(key string) *dirShard {
	if c.mask == 0 {
		return &c.shards[0]
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &c.shards[h&c.mask]
}

// get returns key's entry if it is fresh at now, with a reference for the
// caller when it holds a descriptor (release it); nil if absent or stale (and
// then dropped).
func (c *dirCache) get(key string, now int64) *dirEnt {
	s := c.shard(key)
	s.mu.Lock()
	e := s.m[key]
	if e == nil {
		s.mu.Unlock()
		return nil
	}
	if now >= e.expires {
		// Stale: out at once, so that a path the host removed does not keep
		// its directory's descriptor until eviction.
		c.removeLocked(s, e)
		s.mu.Unlock()
		c.release(e)
		return nil
	}
	if e.fd >= 0 {
		e.refs.Add(1)
	}
	s.moveFrontLocked(e)
	s.mu.Unlock()
	return e
}

// put caches fd (or a marker, fd -1) for key, resolved at now after reading
// gen. It returns the entry with a reference for the caller, or nil when it
// refused, leaving fd to the caller: when an own rename or removal of a
// directory happened since gen, fd may name what the path named before it, and
// the rename's drop may have run before this insert.
func (c *dirCache) put(key string, fd int, gen uint64, now int64) *dirEnt {
	s := c.shard(key)
	e := &dirEnt{key: key, fd: fd, expires: now + c.ttl}
	e.refs.Store(2)
	var drop [2]*dirEnt
	s.mu.Lock()
	if c.gen.Load() != gen {
		// Early out; checked again below, where it counts.
		s.mu.Unlock()
		return nil
	}
	if old := s.m[key]; old != nil {
		c.removeLocked(s, old)
		drop[0] = old
	}
	if len(s.m) >= s.max {
		lru := s.lru.prev
		c.removeLocked(s, lru)
		drop[1] = lru
	}
	c.treeMu.Lock()
	ok := c.gen.Load() == gen
	if ok {
		c.countLocked(key, 1)
	}
	c.treeMu.Unlock()
	if ok {
		s.m[key] = e
		s.pushFrontLocked(e)
	}
	s.mu.Unlock()
	for _, d := range drop {
		if d != nil {
			c.release(d)
		}
	}
	if !ok {
		return nil
	}
	return e
}

// countLocked adds d to the counts of key and of each of its ancestors.
// treeMu must be held.
func (c *dirCache) countLocked(key string, d int32) {
	for p := key; ; {
		if n := c.trees[p] + d; n != 0 {
			c.trees[p] = n
		} else {
			delete(c.trees, p)
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return
		}
		p = p[:i]
	}
}

// removeLocked takes e out of s and out of the counts; s.mu must be held.
// The caller releases the cache's reference after unlocking.
func (c *dirCache) removeLocked(s *dirShard, e *dirEnt) {
	s.removeLocked(e)
	c.treeMu.Lock()
	c.countLocked(e.key, -1)
	c.treeMu.Unlock()
}

// release drops one reference to e, closing its descriptor with the last.
func (c *dirCache) release(e *dirEnt) {
	if e.fd >= 0 && e.refs.Add(-1) == 0 {
		c.closer(e.fd)
	}
}

// dropTree drops dir and every entry below it, and refuses the inserts of
// resolutions that started before (see put). Call it after the change. When
// nothing is cached at or below dir (a file), it costs a map lookup.
func (c *dirCache) dropTree(dir string) {
	if c.bump(dir) {
		c.drop(func(key string) bool { return libservices.HasPrefixDir(key, dir) })
	}
}

// dropBelow drops the entries strictly below dir (not dir's own), like
// dropTree.
func (c *dirCache) dropBelow(dir string) {
	if !c.bump(dir) {
		return
	}
	if libservices.IsRoot(dir) {
		c.drop(func(string) bool { return true })
		return
	}
	c.drop(func(key string) bool { return len(key) > len(dir) && libservices.HasPrefixDir(key, dir) })
}

// bump refuses the inserts resolved before now, and reports whether anything
// is cached at or below dir.
func (c *dirCache) bump(dir string) bool {
	c.treeMu.Lock()
	defer c.treeMu.Unlock()
	c.gen.Add(1)
	if libservices.IsRoot(dir) {
		return len(c.trees) > 0
	}
	return c.trees[dir] > 0
}

// purge drops every entry (CloseFS, and EMFILE: the cache yields its
// descriptors to the files being opened).
func (c *dirCache) purge() { c.drop(func(string) bool { return true }) }

func (c *dirCache) drop(match func(key string) bool) {
	var dropped []*dirEnt
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if match(k) {
				c.removeLocked(s, e)
				dropped = append(dropped, e)
			}
		}
		s.mu.Unlock()
	}
	for _, e := range dropped {
		c.release(e)
	}
}

// len returns the number of entries (descriptors and markers).
func (c *dirCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *dirShard) removeLocked(e *dirEnt) {
	delete(s.m, e.key)
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (s *dirShard) pushFrontLocked(e *dirEnt) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}

func (s *dirShard) moveFrontLocked(e *dirEnt) {
	if s.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFrontLocked(e)
}
