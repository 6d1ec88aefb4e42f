package pool

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/netstack"
	"github.com/polytropon/polytropon/service"
)

// Config is the configuration of `polytropon serve` (YAML; see ParseConfig).
type Config struct {
	// Cgroup is the parent cgroup of the pools' cgroups (default "polytropon"),
	// relative to serve's own cgroup in each hierarchy. Two serve instances with
	// different parents do not touch each other's pools.
	Cgroup string `yaml:"cgroup"`
	// RunDir holds serve's lock and its record of the pools it created (default
	// /run/polytropon); a pool's state directory defaults to RunDir/NAME.
	RunDir string `yaml:"run_dir"`
	// ExclusiveCPUs makes the cpuset of each pool whose cpus no other pool
	// shares exclusive (cgroup v1 cpuset.cpu_exclusive, v2 a partition root):
	// then no other cgroup of the machine beside the pools' parent may use those
	// CPUs, so it is opt-in. Where the kernel refuses (another cpuset beside the
	// parent uses the CPUs), serve logs why and goes on without.
	ExclusiveCPUs bool `yaml:"exclusive_cpus"`
	// Health tunes serve's health checks of the services (see Health).
	Health Health `yaml:"health"`
	// Pools are the tenants' pools.
	Pools []Pool `yaml:"pools"`
}

// Health is how serve checks that each pool's service still answers: every
// Interval it asks the service's control socket for a ping, which must
// answer within Timeout; after Failures consecutive failures serve kills the
// service (SIGKILL, which a stopped process cannot ignore) and restarts it.
// A service that stops answering is so detected within Interval + Failures x
// max(Timeout, Interval): 17 s with the defaults. A check also fails while a
// worker has been inside one request for StuckAfter (a deadlocked stack,
// I/O that never returns): detected within StuckAfter + (Failures + 2) x
// Interval, 70 s with the defaults.
//
// The control socket is answered by a goroutine of its own, not by the
// workers, so a service whose workers are all busy (long fsyncs under the
// pool's I/O throttle, a slow branch) still answers at once; what keeps it
// from answering is the whole process not running (SIGSTOP, a frozen cgroup,
// a wedged runtime) or a deadlocked control path. A healthy process can
// still stall for seconds under memory reclaim at the pool's memory limit,
// so one miss is never enough: the defaults need 15 s of silence in a row.
type Health struct {
	// Interval between checks (default 2s).
	Interval time.Duration `yaml:"interval"`
	// Timeout of one check, connect included (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// Failures in a row before the service is restarted (default 3).
	Failures int `yaml:"failures"`
	// StuckAfter: a check also fails while a worker of the service has been
	// inside one request for this long (default 1m; negative: never). A
	// deadlock in a stack leaves the control socket answering, so without it
	// only the workers' lack of progress would show, and that looks like slow
	// I/O. Set it above the longest request the pool's storage may take
	// (a CephFS cluster in recovery can block for minutes).
	StuckAfter time.Duration `yaml:"stuck_after"`
}

// Health defaults.
const (
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = 5 * time.Second
	DefaultHealthFailures = 3
	DefaultStuckAfter     = time.Minute
)

func (h *Health) validate() error {
	if h.Interval == 0 {
		h.Interval = DefaultHealthInterval
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultHealthTimeout
	}
	if h.Failures == 0 {
		h.Failures = DefaultHealthFailures
	}
	if h.StuckAfter == 0 {
		h.StuckAfter = DefaultStuckAfter
	}
	switch {
	case h.Interval < 10*time.Millisecond:
		return cfgErr("health.interval", "%v: at least 10ms", h.Interval)
	case h.Timeout < 10*time.Millisecond:
		return cfgErr("health.timeout", "%v: at least 10ms", h.Timeout)
	case h.Failures < 1 || h.Failures > 100:
		return cfgErr("health.failures", "%d, want 1..100", h.Failures)
	case h.StuckAfter > 0 && h.StuckAfter < time.Second:
		return cfgErr("health.stuck_after", "%v: at least 1s (or negative: never)", h.StuckAfter)
	}
	return nil
}

