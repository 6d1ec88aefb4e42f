package fusegw

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
)

// Defaults of Options.
const (
	// DefaultName is the mount's source in /proc/mounts; its type is always
	// "fuse.polytropon".
	DefaultName = "polytropon"
	// DefaultEntryTimeout and DefaultAttrTimeout bound how long the kernel trusts
	// a name or attributes it got from the gateway: changes made through this
	// mount invalidate them at once, so this is how long a change made through
	// the direct path may go unseen through FUSE (the libfuse default).
	DefaultEntryTimeout = time.Second
	DefaultAttrTimeout  = time.Second
	// DefaultMaxWrite is the largest READ or WRITE request (1 MiB, the kernel's
	// largest with 4 KiB pages; it is lowered to what the kernel allows).
	DefaultMaxWrite = 1 << 20

	minMaxWrite = 4096
)

// Options configure a mount.
type Options struct {
	// Name is the source shown in /proc/mounts and df (DefaultName if empty).
	Name string
	// EntryTimeout and AttrTimeout are how long the kernel caches names and
	// attributes; 0 means the defaults (1 s), a negative value no caching (every
	// path walk and stat(2) is a request). NegativeTimeout caches failed lookups;
	// its default is 0 (none), so that files created through the direct path
	// appear at once.
	EntryTimeout    time.Duration
	AttrTimeout     time.Duration
	NegativeTimeout time.Duration
	// AllowOther lets users other than the mounter in (non-root mounters need
	// user_allow_other in /etc/fuse.conf). Permission bits are always enforced by
	// the kernel (default_permissions).
	AllowOther bool
	// NoReadDirPlus makes the kernel list directories without looking every entry
	// up (READDIR instead of READDIRPLUS): cheaper for plain listings of large
	// directories over a slow FS, dearer for ls -l.
	NoReadDirPlus bool
	// DirectIO makes every open file bypass the kernel's page cache (FOPEN_DIRECT_IO):
	// each read(2) and write(2) is a request to the gateway. For data that changes
	// through the direct path while programs read it here, and for measuring the
	// FUSE round trip itself rather than the page cache in front of it.
	DirectIO bool
	// MaxWrite is the largest READ or WRITE request in bytes: DefaultMaxWrite if 0,
	// at least 4 KiB, at most what the kernel allows (fs.fuse.max_pages_limit).
	MaxWrite int
	// Debug logs every FUSE request and reply to Logger (at Info level, very
	// verbose).
	Debug bool
	// Logger receives the gateway's warnings; nil discards them.
	Logger *zap.Logger
	// Access is the permission checker of the FS, shared with its other ways in
	// (a service's direct path), so that both apply one set of rules and one
	// memo; nil makes the gateway its own (see libservices/access).
	Access *access.Checker
	// Quota, when not nil, is asked before every handle the gateway opens and
	// told when it is released (per uid); nil is unlimited.
	Quota Quota
}

// ErrMounted is matched (errors.Is) by the error of Mount and CleanStale for a
// mount point that has a live mount on it, which they never unmount.
var ErrMounted = errors.New("mount point busy")

// MountedError describes the live mount found on a mount point.
type MountedError struct {
	Mountpoint string
	FSType     string
	Source     string
}

func (e *MountedError) Error() string {
	return fmt.Sprintf("fusegw: %s is busy: a live %s mount (source %q) is there; not touching it, unmount it first",
		e.Mountpoint, e.FSType, e.Source)
}

// Is makes errors.Is(err, ErrMounted) true.
func (e *MountedError) Is(target error) bool { return target == ErrMounted }

// Server is one mounted FS.
type Server struct {
	mountpoint string
	dev        string // the mount's device, major:minor, as in mountinfo
	srv        *fuse.Server
	gw         *gateway
	log        *zap.Logger
	done       chan struct{} // closed when the last request was answered

	// detachFn, for a server of another process's mount
	// (ServeConnection), asks that process to detach it.
	detachFn func() error

	mu        sync.Mutex // serializes Unmount
	unmounted bool
}

