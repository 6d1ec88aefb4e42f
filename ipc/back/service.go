package back

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/logging"
	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// Handler serves validated requests; the filesystem service implements it.
type Handler interface {
	// Handle serves one request whose every field has passed wire.Validate against
	// c's arena and whose handle (for handle ops) is one of c's live handles. d is
	// the service's private copy of the descriptor; the handler may set d.Result.
	// data is the request's buffer inside c's arena (d.Length bytes): the client can
	// change it at any moment, so the handler copies what it must keep stable (a
	// path) before acting on it; payloads may be read into or written from data
	// in place (a libservice's pread fills it directly), and copies the handler
	// makes itself between private memory and data go through shm.CopyData. It
	// returns a non-negative status or a negated errno, must not retain d or
	// data, must not allocate on the data path, and is called concurrently by
	// several workers, also for one client.
	Handle(c *ClientCtx, d *wire.Desc, data []byte) int32
	// ClientGone is called once per admitted client, after it disconnected and its
	// in-flight requests finished, with its handle table intact so the handler can
	// release what the handles hold.
	ClientGone(c *ClientCtx)
}

// ClientOpener is an optional Handler capability: ClientOpened is called once per
// admitted client before any of its requests can reach Handle, so the handler can
// set ClientCtx.Value without a lock on the request path.
type ClientOpener interface {
	ClientOpened(c *ClientCtx)
}

// HandleQuota bounds the handles of all clients of one uid together (service's
// per-uid quota, shared with the FUSE path). ClientCtx.NewHandle calls Acquire
// after the client's own table has room and fails with its errno; every
// release of a handle (ReleaseHandle, and what a gone client left) calls Release
// once. Both are called concurrently.
type HandleQuota interface {
	Acquire(uid uint32) syscall.Errno
	Release(uid uint32)
}

// Credential is a connecting peer's identity, from the kernel at connect(2)
// (internal/peercred: SO_PEERCRED, SO_PEERGROUPS, capabilities from /proc).
type Credential = peercred.Cred

// AllowUIDs returns an allow rule admitting peers whose uid is one of uids.
func AllowUIDs(uids ...uint32) func(Credential) error {
	return func(c Credential) error {
		for _, u := range uids {
			if c.UID == u {
				return nil
			}
		}
		return fmt.Errorf("uid %d not allowed", c.UID)
	}
}

// Defaults of Config's limits, for callers that size other budgets around them.
const (
	DefaultMaxClients       = 64
	DefaultMaxPendingPerUID = 4
	DefaultMaxPending       = 32
	DefaultMaxHandles       = 1024
	// FdsPerClient is what an admitted client costs the service in file
	// descriptors: its socket and its eventfd (the arena's memfd is closed once
	// passed; the mapping stays). FdsPerHandshake is what a handshake in
	// progress may hold: the socket, the arena's memfd and the eventfd.
	FdsPerClient    = 2
	FdsPerHandshake = 3
)

// Config configures a Service. Zero values take the defaults named on each field.
type Config struct {
	// SocketPath is where the service listens (SOCK_SEQPACKET). A stale socket file
	// left by a dead service is replaced.
	SocketPath string
	// Listener, when set, is the listening socket (SOCK_SEQPACKET) to serve,
	// made by a privileged parent for an unprivileged service; SocketPath
	// then only names it, and nothing is removed or created there. Close
	// closes it; a failed Listen leaves it to the caller.
	Listener *net.UnixListener
	// Allow decides whether a peer may connect; nil admits only the service's own
	// uid and root.
	Allow func(Credential) error
	// Handler serves requests other than OpNop (required).
	Handler Handler
	// Workers is the number of worker threads (default 1).
	Workers int
	// CPUs, when set, pins worker i to CPUs[i%len(CPUs)].
	CPUs []int
	// SpinBudget is how many empty polls of the clients' rings a worker makes
	// before it sleeps (default 2000; negative sleeps at once).
	SpinBudget int
	// SpinTime is how long, beyond SpinBudget polls, a worker keeps polling empty
	// rings before it sleeps (default 50 µs; negative: SpinBudget alone). A
	// client that sends its next request within it is served without a wake-up.
	SpinTime time.Duration
	// RingCap is each client's submission ring capacity, a power of two no
	// smaller than DescsPerClient (default: the smallest such).
	RingCap int
	// MaxClients bounds connected clients (default 64, at most 65535).
	MaxClients int
	// MaxClientsPerUID bounds the client slots one uid may hold, so that root and
	// the other uids can still connect when one fills its share (default
	// MaxClients/2, at least 1). A client over it is refused with EAGAIN.
	MaxClientsPerUID int
	// MaxPendingPerUID bounds one uid's unfinished handshakes (default 4), and
	// MaxPending everybody's (default 32): a connection over either is refused
	// with EAGAIN at once, so half-done handshakes cannot pile up file
	// descriptors. HandshakeTimeout ends each.
	MaxPendingPerUID int
	MaxPending       int
	// DescsPerClient is each client's number of descriptors (default 32).
	DescsPerClient int
	// SlotBytes is each descriptor's default data buffer (default 64 KiB).
	SlotBytes int
	// MaxHandles bounds each client's open handles (default 1024).
	MaxHandles int
	// Quota, when set, bounds the handles of each uid over all its clients.
	Quota HandleQuota
	// HugePages backs the arenas with huge pages when available. A client can
	// punch holes in its own hugetlb arena; with the pool then empty, the
	// service's next write there faults (SIGBUS): only for trusted clients.
	HugePages bool
	// HandshakeTimeout bounds a connecting client's handshake (default 1 s).
	HandshakeTimeout time.Duration
	// ReclaimWarn is how long the reclaim of a dead client's arena waits for its
	// in-flight requests before it logs a warning (it keeps waiting: unmapping under
	// a running handler would fault). Default 5 s.
	ReclaimWarn time.Duration
	// Logger receives connection events and rate-limited warnings.
	Logger *zap.Logger
}

