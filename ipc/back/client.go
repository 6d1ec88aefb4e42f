package back

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"

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

	slot, gen uint16
	conn      *net.UnixConn
	arena     *shm.Region
	mem       []byte
	numDesc   uint32
	descOff   uint32
	lim       wire.Limits
	states    []*uint32 // State word of each descriptor, in the service's mapping

	inflight atomic.Int32
	dead     atomic.Bool

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

// NewHandle registers obj (the handler's own identifier of an open file or directory)
// and returns the handle the client will use, or EMFILE when the client's table is
// full.
func (c *ClientCtx) NewHandle(obj uint64) (uint64, syscall.Errno) {
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	if len(c.nfree) == 0 {
		return 0, syscall.EMFILE
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

// ReleaseHandle removes h and returns its object.
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

func newHandleTable(c *ClientCtx, n int) {
	c.handles = make([]uint64, n)
	c.gens = make([]uint32, n)
	c.nfree = make([]uint32, n)
	for i := range c.nfree {
		c.nfree[i] = uint32(n - 1 - i)
	}
}
