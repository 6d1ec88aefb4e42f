package service

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/invariants"
	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/libservices"
)

// QuotaConfig bounds what the clients of one uid can hold, so that no tenant's
// client (or all clients of one uid together) can exhaust the service's file
// descriptors or client slots and lock out everybody else. Zero values are sized
// from the service's RLIMIT_NOFILE at start (see planQuota); the keys sit at the
// top level of the service's configuration.
type QuotaConfig struct {
	// MaxHandlesPerClient bounds one direct-path client's open handles (files,
	// directories, locks). Default: the uid share, at most 1024.
	MaxHandlesPerClient int `yaml:"max_handles_per_client"`
	// MaxHandlesPerUID bounds the handles of all clients of one uid together,
	// on the direct path and through the FUSE gateway. Default: the handle
	// budget divided by the number of uids that may connect (at least 2).
	MaxHandlesPerUID int `yaml:"max_handles_per_uid"`
	// MaxClientsPerUID bounds the direct-path client slots one uid may hold.
	// Default: max_clients divided by the number of uids that may connect (at
	// least 2), so root and the other uids can still connect.
	MaxClientsPerUID int `yaml:"max_clients_per_uid"`
	// MaxPendingPerUID bounds one uid's unfinished handshakes (default 4).
	MaxPendingPerUID int `yaml:"max_pending_per_uid"`
	// FDReserve is how many file descriptors stay out of the handle budget
	// for what is not a client's handle: the listening sockets, control and
	// metrics connections, FUSE devices, the stacks' own files, logs
	// (default 256).
	FDReserve int `yaml:"fd_reserve"`
}

// Defaults and bounds of the quota plan.
const (
	defaultFDReserve = 256
	// maxPlannedFDs caps the budget: a hard limit in the millions is no reason
	// to let one uid hold a million open files.
	maxPlannedFDs = 1 << 20
	// minHandlesPerUID is the least a plan may give each uid: a service that
	// cannot open a few files per uid is misconfigured.
	minHandlesPerUID = 16
)

// validate checks the keys on their own; planQuota checks them against the
// file descriptor limit at start.
func (q *QuotaConfig) validate() error {
	for _, k := range []struct {
		key string
		v   int
		max int
	}{
		{"max_handles_per_client", q.MaxHandlesPerClient, 1 << 20},
		{"max_handles_per_uid", q.MaxHandlesPerUID, maxPlannedFDs},
		{"max_clients_per_uid", q.MaxClientsPerUID, 65535},
		{"max_pending_per_uid", q.MaxPendingPerUID, 4096},
		{"fd_reserve", q.FDReserve, maxPlannedFDs},
	} {
		if k.v < 0 || k.v > k.max {
			return &libservices.ConfigError{Key: k.key, Msg: fmt.Sprintf("%d, want 0 (default) to %d", k.v, k.max)}
		}
	}
	if q.MaxHandlesPerClient > 0 && q.MaxHandlesPerUID > 0 && q.MaxHandlesPerClient > q.MaxHandlesPerUID {
		return &libservices.ConfigError{Key: "max_handles_per_client",
			Msg: fmt.Sprintf("%d is more than max_handles_per_uid (%d)", q.MaxHandlesPerClient, q.MaxHandlesPerUID)}
	}
	return nil
}

// quotaPlan is what planQuota decided: the back driver's limits and the per-uid
// handle quota.
type quotaPlan struct {
	limit            int // RLIMIT_NOFILE's soft limit (capped at maxPlannedFDs)
	uids             int // uids that may connect, as the plan counts them
	handles          int // handles of all uids together
	perUID           int
	perClient        int
	maxClients       int
	clientsPerUID    int
	pendingPerUID    int
	pending          int
	reserve, clients int // fds kept for the reserve and for connected clients and handshakes
	stacks           int // of the reserve, what the stacks' layers may hold (stacksFDs)
}

// fdHolder is a layer that holds file descriptors of its own beyond its open
// handles, at most ReservedFDs of them (passthrough: its root and its cached
// directories).
type fdHolder interface {
	ReservedFDs() int
}

// stacksFDs sums what the layers of every instance may hold on their own.
func stacksFDs(insts []*instance) int {
	n := 0
	for _, in := range insts {
		walk(in.fs, func(fs libservices.FS) {
			if h, ok := fs.(fdHolder); ok {
				n += h.ReservedFDs()
			}
		})
	}
	return n
}