func (c *Config) setDefaults() error {
	if c.Handler == nil {
		return errors.New("back: Config.Handler is required")
	}
	if c.SocketPath == "" {
		return errors.New("back: Config.SocketPath is required")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Workers, 1)
	if c.SpinBudget == 0 {
		c.SpinBudget = 2000
	} else if c.SpinBudget < 0 {
		c.SpinBudget = 0
		c.SpinTime = -1 // sleep at once
	}
	if c.SpinTime == 0 {
		c.SpinTime = 50 * time.Microsecond
	} else if c.SpinTime < 0 {
		c.SpinTime = 0
	}
	def(&c.MaxClients, DefaultMaxClients)
	def(&c.MaxClientsPerUID, max(1, c.MaxClients/2))
	def(&c.MaxPendingPerUID, DefaultMaxPendingPerUID)
	def(&c.MaxPending, DefaultMaxPending)
	def(&c.DescsPerClient, 32)
	if c.RingCap == 0 && c.DescsPerClient > 0 {
		c.RingCap = 1
		for c.RingCap < c.DescsPerClient {
			c.RingCap <<= 1
		}
	}
	def(&c.SlotBytes, 64<<10)
	def(&c.MaxHandles, DefaultMaxHandles)
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = time.Second
	}
	if c.ReclaimWarn == 0 {
		c.ReclaimWarn = 5 * time.Second
	}
	switch {
	case c.Workers < 1 || c.Workers > 256:
		return fmt.Errorf("back: %d workers, want 1..256", c.Workers)
	case c.MaxClients < 1 || c.MaxClients > 65535:
		return fmt.Errorf("back: MaxClients %d, want 1..65535", c.MaxClients)
	case c.MaxClientsPerUID < 1 || c.MaxClientsPerUID > c.MaxClients:
		return fmt.Errorf("back: MaxClientsPerUID %d, want 1..MaxClients (%d)", c.MaxClientsPerUID, c.MaxClients)
	case c.MaxPendingPerUID < 1 || c.MaxPending < 1 || c.MaxPendingPerUID > c.MaxPending || c.MaxPending > 4096:
		return fmt.Errorf("back: MaxPendingPerUID %d and MaxPending %d, want 1 <= per uid <= total <= 4096", c.MaxPendingPerUID, c.MaxPending)
	case c.DescsPerClient < 1 || c.DescsPerClient > 4096:
		return fmt.Errorf("back: DescsPerClient %d, want 1..4096", c.DescsPerClient)
	case c.RingCap < c.DescsPerClient || c.RingCap > 1<<16 || c.RingCap&(c.RingCap-1) != 0:
		return fmt.Errorf("back: RingCap %d, want a power of two from DescsPerClient (%d) to 65536", c.RingCap, c.DescsPerClient)
	case c.SlotBytes < wire.PathMax*2 || c.SlotBytes > wire.MaxIO || c.SlotBytes%64 != 0:
		return fmt.Errorf("back: SlotBytes %d, want a multiple of 64 in %d..%d (two paths must fit)", c.SlotBytes, wire.PathMax*2, wire.MaxIO)
	case c.MaxHandles < 1 || c.MaxHandles > 1<<20:
		return fmt.Errorf("back: MaxHandles %d, want 1..%d", c.MaxHandles, 1<<20)
	}
	for _, cpu := range c.CPUs {
		if cpu < 0 || cpu >= 1024 {
			return fmt.Errorf("back: CPU %d out of range", cpu)
		}
	}
	return nil
}

