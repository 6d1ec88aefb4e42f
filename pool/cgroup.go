package pool

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Limits are a pool's cgroup limits; zero values mean "no limit".
type Limits struct {
	CPUs               string // cpuset list syntax; empty: the parent's
	Memory             int64
	Pids               int64
	DevMajor, DevMinor uint32
	ReadBPS, WriteBPS  uint64
}

// Cgroups creates, finds and removes the pools' cgroups under one parent.
type Cgroups struct {
	parent string
	v2     bool
}

// Cgroup is one pool's cgroup (in each v1 hierarchy it uses, or the unified one).
type Cgroup interface {
	// Name is the pool's name.
	Name() string
	// ProcsFiles are the cgroup.procs files a process writes its pid to in order
	// to enter the cgroup.
	ProcsFiles() []string
	// Update applies new limits.
	Update(Limits) error
	// Pids lists the processes in the cgroup (and its descendants) at one
	// moment: every pid it returns was in the cgroup, alive, at one instant
	// during the call, and every process that was there throughout the call
	// is in it (see settledPids).
	Pids() ([]int, error)
	// Kill SIGKILLs every process in the cgroup until none is left.
	Kill(timeout time.Duration) error
	// Delete kills what is left (Kill) and removes the cgroup.
	Delete() error
}

const sysfsCgroup = "/sys/fs/cgroup"

// v1Subsystems are the v1 controllers a pool uses.
// Cpuacct limits nothing: it is there for the pool's CPU time (Status).
var v1Subsystems = []cgroup1.Name{cgroup1.Cpuset, cgroup1.Cpuacct, cgroup1.Memory, cgroup1.Pids, cgroup1.Blkio}

// NewCgroups manages pool cgroups named parent/POOL. It uses cgroup v2 when the
// machine runs the unified hierarchy only, and v1 otherwise (legacy or hybrid
// mode: in hybrid mode the v2 hierarchy has no controllers to give).
func NewCgroups(parent string) (*Cgroups, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return &Cgroups{parent: parent, v2: true}, nil
	case cgroups.Legacy, cgroups.Hybrid:
		return &Cgroups{parent: parent}, nil
	}
	return nil, errors.New("cgroups: no cgroup hierarchy is mounted at " + sysfsCgroup)
}

// Version is 1 or 2.
func (m *Cgroups) Version() int {
	if m.v2 {
		return 2
	}
	return 1
}

func (m *Cgroups) v1Hierarchy() ([]cgroup1.Subsystem, error) {
	return []cgroup1.Subsystem{
		cgroup1.NewCpuset(sysfsCgroup),
		cgroup1.NewCpuacct(sysfsCgroup),
		cgroup1.NewMemory(sysfsCgroup),
		cgroup1.NewPids(sysfsCgroup),
		cgroup1.NewBlkio(sysfsCgroup),
	}, nil
}

// v1Path nests the pool under serve's own cgroup in each hierarchy, so that a
// serve confined by its container or systemd unit keeps its pools within bounds.
func (m *Cgroups) v1Path(name string) cgroup1.Path {
	return cgroup1.NestedPath(filepath.Join(m.parent, name))
}

// Create makes (or takes over, when it exists) the pool's cgroup with limits l.
func (m *Cgroups) Create(name string, l Limits) (Cgroup, error) {
	if m.v2 {
		return m.createV2(name, l)
	}
	cg, err := cgroup1.New(m.v1Path(name), v1Resources(l), cgroup1.WithHiearchy(m.v1Hierarchy))
	if err != nil {
		// New makes the directory in one hierarchy after another and stops at
		// the first limit the kernel refuses (CPUs the parent lacks), leaving
		// the ones it made: remove them (those holding processes stay).
		m.removeV1Dirs(name)
		return nil, fmt.Errorf("cgroup %s/%s: %w", m.parent, name, err)
	}
	c := &cgroupV1{name: name, cg: cg, path: m.v1Path(name)}
	// cgroup1.New writes the limits when it creates a directory; an existing
	// cgroup (reused after a crash) gets them here.
	if err := c.Update(l); err != nil {
		return nil, err
	}
	return c, nil
}

