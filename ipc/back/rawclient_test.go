package back

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// rawClient speaks the direct path's protocol by hand, the way a hostile client
// would: it maps whatever it is given as it likes and writes what it wants. The
// hostile-client tests run it in other processes, as other uids.
type rawClient struct {
	conn                      *net.UnixConn
	sock                      int // the connection's fd
	w                         wire.Welcome
	statusFd, arenaFd, efd    int
	status, arena             []byte
	ring                      []uint64
	numDesc, descOff, dataOff uint32
	tail                      uint64
}

// errRawRefused wraps the errno of a refused raw handshake.
var errRawRefused = errors.New("refused")

// rawConnect connects without saying anything (a half-done handshake).
func rawConnect(sock string) (*rawClient, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	r := &rawClient{conn: conn, sock: -1, statusFd: -1, arenaFd: -1, efd: -1}
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	rc.Control(func(fd uintptr) { r.sock = int(fd) })
	return r, nil
}

// rawDial connects and completes the handshake, mapping the status page
// read-only (as it must) and the arena writable.
func rawDial(sock string) (*rawClient, error) {
	r, err := rawConnect(sock)
	if err != nil {
		return nil, err
	}
	if err := r.handshake(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// welcome reads the service's answer.
func (r *rawClient) welcome() ([]int, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [wire.WelcomeSize]byte
	n, fds, err := shm.RecvFds(r.conn, b[:])
	if err != nil {
		return nil, err
	}
	if err := r.w.Get(b[:n]); err != nil {
		return nil, err
	}
	if r.w.Status != 0 {
		return nil, fmt.Errorf("%w: %w", errRawRefused, syscall.Errno(r.w.Status))
	}
	if len(fds) != wire.WelcomeFds {
		return nil, fmt.Errorf("%d fds", len(fds))
	}
	return fds, nil
}

func (r *rawClient) handshake() error {
	var hb [wire.HelloSize]byte
	(&wire.Hello{Version: wire.Version}).Put(hb[:])
	_, herr := r.conn.Write(hb[:])
	fds, err := r.welcome()
	if err != nil {
		return errors.Join(err, herr)
	}
	r.statusFd, r.arenaFd, r.efd = fds[wire.WelcomeFdStatus], fds[wire.WelcomeFdArena], fds[wire.WelcomeFdEvent]
	if r.status, err = unix.Mmap(r.statusFd, 0, int(r.w.StatusSize), unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return err
	}
	if r.arena, err = unix.Mmap(r.arenaFd, 0, int(r.w.ArenaSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return err
	}
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(r.arena[off:]) }
	r.numDesc, r.descOff, r.dataOff = u32(wire.ArenaOffNumDesc), u32(wire.ArenaOffDescOff), u32(wire.ArenaOffDataOff)
	r.ring, err = shm.Words64(r.arena, int(u32(wire.ArenaOffRingOff)), int(u32(wire.ArenaOffRingCap)))
	return err
}

func (r *rawClient) state(idx uint32) *uint32 {
	p, err := shm.Uint32At(r.arena, int(r.descOff+idx*wire.DescSize+wire.OffState))
	if err != nil {
		panic(err)
	}
	return p
}

// put writes entry e at ring position p and wakes the service.
func (r *rawClient) put(p uint64, e uint64) {
	atomic.StoreUint64(&r.ring[p&uint64(len(r.ring)-1)], e)
	_ = shm.EventfdWrite(r.efd)
}

// nop makes one honest empty round trip on descriptor idx.
func (r *rawClient) nop(idx uint32) error {
	b := r.arena[r.descOff+idx*wire.DescSize:][:wire.DescSize]
	(&wire.Desc{Version: wire.Version, Op: wire.OpNop}).EncodeRequest(b)
	st := r.state(idx)
	atomic.StoreUint32(st, wire.StateSubmitted)
	r.put(r.tail, wire.RingEntry(wire.RingSeq(r.tail), idx))
	r.tail++
	for deadline := time.Now().Add(10 * time.Second); atomic.LoadUint32(st) != wire.StateDone; {
		if time.Now().After(deadline) {
			return syscall.ETIMEDOUT
		}
		time.Sleep(50 * time.Microsecond)
	}
	status, _ := wire.Reply(b)
	atomic.StoreUint32(st, wire.StateFree)
	if status != 0 {
		return syscall.Errno(-status)
	}
	return nil
}

// hungUp waits up to timeout for the service to shut the connection.
func (r *rawClient) hungUp(timeout time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(r.sock), Events: unix.POLLIN | unix.POLLRDHUP}}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, err := unix.Poll(fds, 100)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return true
		}
	}
	return false
}

func (r *rawClient) close() {
	if r.status != nil {
		unix.Munmap(r.status)
	}
	if r.arena != nil {
		unix.Munmap(r.arena)
	}
	for _, fd := range []int{r.statusFd, r.arenaFd, r.efd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	r.conn.Close()
}