// Stats are counters for tests and metrics.
type Stats struct {
	LiveClients  int   // admitted and not yet reclaimed
	MappedArenas int64 // arenas this process still maps
	Admitted     int64
	Refused      int64 // connections refused (credentials, version, quotas, no slot)
	Served       int64 // descriptors answered (including EINVAL answers)
	Rejected     int64 // descriptors answered EINVAL/ENAMETOOLONG by validation
	Dropped      int64 // ring entries taken from a client already being reclaimed
	Corrupt      int64 // clients disconnected for corrupting their ring or arena
	Queued       int64 // sum over taken requests of the requests found waiting behind them
	Workers      int   // running workers (SetWorkers)
	Retired      int64 // workers retired by SetWorkers
}

// Service is a running back driver.
type Service struct {
	cfg Config
	log *zap.Logger
	ln  *net.UnixListener

	// The status page: written by the service only, mapped read-only by clients.
	status   *shm.Region
	sleepers *uint32 // workers asleep or about to sleep, in the status page
	epfd     int     // every client's eventfd (edge-triggered) and wakeFd
	// wakeFd is the service's own eventfd (level-triggered): Close and
	// SetWorkers make it readable to wake sleeping workers, no client involved.
	wakeFd int

	// clients is indexed by slot (lookups for tests and logs).
	clients []atomic.Pointer[ClientCtx]
	// active is the list of live clients the workers poll, immutable once
	// published; admit and reclaim publish a new one under mu.
	active atomic.Pointer[[]*ClientCtx]

	mu sync.Mutex
	// gens[slot] is the generation the slot's next client gets (never 0).
	gens    []uint16
	used    []bool
	uids    map[uint32]*uidUse // client slots and pending handshakes per uid
	pending int                // handshakes not finished
	conns   map[*net.UnixConn]struct{}
	closed  bool

	live, mapped, admitted, refused, served, rejected, dropped, corrupt atomic.Int64
	queued                                                              atomic.Int64
	badLog, corruptLog, refuseLog, acceptLog                            rateLimit
	stopping                                                            atomic.Bool // no new connections
	quit                                                                atomic.Bool // workers exit

	wg      sync.WaitGroup // accept loop, watchers, handshakes
	workers sync.WaitGroup

	// workersMu serialises SetWorkers with itself, with retiring workers and with
	// Close: a worker must not be added to the WaitGroup once Close waits on it.
	workersMu  sync.Mutex
	nextWorker int            // the next worker's index; guarded by workersMu
	wstates    []*workerState // running workers; guarded by workersMu
	// cpuWorkers[j] counts live workers pinned to CPUs[j]; guarded by
	// workersMu. A new worker takes the least loaded CPU: any worker may be
	// the one that retires, so index modulo CPUs would pile workers onto one
	// CPU after a shrink and a grow.
	cpuWorkers     []int
	workersClosed  bool // guarded by workersMu
	liveWorkers    atomic.Int32
	targetWorkers  atomic.Int32
	retiredWorkers atomic.Int64

	stuck stuckWatch // StuckWorkers' record
}

// uidUse is what one uid holds; guarded by Service.mu.
type uidUse struct {
	clients, pending int
}

