package fslib

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/wire"
	"github.com/polytropon/polytropon/libservices"
)

// SocketEnv is the environment variable Dial reads when no socket is given.
const SocketEnv = "POLYTROPON_SOCKET"

// DialOptions configure Dial. Zero values take the defaults named on each field.
type DialOptions struct {
	// Socket is the service's socket; empty means $POLYTROPON_SOCKET.
	Socket string
	// Prefix scopes the client to a subtree of the service's namespace, usually
	// one instance's mount prefix ("/data"): the client's "/" is that directory.
	Prefix string
	// SpinIters, SpinTime and WaitSlice tune waiting for answers (see
	// ipc/front.Config): where clients and services outnumber cores, spinning
	// costs more than it saves (SpinIters -1 sleeps at once).
	SpinIters int
	SpinTime  time.Duration
	WaitSlice time.Duration
	// Timeout bounds connect plus handshake (default 2 s).
	Timeout time.Duration
	// CallTimeout bounds each request to a service that is alive but does not
	// answer (a stopped or deadlocked process): the call fails with ETIMEDOUT,
	// its outcome unknown (a write may still land), as on a soft NFS mount.
	// Zero means ipc/front's DefaultCallTimeout (30 s, the kernel's own SCSI
	// command timeout; see there why). Negative waits as long as the service
	// lives, as on a hard NFS mount. A service that dies fails calls with
	// ENOTCONN at once either way, and the next call reconnects.
	CallTimeout time.Duration
	// Logger receives reconnect events; nil discards them.
	Logger *zap.Logger
}

// ErrNoSocket is returned by Dial when neither DialOptions.Socket nor
// $POLYTROPON_SOCKET names a socket. Its text names the command line's
// --socket too: it is what a user of the polytropon command reads.
var ErrNoSocket = errors.New("fslib: no filesystem service socket given: pass --socket PATH (DialOptions.Socket) or set $" + SocketEnv)

// dialError is a failed connection to the service. Its message names the
// socket once (the dialer and the net package each repeat it) and where the
// socket comes from; Unwrap keeps the whole cause for errors.Is and errors.As.
type dialError struct {
	socket string
	err    error
}

func (e *dialError) Error() string {
	var op *net.OpError
	if !errors.As(e.err, &op) {
		return fmt.Sprintf("fslib: filesystem service at %s: %v", e.socket, e.err)
	}
	// Nothing accepted the connection. op.Err is the system call and errno
	// alone, without the address.
	switch {
	case errors.Is(op.Err, syscall.EACCES), errors.Is(op.Err, syscall.EPERM):
		return fmt.Sprintf("fslib: this user may not connect to the filesystem service's socket %s (%v)", e.socket, op.Err)
	case errors.Is(op.Err, syscall.ENOENT), errors.Is(op.Err, syscall.ECONNREFUSED), errors.Is(op.Err, syscall.ENOTSOCK):
		return fmt.Sprintf("fslib: no filesystem service at %s (%v): start one (polytropon service) or pass its socket with --socket PATH or $%s",
			e.socket, op.Err, SocketEnv)
	}
	return fmt.Sprintf("fslib: cannot reach the filesystem service at %s (%v): is --socket PATH or $%s its socket?", e.socket, op.Err, SocketEnv)
}

func (e *dialError) Unwrap() error { return e.err }

// Dial connects to a filesystem service over the direct path and returns a Client
// whose operations are served by it. The connection is re-established by the first
// call after the service restarts; files opened before then fail with ENOTCONN.
func Dial(o DialOptions) (*Client, error) {
	r, err := dialRemote(o)
	if err != nil {
		return nil, err
	}
	return New(r), nil
}