// Bound is how long a service that stopped answering may go undetected.
func (h *Health) Bound() time.Duration {
	return h.Interval + time.Duration(h.Failures)*max(h.Timeout, h.Interval)
}

// StuckBound is how long a request that never ends (a deadlocked stack) may
// go undetected: StuckAfter, then the checks that find it (the first only
// records where each worker is), or 0 where StuckAfter is negative.
func (h *Health) StuckBound() time.Duration {
	if h.StuckAfter < 0 {
		return 0
	}
	return h.StuckAfter + time.Duration(h.Failures+1)*h.Interval + h.Interval
}

// Pool is one tenant's pool: reserved resources and the filesystem service that
// runs inside them.
type Pool struct {
	Name string `yaml:"name"`
	// CPUs is the pool's cpuset in list syntax ("0-1,3"); empty: every online CPU.
	// The service's workers are pinned to these CPUs.
	CPUs string `yaml:"cpus"`
	// Memory limits the pool's memory (the service's caches count against it);
	// zero: unlimited.
	Memory libservices.ByteSize `yaml:"memory"`
	// Pids limits the number of tasks in the pool; zero: unlimited.
	Pids int64 `yaml:"pids"`
	// IO throttles the pool's I/O on one block device.
	IO IO `yaml:"io"`
	// Network, when set, gives the pool its own network namespace (the service
	// and every container run in it) joined to the host by a rate-limited veth.
	Network *Network `yaml:"network"`
	// UID and GID are the pool's user: its service runs as them (with no
	// capabilities), they own the pool's socket, and only they (and root) may
	// connect to the service. Neither may be 0.
	UID uint32 `yaml:"uid"`
	GID uint32 `yaml:"gid"`
	// StateDir holds the pool's socket and generated service configuration
	// (default RunDir/NAME).
	StateDir string `yaml:"state_dir"`
	// Workers and Spin are the service's (see service.Config).
	Workers int  `yaml:"workers"`
	Spin    *int `yaml:"spin"`
	// Filesystems are the service's instances (service.FilesystemConfig).
	Filesystems Filesystems `yaml:"filesystems"`
	// Elasticity, when set, lets serve move the service's workers and cache
	// within bounds as the pool's load changes (see Elasticity).
	Elasticity *Elasticity `yaml:"elasticity"`

	cpuList []int
}

// IO is a pool's block I/O throttle.
type IO struct {
	// Device is the block device the limits apply to, e.g. /dev/nvme0n1.
	Device   string               `yaml:"device"`
	ReadBPS  libservices.ByteSize `yaml:"read_bps"`
	WriteBPS libservices.ByteSize `yaml:"write_bps"`

	major, minor uint32
}

// Network is a pool's network (netstack): a namespace pt-NAME, a veth whose host
// end is pt-NAME-h (so NAME may have at most 10 bytes: Linux interface names
// have 15) and whose pool end is eth0, an address on each end in one subnet, a
// default route through the host end, and a TBF rate limit in each direction.
type Network struct {
	// Address is eth0's in the pool, HostAddress the host end's; CIDRs in one
	// subnet, e.g. 10.77.1.2/30 and 10.77.1.1/30.
	Address     string `yaml:"address"`
	HostAddress string `yaml:"host_address"`
	// Rate is the bandwidth in bytes per second, each direction.
	Rate libservices.ByteSize `yaml:"rate"`
	// Burst is the token bucket (default 64KiB); Latency bounds a packet's wait
	// in the queue (default 50ms).
	Burst   libservices.ByteSize `yaml:"burst"`
	Latency time.Duration        `yaml:"latency"`
}

// Network defaults.
const (
	DefaultNetBurst   = 64 << 10
	DefaultNetLatency = 50 * time.Millisecond
)

