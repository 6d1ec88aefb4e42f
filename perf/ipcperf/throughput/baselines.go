package throughput

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/polytropon/polytropon/ipc/rcqb"
)

// yieldEvery is how many failed polls a Vyukov put or get makes before it
// yields the P, as RCQB's spin does.
const yieldEvery = 64

// The baselines below are the queues RCQB is compared with. They are
// unexported: they exist only to be measured beside it.

// benchQueue is a blocking queue of uint64 as the throughput runner drives it.
type benchQueue interface {
	put(v uint64) error
	get() (uint64, error)
}

// rcqbBench drives an rcqb.Queue.
type rcqbBench struct{ q *rcqb.Queue }

func (b rcqbBench) put(v uint64) error   { return b.q.Enqueue(v) }
func (b rcqbBench) get() (uint64, error) { return b.q.Dequeue() }

// chanQueue is a buffered Go channel.
type chanQueue chan uint64

func (c chanQueue) put(v uint64) error   { c <- v; return nil }
func (c chanQueue) get() (uint64, error) { return <-c, nil }

// mutexRing is a ring buffer behind one mutex, with condition variables for the
// full and empty waits.
type mutexRing struct {
	mu       sync.Mutex
	notFull  sync.Cond
	notEmpty sync.Cond
	// buf, head and n are guarded by mu.
	buf  []uint64
	head int
	n    int
}

func newMutexRing(capacity int) *mutexRing {
	r := &mutexRing{buf: make([]uint64, capacity)}
	r.notFull.L = &r.mu
	r.notEmpty.L = &r.mu
	return r
}

func (r *mutexRing) put(v uint64) error {
	r.mu.Lock()
	for r.n == len(r.buf) {
		r.notFull.Wait()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
	r.mu.Unlock()
	r.notEmpty.Signal()
	return nil
}

func (r *mutexRing) get() (uint64, error) {
	r.mu.Lock()
	for r.n == 0 {
		r.notEmpty.Wait()
	}
	v := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	r.mu.Unlock()
	r.notFull.Signal()
	return v, nil
}

// vyukov is Dmitry Vyukov's bounded MPMC queue: a per-cell sequence number and
// CAS on the enqueue and dequeue positions. It only has try operations; the
// blocking wrappers poll and yield the P every 64 failures, as RCQB's spin does.
type vyukov struct {
	_      [64]byte
	enqPos atomic.Uint64
	_      [56]byte
	deqPos atomic.Uint64
	_      [56]byte
	mask   uint64
	cells  []vyukovCell
}

type vyukovCell struct {
	seq  atomic.Uint64
	data uint64
	_    [48]byte
}

func newVyukov(capacity int) *vyukov {
	q := &vyukov{mask: uint64(capacity - 1), cells: make([]vyukovCell, capacity)}
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
	return q
}

func (q *vyukov) tryPut(v uint64) bool {
	pos := q.enqPos.Load()
	for {
		c := &q.cells[pos&q.mask]
		dif := int64(c.seq.Load() - pos)
		switch {
		case dif == 0:
			if q.enqPos.CompareAndSwap(pos, pos+1) {
				c.data = v
				c.seq.Store(pos + 1)
				return true
			}
			pos = q.enqPos.Load()
		case dif < 0:
			return false
		default:
			pos = q.enqPos.Load()
		}
	}
}

func (q *vyukov) tryGet() (uint64, bool) {
	pos := q.deqPos.Load()
	for {
		c := &q.cells[pos&q.mask]
		dif := int64(c.seq.Load() - (pos + 1))
		switch {
		case dif == 0:
			if q.deqPos.CompareAndSwap(pos, pos+1) {
				v := c.data
				c.seq.Store(pos + q.mask + 1)
				return v, true
			}
			pos = q.deqPos.Load()
		case dif < 0:
			return 0, false
		default:
			pos = q.deqPos.Load()
		}
	}
}

func (q *vyukov) put(v uint64) error {
	for i := 1; !q.tryPut(v); i++ {
		if i%yieldEvery == 0 {
			runtime.Gosched()
		}
	}
	return nil
}

func (q *vyukov) get() (uint64, error) {
	for i := 1; ; i++ {
		if v, ok := q.tryGet(); ok {
			return v, nil
		}
		if i%yieldEvery == 0 {
			runtime.Gosched()
		}
	}
}
