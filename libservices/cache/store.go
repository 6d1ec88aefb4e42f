package cache

import (
	"sync"

	"github.com/polytropon/polytropon/internal/invariants"
)

// PageSize is the cache's page size.
const PageSize = 4096

const storeShards = 64

// pageKey identifies a cached page: the backing FS (its identity), the file (inode
// number and an epoch that changes when the file's cached contents become invalid)
// and the page index. Fixed-size and comparable: map lookups build no strings.
type pageKey struct {
	fs0, fs1 uint64
	ino      uint64
	epoch    uint64
	idx      int64
}

func (k *pageKey) hash() uint64 {
	h := k.fs0*0x9E3779B97F4A7C15 ^ k.fs1*0xC2B2AE3D27D4EB4F ^ k.ino*0x165667B19E3779F9 ^
		k.epoch*0x27D4EB2F165667C5 ^ uint64(k.idx)*0x94D049BB133111EB
	h ^= h >> 31
	h *= 0xBF58476D1CE4E5B9
	return h ^ h>>29
}

type storeShard struct {
	mu sync.RWMutex // guards m and the contents of the slots it maps
	m  map[pageKey]int32
	_  [40]byte // keep shards on separate cache lines
}

// Store is a page store with a fixed byte budget, shared by every cache FS built
// with it (several containers over one read-only image share its pages, since
// keys name the backing FS by its identity). Safe for concurrent use.
type Store struct {
	shards [storeShards]storeShard
	data   [][]byte  // slot -> page bytes; allocated on first use
	keys   []pageKey // slot -> key, guarded by allocMu

	// allocMu guards policy and keys; taken on misses only, never on a hit.
	allocMu sync.Mutex
	policy  *clockPolicy
}

// Size is the store's current budget in bytes (Resize changes it).
func (s *Store) Size() int64 {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	return int64(s.policy.limit) * PageSize
}

// MaxSize is the most Resize can give the store: its bookkeeping is allocated
// for this many bytes at construction.
func (s *Store) MaxSize() int64 { return int64(len(s.keys)) * PageSize }

// Resize sets the store's budget to sizeBytes, rounded down to whole pages and
// clamped to [16 pages, MaxSize], and returns the budget it set. Shrinking evicts
// pages (CLOCK order) down to the new budget before it returns and drops their
// memory; pages being filled at that moment (pinned) are left and go at the next
// insert once unpinned, so the store may exceed its budget by the fills in flight
// until then. Safe
// concurrently with reads, inserts and updates: it takes allocMu, then the shard
// of each evicted page, the order insert uses; hits take no new lock.
func (s *Store) Resize(sizeBytes int64) int64 {
	slots := int(min(max(sizeBytes/PageSize, 16), int64(len(s.keys))))
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	s.policy.SetLimit(slots)
	s.shrinkLocked()
	return int64(s.policy.limit) * PageSize
}

// shrinkLocked evicts pages (CLOCK order) and drops their memory while the store
// holds more than its budget, stopping early when every remaining page is
// pinned; allocMu is held. Resize calls it, and so does every insert, so that
// pages pinned during a shrink go as soon as they are unpinned instead of
// keeping the store over budget (an insert alone only swaps one page for
// another).
func (s *Store) shrinkLocked() {
	for s.policy.Over() {
		slot, ok := s.policy.victim()
		if !ok {
			return // every page in use is being filled
		}
		old := s.keys[slot]
		sh := s.shard(&old)
		sh.mu.Lock()
		delete(sh.m, old)
		// No reader can reach the slot now (it was unmapped under the shard
		// lock) and no inserter owns it (it is not pinned): its memory can go.
		s.data[slot] = nil
		sh.mu.Unlock()
		s.policy.Release(slot)
	}
}

// MaxStoreSize bounds a store: its per-page bookkeeping (about 80 bytes a page)
// is allocated up front.
const MaxStoreSize = 64 << 30

