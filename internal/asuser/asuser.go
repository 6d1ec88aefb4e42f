package asuser

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/peercred"
)

// Thread is an OS thread switched to one caller's identity.
type Thread struct {
	cred peercred.Cred
	work chan func()
	mu   sync.Mutex // guards closed
	// closed is set by Close; Do after it panics (a test bug).
	closed bool
	done   chan struct{}
}

// Start switches a new locked thread to cred: uid and gid (real, effective,
// filesystem), cred.Groups as supplementary groups, and cred.Caps as effective
// capabilities (limited to what the process may hold). The process must have
// CAP_SETUID, CAP_SETGID and the capabilities asked for.
func Start(cred peercred.Cred) (*Thread, error) {
	t := &Thread{cred: cred, work: make(chan func()), done: make(chan struct{})}
	cred.Groups = append([]uint32(nil), cred.Groups...)
	ready := make(chan error, 1)
	go t.run(ready)
	if err := <-ready; err != nil {
		<-t.done
		return nil, err
	}
	return t, nil
}

// Cred returns the identity the thread acts with.
func (t *Thread) Cred() peercred.Cred { return t.cred }

func (t *Thread) run(ready chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread: the runtime never ends it, and /proc/PID/status
		// shows its identity as the process's. Hold it while the thread starts
		// on another one (a locked thread runs nothing else), then give it back
		// untouched.
		started := make(chan struct{})
		go t.serve(ready, started)
		<-started
		runtime.UnlockOSThread()
		return
	}
	t.serve(ready, nil)
}

// serve switches the calling goroutine's own (locked) thread and runs Do's
// functions on it.
func (t *Thread) serve(ready chan<- error, started chan<- struct{}) {
	defer close(t.done)
	// Never unlocked: when this goroutine returns, the runtime ends the thread
	// instead of reusing it with the borrowed identity.
	runtime.LockOSThread()
	if started != nil {
		close(started)
	}
	if unix.Gettid() == unix.Getpid() {
		ready <- errors.New("asuser: on the main thread")
		return
	}
	if err := become(&t.cred); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for fn := range t.work {
		fn()
	}
}

// Do runs fn on the thread and returns when it has returned.
func (t *Thread) Do(fn func()) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		panic("asuser: Do on a closed Thread")
	}
	ran := make(chan struct{})
	t.work <- func() {
		defer close(ran)
		fn()
	}
	<-ran
}

// Close ends the thread (and with it the borrowed identity). It is idempotent.
func (t *Thread) Close() {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.work)
	}
	t.mu.Unlock()
	<-t.done
}

// capVersion3 is _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const capVersion3 = 0x20080522

func become(c *peercred.Cred) error {
	hdr := unix.CapUserHeader{Version: capVersion3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("asuser: capget: %w", err)
	}
	permitted := uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	if c.Caps&^permitted != 0 {
		return fmt.Errorf("asuser: capabilities %#x asked for, the process may hold only %#x", c.Caps, permitted)
	}
	if err := setgroups(c.Groups); err != nil {
		return fmt.Errorf("asuser: setgroups %v: %w", c.Groups, err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.GID), uintptr(c.GID), 0); e != 0 {
		return fmt.Errorf("asuser: setresgid %d: %w", c.GID, e)
	}
	// The saved uid stays 0: the permitted set survives the switch, so that
	// capset below can give the thread exactly c.Caps.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.UID), uintptr(c.UID), 0); e != 0 {
		return fmt.Errorf("asuser: setresuid %d: %w", c.UID, e)
	}
	for i := range data {
		data[i].Effective = uint32(c.Caps >> (32 * i))
		data[i].Inheritable = 0
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("asuser: capset %#x: %w", c.Caps, err)
	}
	return check(c)
}

// check reads the thread's identity back from the kernel.
func check(c *peercred.Cred) error {
	r, e, _ := unix.Getresuid()
	if uint32(e) != c.UID || uint32(r) != c.UID {
		return errors.New("asuser: the uid did not change")
	}
	if _, e, _ := unix.Getresgid(); uint32(e) != c.GID {
		return errors.New("asuser: the gid did not change")
	}
	return nil
}
