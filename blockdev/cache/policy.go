package cache

// Policy is the deterministic eviction core: it sees slot numbers (0..capacity-1)
// being filled, hit and emptied, and names the slot to evict. It takes no clock,
// starts no goroutines, makes no system calls and allocates nothing after
// construction, so tests drive it step by step. It is not safe for concurrent use;
// the cache calls it under its lock.
type Policy interface {
	// Insert records that slot now holds a block.
	Insert(slot int)
	// Hit records an access to an occupied slot.
	Hit(slot int)
	// Remove records that slot is empty again.
	Remove(slot int)
	// Victim names the occupied slot to evict next, or -1 when none is occupied.
	// It does not remove it.
	Victim() int
}

// NewPolicy returns the policy called name ("lru" or "clock") for capacity slots.
func NewPolicy(name string, capacity int) (Policy, bool) {
	switch name {
	case "lru":
		return NewLRU(capacity), true
	case "clock":
		return NewClock(capacity), true
	}
	return nil, false
}

// LRU evicts the least recently inserted or hit slot. It keeps an intrusive doubly
// linked list over slot numbers; head is the most recent.
type LRU struct {
	prev, next []int32
	in         []bool
	head, tail int32
}

// NewLRU returns an empty LRU for capacity slots.
func NewLRU(capacity int) *LRU {
	l := &LRU{prev: make([]int32, capacity), next: make([]int32, capacity), in: make([]bool, capacity), head: -1, tail: -1}
	return l
}

func (l *LRU) unlink(s int32) {
	if l.prev[s] >= 0 {
		l.next[l.prev[s]] = l.next[s]
	} else {
		l.head = l.next[s]
	}
	if l.next[s] >= 0 {
		l.prev[l.next[s]] = l.prev[s]
	} else {
		l.tail = l.prev[s]
	}
}

func (l *LRU) pushFront(s int32) {
	l.prev[s] = -1
	l.next[s] = l.head
	if l.head >= 0 {
		l.prev[l.head] = s
	}
	l.head = s
	if l.tail < 0 {
		l.tail = s
	}
}

// Insert implements Policy.
func (l *LRU) Insert(slot int) {
	s := int32(slot)
	if l.in[s] {
		l.unlink(s)
	}
	l.in[s] = true
	l.pushFront(s)
}

// Hit implements Policy.
func (l *LRU) Hit(slot int) {
	s := int32(slot)
	if !l.in[s] {
		return
	}
	l.unlink(s)
	l.pushFront(s)
}

// Remove implements Policy.
func (l *LRU) Remove(slot int) {
	s := int32(slot)
	if !l.in[s] {
		return
	}
	l.unlink(s)
	l.in[s] = false
}

// Victim implements Policy.
func (l *LRU) Victim() int { return int(l.tail) }

// Clock is the CLOCK (second chance) approximation of LRU: a hit sets a slot's
// reference bit; the hand sweeps, clearing set bits, and stops at the first occupied
// slot whose bit is clear.
type Clock struct {
	ref, in []bool
	hand    int
	n       int // occupied slots
}

// NewClock returns an empty CLOCK for capacity slots.
func NewClock(capacity int) *Clock {
	return &Clock{ref: make([]bool, capacity), in: make([]bool, capacity)}
}

// Insert implements Policy; a new block starts without its reference bit, so a block
// read once goes before one read twice.
func (c *Clock) Insert(slot int) {
	if !c.in[slot] {
		c.n++
	}
	c.in[slot] = true
	c.ref[slot] = false
}

// Hit implements Policy.
func (c *Clock) Hit(slot int) {
	if c.in[slot] {
		c.ref[slot] = true
	}
}

// Remove implements Policy.
func (c *Clock) Remove(slot int) {
	if c.in[slot] {
		c.n--
	}
	c.in[slot] = false
	c.ref[slot] = false
}

// Victim implements Policy. Two sweeps always suffice: the first clears every bit.
func (c *Clock) Victim() int {
	if c.n == 0 {
		return -1
	}
	for i := 0; i < 2*len(c.in)+1; i++ {
		s := c.hand
		c.hand = (c.hand + 1) % len(c.in)
		if !c.in[s] {
			continue
		}
		if c.ref[s] {
			c.ref[s] = false
			continue
		}
		return s
	}
	return -1
}
