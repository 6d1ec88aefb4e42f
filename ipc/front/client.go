package front

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// Config configures Dial. Zero values take the defaults named on each field.
type Config struct {
	// SocketPath is the service's socket.
	SocketPath string
	// SpinIters is how many times a call polls for its answer before sleeping
	// (default 4000; negative sleeps at once).
	SpinIters int
	// SpinTime is how long a call keeps polling, beyond SpinIters, before it
	// sleeps (default 50 µs; negative: SpinIters alone). A sleep costs a futex
	// wake on each side, tens of microseconds on a busy machine, so a call whose
	// answer takes a few tens of microseconds (an open, a create) is cheaper spun
	// for than slept for.
	SpinTime time.Duration
	// WaitSlice bounds each futex sleep; a dead service is detected within about
	// one slice (default 20 ms).
	WaitSlice time.Duration
	// DialTimeout bounds connect plus handshake (default 2 s).
	DialTimeout time.Duration
	// CallTimeout bounds a call's wait for a descriptor and for its answer
	// from a service that is alive but does not answer (a hung handler, a
	// stopped process); the call then fails with ETIMEDOUT and its outcome is
	// unknown, as with a soft NFS mount: a write may still be applied later.
	// Zero means DefaultCallTimeout; a negative value waits as long as the
	// service lives (a hard mount: a stopped service stops its callers).
	CallTimeout time.Duration
	// Logger receives the copy-profile warning at the first Dial; nil discards it.
	Logger *zap.Logger
}

// DefaultCallTimeout is CallTimeout's default: 30 s, the Linux SCSI disk driver's
// default command timeout (/sys/block/*/device/timeout), which is the time after
// which the kernel itself gives up on one request to a device that stays silent.
// One direct-path request is one operation of the service's stack (at most
// 1 MiB of I/O, or one fsync), which on a working device completes well within
// that; a service that answers nothing for 30 s is hung (serve's health check
// restarts such a service much sooner, and the client then fails with ENOTCONN
// instead). A caller whose single requests may legitimately take longer (an
// fsync that flushes a large write-back cache to a slow device) sets a longer
// CallTimeout, or a negative one to wait for ever.
const DefaultCallTimeout = 30 * time.Second

// Errors of the transport. Calls return syscall.Errno values so that callers (fslib)
// pass them through as file errors; these wrap one.
var (
	// ErrRefused: the service refused the handshake (credentials, version, no slot).
	ErrRefused = errors.New("front: service refused the connection")
	// ErrBadWelcome: the service's answer or regions do not make sense.
	ErrBadWelcome = errors.New("front: malformed handshake answer")
)

// Client is one connection to a service.
type Client struct {
	cfg       Config
	conn      *net.UnixConn
	sockFd    int // dup of the socket, for liveness polls without the netpoller
	statusReg *shm.Region
	arena     *shm.Region
	efd       int     // this client's eventfd: written to wake a sleeping worker
	sleepers  *uint32 // the service's sleeping workers, in the read-only status page
	mem       []byte
	ring      []uint64 // the submission ring, in the arena
	mask      uint64
	slot      uint16
	gen       uint16
	numDesc   uint32
	descOff   uint32
	dataOff   uint32
	slotSize  uint32
	states    []*uint32
	free      chan uint32
	// orphan[i] is set while descriptor i belongs to a call that timed out
	// and the service has not answered yet: the call's release must not
	// hand it out (the service may still write its buffer); a reaper
	// goroutine returns it once the answer comes.
	orphan  []atomic.Bool
	orphans atomic.Int32
	// reapMu orders reaper starts (timed-out calls only) against Close,
	// which stops them before the arena is unmapped.
	reapMu      sync.Mutex
	reapStopped bool
	reapers     sync.WaitGroup
	stopReap    chan struct{} // closed by Close
	reqID       atomic.Uint64
	broken      atomic.Bool
	closed      atomic.Bool
	// refs counts the users of the mappings and descriptors: one for the
	// open Client, dropped by Close, and one per call from acquire to done.
	// Whoever drops the last one releases them, so Close never unmaps the
	// arena under a call still running on another goroutine.
	refs        atomic.Int64
	releaseOnce sync.Once
	releaseErr  error
	wakes       atomic.Uint64 // eventfd writes (tests: no system call while a worker is awake)

	_ cpu.CacheLinePad
	// tail is the next ring position this process publishes at: process
	// memory, so that several goroutines reserve positions with one atomic add
	// and the service never has to trust a counter the client could rewrite.
	tail atomic.Uint64
	_    cpu.CacheLinePad
}