// DialFS is Dial returning the libservices.FS view of the service (for the FUSE
// gateway and for conformance tests).
func DialFS(o DialOptions) (libservices.FS, error) {
	r, err := dialRemote(o)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func dialRemote(o DialOptions) (*remote, error) {
	if o.Socket == "" {
		o.Socket = os.Getenv(SocketEnv)
	}
	if o.Socket == "" {
		return nil, ErrNoSocket
	}
	if o.Prefix != "" {
		if !strings.HasPrefix(o.Prefix, "/") {
			return nil, fmt.Errorf("fslib: prefix %q must be absolute", o.Prefix)
		}
		o.Prefix = strings.TrimRight(o.Prefix, "/")
	}
	r := &remote{o: o, log: o.Logger}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	c, err := r.dial()
	if err != nil {
		return nil, err
	}
	r.cur.Store(c)
	return r, nil
}

// remote is libservices.FS over the direct path. Paths are the service's namespace
// (mount prefixes included) under o.Prefix.
type remote struct {
	o   DialOptions
	log *zap.Logger

	cur      atomic.Pointer[front.Client]
	redialMu sync.Mutex // serialises reconnects; never held during a request
	lastTry  time.Time  // guarded by redialMu
	closed   atomic.Bool
}

var (
	_ libservices.FS     = (*remote)(nil)
	_ libservices.Closer = (*remote)(nil)
	_ Locker             = (*remote)(nil)
)

func (r *remote) dial() (*front.Client, error) {
	c, err := front.Dial(front.Config{SocketPath: r.o.Socket, SpinIters: r.o.SpinIters, SpinTime: r.o.SpinTime, WaitSlice: r.o.WaitSlice,
		DialTimeout: r.o.Timeout, CallTimeout: r.o.CallTimeout, Logger: r.o.Logger})
	if err != nil {
		return nil, &dialError{socket: r.o.Socket, err: err}
	}
	return c, nil
}

// redialEvery bounds reconnect attempts while the service is down, so that a busy
// caller does not hammer the socket.
const redialEvery = 50 * time.Millisecond

// client returns a live connection, reconnecting when the current one lost its
// service. It fails with ENOTCONN while the service is unreachable.
func (r *remote) client() (*front.Client, error) {
	c := r.cur.Load()
	if c != nil && !c.Broken() {
		return c, nil
	}
	if r.closed.Load() {
		return nil, syscall.EBADF
	}
	r.redialMu.Lock()
	defer r.redialMu.Unlock()
	if c2 := r.cur.Load(); c2 != c && c2 != nil && !c2.Broken() {
		return c2, nil // another goroutine reconnected
	}
	if time.Since(r.lastTry) < redialEvery {
		return nil, syscall.ENOTCONN
	}
	r.lastTry = time.Now()
	nc, err := r.dial()
	if err != nil {
		r.log.Debug("fslib: reconnect failed", zap.Error(err))
		return nil, syscall.ENOTCONN
	}
	r.log.Info("fslib: reconnected to the filesystem service", zap.String("socket", r.o.Socket))
	// The old client's mappings stay: calls of other goroutines may still be
	// failing out of them. Closing it drops only its socket and arena.
	if c != nil {
		_ = c.Close()
	}
	r.cur.Store(nc)
	return nc, nil
}

// path maps an FS path to the service namespace.
func (r *remote) path(name string) (string, error) {
	if name == "" {
		return "", syscall.ENOENT
	}
	if r.o.Prefix == "" {
		return name, nil
	}
	return r.o.Prefix + "/" + strings.TrimLeft(name, "/"), nil
}

// CloseFS disconnects.
func (r *remote) CloseFS() error {
	r.closed.Store(true)
	if c := r.cur.Swap(nil); c != nil {
		return c.Close()
	}
	return nil
}

// rhandle is an open file of one connection: after a reconnect it keeps failing
// with ENOTCONN rather than naming a file of the new session.
type rhandle struct {
	r *remote
	c *front.Client
	h uint64
}

func (r *remote) handleOf(h libservices.Handle) (*rhandle, error) {
	rh, ok := h.(*rhandle)
	if !ok || rh == nil || rh.r != r {
		return nil, syscall.EBADF
	}
	return rh, nil
}

// errno keeps the contract's errno-only rule: transport errors from front are
// already Errno values; anything else is EIO.
func errno(err error) error { return libservices.Errno(err) }

func attrFrom(s *wire.Stat, a *libservices.Attr) {
	*a = libservices.Attr{Ino: s.Ino, Mode: s.Mode, Nlink: s.Nlink, Uid: s.UID, Gid: s.GID, Rdev: s.Rdev,
		Size: s.Size, Blocks: s.Blocks, Blksize: s.Blksize,
		Atime: libservices.Timespec{Sec: s.AtimeSec, Nsec: int64(s.AtimeNsec)},
		Mtime: libservices.Timespec{Sec: s.MtimeSec, Nsec: int64(s.MtimeNsec)},
		Ctime: libservices.Timespec{Sec: s.CtimeSec, Nsec: int64(s.CtimeNsec)}}
}

func (r *remote) stat(name string, a *libservices.Attr, follow bool) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	var s wire.Stat
	if follow {
		s, err = c.Stat(p)
	} else {
		s, err = c.Lstat(p)
	}
	if err != nil {
		return errno(err)
	}
	attrFrom(&s, a)
	return nil
}

