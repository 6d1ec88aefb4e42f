package back

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/cpu"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// ClientCtx is the service's view of one connected client. Handlers receive it with
// every request; it is valid until Handler.ClientGone returns.
type ClientCtx struct {
	// Identity, from the kernel at the handshake (SO_PEERCRED): PID, UID and
	// GID repeat Cred's fields, which also holds the supplementary groups and
	// the effective capabilities the permission checks need.
	PID      int32
	UID, GID uint32
	Cred     Credential

	// Read-only after admit. Everything here is the service's own copy: the
	// arena header the client can rewrite is never read back.
	slot, gen uint16
	conn      *net.UnixConn
	arena     *shm.Region
	mem       []byte
	numDesc   uint32
	descOff   uint32
	lim       wire.Limits
	states    []*uint32 // State word of each descriptor, in the service's mapping
	ring      []uint64  // the client's submission ring, in the service's mapping
	mask      uint64    // len(ring) - 1
	efd       int       // the client's eventfd (the service's copy), in the workers' epoll set
	quota     HandleQuota

	_ cpu.CacheLinePad
	// head is the next ring position the service takes: service memory, so a
	// client can rewrite its ring but never the service's idea of where it is.
	// Workers advance it by CAS, so each position is taken once.
	head atomic.Uint64
	_    cpu.CacheLinePad
	// inflight counts workers (and QueueLen) between seeing the client not dead
	// and finishing with its arena; reclaim waits for it to drain.
	inflight atomic.Int32
	dead     atomic.Bool
	corrupt  atomic.Bool // disconnected for corrupting its ring or arena (logged once)
	_        cpu.CacheLinePad

	handlesMu sync.Mutex
	// handles[i] is live when gens[i] is odd; the client-visible handle is
	// uint64(gens[i])<<32 | i+1, so a reused entry gets a new handle value.
	handles []uint64
	gens    []uint32
	nfree   []uint32 // free entry indices (a stack)

	// Value is the handler's own per-client state, set in ClientOpener.ClientOpened
	// (before the client's first request) and read-only afterwards.
	Value any
}

// Slot returns the client's slot in the service's table (for logs).
func (c *ClientCtx) Slot() int { return int(c.slot) }

// take claims the next published position of the client's ring and returns the
// descriptor index its entry names (not validated: serve does that). It returns
// false when the entry at the head does not carry the head's sequence: nothing
// published yet, or a ring the client scribbled over (its own loss). A CAS lost
// to another worker is retried a few times, then left to that worker.
func (c *ClientCtx) take() (idx uint32, pos uint64, ok bool) {
	for range 4 {
		h := c.head.Load()
		seq, i := wire.SplitRingEntry(atomic.LoadUint64(&c.ring[h&c.mask]))
		if seq != wire.RingSeq(h) {
			return 0, 0, false
		}
		if c.head.CompareAndSwap(h, h+1) {
			return i, h, true
		}
	}
	return 0, 0, false
}

// ready reports whether position p of the ring is published.
func (c *ClientCtx) ready(p uint64) bool {
	seq, _ := wire.SplitRingEntry(atomic.LoadUint64(&c.ring[p&c.mask]))
	return seq == wire.RingSeq(p)
}

// published counts the entries published from position p on (at most the
// client's descriptor count: an honest client never has more in its ring).
func (c *ClientCtx) published(p uint64) int {
	n := 0
	for n < int(c.numDesc) && c.ready(p+uint64(n)) {
		n++
	}
	return n
}

// NewHandle registers obj (the handler's own identifier of an open file or directory)
// and returns the handle the client will use, or EMFILE when the client's table is
// full, or what the service's per-uid HandleQuota says (EMFILE when the client's
// uid holds its share, ENFILE when the service's handle budget is spent).
func (c *ClientCtx) NewHandle(obj uint64) (uint64, syscall.Errno) {
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	if len(c.nfree) == 0 {
		return 0, syscall.EMFILE
	}
	if c.quota != nil {
		if e := c.quota.Acquire(c.UID); e != 0 {
			return 0, e
		}
	}
	i := c.nfree[len(c.nfree)-1]
	c.nfree = c.nfree[:len(c.nfree)-1]
	c.gens[i]++ // even -> odd: live
	c.handles[i] = obj
	return uint64(c.gens[i])<<32 | uint64(i+1), 0
}

func (c *ClientCtx) entryLocked(h uint64) (uint32, bool) {
	i := uint32(h) - 1
	if uint32(h) == 0 || int(i) >= len(c.handles) {
		return 0, false
	}
	g := c.gens[i]
	return i, g&1 == 1 && uint64(g) == h>>32
}

// Object returns the object behind handle h, if h is a live handle of this client.
func (c *ClientCtx) Object(h uint64) (uint64, bool) {
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	i, ok := c.entryLocked(h)
	if !ok {
		return 0, false
	}
	return c.handles[i], true
}

// ReleaseHandle removes h and returns its object; the handle's share of the
// client's uid quota is returned with it.
func (c *ClientCtx) ReleaseHandle(h uint64) (uint64, bool) {
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	i, ok := c.entryLocked(h)
	if !ok {
		return 0, false
	}
	c.gens[i]++ // odd -> even: free
	obj := c.handles[i]
	c.handles[i] = 0
	c.nfree = append(c.nfree, i)
	if c.quota != nil {
		c.quota.Release(c.UID)
	}
	return obj, true
}

// Handles calls fn for every live handle (for cleanup in ClientGone).
func (c *ClientCtx) Handles(fn func(h, obj uint64)) {
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	for i, g := range c.gens {
		if g&1 == 1 {
			fn(uint64(g)<<32|uint64(i+1), c.handles[i])
		}
	}
}

// releaseAllHandles returns the quota of handles the handler left in the table
// at ClientGone (a handler that forgot some must not leak its uid's quota).
func (c *ClientCtx) releaseAllHandles() {
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	for i, g := range c.gens {
		if g&1 == 1 {
			c.gens[i]++
			c.handles[i] = 0
			c.nfree = append(c.nfree, uint32(i))
			if c.quota != nil {
				c.quota.Release(c.UID)
			}
		}
	}
}

func newHandleTable(c *ClientCtx, n int) {
	c.handles = make([]uint64, n)
	c.gens = make([]uint32, n)
	c.nfree = make([]uint32, n)
	for i := range c.nfree {
		c.nfree[i] = uint32(n - 1 - i)
	}
}