// Listen creates the status page, listens on cfg.SocketPath and starts the workers.
func Listen(cfg Config) (_ *Service, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: logging.OrNop(cfg.Logger), epfd: -1, wakeFd: -1}
	// A service run by root is the daemon's (serve starts it): it uses the daemon's
	// profile; one run by a user for itself uses that user's.
	shm.UseCopyProfile(os.Geteuid() == 0, s.log)
	for _, r := range []*rateLimit{&s.badLog, &s.corruptLog, &s.refuseLog, &s.acceptLog} {
		r.every = time.Second
	}
	defer func() {
		if err != nil {
			if s.ln == cfg.Listener {
				s.ln = nil // the caller's
			}
			s.closeResources()
		}
	}()
	s.status, err = shm.Create("polytropon-status", wire.StatusPageSize, shm.Options{ReadOnlyPeers: true})
	if err != nil {
		return nil, fmt.Errorf("back: status page: %w", err)
	}
	mem := s.status.Bytes()
	le32(mem, wire.StatusOffMagic, wire.StatusMagic)
	le32(mem, wire.StatusOffVersion, wire.Version)
	if s.sleepers, err = shm.Uint32At(mem, wire.StatusOffSleepers); err != nil {
		return nil, err
	}
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("back: epoll_create: %w", err)
	}
	if s.wakeFd, err = shm.NewEventfd(); err != nil {
		return nil, fmt.Errorf("back: %w", err)
	}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, s.wakeFd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.wakeFd)}); err != nil {
		return nil, fmt.Errorf("back: epoll_ctl: %w", err)
	}
	if cfg.Listener != nil {
		s.ln = cfg.Listener
	} else {
		if err := removeStaleSocket(cfg.SocketPath); err != nil {
			return nil, err
		}
		s.ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.SocketPath, Net: "unixpacket"})
		if err != nil {
			return nil, fmt.Errorf("back: listen %s: %w", cfg.SocketPath, err)
		}
	}
	s.clients = make([]atomic.Pointer[ClientCtx], cfg.MaxClients)
	s.gens = make([]uint16, cfg.MaxClients)
	for i := range s.gens {
		s.gens[i] = 1
	}
	s.used = make([]bool, cfg.MaxClients)
	s.uids = make(map[uint32]*uidUse)
	s.conns = make(map[*net.UnixConn]struct{})
	s.active.Store(new([]*ClientCtx))
	s.targetWorkers.Store(int32(cfg.Workers))
	for i := 0; i < cfg.Workers; i++ {
		s.spawnWorkerLocked()
	}
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info("ipc service listening", zap.String("socket", cfg.SocketPath), zap.Int("workers", cfg.Workers),
		zap.Int("maxClients", cfg.MaxClients), zap.Int("maxClientsPerUID", cfg.MaxClientsPerUID))
	return s, nil
}

// closeResources releases what Listen made, in reverse (workers and clients gone).
func (s *Service) closeResources() error {
	var errs []error
	if s.ln != nil {
		s.ln.Close()
	}
	if s.wakeFd >= 0 {
		errs = append(errs, unix.Close(s.wakeFd))
		s.wakeFd = -1
	}
	if s.epfd >= 0 {
		errs = append(errs, unix.Close(s.epfd))
		s.epfd = -1
	}
	if s.status != nil {
		errs = append(errs, s.status.Close())
	}
	return errors.Join(errs...)
}