// planQuota sizes the budgets under limit, the service's file descriptor limit:
//
//	limit = reserve + connected clients' fds + handshakes' fds + handles
//
// where reserve is fd_reserve plus stacks, the descriptors the instances'
// layers may hold on their own (a passthrough branch's directory cache), and
// connected clients cost back.FdsPerClient each (max_clients of them),
// handshakes back.FdsPerHandshake each (the most that may be pending), and every
// handle is counted as one file descriptor (a passthrough file; a libservice
// that holds more per handle must leave the difference in fd_reserve). The
// handles are shared by uid: with the default share (handles / uids) the uids
// allowed to connect cannot together exceed the budget, so EMFILE reaches only a
// uid over its own share. A configured share whose sum may exceed the budget is
// allowed; the budget then still holds, and a uid that hits it gets ENFILE (as
// the kernel's file-max does).
func planQuota(limit uint64, cfg *Config, stacks int) (quotaPlan, error) {
	q := &cfg.QuotaConfig
	p := quotaPlan{limit: int(min(limit, maxPlannedFDs)), maxClients: cfg.MaxClients}
	if p.maxClients == 0 {
		p.maxClients = back.DefaultMaxClients
	}
	uids := map[uint32]bool{0: true, uint32(os.Geteuid()): true}
	for _, u := range cfg.AllowUIDs {
		uids[u] = true
	}
	p.uids = max(2, len(uids))
	p.pendingPerUID = q.MaxPendingPerUID
	if p.pendingPerUID == 0 {
		p.pendingPerUID = back.DefaultMaxPendingPerUID
	}
	p.pending = max(back.DefaultMaxPending, p.pendingPerUID)
	p.reserve = q.FDReserve
	if p.reserve == 0 {
		p.reserve = defaultFDReserve
	}
	p.stacks = stacks
	p.reserve += stacks
	p.clients = p.maxClients*back.FdsPerClient + p.pending*back.FdsPerHandshake
	p.handles = p.limit - p.reserve - p.clients
	if p.handles < p.uids*minHandlesPerUID {
		return p, &libservices.ConfigError{Key: "max_clients", Msg: fmt.Sprintf(
			"RLIMIT_NOFILE %d leaves %d file descriptors for handles after fd_reserve (%d, of which %d for the stacks' own descriptors) and %d clients (%d), "+
				"too few for %d uids: lower max_clients, fd_reserve or the branches' dir_cache_size, or raise the hard limit",
			p.limit, p.handles, p.reserve, p.stacks, p.maxClients, p.clients, p.uids)}
	}
	p.perUID = q.MaxHandlesPerUID
	if p.perUID == 0 {
		p.perUID = p.handles / p.uids
	} else if p.perUID > p.handles {
		return p, &libservices.ConfigError{Key: "max_handles_per_uid", Msg: fmt.Sprintf(
			"%d is more than the %d handles RLIMIT_NOFILE (%d) leaves after fd_reserve and clients", p.perUID, p.handles, p.limit)}
	}
	p.perClient = q.MaxHandlesPerClient
	if p.perClient == 0 {
		p.perClient = min(back.DefaultMaxHandles, p.perUID)
	} else if p.perClient > p.perUID {
		return p, &libservices.ConfigError{Key: "max_handles_per_client", Msg: fmt.Sprintf(
			"%d is more than a uid's share (%d handles)", p.perClient, p.perUID)}
	}
	p.clientsPerUID = q.MaxClientsPerUID
	if p.clientsPerUID == 0 {
		p.clientsPerUID = max(1, p.maxClients/p.uids)
	} else if p.clientsPerUID > p.maxClients {
		return p, &libservices.ConfigError{Key: "max_clients_per_uid", Msg: fmt.Sprintf(
			"%d is more than max_clients (%d)", p.clientsPerUID, p.maxClients)}
	}
	return p, nil
}

// raiseNoFile raises RLIMIT_NOFILE's soft limit to its hard limit (the service
// may use what it is allowed) and returns it.
func raiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("service: getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, fmt.Errorf("service: raise RLIMIT_NOFILE to %d: %w", r.Max, err)
		}
	}
	return r.Cur, nil
}

