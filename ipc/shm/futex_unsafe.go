package shm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Futex operations without FUTEX_PRIVATE_FLAG: the word is in a MAP_SHARED mapping
// and the waker may be another process.
const (
	futexWait = 0 // FUTEX_WAIT
	futexWake = 1 // FUTEX_WAKE
)

// ErrMisaligned is returned by Uint32At for an offset that is not 4-byte aligned or
// not inside the slice.
var ErrMisaligned = errors.New("shm: word offset misaligned or out of range")

// Uint32At returns a pointer to the 32-bit word at mem[off:off+4], for atomic access
// and futexes. mem must be a mapping (or other memory) that outlives every use of the
// pointer; off must be 4-byte aligned relative to an aligned base.
func Uint32At(mem []byte, off int) (*uint32, error) {
	if off < 0 || off > len(mem)-4 {
		return nil, ErrMisaligned
	}
	p := unsafe.Pointer(&mem[off])
	if uintptr(p)%4 != 0 {
		return nil, ErrMisaligned
	}
	return (*uint32)(p), nil
}

// Uint64At is Uint32At for an 8-byte aligned 64-bit word.
func Uint64At(mem []byte, off int) (*uint64, error) {
	if off < 0 || off > len(mem)-8 {
		return nil, ErrMisaligned
	}
	p := unsafe.Pointer(&mem[off])
	if uintptr(p)%8 != 0 {
		return nil, ErrMisaligned
	}
	return (*uint64)(p), nil
}

// FutexWait sleeps while *addr == val, at most timeout (forever when timeout <= 0).
// It returns nil when woken or when *addr no longer held val (EAGAIN), and
// unix.ETIMEDOUT or unix.EINTR as such, so the caller re-checks its condition in a
// loop either way.
func FutexWait(addr *uint32, val uint32, timeout time.Duration) error {
	if atomic.LoadUint32(addr) != val {
		return nil
	}
	var tsp unsafe.Pointer
	var ts unix.Timespec
	if timeout > 0 {
		ts = unix.NsecToTimespec(int64(timeout))
		tsp = unsafe.Pointer(&ts)
	}
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWait, uintptr(val), uintptr(tsp), 0, 0)
	switch e {
	case 0, unix.EAGAIN:
		return nil
	case unix.ETIMEDOUT, unix.EINTR:
		return e
	default:
		return fmt.Errorf("shm: futex wait: %w", e)
	}
}

// FutexWake wakes up to n waiters on addr and returns how many were woken.
func FutexWake(addr *uint32, n int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWake, uintptr(n), 0, 0, 0)
	if e != 0 {
		return 0, fmt.Errorf("shm: futex wake: %w", e)
	}
	return int(r), nil
}

// Yield gives up the CPU to another runnable thread, if any (sched_yield): a
// spinning waiter calls it so that, on a machine with more spinning threads than
// cores, the thread it waits for gets to run.
func Yield() {
	unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
}

// Words64 returns the n 8-byte aligned 64-bit words at mem[off:off+8n] as a slice
// that aliases mem, for atomic access (sync/atomic on &words[i]). mem must outlive
// every use of the slice.
func Words64(mem []byte, off, n int) ([]uint64, error) {
	if n <= 0 || off < 0 || off > len(mem) || n > (len(mem)-off)/8 {
		return nil, ErrMisaligned
	}
	p := unsafe.Pointer(&mem[off])
	if uintptr(p)%8 != 0 {
		return nil, ErrMisaligned
	}
	return unsafe.Slice((*uint64)(p), n), nil
}