func le32(b []byte, off int, v uint32) {
	b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// spawnWorkerLocked starts one more worker and returns once it runs on its own
// thread, pinned when CPUs are configured; workersMu is held (or the service not
// yet published).
func (s *Service) spawnWorkerLocked() {
	i := s.nextWorker
	s.nextWorker++
	cpu := -1
	if n := len(s.cfg.CPUs); n > 0 {
		if s.cpuWorkers == nil {
			s.cpuWorkers = make([]int, n)
		}
		cpu = 0
		for j := range s.cpuWorkers {
			if s.cpuWorkers[j] < s.cpuWorkers[cpu] {
				cpu = j
			}
		}
		s.cpuWorkers[cpu]++
	}
	ws := &workerState{id: i, cpu: cpu}
	ws.epoch.Store(1) // in a pass from its first instruction: reclaim must wait for it
	s.wstates = append(s.wstates, ws)
	s.liveWorkers.Add(1)
	s.workers.Add(1)
	started := make(chan struct{})
	go s.worker(ws, started)
	// Wait for the thread: Listen and SetWorkers return with the workers they
	// promise running (and pinned), not merely scheduled.
	<-started
}

// QueueLen counts the requests published in the clients' rings and not yet taken.
func (s *Service) QueueLen() int {
	n := 0
	for _, c := range *s.active.Load() {
		c.inflight.Add(1)
		if !c.dead.Load() {
			n += c.published(c.head.Load())
		}
		c.inflight.Add(-1)
	}
	return n
}

// Workers is the number of running workers.
func (s *Service) Workers() int { return int(s.liveWorkers.Load()) }

// SetWorkers changes the number of workers at run time (1..256) and returns the
// number it aims at. Growing starts workers at once. Shrinking lets surplus
// workers exit between two requests, so no request is dropped or served twice: a
// spinning worker notices at its next poll, a sleeping one is woken through the
// service's own eventfd. Until they have gone, Workers() may exceed the target.
func (s *Service) SetWorkers(n int) (int, error) {
	if n < 1 || n > 256 {
		return 0, fmt.Errorf("back: %d workers, want 1..256", n)
	}
	s.workersMu.Lock()
	defer s.workersMu.Unlock()
	if s.workersClosed {
		return 0, errors.New("back: service closed")
	}
	s.targetWorkers.Store(int32(n))
	live := int(s.liveWorkers.Load())
	for ; live < n; live++ {
		s.spawnWorkerLocked()
	}
	if live > n {
		s.wakeWorkers()
	}
	return n, nil
}

// wakeWorkers makes the service's eventfd readable: sleeping workers wake one
// after another (level-triggered) until one finds nothing to do and drains it.
func (s *Service) wakeWorkers() {
	if err := shm.EventfdWrite(s.wakeFd); err != nil && err != unix.EAGAIN {
		s.log.Error("ipc: waking workers", zap.Error(err))
	}
}

// retire is a worker's exit while more workers run than the target; under
// workersMu, so that a SetWorkers growing meanwhile sees either the worker live
// (and the target met) or gone (and starts another).
func (s *Service) retire(ws *workerState) bool {
	s.workersMu.Lock()
	defer s.workersMu.Unlock()
	if s.liveWorkers.Load() <= s.targetWorkers.Load() {
		return false
	}
	s.retiredWorkers.Add(1)
	s.removeWorkerLocked(ws)
	return true
}

// removeWorkerLocked forgets a worker that is about to exit.
func (s *Service) removeWorkerLocked(ws *workerState) {
	s.liveWorkers.Add(-1)
	if ws.cpu >= 0 {
		s.cpuWorkers[ws.cpu]--
	}
	if i := slices.Index(s.wstates, ws); i >= 0 {
		s.wstates = slices.Delete(s.wstates, i, i+1)
	}
	ws.quiesce()
}

// removeStaleSocket removes a socket file nobody listens on, so that a restarted
// service can take over its predecessor's path; a live listener is left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("back: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("back: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unixpacket", path, 100*time.Millisecond)
	if err == nil {
		c.Close()
		return fmt.Errorf("back: a service already listens on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("back: remove stale socket: %w", err)
	}
	return nil
}

// Stats returns the current counters.
func (s *Service) Stats() Stats {
	return Stats{
		LiveClients:  int(s.live.Load()),
		MappedArenas: s.mapped.Load(),
		Admitted:     s.admitted.Load(),
		Refused:      s.refused.Load(),
		Served:       s.served.Load(),
		Rejected:     s.rejected.Load(),
		Dropped:      s.dropped.Load(),
		Corrupt:      s.corrupt.Load(),
		Queued:       s.queued.Load(),
		Workers:      s.Workers(),
		Retired:      s.retiredWorkers.Load(),
	}
}

// Addr returns the socket path.
func (s *Service) Addr() string { return s.cfg.SocketPath }

// Close stops accepting, disconnects every client (their calls fail with ENOTCONN),
// lets the requests being served finish, reclaims every arena, stops the workers
// and releases the status page.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.stopping.Store(true)
	s.workersMu.Lock()
	s.workersClosed = true
	s.workersMu.Unlock()
	s.ln.Close()
	s.wg.Wait() // watchers reclaim their clients while workers still run
	s.quit.Store(true)
	s.wakeWorkers() // never drained once quit is set: every sleeper wakes
	s.workers.Wait()
	return s.closeResources()
}

func (s *Service) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: the connection waits in the backlog. Back off
			// (up to 100 ms) instead of spinning, and say so once a second.
			backoff = min(max(2*backoff, time.Millisecond), 100*time.Millisecond)
			if n, ok := s.acceptLog.allow(); ok {
				s.log.Warn("ipc accept failed; backing off", zap.Error(err), zap.Duration("backoff", backoff),
					zap.Int64("suppressed", n))
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.startConn(conn)
	}
}

// startConn checks a new connection's credentials and its uid's pending
// handshakes before it costs a goroutine: a refusal here is answered at once.
func (s *Service) startConn(conn *net.UnixConn) {
	cred, err := peerCred(conn)
	if err != nil {
		s.refuse(conn, syscall.EACCES, "SO_PEERCRED failed", cred, err)
		conn.Close()
		return
	}
	allow := s.cfg.Allow
	if allow == nil {
		allow = s.defaultAllow
	}
	if err := allow(cred); err != nil {
		s.refuse(conn, syscall.EACCES, "credentials not allowed", cred, err)
		conn.Close()
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	u := s.uids[cred.UID]
	if u == nil {
		u = &uidUse{}
		s.uids[cred.UID] = u
	}
	if u.pending >= s.cfg.MaxPendingPerUID || s.pending >= s.cfg.MaxPending {
		busy := fmt.Errorf("%d handshakes of this uid and %d in all unfinished (max_pending_per_uid %d, max_pending %d)",
			u.pending, s.pending, s.cfg.MaxPendingPerUID, s.cfg.MaxPending)
		s.dropUIDLocked(cred.UID, u)
		s.mu.Unlock()
		s.refuse(conn, syscall.EAGAIN, "too many unfinished handshakes", cred, busy)
		conn.Close()
		return
	}
	u.pending++
	s.pending++
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(conn, cred)
}

// dropUIDLocked forgets a uid that holds nothing, so the map stays as small as
// the set of uids connected.
func (s *Service) dropUIDLocked(uid uint32, u *uidUse) {
	if u.clients == 0 && u.pending == 0 {
		delete(s.uids, uid)
	}
}

func peerCred(conn *net.UnixConn) (Credential, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return Credential{}, err
	}
	var c Credential
	var cerr error
	if err := rc.Control(func(fd uintptr) { c, cerr = peercred.FromSocket(int(fd)) }); err != nil {
		return Credential{}, err
	}
	return c, cerr
}

