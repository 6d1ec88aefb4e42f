package fusegw

import (
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/libservices/access"
)

// Quota bounds the handles the gateway opens per uid (the service's per-uid
// handle quota, service/quota.go). Acquire is called before every file or
// directory handle the gateway opens for a caller, Release once that handle is
// released; an Acquire that fails (EMFILE, EAGAIN) fails the open with its
// errno and is not released. Both may be called concurrently.
type Quota interface {
	Acquire(uid uint32) syscall.Errno
	Release(uid uint32)
}

// Caller credentials. A FUSE request header names its caller by fsuid, fsgid
// and thread id; its supplementary groups and capabilities come from
// /proc/TID/status (peercred.FromPID), which costs a pidfd and a file read. They
// are kept per (pid, uid, gid) for credTTL in a table of credSlots entries
// (direct-mapped: a collision replaces the older entry), each entry with a pidfd
// of its thread, checked to be alive at every use, so that a thread that exited
// never lends its credentials to a later one that got its id. A change of groups
// or capabilities by a live thread without a change of fsuid or fsgid is seen
// within credTTL. Only requests whose rules need more than the header use the
// table (creating, removing, renaming, setattr, xattrs, opens, and a direct-I/O
// write that must clear set-ID bits); LOOKUP, GETATTR, READ and WRITE do not.
const (
	credTTL   = 100 * time.Millisecond
	credSlots = 64
)

type credKey struct {
	pid      uint32
	uid, gid uint32
}

type credEntry struct {
	key     credKey
	pidfd   int   // -1: none
	expires int64 // on credClock
	cred    *access.Cred
}

// credCache is the table. Lock order: mu is a leaf.
type credCache struct {
	mu      sync.Mutex
	entries [credSlots]credEntry
	closed  bool
}

// credClock is a monotonic clock in nanoseconds.
var credStart = time.Now()

func credClock() int64 { return int64(time.Since(credStart)) }

func (k credKey) slot() int {
	h := k.pid*0x9e3779b1 ^ k.uid*0x85ebca6b ^ k.gid*0xc2b2ae35
	return int(h>>16^h) % credSlots
}

func newCredCache() *credCache {
	cc := &credCache{}
	for i := range cc.entries {
		cc.entries[i].pidfd = -1
	}
	return cc
}

// get returns the credentials of the request header h's caller.
func (cc *credCache) get(h *fuse.InHeader) *access.Cred {
	k := credKey{pid: h.Pid, uid: h.Uid, gid: h.Gid}
	if k.pid == 0 {
		// A request the kernel makes itself: the header's ids alone.
		return &access.Cred{UID: k.uid, GID: k.gid}
	}
	now := credClock()
	i := k.slot()
	cc.mu.Lock()
	if e := &cc.entries[i]; e.cred != nil && e.key == k && now < e.expires && peercred.Alive(e.pidfd) {
		c := e.cred
		cc.mu.Unlock()
		return c
	}
	cc.mu.Unlock()
	pidfd, err := peercred.PidfdOpen(int32(k.pid))
	c := peercred.FromPID(int32(k.pid), k.uid, k.gid)
	if err != nil {
		return &c // gone: the header's ids alone, as FromPID said
	}
	if !peercred.Alive(pidfd) {
		unix.Close(pidfd)
		return &access.Cred{PID: c.PID, UID: k.uid, GID: k.gid}
	}
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		unix.Close(pidfd)
		return &c
	}
	old := cc.entries[i].pidfd
	cc.entries[i] = credEntry{key: k, pidfd: pidfd, expires: now + int64(credTTL), cred: &c}
	cc.mu.Unlock()
	if old >= 0 {
		unix.Close(old)
	}
	return &c
}

// close releases the table's pidfds.
func (cc *credCache) close() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.closed = true
	for i := range cc.entries {
		if cc.entries[i].pidfd >= 0 {
			unix.Close(cc.entries[i].pidfd)
		}
		cc.entries[i] = credEntry{pidfd: -1}
	}
}