// removeV1Dirs removes pool name's directory in every v1 hierarchy where it
// is empty.
func (m *Cgroups) removeV1Dirs(name string) {
	p := m.v1Path(name)
	for _, s := range v1Subsystems {
		if rel, err := p(s); err == nil {
			_ = os.Remove(filepath.Join(sysfsCgroup, string(s), rel))
		}
	}
}

// Load opens an existing pool cgroup.
func (m *Cgroups) Load(name string) (Cgroup, error) {
	if m.v2 {
		return m.loadV2(name)
	}
	cg, err := cgroup1.Load(m.v1Path(name), cgroup1.WithHiearchy(m.v1Hierarchy))
	if err != nil {
		return nil, fmt.Errorf("cgroup %s/%s: %w", m.parent, name, err)
	}
	return &cgroupV1{name: name, cg: cg, path: m.v1Path(name)}, nil
}

// List returns the names of the existing pool cgroups under the parent (in any
// of the hierarchies), for reconciling what a killed serve left behind.
func (m *Cgroups) List() ([]string, error) {
	var dirs []string
	if m.v2 {
		dirs = []string{filepath.Join(sysfsCgroup, m.parent)}
	} else {
		p := cgroup1.NestedPath(m.parent)
		for _, s := range v1Subsystems {
			rel, err := p(s)
			if err != nil {
				if errors.Is(err, cgroup1.ErrControllerNotActive) {
					continue
				}
				return nil, err
			}
			dirs = append(dirs, filepath.Join(sysfsCgroup, string(s), rel))
		}
	}
	set := map[string]bool{}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() {
				set[e.Name()] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// RemoveParent removes the parent cgroup where it is empty (best effort: a
// parent still holding pools stays).
func (m *Cgroups) RemoveParent() {
	if m.v2 {
		_ = os.Remove(filepath.Join(sysfsCgroup, m.parent))
		return
	}
	p := cgroup1.NestedPath(m.parent)
	for _, s := range v1Subsystems {
		if rel, err := p(s); err == nil {
			_ = os.Remove(filepath.Join(sysfsCgroup, string(s), rel))
		}
	}
}

func v1Resources(l Limits) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if l.CPUs != "" {
		// Mems stays empty: the library copies the parent's, so the pool may use
		// every memory node its parent may.
		r.CPU = &specs.LinuxCPU{Cpus: l.CPUs}
	}
	if l.Memory > 0 {
		lim := l.Memory
		r.Memory = &specs.LinuxMemory{Limit: &lim}
		// With swap accounting, memory+swap gets the same limit: a pool cannot
		// grow past its reservation by swapping.
		if _, err := os.Stat(filepath.Join(sysfsCgroup, "memory", "memory.memsw.limit_in_bytes")); err == nil {
			sw := l.Memory
			r.Memory.Swap = &sw
		}
	}
	if l.Pids > 0 {
		lim := l.Pids
		r.Pids = &specs.LinuxPids{Limit: &lim}
	}
	if l.ReadBPS > 0 || l.WriteBPS > 0 {
		r.BlockIO = &specs.LinuxBlockIO{}
		dev := func(rate uint64) []specs.LinuxThrottleDevice {
			d := specs.LinuxThrottleDevice{Rate: rate}
			d.Major, d.Minor = int64(l.DevMajor), int64(l.DevMinor)
			return []specs.LinuxThrottleDevice{d}
		}
		if l.ReadBPS > 0 {
			r.BlockIO.ThrottleReadBpsDevice = dev(l.ReadBPS)
		}
		if l.WriteBPS > 0 {
			r.BlockIO.ThrottleWriteBpsDevice = dev(l.WriteBPS)
		}
	}
	return r
}

type cgroupV1 struct {
	name string
	cg   cgroup1.Cgroup
	path cgroup1.Path
}

func (c *cgroupV1) Name() string { return c.name }

func (c *cgroupV1) ProcsFiles() []string {
	var out []string
	for _, s := range c.cg.Subsystems() {
		rel, err := c.path(s.Name())
		if err != nil {
			continue
		}
		out = append(out, filepath.Join(sysfsCgroup, string(s.Name()), rel, "cgroup.procs"))
	}
	return out
}

func (c *cgroupV1) Update(l Limits) error {
	if err := c.cg.Update(v1Resources(l)); err != nil {
		return fmt.Errorf("cgroup %s: update: %w", c.name, err)
	}
	return nil
}

func (c *cgroupV1) Pids() ([]int, error) { return settledPids(c.pidsOnce) }

// pidsOnce is the union of the processes each v1 hierarchy lists, read one
// hierarchy after another: a process enters them one at a time (EnterAndExec),
// so killing needs all of them, but the union mixes moments (see settledPids).
func (c *cgroupV1) pidsOnce() (map[int]bool, error) {
	set := map[int]bool{}
	for _, s := range c.cg.Subsystems() {
		ps, err := c.cg.Processes(s.Name(), true)
		if err != nil {
			if os.IsNotExist(err) || errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, p := range ps {
			set[p.Pid] = true
		}
	}
	return set, nil
}

func (c *cgroupV1) Kill(timeout time.Duration) error { return killLoop(c.name, c.pidsOnce, timeout) }

func (c *cgroupV1) Delete() error {
	if err := c.Kill(10 * time.Second); err != nil {
		return err
	}
	if err := c.cg.Delete(); err != nil && !errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return fmt.Errorf("cgroup %s: %w", c.name, err)
	}
	return nil
}

// settledPids reads the cgroup's processes twice (once: one read of every
// hierarchy) and returns those both reads list.
//
// One read alone is not a moment: v1 lists each hierarchy's cgroup.procs in
// turn (v2 each descendant's), so a process that exits after the first file
// is read and its successor forked before the last one is read both appear,
// though they never lived at the same time: a pool with pids.max 8 could list
// 9. A pid in both reads was seen during the first and again during the
// second, so it was alive in the cgroup at the instant between them (a
// process's life is one interval; pids are not reused within microseconds):
// the result holds only processes that coexisted, and every process that was
// in the cgroup throughout both reads. Waiting for two reads to agree instead
// would never end in a pool that runs short commands one after another.
func settledPids(once func() (map[int]bool, error)) ([]int, error) {
	first, err := once()
	if err != nil {
		return nil, err
	}
	second, err := once()
	if err != nil {
		return nil, err
	}
	maps.DeleteFunc(first, func(pid int, _ bool) bool { return !second[pid] })
	return sortedKeys(first), nil
}

// killLoop SIGKILLs the cgroup's processes until it is empty: a process may fork
// between the listing and the kill, so one pass is not enough (v1 has no
// cgroup.kill). It kills whatever one read lists, settled or not: a process
// seen in any hierarchy is the pool's, and a fork bomb never settles.
func killLoop(name string, once func() (map[int]bool, error), timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		set, err := once()
		if err != nil {
			return err
		}
		if len(set) == 0 {
			return nil
		}
		pids := sortedKeys(set)
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v survive SIGKILL after %v", name, pids, timeout)
		}
		for _, pid := range pids {
			if pid > 0 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sortedKeys(set map[int]bool) []int {
	out := make([]int, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// The cgroup v2 path below follows the same model but is NOT exercised by this
// package's tests: the machines it is developed and tested on run in hybrid mode,
// where the unified hierarchy has no controllers.

func v2Resources(l Limits) *cgroup2.Resources {
	r := &cgroup2.Resources{}
	if l.CPUs != "" {
		r.CPU = &cgroup2.CPU{Cpus: l.CPUs}
	}
	if l.Memory > 0 {
		lim, noSwap := l.Memory, int64(0)
		r.Memory = &cgroup2.Memory{Max: &lim, Swap: &noSwap}
	}
	if l.Pids > 0 {
		r.Pids = &cgroup2.Pids{Max: l.Pids}
	}
	if l.ReadBPS > 0 || l.WriteBPS > 0 {
		r.IO = &cgroup2.IO{}
		if l.ReadBPS > 0 {
			r.IO.Max = append(r.IO.Max, cgroup2.Entry{Type: cgroup2.ReadBPS, Major: int64(l.DevMajor), Minor: int64(l.DevMinor), Rate: l.ReadBPS})
		}
		if l.WriteBPS > 0 {
			r.IO.Max = append(r.IO.Max, cgroup2.Entry{Type: cgroup2.WriteBPS, Major: int64(l.DevMajor), Minor: int64(l.DevMinor), Rate: l.WriteBPS})
		}
	}
	return r
}

func (m *Cgroups) createV2(name string, l Limits) (Cgroup, error) {
	parent, err := cgroup2.NewManager(sysfsCgroup, "/"+m.parent, &cgroup2.Resources{})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", m.parent, err)
	}
	// A child gets a controller only when every ancestor delegates it.
	if err := parent.ToggleControllers([]string{"cpuset", "memory", "pids", "io"}, cgroup2.Enable); err != nil {
		return nil, fmt.Errorf("cgroup %s: enable controllers: %w", m.parent, err)
	}
	mg, err := cgroup2.NewManager(sysfsCgroup, "/"+m.parent+"/"+name, v2Resources(l))
	if err != nil {
		_ = os.Remove(filepath.Join(sysfsCgroup, m.parent, name)) // as in v1: a refused limit leaves the directory
		return nil, fmt.Errorf("cgroup %s/%s: %w", m.parent, name, err)
	}
	return &cgroupV2{name: name, m: mg, dir: filepath.Join(sysfsCgroup, m.parent, name)}, nil
}

func (m *Cgroups) loadV2(name string) (Cgroup, error) {
	mg, err := cgroup2.Load("/"+m.parent+"/"+name, cgroup2.WithMountpoint(sysfsCgroup))
	if err != nil {
		return nil, fmt.Errorf("cgroup %s/%s: %w", m.parent, name, err)
	}
	return &cgroupV2{name: name, m: mg, dir: filepath.Join(sysfsCgroup, m.parent, name)}, nil
}

type cgroupV2 struct {
	name string
	m    *cgroup2.Manager
	dir  string
}

func (c *cgroupV2) Name() string         { return c.name }
func (c *cgroupV2) ProcsFiles() []string { return []string{filepath.Join(c.dir, "cgroup.procs")} }
func (c *cgroupV2) Update(l Limits) error {
	return c.m.Update(v2Resources(l))
}

func (c *cgroupV2) Pids() ([]int, error) { return settledPids(c.pidsOnce) }

// pidsOnce reads the cgroup's and its descendants' cgroup.procs, one file
// after another.
func (c *cgroupV2) pidsOnce() (map[int]bool, error) {
	ps, err := c.m.Procs(true)
	if err != nil {
		return nil, err
	}
	set := map[int]bool{}
	for _, p := range ps {
		set[int(p)] = true
	}
	return set, nil
}

func (c *cgroupV2) Kill(timeout time.Duration) error {
	// cgroup.kill (or the library's fallback) first, then make sure.
	_ = c.m.Kill()
	return killLoop(c.name, c.pidsOnce, timeout)
}

func (c *cgroupV2) Delete() error {
	if err := c.Kill(10 * time.Second); err != nil {
		return err
	}
	return c.m.Delete()
}

// pidString is a process id as cgroup.procs wants it.
func pidString(pid int) []byte { return []byte(strconv.Itoa(pid)) }

// ResetParent undoes what MakeExclusive did to the parent (a killed serve may
// have left it exclusive, with the CPUs of its own pools only): not exclusive,
// and every CPU of its own parent again, so that any pool fits under it. A
// parent that does not exist is left alone (creating a pool creates it).
func (m *Cgroups) ResetParent() error {
	if m.v2 {
		dir := filepath.Join(sysfsCgroup, m.parent)
		if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus.partition")); err != nil {
			return nil
		}
		return writeCgroupFile(dir, "cpuset.cpus.partition", "member")
	}
	dir, err := m.v1CpusetDir("")
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	if err := writeCgroupFile(dir, "cpuset.cpu_exclusive", "0"); err != nil {
		return err
	}
	all, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "cpuset.cpus"))
	if err != nil {
		return err
	}
	return writeCgroupFile(dir, "cpuset.cpus", strings.TrimSpace(string(all)))
}

