package rcqb

import (
	"sync"

	"golang.org/x/sys/unix"
)

// membarrier(2) commands (linux/membarrier.h); x/sys/unix does not export them.
const (
	membarrierCmdGlobal                   = 1 << 0
	membarrierCmdPrivateExpedited         = 1 << 3
	membarrierCmdRegisterPrivateExpedited = 1 << 4
)

// fenceOnce registers the process for private expedited membarrier, once.
var fenceOnce = sync.OnceValue(func() bool {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdRegisterPrivateExpedited, 0, 0)
	return errno == 0
})

// asymmetricFenceReady reports whether heavyFence can order this process's
// threads: an SPSC queue's producer then enters its pending state with a plain
// store (see spsc.go), and a queue without it uses a CAS there.
func asymmetricFenceReady() bool { return fenceOnce() }

// heavyFence makes every thread of the process run a full memory barrier
// before it returns (membarrier MEMBARRIER_CMD_PRIVATE_EXPEDITED: an IPI to
// each CPU running one of them; a thread not running passed one when it was
// switched out), and reports whether it did. It pairs with plain accesses on
// the fast side: a store followed by a load there cannot both miss the
// caller's store made before the call and its load made after it. Once
// registered, the expedited command fails only for lack of memory (ENOMEM),
// which is retried; then the global command does the same, slower (every CPU
// passes a context switch; EINVAL on nohz_full kernels). Callers decide what
// a failure costs them (sleeperFence, closeSPSC). The kernel serializes
// expedited calls behind one mutex, so concurrent sleepers queue up there.
func heavyFence() bool {
	for range 3 {
		if membarrierExpedited() == nil {
			return true
		}
	}
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0)
	return errno == 0
}

// membarrierExpedited runs MEMBARRIER_CMD_PRIVATE_EXPEDITED.
func membarrierExpedited() error {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdPrivateExpedited, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
