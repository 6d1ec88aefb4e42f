package back

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// workerState is one worker's own memory.
type workerState struct {
	_ cpu.CacheLinePad
	// epoch is odd while the worker is in a pass over the client list (it may
	// hold a client from the list it loaded) and even while it sleeps or after
	// it has gone; each pass stores a new value. Only the worker writes it;
	// reclaim reads it (quiescer).
	epoch atomic.Uint64
	_     cpu.CacheLinePad

	id, cpu int
	cursor  int       // where the next pass starts in the client list
	d       wire.Desc // private descriptor copy (a heap object: no allocation per request)
	events  [8]unix.EpollEvent
}

// quiesce marks the worker outside any pass for good (it exits).
func (ws *workerState) quiesce() {
	if e := ws.epoch.Load(); e&1 == 1 {
		ws.epoch.Store(e + 1)
	}
}

// testHookBeforeSleep, when set (by tests, before Listen), runs in a worker
// between its last look at the rings and epoll_wait.
var testHookBeforeSleep atomic.Pointer[func()]

// worker polls the clients' rings on its own OS thread: passes over every live
// client while there is work, SpinBudget empty passes and then SpinTime more, then
// it sleeps in epoll_wait until a client or the service wakes it.
func (s *Service) worker(ws *workerState, started chan<- struct{}) {
	defer s.workers.Done()
	runtime.LockOSThread()
	// A pinned thread is never handed back to the scheduler: the goroutine exits
	// still locked, so the runtime ends the thread (or, for the main thread,
	// parks it for good), and no other goroutine ever runs with this worker's
	// affinity.
	if len(s.cfg.CPUs) == 0 {
		defer runtime.UnlockOSThread()
	}
	if ws.cpu >= 0 {
		var set unix.CPUSet
		set.Set(s.cfg.CPUs[ws.cpu])
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			s.log.Warn("ipc worker: pin to CPU", zap.Int("worker", ws.id), zap.Int("cpu", s.cfg.CPUs[ws.cpu]), zap.Error(err))
		}
	}
	close(started)
	for {
		if s.quit.Load() {
			s.workersMu.Lock()
			s.removeWorkerLocked(ws)
			s.workersMu.Unlock()
			return
		}
		if s.liveWorkers.Load() > s.targetWorkers.Load() && s.retire(ws) {
			return
		}
		if s.pass(ws) > 0 || s.spin(ws) {
			continue
		}
		s.sleep(ws)
	}
}

// mustStop reports whether the worker should leave its polling for the main
// loop's checks: Close, or more workers than the target.
func (s *Service) mustStop() bool {
	return s.quit.Load() || s.liveWorkers.Load() > s.targetWorkers.Load()
}

// spin polls while the rings stay empty, SpinBudget passes and then SpinTime. It
// returns true when it found work (or must stop), false when it is time to sleep.
func (s *Service) spin(ws *workerState) bool {
	for n := 0; n < s.cfg.SpinBudget; n++ {
		if s.pass(ws) > 0 || n&63 == 63 && s.mustStop() {
			return true
		}
	}
	if s.cfg.SpinTime <= 0 {
		return false
	}
	start := time.Now()
	for time.Since(start) < s.cfg.SpinTime {
		for range 64 {
			if s.pass(ws) > 0 {
				return true
			}
		}
		if s.mustStop() {
			return true
		}
		// Let a runnable client (or another tenant) have this CPU while the
		// rings stay empty.
		shm.Yield()
	}
	return false
}

// sleep is the worker's side of the wake-up protocol (ipc/back's package doc):
// count itself a sleeper in the status page, look at every ring once more, and
// only then block. A client publishes before it reads the count, so either this
// last pass sees its request or the client sees a sleeper and writes its eventfd,
// which the epoll set holds: no wake-up is lost.
func (s *Service) sleep(ws *workerState) {
	atomic.AddUint32(s.sleepers, 1)
	if s.pass(ws) > 0 || s.mustStop() {
		atomic.AddUint32(s.sleepers, ^uint32(0))
		return
	}
	if h := testHookBeforeSleep.Load(); h != nil {
		(*h)() // a client publishing right after the last look (TestWakeUpRace)
	}
	ws.epoch.Store(ws.epoch.Load() + 1) // even: holds no client while it sleeps
	n, err := unix.EpollWait(s.epfd, ws.events[:], -1)
	ws.epoch.Store(ws.epoch.Load() + 1)
	atomic.AddUint32(s.sleepers, ^uint32(0))
	if err != nil && err != unix.EINTR {
		if k, ok := s.badLog.allow(); ok {
			s.log.Error("ipc worker: epoll_wait", zap.Error(err), zap.Int64("suppressed", k))
		}
		time.Sleep(time.Millisecond) // never spin on a failing epoll_wait
		return
	}
	for i := 0; i < n; i++ {
		if ws.events[i].Fd == int32(s.wakeFd) {
			s.wokenByService()
		}
	}
}

// wokenByService handles the service's own eventfd. It stays readable (so every
// sleeping worker wakes in turn) while the workers must exit or retire; otherwise
// the first worker to see it drains it, and re-arms it if a SetWorkers or Close
// raced with the drain.
func (s *Service) wokenByService() {
	if s.mustStop() {
		return
	}
	_, _ = shm.EventfdRead(s.wakeFd)
	if s.mustStop() {
		s.wakeWorkers()
	}
}

