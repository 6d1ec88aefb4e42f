package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/polytropon/polytropon/internal/logging"
	"github.com/polytropon/polytropon/internal/privdrop"
	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/stack"
)

// Config is a service's configuration (YAML; see ParseConfig).
type Config struct {
	// Socket is the direct path's Unix socket.
	Socket string `yaml:"socket"`
	// Workers is the number of service worker threads (default 1).
	Workers int `yaml:"workers"`
	// CPUs pins worker i to CPUs[i % len(CPUs)].
	CPUs []int `yaml:"cpus"`
	// Spin is how many empty polls of the ring a worker makes before it sleeps
	// (default 2000; 0 sleeps at once, for pools without a reserved core).
	Spin *int `yaml:"spin"`
	// Metrics is the listen address of the Prometheus endpoint (/metrics); empty
	// disables it.
	Metrics string `yaml:"metrics"`
	// Control is the control socket (status, set_workers, set_cache_bytes) that
	// serve's elasticity uses; empty disables it. Only root and the service's uid
	// may connect.
	Control string `yaml:"control"`
	// AllowUIDs are the uids, besides root and the service's own, that may connect.
	AllowUIDs []uint32 `yaml:"allow_uids"`
	// MaxClients, Descriptors (per client) and SlotSize (buffer per descriptor)
	// size the shared memory; zero takes the back driver's defaults.
	MaxClients  int                  `yaml:"max_clients"`
	Descriptors int                  `yaml:"descriptors"`
	SlotSize    libservices.ByteSize `yaml:"slot_size"`
	// HugePages backs the arenas with huge pages when available.
	HugePages bool `yaml:"huge_pages"`
	// QuotaConfig: per-client and per-uid limits (quota.go).
	QuotaConfig `yaml:",inline"`
	// Filesystems are the instances the service hosts.
	Filesystems []FilesystemConfig `yaml:"filesystems"`
	// User, for a service started by root, is the user it runs as: `polytropon
	// service` then stays root only in a small parent that makes the sockets
	// and FUSE mounts and hands them to the service process, which runs as
	// User with no capabilities (RunParent). Without it a root-started
	// service runs as host root, and says so loudly.
	User *User `yaml:"user"`

	// Handoff, set in a service process a privileged parent started
	// (Inherit), holds the descriptors it inherited.
	Handoff *Handoff `yaml:"-"`
}

// FilesystemConfig is one instance: its stack, where it appears in the service's
// namespace, and optionally a FUSE mountpoint for unmodified programs.
type FilesystemConfig struct {
	libservices.FilesystemConfig `yaml:",inline"`
	// Mount is the instance's prefix in the service namespace (default "/NAME").
	Mount string `yaml:"mount"`
	// FUSE, when set, mounts the instance there for unmodified programs, with the
	// gateway's default kernel caching (names and attributes 1 s, page cache kept
	// while the file is unchanged).
	FUSE string `yaml:"fuse"`
	// FUSEMounts are further mountpoints of the instance, each with its own kernel
	// caching (e.g. one with caching off for programs that share files with fslib
	// clients and must see their writes at once).
	FUSEMounts []FUSEMount `yaml:"fuse_mounts"`
}

// FUSEMount is one FUSE mountpoint of an instance.
type FUSEMount struct {
	Path string `yaml:"path"`
	// AttrTimeout and EntryTimeout: how long the kernel caches attributes and
	// names (0: 1 s; negative: not at all).
	AttrTimeout  time.Duration `yaml:"attr_timeout"`
	EntryTimeout time.Duration `yaml:"entry_timeout"`
	// DirectIO bypasses the kernel's page cache: every read and write is a request.
	DirectIO bool `yaml:"direct_io"`
	// AllowOther lets other users in (permission bits still apply).
	AllowOther bool `yaml:"allow_other"`
}

// mounts returns every FUSE mountpoint of f, the shorthand first.
func (f *FilesystemConfig) mounts() []FUSEMount {
	var ms []FUSEMount
	if f.FUSE != "" {
		ms = append(ms, FUSEMount{Path: f.FUSE})
	}
	return append(ms, f.FUSEMounts...)
}

