package pool

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/logging"
	"github.com/polytropon/polytropon/internal/privdrop"
	"github.com/polytropon/polytropon/internal/tailbuf"
	"github.com/polytropon/polytropon/netstack"
	"github.com/polytropon/polytropon/pool/elastic"
	"github.com/polytropon/polytropon/service"
)

// Options tune Serve; zero values take the defaults.
type Options struct {
	// Exe is the polytropon binary started (as `pool-exec ... --uid U --gid G
	// -- EXE service --handoff ...`) for each pool; default os.Executable().
	// The pool's user needs execute permission on it (not on its directory:
	// it is executed through a descriptor opened as root).
	Exe string
	// Stderr receives the services' logs; default os.Stderr.
	Stderr io.Writer
	// StopTimeout is how long a service has after SIGTERM before SIGKILL
	// (default 10 s).
	StopTimeout time.Duration
	// ReadyTimeout bounds the wait for each service's first start (default 30 s).
	ReadyTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay before restarting a service that
	// exited (default 100 ms, doubling up to 10 s).
	MinBackoff, MaxBackoff time.Duration
}

func (o *Options) defaults() error {
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Exe = exe
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = 10 * time.Second
	}
	return nil
}

// ReadyLine is what a service prints on stdout once it accepts clients
// (cmd/polytropon's service command).
const ReadyLine = "polytropon service ready"

// Server is a running `serve`: the pools' cgroups, state directories and
// supervised services.
type Server struct {
	cfg  Config
	opts Options
	log  *zap.Logger
	cgs  *Cgroups
	lock *os.File

	// mu guards pools (appended while earlier pools' supervisors already run)
	// and serialises writes of the record.
	mu    sync.Mutex
	pools []*running

	elastic     *elastic.Driver // nil without elasticity
	stopElastic func()
}

// running is one pool's supervised service.
type running struct {
	p   *Pool
	cg  Cgroup
	net *netstack.Pool // nil: the pool has no network
	// exclusive: the pool's cpuset is exclusive (set by makeExclusive, under
	// Server.mu).
	exclusive bool
	s         *Server
	stop      chan struct{}
	done      chan struct{}

	mu       sync.Mutex
	cmd      *exec.Cmd // the current service process; nil between restarts
	restarts int
	// healthRestarts counts the restarts serve forced because the service
	// stopped answering its health checks; lastUnhealthy says why the last
	// one was.
	healthRestarts int
	lastUnhealthy  string
	up             bool       // the service printed its ready line and has not exited since
	ready          chan error // the first start's outcome; buffered, written once
}

// record is what serve leaves in RunDir so that the next serve can clean up after
// a SIGKILL: the pools and state directories it created.
type record struct {
	// Cgroup and CgroupVersion locate the pools' cgroups (Status reads their
	// statistics).
	Cgroup        string       `json:"cgroup,omitempty"`
	CgroupVersion int          `json:"cgroup_version,omitempty"`
	Pools         []recordPool `json:"pools"`
}