// pass takes at most one request from each live client's ring, starting at a
// different client each time, and serves it. A client that floods gets one
// request per pass, as every other client with work does. It returns how many
// requests it served.
func (s *Service) pass(ws *workerState) int {
	ws.epoch.Store(ws.epoch.Load() + 2) // before loading the list: see quiescer
	list := *s.active.Load()
	n := len(list)
	if n == 0 {
		return 0
	}
	start := ws.cursor
	if start >= n {
		start = 0
	}
	ws.cursor = start + 1
	found, behind := 0, 0
	for i := 0; i < n; i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		c := list[j]
		idx, pos, ok := c.take()
		if !ok {
			continue
		}
		found++
		more := c.published(pos + 1)
		behind += more
		if atomic.LoadUint32(s.sleepers) != 0 && (more > 0 || othersReady(list, j)) {
			// More work than this worker is about to do, and a worker
			// sleeps: wake it before serving, which may take long. Clients
			// wake sleepers when they publish, but two publishes of one
			// client (or two clients' harvested by one epoll_wait) may have
			// woken only this worker.
			s.wakeWorkers()
		}
		s.serve(c, idx, &ws.d)
	}
	if found > 0 {
		// What was waiting behind the requests of this pass: each found the
		// later requests of its own ring and those of the clients after it
		// in this pass still waiting. Summed over requests and divided by
		// their number, the mean queue a request found (elasticity's
		// queue-wait estimate); one atomic add per pass.
		s.queued.Add(int64(behind + found*(found-1)/2))
	}
	return found
}

// othersReady reports whether a client other than list[j] has a request at the
// head of its ring.
func othersReady(list []*ClientCtx, j int) bool {
	for i, c := range list {
		if i != j && c.ready(c.head.Load()) {
			return true
		}
	}
	return false
}

// serve validates a ring entry against the client's descriptors, answers the
// descriptor and wakes the client if it sleeps. It is the whole per-request path
// of the service and allocates nothing.
func (s *Service) serve(c *ClientCtx, idx uint32, d *wire.Desc) {
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	if c.dead.Load() {
		// Being reclaimed (or already disconnected): nobody to answer.
		s.dropped.Add(1)
		return
	}
	if idx >= c.numDesc {
		s.disconnect(c, idx, "descriptor index out of range")
		return
	}
	st := c.states[idx]
	if old := atomic.LoadUint32(st); old != wire.StateSubmitted && old != wire.StateSleeping {
		// An honest client publishes only submitted descriptors, each once;
		// answering this one could overwrite a request it is still writing.
		s.disconnect(c, idx, "ring entry names a descriptor that is not submitted")
		return
	}
	off := c.descOff + idx*wire.DescSize
	b := c.mem[off : off+wire.DescSize]
	d.Decode(b)
	status := s.dispatch(c, d)
	wire.PutReply(b, status, d.Result)
	s.served.Add(1)
	if atomic.SwapUint32(st, wire.StateDone) == wire.StateSleeping {
		if _, err := shm.FutexWake(st, 1); err != nil {
			s.log.Error("ipc futex wake", zap.Error(err))
		}
	}
}

// disconnect ends a client that corrupted its ring or its descriptors: nothing
// more of it is served, and closing its socket makes its watcher reclaim it as
// if it had died. Logged once per client, and at most once a second overall.
func (s *Service) disconnect(c *ClientCtx, idx uint32, why string) {
	c.dead.Store(true)
	if !c.corrupt.CompareAndSwap(false, true) {
		return
	}
	s.corrupt.Add(1)
	if n, ok := s.corruptLog.allow(); ok {
		s.log.Warn("ipc client corrupted its ring; disconnected", zap.Int("slot", int(c.slot)), zap.Int32("pid", c.PID),
			zap.Uint32("uid", c.UID), zap.Uint32("index", idx), zap.String("why", why), zap.Int64("suppressed", n))
	}
	c.conn.Close()
}

// dispatch validates the private copy d against c's arena and handle table, then
// hands it to the Handler. It returns the status the client sees.
func (s *Service) dispatch(c *ClientCtx, d *wire.Desc) int32 {
	d.Result = 0
	if err := wire.Validate(d, c.lim); err != nil {
		s.rejected.Add(1)
		s.logBad(c, d, err)
		return -int32(err.Errno)
	}
	if d.Op == wire.OpNop {
		return 0
	}
	if wire.TakesHandle(d.Op) {
		if _, ok := c.Object(d.Handle); !ok {
			return -int32(syscall.EBADF)
		}
	}
	data := c.mem[d.BufOff : d.BufOff+d.Length : d.BufOff+d.Length]
	return s.cfg.Handler.Handle(c, d, data)
}

func (s *Service) logBad(c *ClientCtx, d *wire.Desc, err *wire.Error) {
	if n, ok := s.badLog.allow(); ok {
		s.log.Warn("ipc malformed descriptor", zap.Int("slot", int(c.slot)), zap.Int32("pid", c.PID),
			zap.Stringer("op", d.Op), zap.String("field", err.Field), zap.String("reason", err.Reason),
			zap.Int64("suppressed", n))
	}
}

// rateLimit lets one event through per interval and counts the ones it suppressed;
// a hostile client must not be able to flood the service's log.
type rateLimit struct {
	every      time.Duration
	last       atomic.Int64 // unix nanoseconds of the last event let through
	suppressed atomic.Int64
}

func (r *rateLimit) allow() (suppressed int64, ok bool) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(r.every) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return 0, false
	}
	return r.suppressed.Swap(0), true
}