// netConfig is the netstack configuration of pool name's network.
func (n *Network) netConfig(name string) netstack.Config {
	return netstack.Config{
		Pool: name, HostAddr: n.HostAddress, PoolAddr: n.Address,
		Rate: uint64(n.Rate), Burst: uint32(n.Burst), Latency: n.Latency,
	}
}

// netKeys maps netstack's field names to the configuration's keys.
var netKeys = map[string]string{
	"Pool": "name", "Prefix": "name", "HostAddr": "network.host_address", "PoolAddr": "network.address",
	"Rate": "network.rate", "Burst": "network.burst", "Latency": "network.latency",
}

func (n *Network) validate(key, name string) error {
	if n.Burst == 0 {
		n.Burst = DefaultNetBurst
	}
	if n.Latency == 0 {
		n.Latency = DefaultNetLatency
	}
	if n.Rate < 0 || n.Burst < 0 {
		return cfgErr(key+".network", "rate and burst must not be negative")
	}
	if n.Burst > 1<<31 {
		return cfgErr(key+".network.burst", "%d bytes is too large", n.Burst)
	}
	err := n.netConfig(name).Validate()
	var ce *netstack.ConfigError
	if errors.As(err, &ce) {
		k, ok := netKeys[ce.Field]
		if !ok {
			k = "network"
		}
		if k == "name" {
			return cfgErr(key+".name", "%s (the pool has a network, whose interface names derive from it)", ce.Msg)
		}
		return cfgErr(key+"."+k, "%s", ce.Msg)
	}
	return err
}

