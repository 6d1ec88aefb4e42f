package back

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/logging"
	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/ipc/rcqb"
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
	// path) before acting on it, and moves payloads with shm.CopyData. It returns a
	// non-negative status or a negated errno, must not retain d or data, must not
	// allocate on the data path, and is called concurrently by several workers, also
	// for one client.
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

// Config configures a Service. Zero values take the defaults named on each field.
type Config struct {
	// SocketPath is where the service listens (SOCK_SEQPACKET). A stale socket file
	// left by a dead service is replaced.
	SocketPath string
	// Listener, when set, is the listening socket (SOCK_SEQPACKET) to serve,
	// made by a privileged parent for an unprivileged service; SocketPath
	// then only names it, and nothing is removed or created there.
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
	// SpinBudget is how many empty polls of the ring a worker makes before it sleeps
	// on it (default 2000; 0 sleeps at once).
	SpinBudget int
	// SpinTime is how long, beyond SpinBudget polls, a worker keeps polling an
	// empty ring before it sleeps (default 50 µs; negative: SpinBudget alone). A
	// client that sends its next request within it is served without a wake-up.
	SpinTime time.Duration
	// RingCap is the request ring's capacity, a power of two (default 1024).
	RingCap int
	// MaxClients bounds connected clients (default 64, at most 65535).
	MaxClients int
	// DescsPerClient is each client's number of descriptors (default 32).
	DescsPerClient int
	// SlotBytes is each descriptor's default data buffer (default 64 KiB).
	SlotBytes int
	// MaxHandles bounds each client's open handles (default 1024).
	MaxHandles int
	// HugePages backs ring and arenas with huge pages when available.
	HugePages bool
	// HandshakeTimeout bounds a connecting client's handshake (default 1 s).
	HandshakeTimeout time.Duration
	// ReclaimWarn is how long the reclaim of a dead client's arena waits for its
	// in-flight requests before it logs a warning (it keeps waiting: unmapping under
	// a running handler would fault). Default 5 s.
	ReclaimWarn time.Duration
	// Logger receives connection events and rate-limited bad-descriptor lines.
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
	def(&c.RingCap, 1024)
	def(&c.MaxClients, 64)
	def(&c.DescsPerClient, 32)
	def(&c.SlotBytes, 64<<10)
	def(&c.MaxHandles, 1024)
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
	case c.DescsPerClient < 1 || c.DescsPerClient > 4096:
		return fmt.Errorf("back: DescsPerClient %d, want 1..4096", c.DescsPerClient)
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
	Refused      int64
	Served       int64 // descriptors answered (including EINVAL answers)
	Rejected     int64 // descriptors answered EINVAL/ENAMETOOLONG by validation
	Dropped      int64 // references that named no live client or descriptor
	Queued       int64 // sum over dequeued requests of the requests still in the ring
	Workers      int   // running workers (SetWorkers)
	Retired      int64 // workers retired by SetWorkers
}

// Service is a running back driver.
type Service struct {
	cfg  Config
	log  *zap.Logger
	ln   *net.UnixListener
	ring *rcqb.Queue
	rreg *shm.Region

	// clients is indexed by slot; workers load entries atomically and lock nothing.
	clients []atomic.Pointer[ClientCtx]

	mu sync.Mutex
	// gens[slot] is the generation the slot's next client gets (never 0).
	gens   []uint16
	used   []bool
	conns  map[*net.UnixConn]struct{} // handshaking or admitted
	closed bool

	live, mapped, admitted, refused, served, rejected, dropped atomic.Int64
	queued                                                     atomic.Int64 // sum of ring lengths seen at dequeue
	badLog                                                     rateLimit
	stopping                                                   atomic.Bool

	wg      sync.WaitGroup // accept loop, watchers, handshakes
	workers sync.WaitGroup

	// workersMu serialises SetWorkers with itself and with Close: a worker must
	// not be added to the WaitGroup once Close waits on it.
	workersMu  sync.Mutex
	nextWorker int // the next worker's index; guarded by workersMu
	// cpuWorkers[j] counts live workers pinned to CPUs[j]; guarded by
	// workersMu. A new worker takes the least loaded CPU: any worker may be
	// the one a retire reference reaches, so index modulo CPUs would pile
	// workers onto one CPU after a shrink and a grow.
	cpuWorkers     []int
	workersClosed  bool // guarded by workersMu
	liveWorkers    atomic.Int32
	targetWorkers  atomic.Int32
	retiredWorkers atomic.Int64
}