// startQuota raises the file descriptor limit, plans the budgets under it and
// returns the per-uid handle quota, which the direct path's handle tables
// (back.Config.Quota, set by configure) and the FUSE gateway (Service.Quota)
// share. It runs before the FUSE mounts, which take the quota.
func startQuota(cfg *Config, stacks int, log *zap.Logger) (*Quota, quotaPlan, error) {
	limit, err := raiseNoFile()
	if err != nil {
		return nil, quotaPlan{}, err
	}
	p, err := planQuota(limit, cfg, stacks)
	if err != nil {
		return nil, p, err
	}
	log.Info("service quotas", zap.Int("rlimitNofile", p.limit), zap.Int("fdReserve", p.reserve), zap.Int("ofWhichStacks", p.stacks),
		zap.Int("handles", p.handles), zap.Int("handlesPerUID", p.perUID), zap.Int("handlesPerClient", p.perClient),
		zap.Int("maxClients", p.maxClients), zap.Int("clientsPerUID", p.clientsPerUID), zap.Int("pendingPerUID", p.pendingPerUID))
	return NewQuota(p.perUID, p.handles), p, nil
}

// configure sets the back driver's limits and quota from the plan.
func (p *quotaPlan) configure(bc *back.Config, q *Quota) {
	bc.MaxClients = p.maxClients
	bc.MaxClientsPerUID = p.clientsPerUID
	bc.MaxPendingPerUID = p.pendingPerUID
	bc.MaxPending = p.pending
	bc.MaxHandles = p.perClient
	bc.Quota = q
}

// Quota counts open handles per uid over both paths: at most perUID for each
// uid, and at most total for all. It satisfies back.HandleQuota and the FUSE
// gateway's quota interface; its methods are safe for concurrent use and take no
// lock unless a uid is seen for the first time (addMu, a leaf: callers may hold
// their own locks, the back driver holds a client's handle table lock).
type Quota struct {
	perUID, total int64
	used          atomic.Int64
	// uids is a copy-on-write map: read without a lock, replaced under
	// addMu when a new uid appears (uids are few: those allowed to connect,
	// and the callers of FUSE mounts).
	uids  atomic.Pointer[map[uint32]*atomic.Int64]
	addMu sync.Mutex
}

var _ back.HandleQuota = (*Quota)(nil)

// NewQuota returns a Quota of perUID handles per uid and total for all.
func NewQuota(perUID, total int) *Quota {
	q := &Quota{perUID: int64(perUID), total: int64(total)}
	q.uids.Store(&map[uint32]*atomic.Int64{})
	return q
}

func (q *Quota) counter(uid uint32) *atomic.Int64 {
	if n := (*q.uids.Load())[uid]; n != nil {
		return n
	}
	q.addMu.Lock()
	defer q.addMu.Unlock()
	cur := *q.uids.Load()
	if n := cur[uid]; n != nil {
		return n
	}
	next := make(map[uint32]*atomic.Int64, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	n := new(atomic.Int64)
	next[uid] = n
	q.uids.Store(&next)
	return n
}

// Acquire takes one handle for uid: EMFILE when uid holds its share, ENFILE when
// the service's budget is spent.
func (q *Quota) Acquire(uid uint32) syscall.Errno {
	n := q.counter(uid)
	if n.Add(1) > q.perUID {
		n.Add(-1)
		return syscall.EMFILE
	}
	if q.used.Add(1) > q.total {
		q.used.Add(-1)
		n.Add(-1)
		return syscall.ENFILE
	}
	return 0
}

// Release returns one handle of uid, taken by Acquire.
func (q *Quota) Release(uid uint32) {
	n := q.counter(uid).Add(-1)
	u := q.used.Add(-1)
	if invariants.Enabled {
		invariants.Check(n >= 0 && u >= 0, "quota: uid %d released more handles than it acquired (%d, %d in all)", uid, n, u)
	}
}

// Held returns how many handles uid holds.
func (q *Quota) Held(uid uint32) int64 { return q.counter(uid).Load() }

// Limits returns the per-uid share and the total.
func (q *Quota) Limits() (perUID, total int64) { return q.perUID, q.total }

// Quota returns the service's per-uid handle quota, for the FUSE gateway to share
// with the direct path.
func (s *Service) Quota() *Quota { return s.quota }