type recordPool struct {
	Name     string `json:"name"`
	StateDir string `json:"state_dir"`
	// Socket and CgroupProcs are filled once the pool exists; `polytropon run`
	// reads them (Lookup) to start containers in the pool.
	Socket      string   `json:"socket,omitempty"`
	CgroupProcs []string `json:"cgroup_procs,omitempty"`
	// Netns and HostIf name the pool's network; they are recorded before it
	// is created, so that a serve killed while creating it leaves nothing the
	// next one does not remove.
	Netns  string `json:"netns,omitempty"`
	HostIf string `json:"host_if,omitempty"`
	// What `polytropon status` shows: the reservations, and the service's
	// state as of the record's last write.
	Reservation Reservation `json:"reservation"`
	ServicePid  int         `json:"service_pid,omitempty"`
	ServiceUp   bool        `json:"service_up,omitempty"`
	Restarts    int         `json:"restarts,omitempty"`
	// HealthRestarts are the restarts serve forced on a service that
	// stopped answering (counted in Restarts too), LastUnhealthy why.
	HealthRestarts int    `json:"health_restarts,omitempty"`
	LastUnhealthy  string `json:"last_unhealthy,omitempty"`
	// UID and GID are the pool's user: `run --rootfs` runs the image's
	// command as them.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Reservation is what a pool reserves, as its configuration says.
type Reservation struct {
	CPUs          string   `json:"cpus"`
	CPUsExclusive bool     `json:"cpus_exclusive,omitempty"`
	Memory        int64    `json:"memory,omitempty"`
	Pids          int64    `json:"pids,omitempty"`
	IO            *IOLimit `json:"io,omitempty"`
	Network       *NetRes  `json:"network,omitempty"`
}

// IOLimit is a pool's block I/O throttle.
type IOLimit struct {
	Device   string `json:"device"`
	ReadBPS  int64  `json:"read_bps,omitempty"`
	WriteBPS int64  `json:"write_bps,omitempty"`
}

// NetRes is a pool's network.
type NetRes struct {
	Netns       string `json:"netns"`
	HostIf      string `json:"host_if"`
	Address     string `json:"address"`
	HostAddress string `json:"host_address"`
	RateBPS     int64  `json:"rate_bps"`
}

// Serve reconciles what an earlier serve left behind, then creates every pool of
// cfg and starts its service, returning once all services accept clients. Close
// tears everything down.
func Serve(cfg Config, opts Options, logger *zap.Logger) (_ *Server, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := cfg.CheckUsers(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, opts: opts, log: logging.OrNop(logger)}
	cgs, err := NewCgroups(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	s.cgs = cgs
	if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
		return nil, err
	}
	// One serve per run directory: the lock is released by the kernel when a serve
	// dies, however it dies, so a stale lock cannot block the next start.
	lf, err := os.OpenFile(filepath.Join(cfg.RunDir, "serve.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("another serve is running with run_dir %s: %w", cfg.RunDir, err)
	}
	s.lock = lf
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.reconcile(); err != nil {
		return nil, err
	}
	// An exclusive parent a killed serve left would refuse pools with other
	// CPUs.
	if err := s.cgs.ResetParent(); err != nil {
		s.log.Warn("reset the pools' parent cpuset", zap.Error(err))
	}
	if err := s.writeRecord(); err != nil {
		return nil, err
	}
	for i := range s.cfg.Pools {
		r, err := s.startPool(&s.cfg.Pools[i])
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.pools = append(s.pools, r)
		s.mu.Unlock()
	}
	if s.cfg.ExclusiveCPUs {
		s.makeExclusive()
	}
	// Again, now with the cgroups: what Lookup reads.
	if err := s.writeRecord(); err != nil {
		return nil, err
	}
	for _, r := range s.pools {
		select {
		case err := <-r.ready:
			if err != nil {
				return nil, fmt.Errorf("pool %s: %w", r.p.Name, err)
			}
		case <-time.After(s.opts.ReadyTimeout):
			return nil, fmt.Errorf("pool %s: service not ready after %v", r.p.Name, s.opts.ReadyTimeout)
		}
	}
	s.startElasticity()
	s.log.Info("serve ready", zap.Int("pools", len(s.pools)), zap.Int("cgroup_version", s.cgs.Version()))
	return s, nil
}

// makeExclusive makes exclusive the cpusets of the pools whose CPUs no other
// pool shares, logging why for each pool it cannot.
func (s *Server) makeExclusive() {
	var union []int
	var want []string
	for i, p := range s.cfg.Pools {
		union = append(union, p.cpuList...)
		if p.CPUs == "" {
			s.log.Warn("pool cpuset not exclusive: the pool has no cpus of its own (cpus is empty)", zap.String("pool", p.Name))
			continue
		}
		shared := ""
		for j, o := range s.cfg.Pools {
			if j != i && overlaps(p.cpuList, o.cpuList) {
				shared = o.Name
				break
			}
		}
		if shared != "" {
			s.log.Warn("pool cpuset not exclusive: it shares CPUs with another pool", zap.String("pool", p.Name), zap.String("with", shared))
			continue
		}
		want = append(want, p.Name)
	}
	if len(want) == 0 {
		return
	}
	sort.Ints(union)
	done, why := s.cgs.MakeExclusive(FormatCPUList(slices.Compact(union)), want)
	if why != nil {
		s.log.Warn("pool cpusets not exclusive; going on without", zap.Strings("pools", want), zap.Strings("made_exclusive", done), zap.Error(why))
	}
	s.mu.Lock()
	for _, r := range s.pools {
		for _, n := range done {
			if r.p.Name == n {
				r.exclusive = true
			}
		}
	}
	s.mu.Unlock()
	if len(done) > 0 {
		s.log.Info("exclusive pool cpusets", zap.Strings("pools", done))
	}
}

func overlaps(a, b []int) bool {
	for _, x := range a {
		if containsInt(b, x) {
			return true
		}
	}
	return false
}

// reconcile removes what a serve killed without its teardown left: the pools'
// cgroups under our parent (their processes killed first; Create makes them
// anew) and the state directories it recorded or that our pools will use.
func (s *Server) reconcile() error {
	names, err := s.cgs.List()
	if err != nil {
		return err
	}
	for _, n := range names {
		cg, err := s.cgs.Load(n)
		if err != nil {
			return err
		}
		pids, _ := cg.Pids()
		if err := cg.Delete(); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		s.log.Warn("reconcile: removed a leftover pool cgroup", zap.String("pool", n), zap.Ints("killed", pids))
	}
	var rec record
	if data, err := os.ReadFile(s.recordPath()); err == nil {
		if err := json.Unmarshal(data, &rec); err != nil {
			s.log.Warn("reconcile: unreadable record, ignored", zap.String("path", s.recordPath()), zap.Error(err))
		}
	}
	dirs := map[string]bool{}
	nets := map[[2]string]bool{}
	for _, p := range rec.Pools {
		dirs[p.StateDir] = true
		if p.Netns != "" && p.HostIf != "" {
			nets[[2]string{p.Netns, p.HostIf}] = true
		}
	}
	for _, p := range s.cfg.Pools {
		if p.Network != nil {
			ns, hif := p.Network.netConfig(p.Name).Names()
			nets[[2]string{ns, hif}] = true
		}
	}
	for n := range nets {
		np := netstack.Existing(n[0], n[1])
		_, nsErr := os.Lstat(np.NetnsPath)
		_, ifErr := net.InterfaceByName(np.HostIf)
		if nsErr != nil && ifErr != nil {
			continue
		}
		if err := np.Teardown(); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		s.log.Warn("reconcile: removed a leftover pool network", zap.String("netns", n[0]), zap.String("host_if", n[1]))
	}
	for _, p := range s.cfg.Pools {
		dirs[p.StateDir] = true
	}
	for d := range dirs {
		if err := removeStateDir(d); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
	}
	// Decisions files of a killed serve's elasticity.
	leftovers, _ := filepath.Glob(elastic.DecisionsPath(s.cfg.RunDir, "*"))
	for _, f := range leftovers {
		_ = os.Remove(f)
	}
	return nil
}

func (s *Server) recordPath() string { return filepath.Join(s.cfg.RunDir, "pools.json") }

// writeRecord writes RunDir/pools.json anew (atomically: Lookup and Status may
// read it at any time).
func (s *Server) writeRecord() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := record{Cgroup: s.cfg.Cgroup, CgroupVersion: s.cgs.Version()}
	for i := range s.cfg.Pools {
		p := &s.cfg.Pools[i]
		rp := recordPool{Name: p.Name, StateDir: p.StateDir, Reservation: p.reservation(), UID: p.UID, GID: p.GID}
		if p.Network != nil {
			rp.Netns, rp.HostIf = p.Network.netConfig(p.Name).Names()
		}
		for _, r := range s.pools {
			if r.p.Name == p.Name {
				rp.Socket = p.Socket()
				rp.CgroupProcs = r.cg.ProcsFiles()
				rp.Reservation.CPUsExclusive = r.exclusive
				r.mu.Lock()
				if r.cmd != nil && r.cmd.Process != nil {
					rp.ServicePid = r.cmd.Process.Pid
				}
				rp.ServiceUp, rp.Restarts = r.up, r.restarts
				rp.HealthRestarts, rp.LastUnhealthy = r.healthRestarts, r.lastUnhealthy
				r.mu.Unlock()
			}
		}
		rec.Pools = append(rec.Pools, rp)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := s.recordPath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.recordPath())
}

// stateFiles are the only files serve puts in a state directory; removeStateDir
// deletes these and then the directory, so a state_dir pointing somewhere it
// should not loses nothing else.
var stateFiles = []string{"service.sock", "service.yaml", "control.sock"}

func removeStateDir(dir string) error {
	for _, f := range stateFiles {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	return nil
}

func (s *Server) startPool(p *Pool) (*running, error) {
	cg, err := s.cgs.Create(p.Name, p.limits())
	if err != nil {
		return nil, err
	}
	// Mkdir then Chown/Chmod: the directory is never open to anyone but root
	// before it has its group. It stays root's: root reads the service's
	// config from it, the root service binds its sockets in it and serve
	// chowns the socket, so a tenant that could rename or unlink in it could
	// swap a symlink to any host file in (root would chown it to the tenant)
	// or its own config (the service would run it as root at its next
	// restart). The pool's uid and gid reach the socket through the mode:
	// 0751 lets anyone traverse but not list; the socket's own mode (0660
	// uid:gid) and SO_PEERCRED keep everyone else out.
	if err := os.Mkdir(p.StateDir, 0o700); err != nil {
		_ = cg.Delete()
		return nil, err
	}
	if err := os.Chown(p.StateDir, 0, int(p.GID)); err == nil {
		err = os.Chmod(p.StateDir, 0o751)
	}
	if err != nil {
		_ = cg.Delete()
		_ = removeStateDir(p.StateDir)
		return nil, err
	}
	data, err := p.ServiceConfig()
	if err == nil {
		err = os.WriteFile(p.serviceConfigPath(), data, 0o600)
	}
	if err != nil {
		_ = cg.Delete()
		_ = removeStateDir(p.StateDir)
		return nil, err
	}
	r := &running{p: p, cg: cg, s: s, stop: make(chan struct{}), done: make(chan struct{}), ready: make(chan error, 1)}
	if p.Network != nil {
		r.net, err = netstack.Setup(p.Network.netConfig(p.Name))
		if err != nil {
			_ = cg.Delete()
			_ = removeStateDir(p.StateDir)
			return nil, fmt.Errorf("pool %s: %w", p.Name, err)
		}
	}
	go r.supervise()
	return r, nil
}

// supervise runs the pool's service until stop, restarting it with exponential
// backoff (capped at MaxBackoff, reset after a run that lasted a minute) when it
// exits, or after killing it when it stops answering its health checks (see
// Health). A service that exits before its first start completes fails Serve.
func (r *running) supervise() {
	defer close(r.done)
	log := r.s.log.With(zap.String("pool", r.p.Name))
	backoff := r.s.opts.MinBackoff
	first := true
	for {
		started := time.Now()
		cmd, readyc, parent, tail, err := r.start()
		if err != nil {
			if first {
				r.ready <- err
				return
			}
			log.Error("service start failed", zap.Error(err))
		} else {
			waitc := make(chan error, 1)
			go func() { waitc <- cmd.Wait() }()
			var werr error
			unhealthy := ""
			readyTimer := time.NewTimer(r.s.opts.ReadyTimeout)
			select {
			case <-readyTimer.C:
				// Hung while starting: no health check reaches it yet.
				unhealthy = fmt.Sprintf("not ready %v after its start", r.s.opts.ReadyTimeout)
				log.Error("service does not get ready; killing it", zap.Int("pid", cmd.Process.Pid), zap.String("why", unhealthy))
				_ = cmd.Process.Kill()
				werr = <-waitc
			case <-readyc:
				readyTimer.Stop()
				log.Info("service ready", zap.Int("pid", cmd.Process.Pid), zap.String("socket", r.p.Socket()),
					zap.Stringer("user", privdrop.Identity{UID: r.p.UID, GID: r.p.GID}))
				r.mu.Lock()
				r.up = true
				r.mu.Unlock()
				if err := r.s.writeRecord(); err != nil {
					log.Warn("record", zap.Error(err))
				}
				if first {
					r.ready <- nil
					first = false
				}
				stopHealth := make(chan struct{})
				sick := make(chan string, 1)
				go r.watchHealth(log, stopHealth, sick)
				select {
				case werr = <-waitc:
				case unhealthy = <-sick:
					// SIGKILL: a stopped process cannot delay it, and a
					// service that does not answer would not honour
					// SIGTERM's graceful stop either.
					log.Error("service does not answer its health checks; killing it", zap.Int("pid", cmd.Process.Pid), zap.String("why", unhealthy))
					_ = cmd.Process.Kill()
					werr = <-waitc
				}
				close(stopHealth)
			case werr = <-waitc:
				readyTimer.Stop()
			}
			// Its mounts and sockets go with it; a restart makes them anew.
			if err := parent.Cleanup(); err != nil {
				log.Warn("cleaning up after the service", zap.Error(err))
			}
			r.mu.Lock()
			r.cmd = nil
			r.up = false
			r.mu.Unlock()
			select {
			case <-r.stop:
				return
			default:
			}
			if first {
				why := fmt.Sprintf("exited before it was ready: %v", werr)
				if unhealthy != "" {
					why = unhealthy
				}
				r.ready <- fmt.Errorf("service %s; its last words: %s", why, lastLines(tail.String(), 3))
				return
			}
			if time.Since(started) > time.Minute {
				backoff = r.s.opts.MinBackoff
			}
			r.mu.Lock()
			r.restarts++
			n := r.restarts
			if unhealthy != "" {
				r.healthRestarts++
				r.lastUnhealthy = time.Now().UTC().Format(time.RFC3339) + " " + unhealthy
			}
			r.mu.Unlock()
			log.Warn("service exited; restarting", zap.Error(werr), zap.Int("restart", n), zap.Duration("backoff", backoff))
			if err := r.s.writeRecord(); err != nil {
				log.Warn("record", zap.Error(err))
			}
		}
		select {
		case <-r.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.s.opts.MaxBackoff)
	}
}

// watchHealth pings the service's control socket every Health.Interval until
// stop, and sends on sick why it gave up after Health.Failures failures in a
// row. A check fails too while a worker has been inside one request for
// Health.StuckAfter. Workers that make no progress while requests wait are
// only logged before that: a worker blocked in slow I/O looks the same.
func (r *running) watchHealth(log *zap.Logger, stop <-chan struct{}, sick chan<- string) {
	h := r.s.cfg.Health
	fails := 0
	var lastServed int64 = -1
	stalled := 0
	next := time.Now().Add(h.Interval)
	for {
		select {
		case <-stop:
			return
		case <-r.stop:
			// serve is stopping the service: a graceful stop (flushing
			// write-back caches) may take longer than the health bound.
			return
		case <-time.After(time.Until(next)):
		}
		start := time.Now()
		next = start.Add(h.Interval)
		rep, err := ping(r.p.controlSocket(), h.Timeout, h.StuckAfter)
		if err == nil && rep.Stuck > 0 {
			err = fmt.Errorf("%d of the service's workers inside one request for %v (a deadlock, or I/O that never returns; health.stuck_after %v)",
				rep.Stuck, time.Duration(rep.StuckForNs).Round(time.Second), h.StuckAfter)
		}
		if err != nil {
			fails++
			log.Warn("service health check failed", zap.Int("failures", fails), zap.Int("of", h.Failures), zap.Error(err))
			if fails >= h.Failures {
				sick <- fmt.Sprintf("%d health checks in a row failed (every %v, %v each), the last: %v", fails, h.Interval, h.Timeout, err)
				return
			}
			continue
		}
		if fails > 0 {
			log.Info("service answers its health checks again", zap.Int("after_failures", fails))
		}
		fails = 0
		if rep.Pending > 0 && rep.Value == lastServed {
			stalled++
			if stalled == h.Failures {
				log.Warn("service workers made no progress while requests wait (busy in slow I/O, or stuck); not restarting it for that",
					zap.Int64("pending", rep.Pending), zap.Duration("for", time.Duration(stalled)*h.Interval))
			}
		} else {
			stalled = 0
		}
		lastServed = rep.Value
	}
}

// ping is one health check: connect, ask, answer, all within timeout; with a
// positive stuckAfter the answer counts the workers stuck that long.
func ping(control string, timeout, stuckAfter time.Duration) (service.ControlReply, error) {
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("unix", control, timeout)
	if err != nil {
		return service.ControlReply{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	req, err := json.Marshal(service.ControlRequest{Op: service.ControlPing, Value: int64(max(stuckAfter, 0))})
	if err != nil {
		return service.ControlReply{}, err
	}
	if _, err := c.Write(append(req, '\n')); err != nil {
		return service.ControlReply{}, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return service.ControlReply{}, err
	}
	var rep service.ControlReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return rep, fmt.Errorf("ping reply %q: %w", line, err)
	}
	if rep.Error != "" {
		return rep, errors.New("service: " + rep.Error)
	}
	return rep, nil
}

// start launches the service inside the pool's cgroup, as the pool's user:
// serve makes its sockets and FUSE mounts (service.Prepare) and pool-exec
// joins the cgroups and the network namespace, drops to the pool's uid and
// gid for good and execs the service with them. readyc is closed when it
// prints its ready line; the caller calls parent.Cleanup once it exited.
func (r *running) start() (*exec.Cmd, chan struct{}, *service.Parent, *tailbuf.Buffer, error) {
	// The configuration serve wrote, handed over open: the pool's user may
	// not read the state directory's files.
	f, err := os.Open(r.p.serviceConfigPath())
	if err != nil {
		return nil, nil, nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	scfg, err := service.ParseConfig(data)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%s: %w", r.p.serviceConfigPath(), err)
	}
	user := privdrop.Identity{UID: r.p.UID, GID: r.p.GID}
	parent, err := service.Prepare(scfg, f, user, r.s.log.With(zap.String("pool", r.p.Name)))
	if err != nil {
		return nil, nil, nil, nil, err
	}
	args := []string{"pool-exec"}
	for _, f := range r.cg.ProcsFiles() {
		args = append(args, "--cgroup-procs", f)
	}
	if r.net != nil {
		args = append(args, "--netns", r.net.NetnsPath)
	}
	args = append(args, "--uid", strconv.FormatUint(uint64(user.UID), 10), "--gid", strconv.FormatUint(uint64(user.GID), 10))
	args = append(args, "--", r.s.opts.Exe, "service", "--config", r.p.serviceConfigPath())
	args = append(args, parent.HandoffArgs()...)
	cmd := exec.Command(r.s.opts.Exe, args...)
	cmd.ExtraFiles = parent.ExtraFiles()
	tail := &tailbuf.Buffer{}
	cmd.Stderr = io.MultiWriter(r.s.opts.Stderr, tail)
	out, err := cmd.StdoutPipe()
	if err != nil {
		_ = parent.Cleanup()
		return nil, nil, nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.stop:
		_ = parent.Cleanup()
		return nil, nil, nil, nil, errors.New("stopping")
	default:
	}
	if err := cmd.Start(); err != nil {
		_ = parent.Cleanup()
		return nil, nil, nil, nil, err
	}
	parent.Started()
	r.cmd = cmd
	readyc := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			line := sc.Text()
			if !once && strings.HasPrefix(line, ReadyLine) {
				once = true
				close(readyc)
				continue
			}
			fmt.Fprintf(r.s.opts.Stderr, "[%s] %s\n", r.p.Name, line)
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	return cmd, readyc, parent, tail, nil
}

// lastLines is the last n lines of s, joined by " | ".
func lastLines(s string, n int) string {
	ls := strings.Split(s, "\n")
	return strings.Join(ls[max(0, len(ls)-n):], " | ")
}

// ServicePid is the pid of the pool's current service process, 0 if none.
func (s *Server) ServicePid(pool string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.pools {
		if r.p.Name == pool {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.cmd != nil && r.cmd.Process != nil {
				return r.cmd.Process.Pid
			}
		}
	}
	return 0
}

// stopService stops the supervisor, then the service: SIGTERM, and SIGKILL
// after StopTimeout.
func (r *running) stopService() {
	close(r.stop)
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-r.done:
	case <-time.After(r.s.opts.StopTimeout):
		r.s.log.Warn("service ignored SIGTERM; killing it", zap.String("pool", r.p.Name), zap.Duration("after", r.s.opts.StopTimeout))
		if cmd != nil {
			_ = cmd.Process.Kill()
		}
		<-r.done
	}
}

// Close stops every service (in parallel), removes the pools' cgroups and state
// directories, and releases the run directory.
func (s *Server) Close() error {
	// The driver first: it must not resize a service being stopped.
	if s.stopElastic != nil {
		s.stopElastic()
		s.stopElastic = nil
	}
	var wg sync.WaitGroup
	for _, r := range s.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stopService()
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range s.pools {
		if err := r.cg.Delete(); err != nil {
			errs = append(errs, err)
		}
		if err := removeStateDir(r.p.StateDir); err != nil {
			errs = append(errs, err)
		}
		// After the cgroup: no process is left in the namespace.
		if r.net != nil {
			if err := r.net.Teardown(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.pools = nil
	if s.cgs != nil {
		s.cgs.RemoveParent()
	}
	if s.lock != nil {
		if len(errs) == 0 {
			_ = os.Remove(s.recordPath())
		}
		s.lock.Close()
		s.lock = nil
	}
	return errors.Join(errs...)
}