// Mountpoint returns the absolute path the FS is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the server has stopped: the mount is gone (Unmount, or an
// unmount from outside), every open file was released and every request answered.
func (s *Server) Wait() { <-s.done }

// Done is closed when the server has stopped (see Wait).
func (s *Server) Done() <-chan struct{} { return s.done }

// Mount mounts fsys on mountpoint and serves it until it is unmounted. The mount
// point must be an existing directory: Mount creates none, so that a mistyped
// path is an error rather than a new directory. A dead FUSE mount left on it by
// a killed server is removed first (CleanStale); any other mount there is an
// error (ErrMounted). The caller keeps ownership of fsys: it must stay usable
// until Wait returns.
func Mount(mountpoint string, fsys libservices.FS, o Options) (*Server, error) {
	name, err := checkOptions(fsys, &o)
	if err != nil {
		return nil, err
	}
	mp, err := freeMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	root, err := rootAttr(mp, fsys)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	gw := newGateway(fsys, &root, &o, log)
	mo := mountOptions(&o, name, log)
	s := &Server{mountpoint: mp, gw: gw, log: log, done: make(chan struct{})}
	direct := false
	if os.Geteuid() == 0 {
		fd, err := mountDirect(mp, name, mo, uint32(os.Geteuid()), uint32(os.Getegid()))
		switch {
		case err == nil:
			// go-fuse serves a descriptor we opened (close-on-exec, so children
			// of the service cannot keep a dead mount alive) through its
			// /dev/fd/N form.
			s.srv, err = fuse.NewServer(gw, "/dev/fd/"+strconv.Itoa(fd), mo)
			if err != nil {
				unix.Close(fd)
				detach(mp, true)
				return nil, fmt.Errorf("fusegw: mount %s: %w", mp, err)
			}
			direct = true
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			log.Info("mount(2) refused, mounting with fusermount3", zap.String("mountpoint", mp))
		default:
			return nil, fmt.Errorf("fusegw: mount %s: mount(2): %w", mp, err)
		}
	}
	if s.srv == nil {
		s.srv, err = fuse.NewServer(gw, mp, mo)
		if err != nil {
			return nil, fmt.Errorf("fusegw: mount %s with fusermount3: %w", mp, err)
		}
	}
	if err := s.start(direct); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		s.Unmount()
		return nil, fmt.Errorf("fusegw: mount %s: stat after mounting: %w", mp, err)
	}
	s.dev = fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	return s, nil
}

// start runs the server's request loop and waits for the kernel's INIT.
func (s *Server) start(pollHackNeeded bool) error {
	go func() {
		s.srv.Serve()
		s.gw.shutdown()
		close(s.done)
	}()
	if err := s.srv.WaitMount(); err != nil {
		s.Unmount()
		return fmt.Errorf("fusegw: mount %s: %w", s.mountpoint, err)
	}
	if pollHackNeeded {
		pollHack(s.mountpoint) // WaitMount skips it for /dev/fd/N
	}
	return nil
}

// checkOptions checks what Mount and ServeConnection are given and returns the
// mount's source name.
func checkOptions(fsys libservices.FS, o *Options) (string, error) {
	if fsys == nil {
		return "", errors.New("fusegw: mount: nil filesystem")
	}
	if o.MaxWrite < 0 {
		return "", fmt.Errorf("fusegw: mount: negative MaxWrite %d", o.MaxWrite)
	}
	return sourceName(o.Name)
}

func sourceName(name string) (string, error) {
	if name == "" {
		name = DefaultName
	}
	if strings.ContainsAny(name, "\x00\n") {
		return "", fmt.Errorf("fusegw: mount: bad name %q", name)
	}
	return name, nil
}

