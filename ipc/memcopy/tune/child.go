package tune

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The shared memfd starts with one control page, then the data region:
//
//	offset 0    seq   parent -> child: a new request is ready (incremented)
//	offset 64   ack   child -> parent: seq of the last request done
//	offset 128  op    opRead, opWrite or opQuit
//	offset 136  off   first data byte of the request (from the data region)
//	offset 144  len   bytes of the request
//	offset 152  sink  the child's checksum of what it read, so reads are not dead
//	4096 ...    data
//
// seq and ack sit on their own cache lines so that the spinning side does not
// steal the line the other side writes; op/off/len are written before seq is
// incremented and read after it is seen (release/acquire through the atomics).
const (
	ctlSeq     = 0
	ctlAck     = 64
	ctlOp      = 128
	ctlOff     = 136
	ctlLen     = 144
	ctlSink    = 152
	ctlPageLen = 4096
)

const (
	opRead  = 1 // touch every cache line of [off, off+len): the consumer reads
	opWrite = 2 // write every cache line: the producer wrote the source
	opQuit  = 3
)

// Environment of the reader child. The child is this same executable started
// again (os.Args[0] is not trusted, /proc/self/exe is), told by envChild what it
// is; the memfd is its fd 3.
const (
	envChild = "POLYTROPON_COPYTUNE_CHILD"
	envSize  = "POLYTROPON_COPYTUNE_SIZE"
	envCPU   = "POLYTROPON_COPYTUNE_CPU"
)

// IsChild reports whether this process was started as a tuner's reader child;
// its main (a hidden subcommand, a TestMain) must then call ServeChild.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// ServeChild is the reader child's main loop: it maps the memfd the tuner
// passed as fd 3 and reads (or writes) the data the tuner names, one request at
// a time, until told to quit. It returns when the tuner quits or dies.
func ServeChild() error {
	size, err := strconv.Atoi(os.Getenv(envSize))
	if err != nil || size <= ctlPageLen {
		return fmt.Errorf("memcopy/tune: reader child: bad %s=%q", envSize, os.Getenv(envSize))
	}
	if c := os.Getenv(envCPU); c != "" {
		cpu, err := strconv.Atoi(c)
		if err != nil {
			return fmt.Errorf("memcopy/tune: reader child: bad %s=%q", envCPU, c)
		}
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		// Best effort: a cpuset that forbids it only costs the pinning.
		_ = unix.SchedSetaffinity(0, &set)
	}
	m, err := unix.Mmap(3, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("memcopy/tune: reader child: mmap: %w", err)
	}
	defer unix.Munmap(m)
	data := m[ctlPageLen:]
	seq, ack := word(m, ctlSeq), word(m, ctlAck)
	var last uint64
	for {
		s, ok := waitChange(seq, last, childIdleMax)
		if !ok {
			return errors.New("memcopy/tune: reader child: no request for too long; tuner gone")
		}
		last = s
		op, off, n := word(m, ctlOp).Load(), word(m, ctlOff).Load(), word(m, ctlLen).Load()
		if op == opQuit {
			ack.Store(s)
			return nil
		}
		if off > uint64(len(data)) || n > uint64(len(data))-off {
			return fmt.Errorf("memcopy/tune: reader child: request [%d, +%d) outside %d bytes", off, n, len(data))
		}
		buf := data[off : off+n]
		switch op {
		case opRead:
			word(m, ctlSink).Store(touchRead(buf))
		case opWrite:
			touchWrite(buf, byte(s))
		default:
			return fmt.Errorf("memcopy/tune: reader child: unknown op %d", op)
		}
		ack.Store(s)
	}
}

// touchRead reads one word per cache line: enough to pull every line into this
// core's cache, which is what the next copy into the buffer then contends
// with.
func touchRead(b []byte) uint64 {
	var sum uint64
	for i := 0; i+8 <= len(b); i += 64 {
		sum += uint64(b[i]) | uint64(b[i+7])<<8
	}
	return sum
}

