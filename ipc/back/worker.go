package back

import (
	"errors"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/rcqb"
	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// worker serves the ring on its own OS thread: it polls up to SpinBudget times, then
// sleeps in the ring (futex) until a request or Close arrives.
func (s *Service) worker(i, cpu int) {
	defer s.workers.Done()
	runtime.LockOSThread()
	// A pinned thread is never handed back to the scheduler: the goroutine exits
	// still locked, so the runtime ends the thread (or, for the main thread,
	// parks it for good), and no other goroutine ever runs with this worker's
	// affinity.
	if len(s.cfg.CPUs) == 0 {
		defer runtime.UnlockOSThread()
	}
	if cpu >= 0 {
		var set unix.CPUSet
		set.Set(s.cfg.CPUs[cpu])
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			s.log.Warn("ipc worker: pin to CPU", zap.Int("worker", i), zap.Int("cpu", s.cfg.CPUs[cpu]), zap.Error(err))
		}
	}
	spin, spinTime := s.cfg.SpinBudget, s.cfg.SpinTime
	// The worker's private descriptor copy: it goes to the Handler interface, so it
	// would escape (one allocation per request) if it lived in serve's frame.
	d := new(wire.Desc)
	for {
		v, ok := s.ring.TryDequeue()
		for n := 0; !ok && n < spin; n++ {
			v, ok = s.ring.TryDequeue()
		}
		if !ok && spinTime > 0 {
			start := time.Now()
			for !ok && time.Since(start) < spinTime {
				for n := 0; !ok && n < 64; n++ {
					v, ok = s.ring.TryDequeue()
				}
				// Let a runnable client (or another tenant) have this CPU
				// while the ring stays empty.
				shm.Yield()
			}
		}
		if !ok {
			var err error
			v, err = s.ring.Dequeue()
			if err != nil {
				if !errors.Is(err, rcqb.ErrClosed) {
					s.log.Error("ipc worker: dequeue", zap.Error(err))
				}
				s.liveWorkers.Add(-1)
				return
			}
		}
		if v == retireRef {
			if s.retire(cpu) {
				return
			}
			continue
		}
		// What is still waiting behind this request: summed over requests and
		// divided by their number, the mean queue a request found (elasticity's
		// queue-wait estimate). Two atomic loads and an add, no lock.
		s.queued.Add(int64(s.ring.Len()))
		s.serve(v, d)
	}
}

// serve resolves a ring reference to a client's descriptor, answers it and wakes the
// client if it sleeps. It is the whole per-request path of the service and allocates
// nothing.
func (s *Service) serve(ref uint64, d *wire.Desc) {
	slot, gen, idx := wire.SplitRef(ref)
	if int(slot) >= len(s.clients) {
		s.drop(ref, "client slot out of range")
		return
	}
	c := s.clients[slot].Load()
	if c == nil || c.gen != gen {
		// A reference left behind by a client that is gone (or forged): no arena to
		// answer in.
		s.drop(ref, "no live client for this reference")
		return
	}
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	if c.dead.Load() {
		s.drop(ref, "client is being reclaimed")
		return
	}
	if idx >= c.numDesc {
		s.drop(ref, "descriptor index out of range")
		return
	}
	st := c.states[idx]
	if old := atomic.LoadUint32(st); old != wire.StateSubmitted && old != wire.StateSleeping {
		// Answering a descriptor the client has not submitted could overwrite a
		// request it is still writing; it gets nothing back.
		s.drop(ref, "descriptor not in submitted state")
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

func (s *Service) drop(ref uint64, why string) {
	s.dropped.Add(1)
	if n, ok := s.badLog.allow(); ok {
		s.log.Warn("ipc dropped ring reference", zap.Uint64("ref", ref), zap.String("why", why), zap.Int64("suppressed", n))
	}
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