// ParseConfig decodes a service configuration, rejecting unknown keys, and checks
// it. Errors name the offending key.
func ParseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("service config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks c and fills in defaults (mount prefixes).
func (c *Config) Validate() error {
	if c.Socket == "" {
		return &libservices.ConfigError{Key: "socket", Msg: "required (the direct path's Unix socket)"}
	}
	if c.Workers < 0 || c.Workers > 256 {
		return &libservices.ConfigError{Key: "workers", Msg: fmt.Sprintf("%d, want 1..256", c.Workers)}
	}
	if c.Spin != nil && *c.Spin < 0 {
		return &libservices.ConfigError{Key: "spin", Msg: "must not be negative"}
	}
	if err := c.QuotaConfig.validate(); err != nil {
		return err
	}
	if c.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Metrics); err != nil {
			return &libservices.ConfigError{Key: "metrics", Msg: fmt.Sprintf("%q is not host:port", c.Metrics)}
		}
	}
	if len(c.Filesystems) == 0 {
		return &libservices.ConfigError{Key: "filesystems", Msg: "at least one filesystem is required"}
	}
	if c.User != nil {
		if err := c.User.Identity().Validate(); err != nil {
			return &libservices.ConfigError{Key: "user", Msg: err.Error()}
		}
	}
	names := map[string]bool{}
	fuse := map[string]string{}
	for i := range c.Filesystems {
		f := &c.Filesystems[i]
		key := fmt.Sprintf("filesystems[%d]", i)
		if f.Name == "" {
			return &libservices.ConfigError{Key: key + ".name", Msg: "required"}
		}
		if names[f.Name] {
			return &libservices.ConfigError{Key: key + ".name", Msg: fmt.Sprintf("%q used twice", f.Name)}
		}
		names[f.Name] = true
		if f.Mount == "" {
			f.Mount = "/" + f.Name
		}
		p, err := cleanPrefix(f.Mount)
		if err != nil {
			return &libservices.ConfigError{Key: key + ".mount", Msg: err.Error()}
		}
		f.Mount = p
		for j, m := range f.mounts() {
			k := key + ".fuse"
			if f.FUSE == "" {
				k = fmt.Sprintf("%s.fuse_mounts[%d].path", key, j)
			} else if j > 0 {
				k = fmt.Sprintf("%s.fuse_mounts[%d].path", key, j-1)
			}
			if m.Path == "" {
				return &libservices.ConfigError{Key: k, Msg: "required"}
			}
			if other, dup := fuse[m.Path]; dup {
				return &libservices.ConfigError{Key: k, Msg: fmt.Sprintf("%s is also %s's mountpoint", m.Path, other)}
			}
			fuse[m.Path] = f.Name
		}
	}
	return nil
}

// Service is a running filesystem service.
type Service struct {
	cfg     Config
	log     *zap.Logger
	insts   []*instance
	mounts  *mountTable
	h       *handler
	back    *back.Service
	http    *http.Server
	httpLn  net.Listener
	fuse    []fuseMount
	started time.Time
	// runsAs is who this process is (privdrop.State), read at Start.
	runsAs privdrop.State
	// monitor (with monitorMu) reaches the privileged parent of a service
	// started with a Handoff; nil otherwise.
	monitor   *net.UnixConn
	monitorMu sync.Mutex
	// ctlUIDs may use the control socket: root alone for a service whose
	// parent is privileged (its user is the tenant), root and its own uid
	// otherwise (a user's own service).
	ctlUIDs []uint32
	ctlLn   *net.UnixListener
	ctlWG   sync.WaitGroup
	// ctlMu guards ctlConns and ctlClosed: Close closes the open control
	// connections rather than wait for their one-minute read deadline.
	ctlMu     sync.Mutex
	ctlConns  map[*net.UnixConn]struct{}
	ctlClosed bool
	quota     *Quota

	closeOnce sync.Once
	closeErr  error
}