// retireRef is the ring value SetWorkers enqueues to retire a worker: its client
// slot (0xffff) is past MaxClients, so it can never name a client. A client may
// forge it too; that retires nobody while the workers are at their target.
const retireRef = ^uint64(0)

// Listen creates the ring, listens on cfg.SocketPath and starts the workers.
func Listen(cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: logging.OrNop(cfg.Logger)}
	// A service run by root is the daemon's (serve starts it): it uses the daemon's
	// profile; one run by a user for itself uses that user's.
	shm.UseCopyProfile(os.Geteuid() == 0, s.log)
	s.badLog.every = time.Second
	size, err := rcqb.Size(cfg.RingCap)
	if err != nil {
		return nil, fmt.Errorf("back: ring capacity %d: %w", cfg.RingCap, err)
	}
	s.rreg, err = shm.Create("polytropon-ring", size, shm.Options{HugePages: cfg.HugePages})
	if err != nil {
		return nil, err
	}
	s.ring, err = rcqb.Init(s.rreg.Bytes(), cfg.RingCap, rcqb.WithSpin(0))
	if err != nil {
		s.rreg.Close()
		return nil, fmt.Errorf("back: ring: %w", err)
	}
	if cfg.Listener != nil {
		s.ln = cfg.Listener
	} else {
		if err := removeStaleSocket(cfg.SocketPath); err != nil {
			s.rreg.Close()
			return nil, err
		}
		s.ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.SocketPath, Net: "unixpacket"})
		if err != nil {
			s.rreg.Close()
			return nil, fmt.Errorf("back: listen %s: %w", cfg.SocketPath, err)
		}
	}
	s.clients = make([]atomic.Pointer[ClientCtx], cfg.MaxClients)
	s.gens = make([]uint16, cfg.MaxClients)
	for i := range s.gens {
		s.gens[i] = 1
	}
	s.used = make([]bool, cfg.MaxClients)
	s.conns = make(map[*net.UnixConn]struct{})
	s.targetWorkers.Store(int32(cfg.Workers))
	for i := 0; i < cfg.Workers; i++ {
		s.spawnWorkerLocked()
	}
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info("ipc service listening", zap.String("socket", cfg.SocketPath), zap.Int("workers", cfg.Workers),
		zap.Int("ring", cfg.RingCap), zap.Bool("hugeRing", s.rreg.Huge()))
	return s, nil
}

// spawnWorkerLocked starts one more worker; workersMu is held (or the service not
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
	s.liveWorkers.Add(1)
	s.workers.Add(1)
	go s.worker(i, cpu)
}

// QueueLen estimates the requests waiting in the ring.
func (s *Service) QueueLen() int { return s.ring.Len() }

// Workers is the number of running workers.
func (s *Service) Workers() int { return int(s.liveWorkers.Load()) }

// SetWorkers changes the number of workers at run time (1..256) and returns the
// number it aims at. Growing starts workers at once. Shrinking enqueues one retire
// reference per surplus worker: whichever worker takes it exits after finishing
// what it was serving, so no request is dropped or served twice; a worker asleep
// on the empty ring is woken by it. Until they are taken, Workers() may exceed
// the target.
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
	for surplus := live - n; surplus > 0; surplus-- {
		// Bounded: a ring full for a whole second means the workers are stuck;
		// the surplus then retires at a later SetWorkers.
		ok := false
		for try := 0; try < 1000 && !ok; try++ {
			if ok = s.ring.TryEnqueue(retireRef); !ok {
				time.Sleep(time.Millisecond)
			}
		}
		if !ok {
			return n, errors.New("back: ring full; workers not retired yet")
		}
	}
	return n, nil
}