// freeMountpoint canonicalises mountpoint and checks that it is a directory
// with no mount on it, after removing dead FUSE mounts (CleanStale).
func freeMountpoint(mountpoint string) (string, error) {
	mp, err := canonical(mountpoint)
	if err != nil {
		return "", err
	}
	if _, err := CleanStale(mp); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(mp, &st); err != nil {
		if err == unix.ENOENT {
			return "", fmt.Errorf("fusegw: mount point %s does not exist: %w", mp, err)
		}
		return "", fmt.Errorf("fusegw: mount point %s: %w", mp, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
	case unix.S_IFLNK:
		return "", fmt.Errorf("fusegw: mount point %s is a symbolic link; give the directory it names: %w", mp, syscall.ENOTDIR)
	default:
		return "", fmt.Errorf("fusegw: mount point %s is not a directory: %w", mp, syscall.ENOTDIR)
	}
	ms, err := mountsAt(mp)
	if err != nil {
		return "", err
	}
	if len(ms) > 0 {
		top := ms[len(ms)-1]
		return "", &MountedError{Mountpoint: mp, FSType: top.fstype, Source: top.source}
	}
	return mp, nil
}

// rootAttr is the attributes of fsys's root, which must be a directory.
func rootAttr(mp string, fsys libservices.FS) (libservices.Attr, error) {
	var root libservices.Attr
	if err := fsys.Lstat(".", &root); err != nil {
		return root, fmt.Errorf("fusegw: mount %s: the filesystem's root: %w", mp, err)
	}
	if !root.IsDir() {
		return root, fmt.Errorf("fusegw: mount %s: the filesystem's root is not a directory (mode %#o)", mp, root.Mode)
	}
	return root, nil
}

// maxWrite is the largest request of a mount given Options.MaxWrite (see
// there): the mounter and the server of a connection must agree on it.
func maxWrite(asked int) int {
	mw := asked
	if mw == 0 {
		mw = DefaultMaxWrite
	}
	if k := kernelMaxWrite(); mw > k {
		mw = k
	}
	if mw < minMaxWrite {
		mw = minMaxWrite // the kernel's own floor for writes; reads would go byte by byte
	}
	return mw
}

func mountOptions(o *Options, name string, log *zap.Logger) *fuse.MountOptions {
	return &fuse.MountOptions{
		AllowOther:         o.AllowOther,
		Options:            []string{"default_permissions"},
		MaxWrite:           maxWrite(o.MaxWrite),
		FsName:             name,
		Name:               "polytropon",
		DisableReadDirPlus: o.NoReadDirPlus,
		Debug:              o.Debug,
		Logger:             zap.NewStdLog(log.Named("go-fuse")),
	}
}

// # Privilege separation
//
// A process that may not mount (a pool's service, which runs as the pool's
// user with no capabilities) serves a connection that root mounted for it:
// root calls MountConnection and hands Connection.File over (fd passing or
// inheritance); the server calls ServeConnection with that descriptor; root
// calls Connection.Detach when the server asks (its Unmount) and after it
// exited. The mount is owned by the server's user (user_id, group_id), with
// default_permissions (the kernel checks every caller's permission bits) and
// allow_other only when asked, like the server's own mounts.

// ConnOptions configure MountConnection.
type ConnOptions struct {
	// Name, AllowOther and MaxWrite are as in Options (the server must be
	// given the same MaxWrite).
	Name       string
	AllowOther bool
	MaxWrite   int
	// UID and GID are the user the mount belongs to: the server's. Without
	// AllowOther only processes of that user may use the mount.
	UID, GID uint32
}

// Connection is a FUSE mount made for another process to serve.
type Connection struct {
	// Mountpoint is where it is mounted (canonical form).
	Mountpoint string
	// Dev is the mount's device (major:minor, as in mountinfo), which tells
	// this mount from any other mount on Mountpoint later.
	Dev string
	// File is the /dev/fuse descriptor (close-on-exec): hand it to the
	// server, then close it here, or the connection outlives the server.
	File *os.File

	mu       sync.Mutex
	detached bool
}

// MountConnection mounts a FUSE connection on mountpoint for a server that
// will serve Connection.File (root only). The mount point is checked and
// cleaned as by Mount. Until the server answers the kernel's INIT, every
// access to the mount waits, so nothing here touches the mount after mount(2).
func MountConnection(mountpoint string, o ConnOptions) (*Connection, error) {
	name, err := sourceName(o.Name)
	if err != nil {
		return nil, err
	}
	if o.MaxWrite < 0 {
		return nil, fmt.Errorf("fusegw: mount: negative MaxWrite %d", o.MaxWrite)
	}
	mp, err := freeMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	mo := &fuse.MountOptions{AllowOther: o.AllowOther, MaxWrite: maxWrite(o.MaxWrite), Name: "polytropon"}
	fd, err := mountDirect(mp, name, mo, o.UID, o.GID)
	if err != nil {
		return nil, fmt.Errorf("fusegw: mount %s: mount(2): %w", mp, err)
	}
	c := &Connection{Mountpoint: mp, File: os.NewFile(uintptr(fd), "/dev/fuse")}
	ms, err := mountsAt(mp)
	if err == nil && len(ms) == 0 {
		err = errors.New("not in the mount table after mount(2)")
	}
	if err != nil {
		c.File.Close()
		detach(mp, true)
		return nil, fmt.Errorf("fusegw: mount %s: %w", mp, err)
	}
	c.Dev = ms[len(ms)-1].dev
	return c, nil
}

// Detach unmounts the connection's mount if it is still on its mount point
// (lazily: files still open are served until they are closed). It is
// idempotent, and a mount already gone (unmounted from outside) is not an
// error; a mount stacked on top of it is left alone (an error).
func (c *Connection) Detach() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.detached {
		return nil
	}
	ms, err := mountsAt(c.Mountpoint)
	if err != nil {
		return err
	}
	ours := -1
	for i, m := range ms {
		if m.dev == c.Dev {
			ours = i
		}
	}
	if ours < 0 {
		c.detached = true
		return nil
	}
	if ours != len(ms)-1 {
		top := ms[len(ms)-1]
		return fmt.Errorf("fusegw: unmount %s: another mount (%s from %q) covers it; unmount that first", c.Mountpoint, top.fstype, top.source)
	}
	if err := detach(c.Mountpoint, true); err != nil {
		return fmt.Errorf("fusegw: unmount %s: %w", c.Mountpoint, err)
	}
	c.detached = true
	return nil
}