func (r *remote) Lstat(name string, a *libservices.Attr) error { return r.stat(name, a, false) }
func (r *remote) Stat(name string, a *libservices.Attr) error  { return r.stat(name, a, true) }

// pathCall runs fn with a connection and name mapped to the service namespace.
func (r *remote) pathCall(name string, fn func(c *front.Client, p string) error) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	return errno(fn(c, p))
}

func (r *remote) Mkdir(name string, mode uint32) error {
	return r.pathCall(name, func(c *front.Client, p string) error { return c.Mkdir(p, mode&wire.ModeMask) })
}

func (r *remote) Unlink(name string) error {
	return r.pathCall(name, func(c *front.Client, p string) error { return c.Unlink(p) })
}

func (r *remote) Rmdir(name string) error {
	return r.pathCall(name, func(c *front.Client, p string) error { return c.Rmdir(p) })
}

func (r *remote) twoPaths(oldname, newname string, fn func(c *front.Client, o, n string) error) error {
	o, err := r.path(oldname)
	if err != nil {
		return err
	}
	return r.pathCall(newname, func(c *front.Client, n string) error { return fn(c, o, n) })
}

func (r *remote) Rename(oldname, newname string) error {
	return r.twoPaths(oldname, newname, func(c *front.Client, o, n string) error { return c.Rename(o, n) })
}

func (r *remote) Link(oldname, newname string) error {
	return r.twoPaths(oldname, newname, func(c *front.Client, o, n string) error { return c.Link(o, n) })
}

// Symlink's target is link content, not a path of this client: it is not prefixed.
func (r *remote) Symlink(target, name string) error {
	if target == "" {
		return syscall.ENOENT
	}
	return r.pathCall(name, func(c *front.Client, p string) error { return c.Symlink(target, p) })
}

func (r *remote) Readlink(name string) (string, error) {
	var target string
	err := r.pathCall(name, func(c *front.Client, p string) (err error) {
		target, err = c.Readlink(p)
		return err
	})
	return target, err
}

