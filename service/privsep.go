package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/polytropon/polytropon/internal/logging"
	"github.com/polytropon/polytropon/internal/privdrop"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/service/fusegw"
)

// User is the user a root-started service drops to (Config.User): `user:
// {uid: N, gid: M}`, or `user: NAME` for a user of this host and its primary
// group.
type User struct {
	UID  uint32 `yaml:"uid"`
	GID  uint32 `yaml:"gid"`
	Name string `yaml:"-"`
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (u *User) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		pw, err := user.Lookup(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: user %q: %w", n.Line, n.Value, err)
		}
		uid, err1 := strconv.ParseUint(pw.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(pw.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("line %d: user %q has uid %q gid %q", n.Line, n.Value, pw.Uid, pw.Gid)
		}
		*u = User{UID: uint32(uid), GID: uint32(gid), Name: n.Value}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: user: want a user name or {uid: N, gid: M}", n.Line)
	}
	var seen [2]bool
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var dst *uint32
		switch k.Value {
		case "uid":
			dst, seen[0] = &u.UID, true
		case "gid":
			dst, seen[1] = &u.GID, true
		default:
			return fmt.Errorf("line %d: user: unknown key %q (want uid and gid)", k.Line, k.Value)
		}
		if err := v.Decode(dst); err != nil {
			return fmt.Errorf("line %d: user.%s: %w", v.Line, k.Value, err)
		}
	}
	if !seen[0] || !seen[1] {
		return fmt.Errorf("line %d: user: both uid and gid are required", n.Line)
	}
	return nil
}

// Identity is u as privdrop takes it.
func (u *User) Identity() privdrop.Identity { return privdrop.Identity{UID: u.UID, GID: u.GID} }

// Handoff is what a privileged parent hands the unprivileged service process
// it starts (`polytropon service --handoff JSON`): descriptors the process
// inherits, by number, and what they are. The parent made them because the
// service's user may not: sockets in root's directories, FUSE mounts.
type Handoff struct {
	// Config is the configuration file, open for reading (read from offset
	// 0): the service's user need not be able to open it.
	Config int `json:"config"`
	// Socket is the direct path's listening socket (SOCK_SEQPACKET), owned by
	// the user with mode 0660.
	Socket int `json:"socket"`
	// Control is the control socket's listener (root's, mode 0600), 0 when
	// the configuration has none.
	Control int `json:"control,omitempty"`
	// Metrics is the metrics endpoint's TCP listener, 0 when none.
	Metrics int `json:"metrics,omitempty"`
	// Monitor is the service's end of a SOCK_SEQPACKET pair with the parent,
	// over which it asks the parent to detach its FUSE mounts (it may not).
	Monitor int `json:"monitor"`
	// FUSE are the mounts, one per FUSE mountpoint of the configuration, in
	// the order of its filesystems and then of their mountpoints.
	FUSE []HandoffFUSE `json:"fuse,omitempty"`
	// User is the identity the parent dropped the process to; the service
	// checks that it has it and nothing more.
	User privdrop.Identity `json:"user"`
	// Traceback is the parent's GOTRACEBACK (the set-id exec resets it; see
	// internal/privdrop).
	Traceback string `json:"traceback,omitempty"`
}

// HandoffFUSE is one FUSE connection the parent mounted.
type HandoffFUSE struct {
	Path string `json:"path"`
	FD   int    `json:"fd"`
	Dev  string `json:"dev"`
}

// ParseHandoff decodes the --handoff argument.
func ParseHandoff(s string) (*Handoff, error) {
	var h Handoff
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("service: handoff: %w", err)
	}
	if h.Config < 3 || h.Socket < 3 || h.Monitor < 3 {
		return nil, fmt.Errorf("service: handoff: descriptors config %d, socket %d, monitor %d: want inherited ones (3 and up)", h.Config, h.Socket, h.Monitor)
	}
	if err := h.User.Validate(); err != nil {
		return nil, fmt.Errorf("service: handoff: %w", err)
	}
	return &h, nil
}