// touchWrite dirties every cache line, as a producer that just wrote the
// source would leave it.
func touchWrite(b []byte, v byte) {
	for i := 0; i < len(b); i += 64 {
		b[i] = v
	}
}

// How long each side waits for the other. The child idles between sizes while
// the parent only computes; the parent waits for one child pass over at most
// a few hundred MiB.
const (
	childIdleMax = 60 * time.Second
	replyMax     = 20 * time.Second
	spinsMax     = 1 << 14
)

// waitChange spins, then sleeps in short steps, until w differs from old or
// max passes. Bounded both ways: spinning is for latency, sleeping so that a
// slow peer does not burn a core that other work needs.
func waitChange(w *atomic.Uint64, old uint64, max time.Duration) (uint64, bool) {
	for range spinsMax {
		if v := w.Load(); v != old {
			return v, true
		}
	}
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if v := w.Load(); v != old {
			return v, true
		}
		time.Sleep(20 * time.Microsecond)
	}
	return 0, false
}

// child is the parent's handle on a running reader child.
type child struct {
	cmd    *exec.Cmd
	m      []byte // the whole mapping, control page first
	data   []byte // m[ctlPageLen:]
	seq    uint64
	exited chan struct{}
	stderr bytes.Buffer
}

// startChild creates the memfd of dataLen bytes after the control page, maps it
// and starts the reader child on it, pinned to cpu (-1: not pinned).
func startChild(dataLen int, args []string, cpu int) (*child, error) {
	size := ctlPageLen + dataLen
	fd, err := unix.MemfdCreate("polytropon-copytune", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memcopy/tune: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "polytropon-copytune")
	defer f.Close() // the mapping and the child keep their own references
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return nil, fmt.Errorf("memcopy/tune: sizing the shared memfd to %d bytes: %w", size, err)
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("memcopy/tune: mmap of the shared memfd: %w", err)
	}
	c := &child{m: m, data: m[ctlPageLen:], exited: make(chan struct{})}
	c.cmd = exec.Command("/proc/self/exe", args...)
	c.cmd.Env = append(os.Environ(), envChild+"=1", envSize+"="+strconv.Itoa(size))
	if cpu >= 0 {
		c.cmd.Env = append(c.cmd.Env, envCPU+"="+strconv.Itoa(cpu))
	}
	c.cmd.ExtraFiles = []*os.File{f}
	c.cmd.Stdout = &c.stderr
	c.cmd.Stderr = &c.stderr
	// The child must not outlive a tuner killed mid-run.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		unix.Munmap(m)
		return nil, fmt.Errorf("memcopy/tune: starting the reader child: %w", err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	return c, nil
}

// do asks the child to run op over data[off:off+n] and waits until it has.
func (c *child) do(op, off, n int) error {
	word(c.m, ctlOp).Store(uint64(op))
	word(c.m, ctlOff).Store(uint64(off))
	word(c.m, ctlLen).Store(uint64(n))
	c.seq++
	word(c.m, ctlSeq).Store(c.seq)
	ack := word(c.m, ctlAck)
	for range spinsMax {
		if ack.Load() == c.seq {
			return nil
		}
	}
	deadline := time.Now().Add(replyMax)
	for time.Now().Before(deadline) {
		if ack.Load() == c.seq {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("memcopy/tune: reader child exited (%v): %s", c.cmd.ProcessState, bytes.TrimSpace(c.stderr.Bytes()))
		default:
		}
		time.Sleep(10 * time.Microsecond)
	}
	return fmt.Errorf("memcopy/tune: reader child did not answer within %v", replyMax)
}

// stop tells the child to quit, waits a bounded time for it, kills it if it
// does not go, and unmaps the shared memory.
func (c *child) stop() {
	word(c.m, ctlOp).Store(opQuit)
	c.seq++
	word(c.m, ctlSeq).Store(c.seq)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	_ = unix.Munmap(c.m)
}