// ServeConnection serves fsys on a connection another process mounted
// (MountConnection), whose /dev/fuse descriptor this process holds as fd;
// mountpoint and dev are the Connection's. Unmount calls detach, which asks
// the mounter to detach the mount (this process may not); the server stops
// when the kernel ends the connection, as after Mount. o must have the
// MaxWrite the mounter was given.
func ServeConnection(fd int, mountpoint, dev string, fsys libservices.FS, o Options, detach func() error) (*Server, error) {
	name, err := checkOptions(fsys, &o)
	if err != nil {
		return nil, err
	}
	if detach == nil {
		return nil, errors.New("fusegw: serve connection: no way to detach it")
	}
	root, err := rootAttr(mountpoint, fsys)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	unix.CloseOnExec(fd)
	gw := newGateway(fsys, &root, &o, log)
	s := &Server{mountpoint: mountpoint, dev: dev, gw: gw, log: log, done: make(chan struct{}), detachFn: detach}
	s.srv, err = fuse.NewServer(gw, "/dev/fd/"+strconv.Itoa(fd), mountOptions(&o, name, log))
	if err != nil {
		return nil, fmt.Errorf("fusegw: serve %s: %w", mountpoint, err)
	}
	// The poll hack opens a file of the mount by its path, which the
	// server's user may not be able to reach; it matters only for a server
	// that polls files of its own mount, which a service does not.
	if err := s.start(true); err != nil {
		return nil, err
	}
	return s, nil
}