// Start builds every instance, mounts their FUSE mountpoints, listens on the socket
// and, when configured, serves metrics. On error nothing is left running.
//
// With cfg.Handoff (a process a privileged parent started; see Inherit) the
// sockets and FUSE mounts are the inherited ones, and the control socket
// admits root only. Without it, a service running as root warns that it
// holds host root.
func Start(cfg Config, logger *zap.Logger) (_ *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: logging.OrNop(logger), started: time.Now()}
	defer func() {
		if err != nil {
			s.teardown()
		}
	}()
	if s.runsAs, err = privdrop.Self(); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	h := cfg.Handoff
	if err := s.checkIdentity(); err != nil {
		return nil, err
	}
	if h != nil {
		// The daemon's copy profile (/var/lib/polytropon), as when serve ran
		// its services as root; the first call wins, back.Listen's is a no-op.
		shm.UseCopyProfile(true, s.log)
		c, err := inheritConn(h.Monitor, "monitor")
		if err != nil {
			return nil, err
		}
		s.monitor = c
		s.ctlUIDs = []uint32{0}
	} else {
		s.ctlUIDs = []uint32{0, uint32(os.Geteuid())}
	}
	if err := checkBranches(&cfg); err != nil {
		return nil, err
	}
	env := &libservices.Env{Logger: s.log, Shared: &libservices.Shared{}}
	for i := range cfg.Filesystems {
		f := &cfg.Filesystems[i]
		fs, err := stack.Build(&f.FilesystemConfig, fmt.Sprintf("filesystems[%d]", i), env)
		if err != nil {
			return nil, err
		}
		s.insts = append(s.insts, &instance{name: f.Name, prefix: f.Mount, fs: fs})
	}
	// The budgets are planned once the stacks exist: what their layers may
	// hold on their own (passthrough's directory descriptors) is not the
	// clients' to spend.
	var plan quotaPlan
	if s.quota, plan, err = startQuota(&cfg, stacksFDs(s.insts), s.log); err != nil {
		return nil, err
	}
	if s.mounts, err = newMountTable(s.insts); err != nil {
		return nil, err
	}
	m := newMetrics(s.insts)
	s.h = &handler{mounts: s.mounts, log: s.log, m: m, status: s.statusJSON}
	k := 0
	for i, f := range cfg.Filesystems {
		for _, m := range f.mounts() {
			var fm fuseMount
			var err error
			if h != nil {
				if k >= len(h.FUSE) {
					return nil, fmt.Errorf("filesystems[%d].fuse %s: the parent mounted %d FUSE mountpoints, fewer than configured", i, m.Path, len(h.FUSE))
				}
				fm, err = serveFUSE(m, h.FUSE[k], s.insts[i], s.quota, s.log, s.askParent)
				k++
			} else {
				fm, err = mountFUSE(m, s.insts[i], s.quota, s.log)
			}
			if err != nil {
				return nil, fmt.Errorf("filesystems[%d].fuse %s: %w", i, m.Path, err)
			}
			s.insts[i].fuse = append(s.insts[i].fuse, m.Path)
			s.fuse = append(s.fuse, fm)
		}
	}
	bc := back.Config{SocketPath: cfg.Socket, Handler: s.h, Workers: cfg.Workers, CPUs: cfg.CPUs,
		MaxClients: cfg.MaxClients, DescsPerClient: cfg.Descriptors, SlotBytes: int(cfg.SlotSize),
		HugePages: cfg.HugePages, Logger: s.log}
	if h != nil {
		if bc.Listener, err = inheritUnixListener(h.Socket, "socket"); err != nil {
			return nil, err
		}
	}
	if cfg.Spin != nil {
		bc.SpinBudget = *cfg.Spin
		if bc.SpinBudget == 0 {
			bc.SpinBudget = -1 // back: negative means sleep at once
		}
	}
	if len(cfg.AllowUIDs) > 0 {
		own := uint32(os.Geteuid())
		allowed := append([]uint32{0, own}, cfg.AllowUIDs...)
		bc.Allow = back.AllowUIDs(allowed...)
	}
	plan.configure(&bc, s.quota)
	if s.back, err = back.Listen(bc); err != nil {
		if bc.Listener != nil {
			bc.Listener.Close()
		}
		return nil, err
	}
	switch {
	case h != nil && h.Control != 0:
		if s.ctlLn, err = inheritUnixListener(h.Control, "control"); err != nil {
			return nil, err
		}
	case h == nil && cfg.Control != "":
		if err := removeStaleSocket(cfg.Control, "unix"); err != nil {
			return nil, err
		}
		if s.ctlLn, err = net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Control, Net: "unix"}); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
		if err := os.Chmod(cfg.Control, 0o600); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
	}
	if s.ctlLn != nil {
		s.ctlWG.Add(1)
		go s.serveControl(s.ctlLn)
	}
	switch {
	case h != nil && h.Metrics != 0:
		f := os.NewFile(uintptr(h.Metrics), "metrics")
		s.httpLn, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("metrics: inherited listener: %w", err)
		}
	case h == nil && cfg.Metrics != "":
		if s.httpLn, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	if s.httpLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics endpoint", zap.Error(err))
			}
		}()
	}
	s.log.Info("service started", zap.String("socket", cfg.Socket), zap.Int("filesystems", len(s.insts)),
		zap.String("metrics", s.MetricsAddr()), zap.String("runs_as", s.runsAs.Describe()))
	return s, nil
}