func (s *Service) defaultAllow(c Credential) error {
	if c.UID == 0 || c.UID == uint32(os.Geteuid()) {
		return nil
	}
	return fmt.Errorf("uid %d is neither root nor the service's uid", c.UID)
}

// serveConn runs the handshake, then watches the socket until the client goes away
// (or the service disconnects it) and reclaims it.
func (s *Service) serveConn(conn *net.UnixConn, cred Credential) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	c, err := s.handshake(conn, cred)
	s.mu.Lock()
	u := s.uids[cred.UID]
	u.pending--
	s.pending--
	s.dropUIDLocked(cred.UID, u)
	s.mu.Unlock()
	if err != nil {
		if n, ok := s.refuseLog.allow(); ok {
			s.log.Info("ipc handshake failed", zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID),
				zap.Error(err), zap.Int64("suppressed", n))
		}
		return
	}
	// The client never sends after the handshake: any read result (EOF, an error
	// on Close, or an unexpected message) ends the session.
	var b [16]byte
	_ = conn.SetReadDeadline(time.Time{})
	_, rerr := conn.Read(b[:])
	s.log.Debug("ipc client gone", zap.Int("slot", int(c.slot)), zap.Int32("pid", c.PID), zap.NamedError("why", rerr))
	s.reclaim(c)
}

// refuse answers a connection with errno and shuts it down. The socket is shut
// and drained before the caller closes it, so a Hello that arrives (or arrived)
// unread cannot turn the close into ECONNRESET for the client, which would then
// never read why it was refused. Repeated refusals are logged once a second.
func (s *Service) refuse(conn *net.UnixConn, errno syscall.Errno, why string, cred Credential, err error) {
	// Counted before the answer goes out: a client that has read its refusal must
	// find it in Stats.
	s.refused.Add(1)
	var b [wire.WelcomeSize]byte
	w := wire.Welcome{Version: wire.Version, Status: int32(errno)}
	w.Put(b[:])
	_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	_ = shm.SendFds(conn, b[:])
	if rc, rerr := conn.SyscallConn(); rerr == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.Shutdown(int(fd), unix.SHUT_RDWR)
			var sink [wire.HelloSize + 1]byte
			for range 8 {
				if _, _, e := unix.Recvfrom(int(fd), sink[:], unix.MSG_DONTWAIT); e != nil {
					break
				}
			}
		})
	}
	if n, ok := s.refuseLog.allow(); ok {
		s.log.Warn("ipc client refused", zap.String("why", why), zap.String("errno", errno.Error()),
			zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID), zap.Uint32("gid", cred.GID),
			zap.Error(err), zap.Int64("suppressed", n))
	}
}

func (s *Service) handshake(conn *net.UnixConn, cred Credential) (*ClientCtx, error) {
	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var hb [wire.HelloSize + 1]byte
	n, err := conn.Read(hb[:])
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	var hello wire.Hello
	if err := hello.Get(hb[:n]); err != nil {
		s.refuse(conn, syscall.EPROTO, "malformed hello", cred, err)
		return nil, err
	}
	if hello.Version != wire.Version {
		err := fmt.Errorf("client protocol version %d, service speaks %d", hello.Version, wire.Version)
		s.refuse(conn, syscall.EPROTONOSUPPORT, "protocol version", cred, err)
		return nil, err
	}
	c, errno, err := s.admit(conn, cred)
	if err != nil {
		s.refuse(conn, errno, "not admitted", cred, err)
		return nil, err
	}
	w := wire.Welcome{Version: wire.Version, Slot: c.slot, Gen: c.gen, RingCap: uint32(len(c.ring)),
		NumDesc: c.numDesc, SlotBytes: uint32(s.cfg.SlotBytes), StatusSize: uint32(s.status.Size()),
		ArenaSize: uint64(len(c.mem))}
	var wb [wire.WelcomeSize]byte
	w.Put(wb[:])
	var fds [wire.WelcomeFds]int
	fds[wire.WelcomeFdStatus], fds[wire.WelcomeFdArena], fds[wire.WelcomeFdEvent] = s.status.Fd(), c.arena.Fd(), c.efd
	if err := shm.SendFds(conn, wb[:], fds[:]...); err != nil {
		s.reclaim(c)
		return nil, err
	}
	// The client has its own fd now; the mapping is all the service needs.
	if err := c.arena.DropFd(); err != nil {
		s.log.Warn("ipc: closing an arena's memfd", zap.Error(err))
	}
	_ = conn.SetDeadline(time.Time{})
	s.log.Debug("ipc client admitted", zap.Int("slot", int(c.slot)), zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID))
	return c, nil
}