// Unmount detaches the mount: at once when nothing uses it, else lazily (the
// mount leaves the namespace now, and the files still open are served until they
// are closed; Wait waits for that). It returns without waiting for requests in
// flight, so a signal handler may call it at any time; it is idempotent, and a
// mount already unmounted from outside is not an error.
func (s *Server) Unmount() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unmounted {
		return nil
	}
	if s.detachFn != nil {
		if err := s.detachFn(); err != nil {
			return fmt.Errorf("fusegw: unmount %s: %w", s.mountpoint, err)
		}
		s.unmounted = true
		return nil
	}
	ms, err := mountsAt(s.mountpoint)
	if err != nil {
		return err
	}
	ours := -1
	for i, m := range ms {
		if s.dev == "" || m.dev == s.dev {
			ours = i
		}
	}
	if ours < 0 {
		s.unmounted = true
		return nil
	}
	if ours != len(ms)-1 {
		top := ms[len(ms)-1]
		return fmt.Errorf("fusegw: unmount %s: another mount (%s from %q) covers it; unmount that first", s.mountpoint, top.fstype, top.source)
	}
	if err := detach(s.mountpoint, false); err != nil {
		if lerr := detach(s.mountpoint, true); lerr != nil {
			return fmt.Errorf("fusegw: unmount %s: %v; lazily: %w", s.mountpoint, err, lerr)
		}
		s.log.Info("mount point busy: detached lazily; open files are served until closed",
			zap.String("mountpoint", s.mountpoint), zap.NamedError("busy", err))
	}
	s.unmounted = true
	return nil
}

// CleanStale removes a dead FUSE mount from mountpoint: one whose server is gone,
// so that every access fails with ENOTCONN (a killed service leaves one behind).
// It reports whether it removed one. A live mount (FUSE or not) is never touched:
// a FUSE mount that answers, or does not answer in a few seconds, is an error
// (ErrMounted for the first); other mounts are left alone with no error, for the
// caller to judge. Stacked dead mounts are all removed.
func CleanStale(mountpoint string) (bool, error) {
	mp, err := canonical(mountpoint)
	if err != nil {
		return false, err
	}
	cleaned := false
	for range 16 {
		ms, err := mountsAt(mp)
		if err != nil || len(ms) == 0 {
			return cleaned, err
		}
		top := ms[len(ms)-1]
		if !isFUSE(top.fstype) {
			return cleaned, nil
		}
		dead, err := probeDead(mp)
		if err != nil {
			return cleaned, err
		}
		if !dead {
			return cleaned, &MountedError{Mountpoint: mp, FSType: top.fstype, Source: top.source}
		}
		if err := detach(mp, true); err != nil {
			return cleaned, fmt.Errorf("fusegw: removing the dead FUSE mount on %s: %w", mp, err)
		}
		cleaned = true
	}
	return cleaned, fmt.Errorf("fusegw: %s: dead FUSE mounts keep appearing", mp)
}

// probeTimeout bounds how long CleanStale waits for a FUSE mount to answer: a
// live server answers at once, a dead connection fails at once; a server that is
// alive but stuck gets this long.
const probeTimeout = 5 * time.Second

// probeDead reports whether the FUSE mount on mp has lost its server.
func probeDead(mp string) (bool, error) {
	res := make(chan error, 1)
	go func() {
		// statfs, not stat: the kernel answers stat from its attribute cache even
		// on a dead connection, but asks the server for every statfs. Left
		// behind on a timeout: it returns when the server answers.
		var st unix.Statfs_t
		res <- unix.Statfs(mp, &st)
	}()
	select {
	case err := <-res:
		return err == unix.ENOTCONN || err == unix.ECONNABORTED, nil
	case <-time.After(probeTimeout):
		return false, fmt.Errorf("fusegw: %s: the FUSE mount there does not answer within %v; not touching it: %w", mp, probeTimeout, ErrMounted)
	}
}