// NewStore returns a store of sizeBytes (rounded down to whole pages, at least 16
// pages, at most MaxStoreSize).
func NewStore(sizeBytes int64) *Store { return NewResizableStore(sizeBytes, sizeBytes) }

// NewResizableStore returns a store of sizeBytes that Resize can grow up to
// maxBytes (both rounded down to whole pages, at least 16 pages, at most
// MaxStoreSize): its per-page bookkeeping, about 80 bytes a page, is allocated
// for maxBytes now, the pages themselves only as they fill.
func NewResizableStore(sizeBytes, maxBytes int64) *Store {
	maxBytes = min(max(maxBytes, sizeBytes), MaxStoreSize)
	slots := int(max(maxBytes/PageSize, 16))
	s := &Store{data: make([][]byte, slots), keys: make([]pageKey, slots), policy: newClockPolicy(slots)}
	s.policy.SetLimit(int(max(min(sizeBytes, maxBytes)/PageSize, 16)))
	for i := range s.shards {
		s.shards[i].m = make(map[pageKey]int32)
	}
	return s
}

func (s *Store) shard(k *pageKey) *storeShard { return &s.shards[k.hash()%storeShards] }

// read copies page k from in into p and reports whether it was cached.
func (s *Store) read(k *pageKey, p []byte, in int) bool {
	sh := s.shard(k)
	sh.mu.RLock()
	slot, ok := sh.m[*k]
	if ok {
		copy(p, s.data[slot][in:])
		s.policy.Reference(slot)
	}
	sh.mu.RUnlock()
	return ok
}

// insert stores a copy of page (PageSize bytes, zero past the file's end) under k
// unless it is already cached. It evicts a page when the store is full.
func (s *Store) insert(k *pageKey, page []byte) {
	// Most duplicates (two readers missing on one page) are caught here, before
	// they cost an eviction; the check under the shard lock below catches the rest.
	sh := s.shard(k)
	sh.mu.RLock()
	_, present := sh.m[*k]
	sh.mu.RUnlock()
	if present {
		return
	}
	s.allocMu.Lock()
	s.shrinkLocked()
	slot, evicted, ok := s.policy.Admit()
	if !ok {
		s.allocMu.Unlock()
		return
	}
	if evicted {
		old := s.keys[slot]
		osh := s.shard(&old)
		osh.mu.Lock()
		delete(osh.m, old)
		osh.mu.Unlock()
	}
	s.keys[slot] = *k
	s.policy.Pin(slot)
	s.allocMu.Unlock()

	if s.data[slot] == nil {
		s.data[slot] = make([]byte, PageSize)
	}
	sh.mu.Lock()
	_, dup := sh.m[*k]
	if !dup {
		copy(s.data[slot], page)
		sh.m[*k] = slot
	}
	sh.mu.Unlock()

	s.allocMu.Lock()
	if dup {
		s.policy.Release(slot)
	} else {
		s.policy.Unpin(slot)
	}
	s.allocMu.Unlock()
}

// update writes data into page k at in, if the page is cached.
func (s *Store) update(k *pageKey, in int, data []byte) {
	sh := s.shard(k)
	sh.mu.Lock()
	if slot, ok := sh.m[*k]; ok {
		copy(s.data[slot][in:], data)
	}
	sh.mu.Unlock()
}

// checkInvariants walks the whole store: every mapped slot is used by the policy
// and records its key, and no slot is mapped twice. Expensive: invariants builds.
func (s *Store) checkInvariants() {
	if !invariants.Enabled {
		return
	}
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	seen := map[int32]bool{}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for k, slot := range sh.m {
			invariants.Check(!seen[slot], "cache: slot %d mapped twice", slot)
			seen[slot] = true
			invariants.Check(s.policy.used[slot], "cache: mapped slot %d is free", slot)
			invariants.Check(s.keys[slot] == k, "cache: slot %d key mismatch", slot)
		}
		sh.mu.RUnlock()
	}
	invariants.Check(len(seen) <= s.policy.usedCount(), "cache: %d mapped slots but %d used", len(seen), s.policy.usedCount())
}