func (r *remote) ReadDir(name string) ([]libservices.DirEntry, error) {
	var out []libservices.DirEntry
	err := r.pathCall(name, func(c *front.Client, p string) error {
		h, err := c.Open(p, libservices.O_RDONLY|libservices.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = c.ReadDir(h, func(n []byte, typ uint8, ino uint64) bool {
			out = append(out, libservices.DirEntry{Name: string(n), Ino: ino, Type: uint32(typ) << 12})
			return true
		})
		if cerr := c.CloseHandle(h); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []libservices.DirEntry{}
	}
	return out, nil
}

func (r *remote) Setattr(name string, sa *libservices.SetAttr) error {
	rec := wire.Setattr{UID: sa.Uid, GID: sa.Gid, AtimeSec: sa.Atime.Sec, MtimeSec: sa.Mtime.Sec,
		AtimeNsec: uint32(sa.Atime.Nsec), MtimeNsec: uint32(sa.Mtime.Nsec)}
	if sa.Valid&libservices.SetAtime != 0 && (sa.Atime.Nsec < 0 || sa.Atime.Nsec >= 1e9) ||
		sa.Valid&libservices.SetMtime != 0 && (sa.Mtime.Nsec < 0 || sa.Mtime.Nsec >= 1e9) {
		return syscall.EINVAL
	}
	if sa.Valid&^wire.SetattrMask != 0 {
		return syscall.EINVAL
	}
	size := sa.Size
	if sa.Valid&libservices.SetSize == 0 {
		size = 0
	} else if size < 0 {
		return syscall.EINVAL
	}
	return r.pathCall(name, func(c *front.Client, p string) error {
		return c.Setattr(p, sa.Valid, sa.Mode&wire.ModeMask, size, &rec)
	})
}

func (r *remote) Statfs(st *libservices.Statfs) error {
	root := r.o.Prefix
	if root == "" {
		root = "/"
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	return errno(statfsInto(c, root, st))
}

// statfsPath asks the service about the instance that holds name (pathStatfser).
func (r *remote) statfsPath(name string, st *libservices.Statfs) error {
	return r.pathCall(name, func(c *front.Client, p string) error { return statfsInto(c, p, st) })
}

func statfsInto(c *front.Client, p string, st *libservices.Statfs) error {
	s, err := c.Statfs(p)
	if err != nil {
		return err
	}
	*st = libservices.Statfs{Type: s.Type, Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
		Files: s.Files, Ffree: s.Free, Namelen: s.Namelen, Frsize: s.Frsize}
	return nil
}

func (r *remote) Getxattr(name, attr string, dest []byte) (int, error) {
	var n int
	err := r.pathCall(name, func(c *front.Client, p string) (err error) {
		n, err = c.Getxattr(p, attr, dest)
		return err
	})
	return n, err
}

func (r *remote) Setxattr(name, attr string, data []byte, flags int) error {
	if flags&^(libservices.XattrCreate|libservices.XattrReplace) != 0 {
		return syscall.EINVAL
	}
	return r.pathCall(name, func(c *front.Client, p string) error { return c.Setxattr(p, attr, data, flags) })
}

func (r *remote) Listxattr(name string) ([]string, error) {
	var names []string
	err := r.pathCall(name, func(c *front.Client, p string) (err error) {
		names, err = c.Listxattr(p)
		return err
	})
	if err != nil {
		return nil, err
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

func (r *remote) Removexattr(name, attr string) error {
	return r.pathCall(name, func(c *front.Client, p string) error { return c.Removexattr(p, attr) })
}

// openFlags are the open(2) flags the wire carries; the contract's accepted-and-
// ignorable ones (O_CLOEXEC, O_LARGEFILE, ...) are dropped here, and O_PATH and
// O_TMPFILE are refused as the contract says.
func openFlags(flags int) (uint32, error) {
	if flags&(unix.O_PATH|unix.O_TMPFILE&^unix.O_DIRECTORY) != 0 {
		return 0, syscall.EINVAL
	}
	return uint32(flags) & wire.OpenFlagsMask, nil
}

func (r *remote) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	f, err := openFlags(flags)
	if err != nil {
		return nil, err
	}
	var rh *rhandle
	err = r.pathCall(name, func(c *front.Client, p string) error {
		h, err := c.Open(p, int(f), mode&wire.ModeMask)
		if err != nil {
			return err
		}
		rh = &rhandle{r: r, c: c, h: h}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rh, nil
}

func (r *remote) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	rh, err := r.handleOf(h)
	if err != nil {
		return 0, err
	}
	n, err := rh.c.ReadAt(rh.h, p, off)
	return n, errno(err)
}

func (r *remote) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	rh, err := r.handleOf(h)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(p) > 0 && off+int64(len(p)) < off {
		return 0, syscall.EINVAL
	}
	n, err := rh.c.WriteAt(rh.h, p, off)
	return n, errno(err)
}

func (r *remote) Fstat(h libservices.Handle, a *libservices.Attr) error {
	rh, err := r.handleOf(h)
	if err != nil {
		return err
	}
	s, err := rh.c.Fstat(rh.h)
	if err != nil {
		return errno(err)
	}
	attrFrom(&s, a)
	return nil
}

func (r *remote) Ftruncate(h libservices.Handle, size int64) error {
	rh, err := r.handleOf(h)
	if err != nil {
		return err
	}
	return errno(rh.c.Truncate(rh.h, size))
}

func (r *remote) Fallocate(h libservices.Handle, mode uint32, off, length int64) error {
	rh, err := r.handleOf(h)
	if err != nil {
		return err
	}
	if mode&^wire.FallocateMask != 0 {
		return syscall.EOPNOTSUPP
	}
	if off < 0 || length <= 0 || off+length < off {
		if off+length < off {
			return syscall.EFBIG
		}
		return syscall.EINVAL
	}
	return errno(rh.c.Fallocate(rh.h, mode, off, length))
}

func (r *remote) Fsync(h libservices.Handle) error {
	rh, err := r.handleOf(h)
	if err != nil {
		return err
	}
	return errno(rh.c.Fsync(rh.h))
}

func (r *remote) Fdatasync(h libservices.Handle) error {
	rh, err := r.handleOf(h)
	if err != nil {
		return err
	}
	return errno(rh.c.Fdatasync(rh.h))
}

func (r *remote) Close(h libservices.Handle) error {
	rh, err := r.handleOf(h)
	if err != nil {
		return err
	}
	return errno(rh.c.CloseHandle(rh.h))
}

// Lock implements Locker with the service's advisory locks: they exclude every
// client of the service, in any process, and die with the client's connection.
func (r *remote) Lock(name string) (io.Closer, error) {
	var h uint64
	var c *front.Client
	err := r.pathCall(name, func(cl *front.Client, p string) (err error) {
		c = cl
		h, err = cl.Lock(p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &remoteLock{c: c, h: h}, nil
}

type remoteLock struct {
	c    *front.Client
	h    uint64
	done atomic.Bool
}

// Close releases the lock; a second Close is EBADF, as the Locker contract says.
func (l *remoteLock) Close() error {
	if l.done.Swap(true) {
		return syscall.EBADF
	}
	return errno(l.c.CloseHandle(l.h))
}

// ServiceStatus connects to the service, fetches its status document (JSON) and
// disconnects.
func ServiceStatus(o DialOptions) ([]byte, error) {
	r, err := dialRemote(o)
	if err != nil {
		return nil, err
	}
	defer r.CloseFS()
	return r.Status()
}

// ServiceMounts connects to the service, fetches its mount table and disconnects.
func ServiceMounts(o DialOptions) ([]front.Mount, error) {
	r, err := dialRemote(o)
	if err != nil {
		return nil, err
	}
	defer r.CloseFS()
	return r.Mounts()
}

// ForInstance returns o scoped to the service's filesystem instance name (its
// Prefix set from the service's mount table), for DialFS; an unknown name is an
// error that lists the instances the service has.
func ForInstance(o DialOptions, name string) (DialOptions, error) {
	mounts, err := ServiceMounts(o)
	if err != nil {
		return o, err
	}
	names := make([]string, 0, len(mounts))
	for _, m := range mounts {
		if m.Name == name {
			o.Prefix = m.Prefix
			return o, nil
		}
		names = append(names, m.Name)
	}
	return o, fmt.Errorf("the service has no filesystem %q (it has: %s)", name, strings.Join(names, ", "))
}

// Mounts returns the service's mount table (name and prefix of each instance).
func (r *remote) Mounts() ([]front.Mount, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	return c.Mounts()
}

// Status returns the service's status document (JSON).
func (r *remote) Status() ([]byte, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	return c.Status()
}