// retire is a worker's answer to a retire reference: it exits (true) only while
// more workers run than the target, so that stale or forged references retire
// nobody. Under workersMu, so that a SetWorkers growing meanwhile sees either
// the worker live (and the target met) or gone (and starts another).
func (s *Service) retire(cpu int) bool {
	s.workersMu.Lock()
	defer s.workersMu.Unlock()
	if s.liveWorkers.Load() <= s.targetWorkers.Load() {
		return false
	}
	s.liveWorkers.Add(-1)
	s.retiredWorkers.Add(1)
	if cpu >= 0 {
		s.cpuWorkers[cpu]--
	}
	return true
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
		Queued:       s.queued.Load(),
		Workers:      s.Workers(),
		Retired:      s.retiredWorkers.Load(),
	}
}

// Addr returns the socket path.
func (s *Service) Addr() string { return s.cfg.SocketPath }

// Close stops accepting, disconnects every client (their calls fail with ENOTCONN),
// stops the workers, reclaims every arena and unmaps the ring.
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
	s.wg.Wait() // watchers reclaim their clients, workers still serve in-flight requests
	s.ring.Close()
	s.workers.Wait()
	return s.rreg.Close()
}

func (s *Service) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("ipc accept", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // EMFILE and friends: do not spin
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
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
// and reclaims it.
func (s *Service) serveConn(conn *net.UnixConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	c, err := s.handshake(conn)
	if err != nil {
		s.log.Info("ipc handshake failed", zap.Error(err))
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

func (s *Service) refuse(conn *net.UnixConn, errno syscall.Errno) {
	// Counted before the answer goes out: a client that has read its refusal must
	// find it in Stats.
	s.refused.Add(1)
	var b [wire.WelcomeSize]byte
	w := wire.Welcome{Version: wire.Version, Status: int32(errno)}
	w.Put(b[:])
	_ = shm.SendFds(conn, b[:])
}

func (s *Service) handshake(conn *net.UnixConn) (*ClientCtx, error) {
	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var hb [wire.HelloSize + 1]byte
	n, err := conn.Read(hb[:])
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	var hello wire.Hello
	if err := hello.Get(hb[:n]); err != nil {
		s.refuse(conn, syscall.EPROTO)
		return nil, err
	}
	if hello.Version != wire.Version {
		s.refuse(conn, syscall.EPROTONOSUPPORT)
		return nil, fmt.Errorf("client protocol version %d, service speaks %d", hello.Version, wire.Version)
	}
	cred, err := peerCred(conn)
	if err != nil {
		s.refuse(conn, syscall.EACCES)
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	allow := s.cfg.Allow
	if allow == nil {
		allow = s.defaultAllow
	}
	if err := allow(cred); err != nil {
		s.refuse(conn, syscall.EACCES)
		s.log.Warn("ipc client refused", zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID),
			zap.Uint32("gid", cred.GID), zap.Error(err))
		return nil, err
	}
	c, err := s.admit(conn, cred)
	if err != nil {
		s.refuse(conn, syscall.EAGAIN)
		return nil, err
	}
	w := wire.Welcome{Version: wire.Version, Slot: c.slot, Gen: c.gen, RingCap: uint32(s.ring.Cap()),
		NumDesc: c.numDesc, SlotBytes: uint32(s.cfg.SlotBytes), ArenaSize: uint64(len(c.mem))}
	var wb [wire.WelcomeSize]byte
	w.Put(wb[:])
	if err := shm.SendFds(conn, wb[:], s.rreg.Fd(), c.arena.Fd()); err != nil {
		s.reclaim(c)
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	s.log.Debug("ipc client admitted", zap.Int("slot", int(c.slot)), zap.Int32("pid", cred.PID), zap.Uint32("uid", cred.UID))
	return c, nil
}

// ArenaLayout returns the arena layout for n descriptors of slotBytes buffers: the
// offset of descriptor 0, the start of the data area, and the arena size.
func ArenaLayout(n, slotBytes int) (descOff, dataOff, size int) {
	descOff = wire.ArenaHeaderSize
	page := os.Getpagesize()
	dataOff = (descOff + n*wire.DescSize + page - 1) / page * page
	size = dataOff + n*slotBytes
	return descOff, dataOff, (size + page - 1) / page * page
}

// admit takes a free slot, creates and formats the client's arena and publishes the
// client to the workers.
func (s *Service) admit(conn *net.UnixConn, cred Credential) (*ClientCtx, error) {
	s.mu.Lock()
	slot := -1
	for i, u := range s.used {
		if !u {
			slot = i
			break
		}
	}
	if slot < 0 || s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("no free client slot (%d clients)", len(s.used))
	}
	s.used[slot] = true
	gen := s.gens[slot]
	s.mu.Unlock()

	n := s.cfg.DescsPerClient
	descOff, dataOff, size := ArenaLayout(n, s.cfg.SlotBytes)
	reg, err := shm.Create(fmt.Sprintf("polytropon-arena-%d", cred.PID), size, shm.Options{HugePages: s.cfg.HugePages})
	if err != nil {
		s.freeSlot(slot)
		return nil, err
	}
	s.mapped.Add(1)
	mem := reg.Bytes()
	c := &ClientCtx{PID: cred.PID, UID: cred.UID, GID: cred.GID, Cred: cred, slot: uint16(slot), gen: gen, conn: conn,
		arena: reg, mem: mem, numDesc: uint32(n), descOff: uint32(descOff),
		lim: wire.Limits{DataLo: uint32(dataOff), DataHi: uint32(len(mem))}}
	putArenaHeader(mem, n, descOff, dataOff, s.cfg.SlotBytes)
	c.states = make([]*uint32, n)
	for i := range c.states {
		p, err := shm.Uint32At(mem, descOff+i*wire.DescSize+wire.OffState)
		if err != nil {
			reg.Close()
			s.mapped.Add(-1)
			s.freeSlot(slot)
			return nil, err
		}
		c.states[i] = p
	}
	newHandleTable(c, s.cfg.MaxHandles)
	if o, ok := s.cfg.Handler.(ClientOpener); ok {
		o.ClientOpened(c)
	}
	s.live.Add(1)
	s.admitted.Add(1)
	s.clients[slot].Store(c)
	return c, nil
}

func putArenaHeader(mem []byte, n, descOff, dataOff, slotBytes int) {
	le := func(off int, v uint32) {
		mem[off], mem[off+1], mem[off+2], mem[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	le(wire.ArenaOffMagic, wire.ArenaMagic)
	le(wire.ArenaOffVersion, wire.Version)
	le(wire.ArenaOffNumDesc, uint32(n))
	le(wire.ArenaOffDescOff, uint32(descOff))
	le(wire.ArenaOffDataOff, uint32(dataOff))
	le(wire.ArenaOffSlotBytes, uint32(slotBytes))
	size := uint64(len(mem))
	le(wire.ArenaOffSize, uint32(size))
	le(wire.ArenaOffSize+4, uint32(size>>32))
}

func (s *Service) freeSlot(slot int) {
	s.mu.Lock()
	s.used[slot] = false
	s.gens[slot]++
	if s.gens[slot] == 0 {
		s.gens[slot] = 1
	}
	s.mu.Unlock()
}

// reclaim retires a client: no new request starts on it, in-flight ones finish, then
// the handler releases its handles and the arena is unmapped.
func (s *Service) reclaim(c *ClientCtx) {
	c.dead.Store(true)
	start := time.Now()
	warned := false
	for wait := 10 * time.Microsecond; c.inflight.Load() != 0; {
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Millisecond)
		if !warned && time.Since(start) > s.cfg.ReclaimWarn {
			warned = true
			s.log.Warn("ipc reclaim still waits for in-flight requests of a dead client",
				zap.Int("slot", int(c.slot)), zap.Int32("pid", c.PID), zap.Int32("inflight", c.inflight.Load()))
		}
	}
	s.clients[c.slot].Store(nil)
	s.cfg.Handler.ClientGone(c)
	if err := c.arena.Close(); err != nil {
		s.log.Warn("ipc unmap arena", zap.Error(err))
	}
	s.mapped.Add(-1)
	s.live.Add(-1)
	s.freeSlot(int(c.slot))
}