// checkIdentity refuses a configuration's user the process cannot be, and
// warns loudly when it runs as host root.
func (s *Service) checkIdentity() error {
	u, h := s.cfg.User, s.cfg.Handoff
	euid := uint32(os.Geteuid())
	switch {
	case h != nil:
		if s.runsAs.Privileged() {
			return fmt.Errorf("service: started with a handoff but runs as %s", s.runsAs.Describe())
		}
	case u != nil && euid == 0:
		return fmt.Errorf("service: the configuration's user is %v: as root, run it through RunParent (`polytropon service` does), which makes its sockets and mounts and drops to that user", u.Identity())
	case u != nil && (u.UID != euid || u.GID != uint32(os.Getegid())):
		return fmt.Errorf("service: the configuration's user is %v, but this process is uid %d gid %d and cannot become it (only root can)", u.Identity(), euid, os.Getegid())
	case euid == 0:
		s.log.Warn("THE SERVICE RUNS AS HOST ROOT: every request it serves acts with root's rights on the host; "+
			"add `user: {uid: N, gid: M}` to its configuration to run it as that user with no capabilities",
			zap.String("runs_as", s.runsAs.Describe()))
	}
	return nil
}

// askParent asks the privileged parent to detach this service's FUSE mounts.
func (s *Service) askParent() error { return askParent(s.monitor, &s.monitorMu, monitorDetach) }

func inheritUnixListener(fd int, what string) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), what)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("service: inherited %s listener (fd %d): %w", what, fd, err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("service: inherited %s (fd %d) is not a Unix socket listener", what, fd)
	}
	return ul, nil
}

func inheritConn(fd int, what string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), what)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("service: inherited %s (fd %d): %w", what, fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("service: inherited %s (fd %d) is not a Unix socket", what, fd)
	}
	return uc, nil
}

// Socket returns the direct path's socket.
func (s *Service) Socket() string { return s.cfg.Socket }

// MetricsAddr returns the metrics endpoint's address ("" when disabled).
func (s *Service) MetricsAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Back returns the back driver (for its counters).
func (s *Service) Back() *back.Service { return s.back }

// Instance returns the filesystem called name, or nil.
func (s *Service) Instance(name string) libservices.FS {
	if in := s.mounts.lookup(name); in != nil {
		return in.fs
	}
	return nil
}

// Close shuts the service down in order: stop accepting and finish in-flight
// requests (clients' later calls fail with ENOTCONN), close what clients left open,
// unmount the FUSE mountpoints, then close the instances, which flushes write-back
// caches. It returns the first error and is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.teardown() })
	return s.closeErr
}

func (s *Service) teardown() error {
	var errs []error
	if s.ctlLn != nil {
		s.ctlLn.Close()
		s.ctlMu.Lock()
		s.ctlClosed = true
		for c := range s.ctlConns {
			c.Close()
		}
		s.ctlMu.Unlock()
		s.ctlWG.Wait()
	}
	if s.back != nil {
		errs = append(errs, s.back.Close())
	}
	if s.http != nil {
		errs = append(errs, s.http.Close())
	}
	for i := len(s.fuse) - 1; i >= 0; i-- {
		errs = append(errs, s.fuse[i].unmount())
	}
	for _, in := range s.insts {
		if err := stack.Close(in.fs); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", in.name, err))
		}
	}
	if s.monitor != nil {
		s.monitor.Close()
	}
	err := errors.Join(errs...)
	if err != nil {
		s.log.Error("service stopped with errors", zap.Error(err))
	} else {
		s.log.Info("service stopped")
	}
	return err
}

// Status is the service's status document (`polytropon status`, OpStatus).
type Status struct {
	Socket    string  `json:"socket"`
	PID       int     `json:"pid"`
	UptimeSec float64 `json:"uptime_s"`
	Workers   int     `json:"workers"`
	Clients   int     `json:"clients"`
	Served    int64   `json:"served"`
	Rejected  int64   `json:"rejected"`
	Metrics   string  `json:"metrics,omitempty"`
	Queue     int     `json:"queue"` // requests waiting in the ring when sampled
	// Dequeued and Queued: requests taken from the ring so far, and the sum of
	// the requests each found still waiting behind it (Queued/Dequeued is the
	// mean queue).
	Dequeued    int64          `json:"dequeued"`
	Queued      int64          `json:"queued"`
	Caches      []StatusCache  `json:"caches,omitempty"`
	Filesystems []StatusFS     `json:"filesystems"`
	Ops         []StatusOp     `json:"ops"`
	Counters    []StatusSample `json:"counters,omitempty"`
	// UID and GID are the service process's; Privileged is true when it
	// holds host privilege (uid 0 or any capability), and RunsAs says who it
	// runs as in words.
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	Privileged bool   `json:"privileged"`
	RunsAs     string `json:"runs_as"`
}