func isFUSE(fstype string) bool {
	return fstype == "fuse" || fstype == "fuseblk" || strings.HasPrefix(fstype, "fuse.") || strings.HasPrefix(fstype, "fuseblk.")
}

// canonical makes mountpoint absolute with its directory's symlinks resolved, the
// form /proc/self/mountinfo shows, without touching the final component (which
// may be a dead mount that fails every access).
func canonical(mountpoint string) (string, error) {
	if mountpoint == "" {
		return "", errors.New("fusegw: empty mount point")
	}
	if strings.IndexByte(mountpoint, 0) >= 0 {
		return "", fmt.Errorf("fusegw: mount point %q contains a NUL byte", mountpoint)
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("fusegw: mount point %s: %w", mountpoint, err)
	}
	dir, base := filepath.Split(abs)
	if base == "" {
		return abs, nil
	}
	rdir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("fusegw: mount point %s does not exist: %w", abs, syscall.ENOENT)
		}
		return "", fmt.Errorf("fusegw: mount point %s: %w", abs, err)
	}
	return filepath.Join(rdir, base), nil
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	dev    string // major:minor
	point  string
	fstype string
	source string
}

// mountsAt returns the mounts on mp, bottom first.
func mountsAt(mp string) ([]mountEntry, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("fusegw: reading the mount table: %w", err)
	}
	var out []mountEntry
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root point options [optional...] - fstype source superopts
		f := strings.Split(line, " ")
		if len(f) < 10 || unescapeMount(f[4]) != mp {
			continue
		}
		for i := 6; i+2 < len(f); i++ {
			if f[i] == "-" {
				out = append(out, mountEntry{dev: f[2], point: mp, fstype: f[i+1], source: unescapeMount(f[i+2])})
				break
			}
		}
	}
	return out, nil
}

// unescapeMount undoes the octal escapes (\040 for a space...) of mountinfo.
func unescapeMount(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// mountDirect opens /dev/fuse and mounts it on mp with mount(2) (root only)
// for the user uid, gid, returning the descriptor to serve.
func mountDirect(mp, source string, mo *fuse.MountOptions, uid, gid uint32) (int, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/fuse: %w", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d,max_read=%d,default_permissions",
		fd, uid, gid, mo.MaxWrite)
	if mo.AllowOther {
		opts += ",allow_other"
	}
	for {
		err = unix.Mount(source, mp, "fuse."+mo.Name, unix.MS_NOSUID|unix.MS_NODEV, opts)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// pollHack makes the kernel ask POLL once, which go-fuse answers ENOSYS so that the
// kernel never asks again: a Go program polling a file of the mount it serves could
// otherwise wait for a thread the poll holds.
func pollHack(mp string) {
	fd, err := unix.Open(mp+"/.go-fuse-epoll-hack", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	unix.Close(fd)
}

// kernelMaxWrite is the largest request the kernel accepts (fs.fuse.max_pages_limit
// pages, 256 by default).
func kernelMaxWrite() int {
	pages := 256
	if b, err := os.ReadFile("/proc/sys/fs/fuse/max_pages_limit"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			pages = n
		}
	}
	return pages * os.Getpagesize()
}

// detach unmounts mp, lazily (MNT_DETACH) if asked: umount2(2) as root, else
// fusermount3 -u [-z], the setuid helper that may unmount the caller's FUSE mounts.
func detach(mp string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := unix.UMOUNT_NOFOLLOW
		if lazy {
			flags |= unix.MNT_DETACH
		}
		for {
			err := unix.Unmount(mp, flags)
			if err == unix.EINVAL {
				// Not a mount point (any more): unmounted meanwhile.
				return nil
			}
			if err != unix.EINTR {
				return err
			}
		}
	}
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return errors.New("neither fusermount3 nor fusermount is installed")
		}
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	out, err := exec.Command(bin, append(args, mp)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(append(args, mp), " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