// Dial connects to the service at cfg.SocketPath and completes the handshake.
func Dial(cfg Config) (*Client, error) {
	// Defaults asked for: decided once connected (sharesOneCPU).
	autoSpin := cfg.SpinIters == 0 && cfg.SpinTime == 0
	if cfg.SpinIters == 0 {
		cfg.SpinIters = 4000
	} else if cfg.SpinIters < 0 {
		cfg.SpinIters = 0
		cfg.SpinTime = -1 // sleep at once
	}
	if cfg.SpinTime == 0 {
		cfg.SpinTime = 50 * time.Microsecond
	} else if cfg.SpinTime < 0 {
		cfg.SpinTime = 0
	}
	if cfg.WaitSlice <= 0 {
		cfg.WaitSlice = 20 * time.Millisecond
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	shm.UseCopyProfile(false, cfg.Logger)
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: cfg.SocketPath, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("front: connect %s: %w", cfg.SocketPath, err)
	}
	if autoSpin && sharesOneCPU(conn) {
		// Spinning for an answer that can only be computed on the CPU we
		// spin on delays it: sleep at once, so the service runs now.
		cfg.SpinIters, cfg.SpinTime = 0, 0
	}
	c := &Client{cfg: cfg, conn: conn, sockFd: -1, efd: -1}
	if err := c.handshake(); err != nil {
		c.release()
		return nil, err
	}
	c.refs.Store(1) // the open Client's, dropped by Close
	return c, nil
}

// CallTimeout returns the bound on each call's wait (after defaults; negative:
// none).
func (c *Client) CallTimeout() time.Duration { return c.cfg.CallTimeout }

// SleepsAtOnce reports whether the client's calls sleep without spinning:
// configured so (SpinIters < 0), or chosen at Dial because the client and
// the service can only run on one and the same CPU.
func (c *Client) SleepsAtOnce() bool { return c.cfg.SpinIters == 0 && c.cfg.SpinTime == 0 }

// sharesOneCPU reports whether this process and the service at the other end
// of conn may run on one CPU only, the same one: the cpuset of a pool with a
// single reserved core holding both, or both pinned there. A polling call then
// takes the CPU from the service it waits for (measured many times slower than
// sleeping at once: docs/results/2026-11-21/ipc-front.md). Unknown (no peer
// pid, an affinity that cannot be read) counts as not shared.
func sharesOneCPU(conn *net.UnixConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil || cred.Pid <= 0 {
		return false
	}
	var mine, theirs unix.CPUSet
	if unix.SchedGetaffinity(0, &mine) != nil || unix.SchedGetaffinity(int(cred.Pid), &theirs) != nil {
		return false
	}
	if mine.Count() != 1 || theirs.Count() != 1 {
		return false
	}
	for i := 0; i < len(mine)*64; i++ {
		if mine.IsSet(i) {
			return theirs.IsSet(i)
		}
	}
	return false
}