// Inherit completes the privilege drop of a service process a parent started
// with h (privdrop.Finish) and reads its configuration from the inherited
// descriptor; name is the file's name for errors. It is the first thing the
// process does: before it, nothing a tenant controls has been read.
func Inherit(h *Handoff, name string) (*Config, error) {
	id, err := privdrop.Finish(h.Traceback)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	if id != h.User {
		return nil, fmt.Errorf("service: running as %v, the parent dropped to %v", id, h.User)
	}
	f := os.NewFile(uintptr(h.Config), name)
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<24))
	if err != nil {
		return nil, fmt.Errorf("service: reading %s: %w", name, err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cfg.Handoff = h
	return cfg, nil
}

// Parent is the privileged half of a service that runs as another user: what
// it made for one run of the unprivileged service process, handed over as
// inherited descriptors. serve is such a parent for each pool; so is a
// root-started `polytropon service` whose configuration has a user (RunParent).
//
// Use: Prepare, start the process with ExtraFiles and HandoffArgs through
// privdrop.Exec (`polytropon pool-exec --uid --gid`), Started, wait for the
// process, Cleanup. A restart prepares afresh.
type Parent struct {
	user    privdrop.Identity
	log     *zap.Logger
	files   []*os.File // handed over: fd 3+i in the child
	handoff Handoff
	conns   []*fusegw.Connection
	sockets []string // made here, removed by Cleanup
	monitor *net.UnixConn
	monDone chan struct{}
}

// Prepare makes for cfg's service, which will run as user: the direct path's
// socket (owned by the user, mode 0660), the control socket (root's, 0600:
// only root may connect), the metrics listener, and every FUSE mount
// (mounted for the user, default_permissions, allow_other as configured).
// cfgFile is the configuration, handed over as it is. A stale socket or a
// dead FUSE mount left by an earlier run is removed first; a live one is an
// error. On error nothing is left.
func Prepare(cfg *Config, cfgFile *os.File, u privdrop.Identity, logger *zap.Logger) (_ *Parent, err error) {
	if err := u.Validate(); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	p := &Parent{user: u, log: logging.OrNop(logger)}
	defer func() {
		if err != nil {
			_ = p.Cleanup()
		}
	}()
	add := func(f *os.File) int {
		p.files = append(p.files, f)
		return 2 + len(p.files)
	}
	cf, err := dupFile(cfgFile)
	if err != nil {
		return nil, err
	}
	p.handoff = Handoff{Config: add(cf), User: u, Traceback: os.Getenv("GOTRACEBACK")}

	if err := removeStaleSocket(cfg.Socket, "unixpacket"); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("service: listen %s: %w", cfg.Socket, err)
	}
	ln.SetUnlinkOnClose(false)
	p.sockets = append(p.sockets, cfg.Socket)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, err
	}
	p.handoff.Socket = add(f)
	// The tenant's door: its uid and gid reach it, nobody else (the
	// service's SO_PEERCRED check comes after).
	if err := os.Lchown(cfg.Socket, int(u.UID), int(u.GID)); err != nil {
		return nil, fmt.Errorf("service: socket: %w", err)
	}
	if err := os.Chmod(cfg.Socket, 0o660); err != nil {
		return nil, fmt.Errorf("service: socket: %w", err)
	}

	if cfg.Control != "" {
		if err := removeStaleSocket(cfg.Control, "unix"); err != nil {
			return nil, err
		}
		cl, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Control, Net: "unix"})
		if err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		cl.SetUnlinkOnClose(false)
		p.sockets = append(p.sockets, cfg.Control)
		f, err := cl.File()
		cl.Close()
		if err != nil {
			return nil, err
		}
		p.handoff.Control = add(f)
		// Root's socket: connect(2) needs write permission on it, so only
		// root reaches the service's control (the service admits uid 0
		// only, too). The tenant must not resize its own service.
		if err := os.Chmod(cfg.Control, 0o600); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
	}

	if cfg.Metrics != "" {
		ml, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		f, err := ml.(*net.TCPListener).File()
		ml.Close()
		if err != nil {
			return nil, err
		}
		p.handoff.Metrics = add(f)
	}

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("service: monitor socket pair: %w", err)
	}
	mine := os.NewFile(uintptr(pair[0]), "monitor")
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		unix.Close(pair[1])
		return nil, fmt.Errorf("service: monitor: %w", err)
	}
	p.monitor = c.(*net.UnixConn)
	p.handoff.Monitor = add(os.NewFile(uintptr(pair[1]), "monitor"))

	for i, fs := range cfg.Filesystems {
		for _, m := range fs.mounts() {
			conn, err := fusegw.MountConnection(m.Path, fusegw.ConnOptions{Name: "polytropon:" + fs.Name,
				AllowOther: m.AllowOther, UID: u.UID, GID: u.GID})
			if err != nil {
				return nil, fmt.Errorf("filesystems[%d].fuse %s: %w", i, m.Path, err)
			}
			p.conns = append(p.conns, conn)
			p.handoff.FUSE = append(p.handoff.FUSE, HandoffFUSE{Path: conn.Mountpoint, FD: add(conn.File), Dev: conn.Dev})
		}
	}
	return p, nil
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("service: dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// ExtraFiles are the descriptors to hand over, as exec.Cmd.ExtraFiles (the
// first is fd 3, as HandoffArgs numbers them).
func (p *Parent) ExtraFiles() []*os.File { return p.files }

// HandoffArgs are the arguments of `polytropon service` that carry the
// handoff.
func (p *Parent) HandoffArgs() []string {
	b, _ := json.Marshal(p.handoff)
	return []string{"--handoff", string(b)}
}

// Started closes this process's copies of what it handed over (a FUSE
// connection or a listener it kept would outlive the service) and starts
// answering the service's requests on the monitor socket.
func (p *Parent) Started() {
	p.closeFiles()
	p.monDone = make(chan struct{})
	go p.serveMonitor()
}

func (p *Parent) closeFiles() {
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
}

// Monitor requests (one SOCK_SEQPACKET message each) and answers.
const (
	monitorDetach = "detach"
	monitorOK     = "ok"
)

// serveMonitor answers the service until it goes away: "detach" detaches
// every FUSE mount made for it, the one thing it needs root for while it
// runs. Anything else is refused; the monitor takes no argument a service
// could use to reach anything but its own mounts.
func (p *Parent) serveMonitor() {
	defer close(p.monDone)
	buf := make([]byte, 64)
	for {
		n, err := p.monitor.Read(buf)
		if err != nil || n == 0 {
			return
		}
		answer := monitorOK
		if string(buf[:n]) != monitorDetach {
			answer = fmt.Sprintf("unknown request %q", buf[:n])
		} else if err := p.detach(); err != nil {
			answer = err.Error()
		}
		if _, err := p.monitor.Write([]byte(answer)); err != nil {
			return
		}
	}
}

func (p *Parent) detach() error {
	var errs []error
	for _, c := range p.conns {
		if err := c.Detach(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Cleanup, once the service process has exited (or failed to start),
// detaches what is left of its FUSE mounts (lazily: a mount still busy goes
// when its files are closed) and removes the sockets made for it.
func (p *Parent) Cleanup() error {
	// Still held when the process never started.
	p.closeFiles()
	var errs []error
	if p.monitor != nil {
		p.monitor.Close()
		if p.monDone != nil {
			<-p.monDone
		}
	}
	if err := p.detach(); err != nil {
		errs = append(errs, err)
	}
	for _, s := range p.sockets {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// monitorTimeout bounds the service's wait for its parent's answer.
const monitorTimeout = 10 * time.Second

// askParent sends one monitor request and waits for its answer.
func askParent(c *net.UnixConn, mu *sync.Mutex, req string) error {
	mu.Lock()
	defer mu.Unlock()
	_ = c.SetDeadline(time.Now().Add(monitorTimeout))
	if _, err := c.Write([]byte(req)); err != nil {
		return fmt.Errorf("service: asking the parent to %s: %w", req, err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("service: the parent's answer to %s: %w", req, err)
	}
	if string(buf[:n]) != monitorOK {
		return fmt.Errorf("service: the parent could not %s: %s", req, buf[:n])
	}
	return nil
}

// ParentOptions configure RunParent.
type ParentOptions struct {
	// Socket, when set, overrides the configuration's socket (the command
	// must give the service the same override).
	Socket string
	// Command builds the unprivileged service's process (privdrop.Exec to
	// the configured user, then `polytropon service ... ARGS`) from the
	// handoff's arguments; RunParent sets its ExtraFiles and starts it.
	Command func(handoffArgs []string) *exec.Cmd
}

// RunParent runs a service whose configuration names a user, started by
// root: it prepares what the service may not make itself (Prepare), starts
// the service as the user, forwards SIGTERM and SIGINT to it, answers its
// requests, and when it exits detaches its FUSE mounts and removes its
// sockets. It returns the service's exit error (nil after a clean stop).
// cfgPath is the configuration file, handed over open.
func RunParent(cfgPath string, o ParentOptions, logger *zap.Logger) error {
	log := logging.OrNop(logger)
	f, err := os.Open(cfgPath)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<24))
	if err != nil {
		return err
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	if cfg.User == nil {
		return fmt.Errorf("%s: no user to run the service as", cfgPath)
	}
	if o.Socket != "" {
		cfg.Socket = o.Socket
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	p, err := Prepare(cfg, f, cfg.User.Identity(), log)
	if err != nil {
		return err
	}
	cmd := o.Command(p.HandoffArgs())
	cmd.ExtraFiles = p.ExtraFiles()
	if err := cmd.Start(); err != nil {
		return errors.Join(err, p.Cleanup())
	}
	p.Started()
	log.Info("service started as its user", zap.Int("pid", cmd.Process.Pid), zap.Stringer("user", cfg.User.Identity()))
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	var werr error
	for done := false; !done; {
		select {
		case sig := <-sigs:
			log.Info("stopping the service", zap.Stringer("signal", sig))
			_ = cmd.Process.Signal(sig)
		case werr = <-waitc:
			done = true
		}
	}
	if err := p.Cleanup(); err != nil {
		log.Error("cleaning up after the service", zap.Error(err))
		return errors.Join(werr, err)
	}
	return werr
}

// checkBranches fails, for a service that is not root, on a passthrough
// branch its user cannot use (search and read, and write unless it is
// read-only), naming the directory and the fix: serve and the standalone
// parent never chown a configured path, which may be anything on the host.
func checkBranches(cfg *Config) error {
	if os.Geteuid() == 0 {
		return nil
	}
	for i, fs := range cfg.Filesystems {
		for _, l := range []struct {
			key    string
			layers []libservices.Layer
		}{{"stack", fs.Stack}, {"branches", fs.Branches}} {
			for j, layer := range l.layers {
				if layer.Kind != "passthrough" {
					continue
				}
				var o passthrough.Options
				if err := layer.Opts.Decode(&o); err != nil || o.Dir == "" {
					continue // stack.Build reports it
				}
				mode := uint32(unix.R_OK | unix.X_OK)
				if !o.ReadOnly {
					mode |= unix.W_OK
				}
				err := unix.Faccessat(unix.AT_FDCWD, o.Dir, mode, unix.AT_EACCESS)
				if err == unix.EROFS {
					err = unix.Faccessat(unix.AT_FDCWD, o.Dir, unix.R_OK|unix.X_OK, unix.AT_EACCESS)
				}
				if err == nil {
					continue
				}
				need := "search and read"
				if !o.ReadOnly {
					need = "search, read and write"
				}
				uid, gid := os.Geteuid(), os.Getegid()
				return &libservices.ConfigError{Key: fmt.Sprintf("filesystems[%d].%s[%d].passthrough.dir", i, l.key, j),
					Msg: fmt.Sprintf("%s is not usable by the service's user, uid %d gid %d (it needs %s on it and search on every directory above): %v; "+
						"give it to that user (chown %d:%d %s) or grant the access to gid %d, or mark it readonly if the service must not write it",
						o.Dir, uid, gid, need, err, uid, gid, o.Dir, gid)}
			}
		}
	}
	return nil
}