// v1CpusetDir is the cpuset directory of pool name ("" for the parent).
func (m *Cgroups) v1CpusetDir(name string) (string, error) {
	rel, err := cgroup1.NestedPath(filepath.Join(m.parent, name))(cgroup1.Cpuset)
	if err != nil {
		return "", err
	}
	return filepath.Join(sysfsCgroup, string(cgroup1.Cpuset), rel), nil
}

// MakeExclusive makes the cpusets of pools (names, each with CPUs no other pool
// of the parent has) exclusive: no cpuset beside it, here or anywhere else
// under the parent's parent, may use those CPUs. union is the CPUs of every
// pool of the parent: the parent shrinks to them and becomes exclusive first,
// as the kernel requires of an exclusive cpuset's parent. It returns the pools
// it made exclusive, and for the rest why not (the kernel's refusal, e.g. a
// cpuset beside the parent shares its CPUs).
//
// v1: cpuset.cpu_exclusive. v2: cpuset.cpus.partition = root (a partition
// root, which also takes the CPUs out of the parent's load balancing); the v2
// path is written but not exercised by the tests (see the package doc).
func (m *Cgroups) MakeExclusive(union string, pools []string) (done []string, why error) {
	if m.v2 {
		parent := filepath.Join(sysfsCgroup, m.parent)
		if err := writePartition(parent); err != nil {
			return nil, fmt.Errorf("parent %s: %w", m.parent, err)
		}
		var errs []error
		for _, p := range pools {
			if err := writePartition(filepath.Join(parent, p)); err != nil {
				errs = append(errs, fmt.Errorf("pool %s: %w", p, err))
				continue
			}
			done = append(done, p)
		}
		return done, errors.Join(errs...)
	}
	parent, err := m.v1CpusetDir("")
	if err != nil {
		return nil, err
	}
	if err := writeCgroupFile(parent, "cpuset.cpus", union); err != nil {
		return nil, fmt.Errorf("parent %s: %w", m.parent, err)
	}
	if err := writeCgroupFile(parent, "cpuset.cpu_exclusive", "1"); err != nil {
		return nil, fmt.Errorf("parent %s: %w (another cpuset beside it uses some of CPUs %s)", m.parent, err, union)
	}
	var errs []error
	for _, p := range pools {
		dir, err := m.v1CpusetDir(p)
		if err == nil {
			err = writeCgroupFile(dir, "cpuset.cpu_exclusive", "1")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", p, err))
			continue
		}
		done = append(done, p)
	}
	return done, errors.Join(errs...)
}

// writePartition makes a v2 cgroup a partition root, and reads back whether
// the kernel agreed ("root invalid (reason)" otherwise).
func writePartition(dir string) error {
	if err := writeCgroupFile(dir, "cpuset.cpus.partition", "root"); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpuset.cpus.partition"))
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(b)); got != "root" {
		return fmt.Errorf("cpuset.cpus.partition is %q", got)
	}
	return nil
}

func writeCgroupFile(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, filepath.Join(dir, file), err)
	}
	return nil
}