func (c *Client) handshake() error {
	_ = c.conn.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	var hb [wire.HelloSize]byte
	(&wire.Hello{Version: wire.Version}).Put(hb[:])
	_, herr := c.conn.Write(hb[:])
	// Read the answer even when the Hello could not be sent: a service that
	// refuses a connection at once (its uid over a quota) shuts the socket,
	// and its refusal is waiting.
	var wb [wire.WelcomeSize + 1]byte
	n, fds, err := shm.RecvFds(c.conn, wb[:])
	if err != nil {
		if herr != nil {
			return fmt.Errorf("front: send hello: %w", herr)
		}
		return fmt.Errorf("front: handshake: %w", err)
	}
	closeFds := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	var w wire.Welcome
	if err := w.Get(wb[:n]); err != nil {
		closeFds()
		return fmt.Errorf("%w: %v", ErrBadWelcome, err)
	}
	if w.Status != 0 {
		closeFds()
		if w.Status < 0 {
			return fmt.Errorf("%w: status %d", ErrBadWelcome, w.Status)
		}
		return fmt.Errorf("%w: %w", ErrRefused, syscall.Errno(w.Status))
	}
	if w.Version != wire.Version || len(fds) != wire.WelcomeFds {
		closeFds()
		return fmt.Errorf("%w: version %d with %d fds", ErrBadWelcome, w.Version, len(fds))
	}
	if herr != nil {
		closeFds()
		return fmt.Errorf("front: send hello: %w", herr)
	}
	_ = c.conn.SetDeadline(time.Time{})
	// From here each fd is owned by the field it lands in, and release()
	// closes whatever the handshake got to.
	c.efd = fds[wire.WelcomeFdEvent]
	c.statusReg, err = shm.OpenReadOnly(fds[wire.WelcomeFdStatus])
	if err != nil {
		unix.Close(fds[wire.WelcomeFdArena])
		return err
	}
	c.arena, err = shm.Open(fds[wire.WelcomeFdArena])
	if err != nil {
		return err
	}
	if !shm.IsEventfd(c.efd) {
		return fmt.Errorf("%w: the wake-up fd is not an eventfd", ErrBadWelcome)
	}
	if err := c.statusPage(&w); err != nil {
		return err
	}
	if err := c.layout(&w); err != nil {
		return err
	}
	c.sockFd, err = dupSocket(c.conn)
	if err != nil {
		return err
	}
	return nil
}

// statusPage checks the service's status page and finds its sleeper word.
func (c *Client) statusPage(w *wire.Welcome) error {
	m := c.statusReg.Bytes()
	if len(m) < wire.StatusPageSize || uint64(len(m)) != uint64(w.StatusSize) {
		return fmt.Errorf("%w: status page of %d bytes, welcome says %d", ErrBadWelcome, len(m), w.StatusSize)
	}
	u32 := func(off int) uint32 {
		return uint32(m[off]) | uint32(m[off+1])<<8 | uint32(m[off+2])<<16 | uint32(m[off+3])<<24
	}
	if u32(wire.StatusOffMagic) != wire.StatusMagic || u32(wire.StatusOffVersion) != wire.Version {
		return fmt.Errorf("%w: status page magic or version", ErrBadWelcome)
	}
	var err error
	c.sleepers, err = shm.Uint32At(m, wire.StatusOffSleepers)
	return err
}

// layout reads the arena header and checks it against the welcome and the mapping,
// so that a confused service cannot make the client index outside its arena.
func (c *Client) layout(w *wire.Welcome) error {
	c.mem = c.arena.Bytes()
	if uint64(len(c.mem)) != w.ArenaSize || len(c.mem) < wire.ArenaHeaderSize {
		return fmt.Errorf("%w: arena of %d bytes, welcome says %d", ErrBadWelcome, len(c.mem), w.ArenaSize)
	}
	u32 := func(off int) uint32 {
		return uint32(c.mem[off]) | uint32(c.mem[off+1])<<8 | uint32(c.mem[off+2])<<16 | uint32(c.mem[off+3])<<24
	}
	if u32(wire.ArenaOffMagic) != wire.ArenaMagic || u32(wire.ArenaOffVersion) != wire.Version {
		return fmt.Errorf("%w: arena header magic or version", ErrBadWelcome)
	}
	c.numDesc, c.descOff, c.dataOff, c.slotSize = u32(wire.ArenaOffNumDesc), u32(wire.ArenaOffDescOff),
		u32(wire.ArenaOffDataOff), u32(wire.ArenaOffSlotBytes)
	ringOff, ringCap := u32(wire.ArenaOffRingOff), u32(wire.ArenaOffRingCap)
	size := uint64(len(c.mem))
	switch {
	case c.numDesc == 0 || c.numDesc != w.NumDesc || c.numDesc > 1<<16:
		return fmt.Errorf("%w: %d descriptors", ErrBadWelcome, c.numDesc)
	case c.slotSize != w.SlotBytes || c.slotSize < 2*wire.PathMax || c.slotSize > wire.MaxIO:
		return fmt.Errorf("%w: slot size %d", ErrBadWelcome, c.slotSize)
	case ringCap != w.RingCap || ringCap < c.numDesc || ringCap&(ringCap-1) != 0 || ringCap > 1<<16:
		// An honest client never has more entries in its ring than
		// descriptors: a ring at least that large never overruns.
		return fmt.Errorf("%w: ring of %d entries for %d descriptors", ErrBadWelcome, ringCap, c.numDesc)
	case ringOff < wire.ArenaHeaderSize || ringOff%wire.RingEntrySize != 0 ||
		uint64(ringOff)+uint64(ringCap)*wire.RingEntrySize > uint64(c.descOff):
		return fmt.Errorf("%w: ring area", ErrBadWelcome)
	case c.descOff%wire.DescSize != 0 || c.descOff < wire.ArenaHeaderSize ||
		uint64(c.descOff)+uint64(c.numDesc)*wire.DescSize > uint64(c.dataOff):
		return fmt.Errorf("%w: descriptor area", ErrBadWelcome)
	case uint64(c.dataOff)+uint64(c.numDesc)*uint64(c.slotSize) > size:
		return fmt.Errorf("%w: data area beyond the arena", ErrBadWelcome)
	}
	var err error
	if c.ring, err = shm.Words64(c.mem, int(ringOff), int(ringCap)); err != nil {
		return fmt.Errorf("%w: ring: %v", ErrBadWelcome, err)
	}
	c.mask = uint64(ringCap - 1)
	c.slot, c.gen = w.Slot, w.Gen
	c.states = make([]*uint32, c.numDesc)
	for i := range c.states {
		p, err := shm.Uint32At(c.mem, int(c.descOff)+i*wire.DescSize+wire.OffState)
		if err != nil {
			return err
		}
		c.states[i] = p
	}
	c.orphan = make([]atomic.Bool, c.numDesc)
	c.stopReap = make(chan struct{})
	c.free = make(chan uint32, c.numDesc)
	for i := uint32(0); i < c.numDesc; i++ {
		c.free <- i
	}
	return nil
}