// Filesystems keeps the YAML of a pool's filesystems as written, so that the
// service configuration serve generates carries it unchanged (libservices.Layer
// decodes but does not encode), and the decoded form for validation.
type Filesystems struct {
	Node   yaml.Node
	Parsed []service.FilesystemConfig
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (f *Filesystems) UnmarshalYAML(n *yaml.Node) error {
	f.Node = *n
	// Node.Decode cannot reject unknown keys; a round trip through a strict
	// decoder can.
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(&f.Parsed)
}

// Defaults.
const (
	DefaultCgroup = "polytropon"
	DefaultRunDir = "/run/polytropon"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ParseConfig decodes a serve configuration, rejecting unknown keys, and checks it
// against this machine (CPUs, block devices). Errors name the offending key, e.g.
// `pools[1].cpus: CPU 7 does not exist (this machine has 0-1)`.
func ParseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("serve config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func cfgErr(key, format string, a ...any) error {
	return &libservices.ConfigError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if c.Cgroup == "" {
		c.Cgroup = DefaultCgroup
	}
	if !nameRE.MatchString(c.Cgroup) {
		return cfgErr("cgroup", "%q: want a single name of letters, digits, '_', '.', '-'", c.Cgroup)
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if !filepath.IsAbs(c.RunDir) {
		return cfgErr("run_dir", "%q is not an absolute path", c.RunDir)
	}
	c.RunDir = filepath.Clean(c.RunDir)
	if len(c.Pools) == 0 {
		return cfgErr("pools", "at least one pool is required")
	}
	if err := c.Health.validate(); err != nil {
		return err
	}
	online, err := onlineCPUs()
	if err != nil {
		return err
	}
	names := map[string]bool{}
	dirs := map[string]string{}
	for i := range c.Pools {
		p := &c.Pools[i]
		key := fmt.Sprintf("pools[%d]", i)
		if p.Name == "" {
			return cfgErr(key+".name", "required")
		}
		if !nameRE.MatchString(p.Name) {
			return cfgErr(key+".name", "%q: want 1-63 letters, digits, '_', '.', '-', not starting with a punctuation", p.Name)
		}
		if names[p.Name] {
			return cfgErr(key+".name", "%q used twice", p.Name)
		}
		names[p.Name] = true
		if err := p.validate(key, c.RunDir, online); err != nil {
			return err
		}
		if other, ok := dirs[p.StateDir]; ok {
			return cfgErr(key+".state_dir", "%q is also pool %q's", p.StateDir, other)
		}
		dirs[p.StateDir] = p.Name
	}
	return c.checkNetworksDisjoint()
}

// checkNetworksDisjoint refuses two pools whose subnets overlap: the host would
// have two routes to the same addresses.
func (c *Config) checkNetworksDisjoint() error {
	type subnet struct {
		pool string
		n    *net.IPNet
	}
	var seen []subnet
	for i, p := range c.Pools {
		if p.Network == nil {
			continue
		}
		_, n, err := net.ParseCIDR(p.Network.HostAddress)
		if err != nil {
			return cfgErr(fmt.Sprintf("pools[%d].network.host_address", i), "%v", err)
		}
		for _, o := range seen {
			if o.n.Contains(n.IP) || n.Contains(o.n.IP) {
				return cfgErr(fmt.Sprintf("pools[%d].network.host_address", i), "subnet %s overlaps pool %q's %s", n, o.pool, o.n)
			}
		}
		seen = append(seen, subnet{p.Name, n})
	}
	return nil
}

func (p *Pool) validate(key, runDir string, online []int) error {
	if p.CPUs == "" {
		p.cpuList = online
	} else {
		l, err := ParseCPUList(p.CPUs)
		if err != nil {
			return cfgErr(key+".cpus", "%v", err)
		}
		for _, cpu := range l {
			if !containsInt(online, cpu) {
				return cfgErr(key+".cpus", "CPU %d does not exist (this machine has %s)", cpu, FormatCPUList(online))
			}
		}
		p.cpuList = l
	}
	if p.Memory < 0 {
		return cfgErr(key+".memory", "must not be negative")
	}
	if p.Memory != 0 && p.Memory < 4<<20 {
		return cfgErr(key+".memory", "%d bytes is too small for a pool (at least 4MiB)", p.Memory)
	}
	if p.Pids < 0 {
		return cfgErr(key+".pids", "must not be negative")
	}
	if p.Pids != 0 && p.Pids < 8 {
		return cfgErr(key+".pids", "%d is too few for a filesystem service (at least 8)", p.Pids)
	}
	if err := p.IO.validate(key + ".io"); err != nil {
		return err
	}
	if p.Elasticity != nil {
		if err := p.Elasticity.validate(key+".elasticity", p.Workers); err != nil {
			return err
		}
	}
	if p.Network != nil {
		if err := p.Network.validate(key, p.Name); err != nil {
			return err
		}
	}
	if p.StateDir == "" {
		p.StateDir = filepath.Join(runDir, p.Name)
	}
	if !filepath.IsAbs(p.StateDir) {
		return cfgErr(key+".state_dir", "%q is not an absolute path", p.StateDir)
	}
	p.StateDir = filepath.Clean(p.StateDir)
	if p.StateDir == "/" || p.StateDir == runDir {
		return cfgErr(key+".state_dir", "%q cannot be a pool's own directory", p.StateDir)
	}
	// The service checks its own settings and the filesystems; its errors are
	// re-keyed under the pool.
	data, err := p.ServiceConfig()
	if err != nil {
		return cfgErr(key+".filesystems", "%v", err)
	}
	if _, err := service.ParseConfig(data); err != nil {
		var ce *libservices.ConfigError
		if errors.As(err, &ce) {
			return cfgErr(key+"."+ce.Key, "%s", ce.Msg)
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// CheckUsers refuses pools without a user of their own: a pool's service
// runs as the pool's uid and gid, and root's ids would make it host root
// again. Serve calls it; ParseConfig does not, so that tools that only read
// a configuration (status, the cgroup tests) take one without users.
func (c *Config) CheckUsers() error {
	for i, p := range c.Pools {
		if p.UID == 0 {
			return cfgErr(fmt.Sprintf("pools[%d].uid", i), "required and not 0: the pool's service runs as this user")
		}
		if p.GID == 0 {
			return cfgErr(fmt.Sprintf("pools[%d].gid", i), "required and not 0: the pool's service runs with this group")
		}
	}
	return nil
}

func (o *IO) validate(key string) error {
	if o.ReadBPS < 0 {
		return cfgErr(key+".read_bps", "must not be negative")
	}
	if o.WriteBPS < 0 {
		return cfgErr(key+".write_bps", "must not be negative")
	}
	if o.Device == "" {
		if o.ReadBPS != 0 || o.WriteBPS != 0 {
			return cfgErr(key+".device", "required when read_bps or write_bps is set")
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(o.Device, &st); err != nil {
		return cfgErr(key+".device", "%q: %v", o.Device, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return cfgErr(key+".device", "%q is not a block device", o.Device)
	}
	o.major, o.minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	return nil
}

// Socket is the pool's service socket.
func (p *Pool) Socket() string { return filepath.Join(p.StateDir, "service.sock") }

// serviceConfigPath is where serve writes the pool's service configuration.
func (p *Pool) serviceConfigPath() string { return filepath.Join(p.StateDir, "service.yaml") }

// CPUList is the pool's CPUs (after Validate).
func (p *Pool) CPUList() []int { return p.cpuList }

// ServiceConfig is the configuration of the pool's filesystem service: its socket
// in the state directory, its workers pinned to the pool's CPUs, the pool's uid
// allowed to connect, and the pool's filesystems as written.
func (p *Pool) ServiceConfig() ([]byte, error) {
	m := map[string]any{
		"socket":      p.Socket(),
		"control":     p.controlSocket(),
		"filesystems": &p.Filesystems.Node,
	}
	if p.Filesystems.Node.Kind == 0 {
		m["filesystems"] = []any{}
	}
	if p.Workers != 0 {
		m["workers"] = p.Workers
	}
	if p.Spin != nil {
		m["spin"] = *p.Spin
	}
	if len(p.cpuList) > 0 {
		m["cpus"] = p.cpuList
	}
	if p.UID != 0 {
		m["allow_uids"] = []uint32{p.UID}
	}
	return yaml.Marshal(m)
}

// reservation is what p reserves, for the record and `polytropon status`.
func (p *Pool) reservation() Reservation {
	r := Reservation{CPUs: FormatCPUList(p.cpuList), Memory: int64(p.Memory), Pids: p.Pids}
	if p.IO.Device != "" {
		r.IO = &IOLimit{Device: p.IO.Device, ReadBPS: int64(p.IO.ReadBPS), WriteBPS: int64(p.IO.WriteBPS)}
	}
	if p.Network != nil {
		ns, hif := p.Network.netConfig(p.Name).Names()
		r.Network = &NetRes{Netns: ns, HostIf: hif, Address: p.Network.Address, HostAddress: p.Network.HostAddress, RateBPS: int64(p.Network.Rate)}
	}
	return r
}

// limits are the pool's cgroup limits.
func (p *Pool) limits() Limits {
	return Limits{
		CPUs:     FormatCPUList(p.cpuList),
		Memory:   int64(p.Memory),
		Pids:     p.Pids,
		DevMajor: p.IO.major, DevMinor: p.IO.minor,
		ReadBPS:  uint64(p.IO.ReadBPS),
		WriteBPS: uint64(p.IO.WriteBPS),
	}
}

// ParseCPUList parses the kernel's CPU list syntax ("0-1,3") into sorted,
// distinct CPU numbers.
func ParseCPUList(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("%q: empty element", s)
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%q: bad CPU number %q", s, lo)
		}
		b := a
		if isRange {
			b, err = strconv.Atoi(hi)
			if err != nil || b < 0 {
				return nil, fmt.Errorf("%q: bad CPU number %q", s, hi)
			}
			if b < a {
				return nil, fmt.Errorf("%q: range %s is backwards", s, part)
			}
			if b-a > 4096 {
				return nil, fmt.Errorf("%q: range %s is too large", s, part)
			}
		}
		for c := a; c <= b; c++ {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// FormatCPUList writes sorted CPU numbers in the kernel's list syntax.
func FormatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

func onlineCPUs() ([]int, error) {
	data, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %w", err)
	}
	return ParseCPUList(string(data))
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
