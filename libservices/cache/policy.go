package cache

import "sync/atomic"

// clockPolicy is the deterministic replacement core of the page store: CLOCK
// (second chance) over a fixed number of slots. It takes no clock, starts no
// goroutines and makes no system calls; tests drive it step by step.
//
// The hit path only sets a slot's reference bit (Reference, one atomic store, no
// lock). Admit and Release are called with the store's allocation lock held.
type clockPolicy struct {
	ref    []atomic.Uint32 // 1 when referenced since the hand last passed
	used   []bool          // slot holds a page
	pinned []bool          // slot may not be evicted
	free   []int32         // unused slots, a stack
	hand   int
	// limit is how many slots may hold pages at once (Store.Resize lowers and
	// raises it within len(used)); nUsed counts the slots that do.
	limit int
	nUsed int
}

func newClockPolicy(slots int) *clockPolicy {
	p := &clockPolicy{ref: make([]atomic.Uint32, slots), used: make([]bool, slots), pinned: make([]bool, slots),
		free: make([]int32, slots), limit: slots}
	for i := range p.free {
		p.free[i] = int32(slots - 1 - i)
	}
	return p
}

// Reference records a hit on slot.
func (p *clockPolicy) Reference(slot int32) {
	if p.ref[slot].Load() == 0 {
		p.ref[slot].Store(1)
	}
}

// Admit returns a slot for a new page. When no slot is free (or limit slots are
// in use) it evicts the first
// unpinned, unreferenced slot after the hand (clearing reference bits as it
// passes, at most two sweeps) and returns it with evicted = true; the caller
// removes the evicted page from its index. ok is false when every slot is pinned.
func (p *clockPolicy) Admit() (slot int32, evicted bool, ok bool) {
	if n := len(p.free); n > 0 && p.nUsed < p.limit {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
		p.used[slot] = true
		p.nUsed++
		p.ref[slot].Store(0)
		return slot, false, true
	}
	s, ok := p.victim()
	return s, ok, ok
}

// victim picks the slot Admit would evict: the first unpinned, unreferenced used
// slot after the hand, clearing reference bits on the way (at most two sweeps).
func (p *clockPolicy) victim() (int32, bool) {
	for step := 0; step < 2*len(p.used); step++ {
		s := p.hand
		p.hand = (p.hand + 1) % len(p.used)
		if !p.used[s] || p.pinned[s] {
			continue
		}
		if p.ref[s].Load() != 0 {
			p.ref[s].Store(0)
			continue
		}
		return int32(s), true
	}
	return 0, false
}

// Release returns slot to the free list (its page was dropped).
func (p *clockPolicy) Release(slot int32) {
	if p.used[slot] {
		p.nUsed--
	}
	p.used[slot] = false
	p.pinned[slot] = false
	p.ref[slot].Store(0)
	p.free = append(p.free, slot)
}

// Pin and Unpin mark a slot as not evictable (a page being filled).
func (p *clockPolicy) Pin(slot int32)   { p.pinned[slot] = true }
func (p *clockPolicy) Unpin(slot int32) { p.pinned[slot] = false }

// SetLimit sets how many slots may hold pages (1..len(used)). Slots above the
// new limit stay in use until Shrink or Admit evicts them.
func (p *clockPolicy) SetLimit(n int) { p.limit = max(1, min(n, len(p.used))) }

// Over reports whether more slots hold pages than the limit allows.
func (p *clockPolicy) Over() bool { return p.nUsed > p.limit }

// usedCount is the number of slots holding pages (for invariant checks).
func (p *clockPolicy) usedCount() int {
	n := 0
	for _, u := range p.used {
		if u {
			n++
		}
	}
	return n
}