func dupSocket(conn *net.UnixConn) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return nfd, derr
}

// alive polls the socket without blocking: the service never writes after the
// handshake, so readable, hang-up or error all mean it is gone.
func (c *Client) alive() bool {
	fds := [1]unix.PollFd{{Fd: int32(c.sockFd), Events: unix.POLLIN | unix.POLLRDHUP}}
	for range 3 {
		n, err := unix.Poll(fds[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		return n == 0
	}
	return true
}

// Close disconnects: the service reclaims the arena. Calls started after Close
// fail with ENOTCONN; Close does not wait for calls in flight on other
// goroutines, which end as they would have (an answer, a timeout, a dead
// service): the last of them disconnects and unmaps, so a Close racing a call
// never pulls memory from under it.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.broken.Store(true)
	if c.stopReap != nil {
		// Reapers touch the arena: they must be gone before it is unmapped.
		// Each notices within one WaitSlice.
		c.reapMu.Lock()
		c.reapStopped = true
		c.reapMu.Unlock()
		close(c.stopReap)
		c.reapers.Wait()
	}
	if c.refs.Add(-1) > 0 {
		// Calls still run on other goroutines: the last one to finish
		// releases the mappings; they fail with ENOTCONN or get their
		// answer, and nothing faults.
		return nil
	}
	return c.releaseShared()
}

func (c *Client) unref() {
	if c.refs.Add(-1) == 0 {
		_ = c.releaseShared()
	}
}

// releaseShared releases the connection and mappings once, whoever asks first
// after the last reference went.
func (c *Client) releaseShared() error {
	c.releaseOnce.Do(func() { c.releaseErr = c.release() })
	return c.releaseErr
}

func (c *Client) release() error {
	var errs []error
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	if c.sockFd >= 0 {
		errs = append(errs, unix.Close(c.sockFd))
		c.sockFd = -1
	}
	// Called once no call can run on the mappings any more (refs), or for a
	// Client whose handshake failed.
	if c.arena != nil {
		errs = append(errs, c.arena.Close())
	}
	if c.statusReg != nil {
		errs = append(errs, c.statusReg.Close())
	}
	if c.efd >= 0 {
		errs = append(errs, unix.Close(c.efd))
		c.efd = -1
	}
	return errors.Join(errs...)
}

// Descriptors returns how many requests may be in flight at once.
func (c *Client) Descriptors() int { return int(c.numDesc) }

// MaxIO returns the largest payload one request carries; ReadAt and WriteAt split
// larger ones.
func (c *Client) MaxIO() int { return int(c.slotSize) }

func (c *Client) acquire() (uint32, error) {
	if c.broken.Load() {
		return 0, syscall.ENOTCONN
	}
	// The reference first, then the check: a Close that sets broken after
	// this check sees the reference and leaves the release to done.
	c.refs.Add(1)
	if c.broken.Load() {
		c.unref()
		return 0, syscall.ENOTCONN
	}
	var idx uint32
	select {
	case idx = <-c.free:
	default:
		if err := c.acquireSlow(&idx); err != nil {
			c.unref()
			return 0, err
		}
	}
	if c.broken.Load() {
		c.free <- idx
		c.unref()
		return 0, syscall.ENOTCONN
	}
	return idx, nil
}

// done ends a call that acquire started: the descriptor goes back (or to a
// reaper) and the call's reference is dropped.
func (c *Client) done(idx uint32) {
	c.releaseDesc(idx)
	c.unref()
}

// acquireSlow waits for a descriptor when all are in flight: at most CallTimeout
// (every descriptor may be held by calls to a hung service), for ever when it is
// negative.
func (c *Client) acquireSlow(idx *uint32) error {
	if c.cfg.CallTimeout <= 0 {
		*idx = <-c.free
		return nil
	}
	t := time.NewTimer(c.cfg.CallTimeout)
	defer t.Stop()
	select {
	case *idx = <-c.free:
		return nil
	case <-t.C:
		return syscall.ETIMEDOUT
	}
}

func (c *Client) releaseDesc(idx uint32) {
	if c.orphan[idx].Load() {
		// The call timed out: the service still owns the descriptor. The
		// reaper starts only now, when the call is done with it, so that it
		// cannot return the index to the free list before this release.
		c.reapMu.Lock()
		defer c.reapMu.Unlock()
		if c.reapStopped {
			return // closing: the arena goes away, nothing to reuse
		}
		c.reapers.Add(1)
		go c.reap(idx)
		return
	}
	c.free <- idx
}

// Orphans returns how many descriptors wait for answers to calls that timed out.
func (c *Client) Orphans() int { return int(c.orphans.Load()) }

// reap waits, as long as the service lives, for the answer to the call that
// timed out on descriptor idx, then frees the descriptor. On a dead service the
// descriptor is never reused (the client is broken anyway).
func (c *Client) reap(idx uint32) {
	defer c.reapers.Done()
	st := c.states[idx]
	for {
		if atomic.LoadUint32(st) == wire.StateDone {
			break
		}
		select {
		case <-c.stopReap:
			return
		default:
		}
		if atomic.LoadUint32(st) == wire.StateSleeping {
			_ = shm.FutexWait(st, wire.StateSleeping, c.cfg.WaitSlice)
		} else {
			time.Sleep(time.Millisecond)
		}
		if atomic.LoadUint32(st) != wire.StateDone && !c.alive() {
			c.broken.Store(true)
			return
		}
	}
	b := c.desc(idx)
	var req wire.Desc
	req.Decode(b)
	status, result := wire.Reply(b)
	atomic.StoreUint32(st, wire.StateFree)
	c.orphans.Add(-1)
	c.orphan[idx].Store(false)
	if status >= 0 && (req.Op == wire.OpOpen || req.Op == wire.OpCreate || req.Op == wire.OpLock) {
		// The service granted a handle (or a lock) to a call that gave up:
		// nobody else will ever close it, and a lock would stay held until
		// the client disconnects. Close it with this descriptor; if that
		// times out too, the release hands the descriptor to a new reaper.
		d := wire.Desc{Op: wire.OpClose, Handle: result}
		_, _, _ = c.roundTrip(idx, &d)
		c.releaseDesc(idx)
		return
	}
	c.free <- idx
}

func (c *Client) desc(idx uint32) []byte {
	off := c.descOff + idx*wire.DescSize
	return c.mem[off : off+wire.DescSize : off+wire.DescSize]
}

func (c *Client) bufOff(idx uint32) uint32 { return c.dataOff + idx*c.slotSize }

func (c *Client) buf(idx uint32) []byte {
	off := c.bufOff(idx)
	return c.mem[off : off+c.slotSize : off+c.slotSize]
}

// roundTrip publishes d in descriptor idx and waits for the answer. On a transport
// failure the descriptor is not returned to the caller's release (it may still be
// referenced) and the client is marked broken.
func (c *Client) roundTrip(idx uint32, d *wire.Desc) (int32, uint64, error) {
	d.Version = wire.Version
	return c.submit(idx, d)
}

func (c *Client) submit(idx uint32, d *wire.Desc) (int32, uint64, error) {
	b := c.desc(idx)
	st := c.states[idx]
	d.ReqID = c.reqID.Add(1)
	d.EncodeRequest(b)
	atomic.StoreUint32(st, wire.StateSubmitted)
	c.publish(idx)
	if err := c.wait(st); err != nil {
		if err == syscall.ETIMEDOUT {
			c.orphan[idx].Store(true)
			c.orphans.Add(1)
		}
		return 0, 0, err
	}
	status, result := wire.Reply(b)
	atomic.StoreUint32(st, wire.StateFree)
	return status, result, nil
}

// publish puts descriptor idx in the submission ring and wakes a worker if one
// sleeps. The ring never overruns: a position is reserved only by a call that
// holds a descriptor, and descriptors are released only after their answer, which
// comes after the service took their position; so at most numDesc positions are
// untaken, and the ring has at least that many entries.
//
// The entry's atomic store comes before the load of the sleeper count (both
// sequentially consistent): a worker that counted itself a sleeper before this
// load scans the rings again before it blocks and finds this entry, or this load
// sees it and the eventfd write wakes it (ipc/back's package doc). While a worker
// is awake no system call is made.
func (c *Client) publish(idx uint32) {
	p := c.tail.Add(1) - 1
	atomic.StoreUint64(&c.ring[p&c.mask], wire.RingEntry(wire.RingSeq(p), idx))
	if atomic.LoadUint32(c.sleepers) != 0 {
		c.wakes.Add(1)
		// EAGAIN (a counter at its maximum) means readable already; any other
		// error leaves the call to the liveness checks of wait.
		_ = shm.EventfdWrite(c.efd)
	}
}

// Wakes returns how many times this client wrote its eventfd (for tests).
func (c *Client) Wakes() uint64 { return c.wakes.Load() }

func (c *Client) wait(st *uint32) error {
	for i := 0; i < c.cfg.SpinIters; i++ {
		if atomic.LoadUint32(st) == wire.StateDone {
			return nil
		}
	}
	if c.cfg.SpinTime > 0 {
		// Polls the clock once per 128 polls of the state word: the vDSO clock
		// costs about as much as 20 polls.
		start := time.Now()
		for {
			for range 128 {
				if atomic.LoadUint32(st) == wire.StateDone {
					return nil
				}
			}
			if time.Since(start) >= c.cfg.SpinTime {
				break
			}
			// Past the first microseconds the service is likely waiting for a
			// CPU: offer this one (a no-op when nothing else is runnable here).
			shm.Yield()
		}
	}
	var deadline time.Time
	if c.cfg.CallTimeout > 0 {
		deadline = time.Now().Add(c.cfg.CallTimeout)
	}
	for {
		if atomic.CompareAndSwapUint32(st, wire.StateSubmitted, wire.StateSleeping) ||
			atomic.LoadUint32(st) == wire.StateSleeping {
			slice := c.cfg.WaitSlice
			if !deadline.IsZero() {
				slice = max(min(slice, time.Until(deadline)), time.Microsecond)
			}
			err := shm.FutexWait(st, wire.StateSleeping, slice)
			if err != nil && err != unix.ETIMEDOUT && err != unix.EINTR {
				c.broken.Store(true)
				return syscall.EIO
			}
		}
		if atomic.LoadUint32(st) == wire.StateDone {
			return nil
		}
		if !c.alive() {
			c.broken.Store(true)
			return syscall.ENOTCONN
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return syscall.ETIMEDOUT
		}
	}
}

// Submitted returns how many descriptors this client has submitted (each answered
// exactly once, or the call failed with a transport error).
func (c *Client) Submitted() uint64 { return c.reqID.Load() }

// Broken reports whether the client lost its service (every call fails ENOTCONN).
func (c *Client) Broken() bool { return c.broken.Load() }
