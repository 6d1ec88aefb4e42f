package rcqb

import (
	"fmt"
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
// switched out). It pairs with plain accesses on the fast side: a store
// followed by a load there cannot both miss the caller's store made before
// the call and its load made after it. The expedited command cannot fail once
// registered (its errors are an unknown command and a missing registration);
// if it does anyway, the global command does the same, slower (every CPU
// passes a context switch), and if that fails too the queue cannot keep its
// promises and says so by panicking rather than losing values quietly.
func heavyFence() {
	if err := membarrierExpedited(); err == nil {
		return
	} else if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		panic(fmt.Sprintf("rcqb: membarrier failed after registration (expedited: %v, global: %v)", err, errno))
	}
}

// membarrierExpedited runs MEMBARRIER_CMD_PRIVATE_EXPEDITED.
func membarrierExpedited() error {
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdPrivateExpedited, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