// ArenaLayout returns the arena layout for n descriptors of slotBytes buffers and a
// ring of ringCap entries: the offsets of the ring, of descriptor 0 and of the data
// area, and the arena size.
func ArenaLayout(n, ringCap, slotBytes int) (ringOff, descOff, dataOff, size int) {
	ringOff = wire.ArenaHeaderSize
	descOff = (ringOff + ringCap*wire.RingEntrySize + wire.DescSize - 1) / wire.DescSize * wire.DescSize
	page := os.Getpagesize()
	dataOff = (descOff + n*wire.DescSize + page - 1) / page * page
	size = dataOff + n*slotBytes
	return ringOff, descOff, dataOff, (size + page - 1) / page * page
}

// admit takes a free slot within the uid's share, creates and formats the client's
// arena and eventfd and publishes the client to the workers. On failure it
// returns the errno the client is refused with.
func (s *Service) admit(conn *net.UnixConn, cred Credential) (*ClientCtx, syscall.Errno, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, syscall.ESHUTDOWN, errors.New("service closing")
	}
	u := s.uids[cred.UID]
	if u.clients >= s.cfg.MaxClientsPerUID {
		s.mu.Unlock()
		return nil, syscall.EAGAIN, fmt.Errorf("uid %d holds %d client slots (MaxClientsPerUID)", cred.UID, u.clients)
	}
	slot := slices.Index(s.used, false)
	if slot < 0 {
		s.mu.Unlock()
		return nil, syscall.EAGAIN, fmt.Errorf("no free client slot (%d clients)", len(s.used))
	}
	s.used[slot] = true
	u.clients++
	gen := s.gens[slot]
	s.mu.Unlock()

	c, err := s.newClient(conn, cred, slot, gen)
	if err != nil {
		s.freeSlot(slot, cred.UID)
		var e syscall.Errno
		if !errors.As(err, &e) {
			e = syscall.ENOMEM
		}
		return nil, e, err
	}
	if o, ok := s.cfg.Handler.(ClientOpener); ok {
		o.ClientOpened(c)
	}
	s.live.Add(1)
	s.admitted.Add(1)
	s.clients[slot].Store(c)
	s.mu.Lock()
	list := append(slices.Clone(*s.active.Load()), c)
	s.active.Store(&list)
	s.mu.Unlock()
	return c, 0, nil
}

// newClient makes a client's arena (header, ring, descriptors, data area) and its
// eventfd, registered with the workers' epoll set.
func (s *Service) newClient(conn *net.UnixConn, cred Credential, slot int, gen uint16) (_ *ClientCtx, err error) {
	n := s.cfg.DescsPerClient
	ringOff, descOff, dataOff, size := ArenaLayout(n, s.cfg.RingCap, s.cfg.SlotBytes)
	reg, err := shm.Create(fmt.Sprintf("polytropon-arena-%d", cred.PID), size, shm.Options{HugePages: s.cfg.HugePages})
	if err != nil {
		return nil, err
	}
	s.mapped.Add(1)
	efd := -1
	defer func() {
		if err != nil {
			if efd >= 0 {
				unix.Close(efd)
			}
			reg.Close()
			s.mapped.Add(-1)
		}
	}()
	mem := reg.Bytes()
	c := &ClientCtx{PID: cred.PID, UID: cred.UID, GID: cred.GID, Cred: cred, slot: uint16(slot), gen: gen, conn: conn,
		arena: reg, mem: mem, numDesc: uint32(n), descOff: uint32(descOff), quota: s.cfg.Quota,
		lim: wire.Limits{DataLo: uint32(dataOff), DataHi: uint32(len(mem))}, mask: uint64(s.cfg.RingCap - 1)}
	putArenaHeader(mem, n, ringOff, s.cfg.RingCap, descOff, dataOff, s.cfg.SlotBytes)
	if c.ring, err = shm.Words64(mem, ringOff, s.cfg.RingCap); err != nil {
		return nil, err
	}
	c.states = make([]*uint32, n)
	for i := range c.states {
		if c.states[i], err = shm.Uint32At(mem, descOff+i*wire.DescSize+wire.OffState); err != nil {
			return nil, err
		}
	}
	newHandleTable(c, s.cfg.MaxHandles)
	if efd, err = shm.NewEventfd(); err != nil {
		return nil, err
	}
	// Edge-triggered: every write by the client wakes one sleeping worker, and
	// nobody has to read the counter back (a client that writes it full only
	// stops its own wake-ups).
	if err = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(efd)}); err != nil {
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	c.efd = efd
	return c, nil
}