// StatusCache is one resizable page cache (top first, as the stacks list them).
type StatusCache struct {
	SizeBytes int64 `json:"size_bytes"`
	MaxBytes  int64 `json:"max_bytes"`
}

// StatusFS describes one instance.
type StatusFS struct {
	Name  string   `json:"name"`
	Mount string   `json:"mount"`
	FUSE  []string `json:"fuse,omitempty"`
	Open  int64    `json:"open"` // handles clients hold (files, directories, locks)
	Locks int      `json:"locks"`
}

// StatusOp summarises one operation's traffic.
type StatusOp struct {
	Op     string  `json:"op"`
	Count  uint64  `json:"count"`
	Errors uint64  `json:"errors"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
}

// StatusSample is one libservice counter (cache hits, ...).
type StatusSample struct {
	FS    string  `json:"fs"`
	Layer string  `json:"layer"`
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// Status returns the current status.
func (s *Service) Status() Status {
	bs := s.back.Stats()
	st := Status{Socket: s.cfg.Socket, PID: os.Getpid(), UptimeSec: time.Since(s.started).Seconds(),
		UID: s.runsAs.UIDs[1], GID: s.runsAs.GIDs[1], Privileged: s.runsAs.Privileged(), RunsAs: s.runsAs.Describe(),
		Workers: bs.Workers, Clients: bs.LiveClients, Served: bs.Served, Rejected: bs.Rejected,
		Metrics: s.MetricsAddr(), Queue: s.back.QueueLen(), Dequeued: bs.Served + bs.Dropped, Queued: bs.Queued}
	for _, c := range s.caches() {
		st.Caches = append(st.Caches, StatusCache{SizeBytes: c.CacheSize(), MaxBytes: c.CacheMaxSize()})
	}
	for _, in := range s.insts {
		st.Filesystems = append(st.Filesystems, StatusFS{Name: in.name, Mount: in.prefix, FUSE: in.fuse,
			Open: in.open.Load(), Locks: in.locks.held()})
	}
	fams, err := s.h.m.reg.Gather()
	if err != nil {
		s.log.Warn("gathering metrics", zap.Error(err))
	}
	errCount := map[string]uint64{}
	for _, f := range fams {
		switch f.GetName() {
		case "polytropon_service_op_errors_total":
			for _, m := range f.GetMetric() {
				errCount[label(m, "op")] = uint64(m.GetCounter().GetValue())
			}
		}
	}
	for _, f := range fams {
		switch {
		case f.GetName() == "polytropon_service_op_seconds":
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				if h.GetSampleCount() == 0 {
					continue
				}
				op := label(m, "op")
				st.Ops = append(st.Ops, StatusOp{Op: op, Count: h.GetSampleCount(), Errors: errCount[op],
					MeanUs: h.GetSampleSum() / float64(h.GetSampleCount()) * 1e6,
					P50Us:  quantile(h, 0.5) * 1e6, P99Us: quantile(h, 0.99) * 1e6})
			}
		case f.GetType() == dto.MetricType_GAUGE && label1(f, "layer"):
			for _, m := range f.GetMetric() {
				st.Counters = append(st.Counters, StatusSample{FS: label(m, "fs"), Layer: label(m, "layer"),
					Name: f.GetName(), Value: m.GetGauge().GetValue()})
			}
		}
	}
	sort.Slice(st.Ops, func(i, j int) bool { return st.Ops[i].Count > st.Ops[j].Count })
	return st
}

func (s *Service) statusJSON() []byte {
	b, err := json.Marshal(s.Status())
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func label1(f *dto.MetricFamily, name string) bool {
	ms := f.GetMetric()
	return len(ms) > 0 && label(ms[0], name) != ""
}

// quantile estimates quantile q of a histogram by interpolating inside the bucket
// that holds it (the upper bound for the open last bucket).
func quantile(h *dto.Histogram, q float64) float64 {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		n := float64(b.GetCumulativeCount())
		if n >= rank {
			in := n - below
			if in <= 0 {
				return b.GetUpperBound()
			}
			return lower + (b.GetUpperBound()-lower)*(rank-below)/in
		}
		lower, below = b.GetUpperBound(), n
	}
	return lower
}