func putArenaHeader(mem []byte, n, ringOff, ringCap, descOff, dataOff, slotBytes int) {
	le32(mem, wire.ArenaOffMagic, wire.ArenaMagic)
	le32(mem, wire.ArenaOffVersion, wire.Version)
	le32(mem, wire.ArenaOffNumDesc, uint32(n))
	le32(mem, wire.ArenaOffDescOff, uint32(descOff))
	le32(mem, wire.ArenaOffDataOff, uint32(dataOff))
	le32(mem, wire.ArenaOffSlotBytes, uint32(slotBytes))
	size := uint64(len(mem))
	le32(mem, wire.ArenaOffSize, uint32(size))
	le32(mem, wire.ArenaOffSize+4, uint32(size>>32))
	le32(mem, wire.ArenaOffRingOff, uint32(ringOff))
	le32(mem, wire.ArenaOffRingCap, uint32(ringCap))
}

func (s *Service) freeSlot(slot int, uid uint32) {
	s.mu.Lock()
	s.used[slot] = false
	s.gens[slot]++
	if s.gens[slot] == 0 {
		s.gens[slot] = 1
	}
	if u := s.uids[uid]; u != nil {
		u.clients--
		s.dropUIDLocked(uid, u)
	}
	s.mu.Unlock()
}

// reclaim retires a client: no new request starts on it, in-flight ones finish,
// the handler releases its handles, its slot is freed, and once no worker can still
// be reading its ring the arena is unmapped.
func (s *Service) reclaim(c *ClientCtx) {
	c.dead.Store(true)
	s.mu.Lock()
	cur := *s.active.Load()
	if i := slices.Index(cur, c); i >= 0 {
		list := slices.Delete(slices.Clone(cur), i, i+1)
		s.active.Store(&list)
	}
	s.mu.Unlock()
	s.waitWarn(c, "in-flight requests", func() bool { return c.inflight.Load() == 0 })
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, c.efd, nil); err != nil {
		s.log.Warn("ipc: epoll_ctl del", zap.Error(err))
	}
	unix.Close(c.efd)
	s.clients[c.slot].Store(nil)
	s.cfg.Handler.ClientGone(c)
	c.releaseAllHandles()
	s.freeSlot(int(c.slot), c.UID)
	// Workers that loaded the previous client list may still be about to read
	// the ring: wait until each has started a new pass or sleeps.
	s.waitWarn(c, "workers' passes", s.quiescer())
	if err := c.arena.Close(); err != nil {
		s.log.Warn("ipc unmap arena", zap.Error(err))
	}
	s.mapped.Add(-1)
	s.live.Add(-1)
}

// quiescer returns a condition that holds once every worker running now has
// been outside a pass (asleep, gone, or at the start of a later pass) since the
// call: from then on, none holds a client list published before the call.
func (s *Service) quiescer() func() bool {
	s.workersMu.Lock()
	type seen struct {
		ws    *workerState
		epoch uint64
	}
	var busy []seen
	for _, ws := range s.wstates {
		if e := ws.epoch.Load(); e&1 == 1 {
			busy = append(busy, seen{ws, e})
		}
	}
	s.workersMu.Unlock()
	return func() bool {
		for len(busy) > 0 && busy[0].ws.epoch.Load() != busy[0].epoch {
			busy = busy[1:]
		}
		return len(busy) == 0
	}
}

// waitWarn waits for done with a growing sleep, warning once if it takes longer
// than ReclaimWarn.
func (s *Service) waitWarn(c *ClientCtx, what string, done func() bool) {
	start := time.Now()
	warned := false
	for wait := 10 * time.Microsecond; !done(); {
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Millisecond)
		if !warned && time.Since(start) > s.cfg.ReclaimWarn {
			warned = true
			s.log.Warn("ipc reclaim of a gone client still waits for "+what,
				zap.Int("slot", int(c.slot)), zap.Int32("pid", c.PID), zap.Int32("inflight", c.inflight.Load()))
		}
	}
}
