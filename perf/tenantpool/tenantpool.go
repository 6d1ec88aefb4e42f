// Package tenantpool starts each tenant of a measurement inside a pool of its
// own (perf run --pools, perf isolation).
package tenantpool

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/polytropon/polytropon/pool"
)

// Launcher starts each tenant's service and workers inside a pool of its own
// (a cgroup PARENT/tN made through package pool, with a reserved CPU): they enter
// it through `polytropon pool-exec` before they exec, as serve's services do, so
// no thread of theirs runs outside the pool. Tenant i gets CPU cpus[i % len]:
// with more tenants than CPUs, pools share cores (Describe says so).
type Launcher struct {
	exe     string
	logArgs []string
	cpus    []int
	cgs     *pool.Cgroups

	mu    sync.Mutex
	pools map[int]pool.Cgroup // by tenant; guarded by mu
	err   error               // the first pool that could not be made
}

// New makes pools under the parent cgroup parent (created on demand,
// removed by Close). Root only. logArgs are the services' logging flags.
func New(exe, parent string, cpus []int, logArgs ...string) (*Launcher, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("--pools needs root (it creates cgroups)")
	}
	if len(cpus) == 0 {
		online, err := OnlineCPUs()
		if err != nil {
			return nil, err
		}
		cpus = online
	}
	cgs, err := pool.NewCgroups(parent)
	if err != nil {
		return nil, err
	}
	return &Launcher{exe: exe, logArgs: logArgs, cpus: cpus, cgs: cgs, pools: map[int]pool.Cgroup{}}, nil
}

// OnlineCPUs lists the online CPUs.
func OnlineCPUs() ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, err
	}
	return pool.ParseCPUList(string(b))
}

// CPU is tenant's reserved CPU.
func (l *Launcher) CPU(tenant int) int { return l.cpus[tenant%len(l.cpus)] }

// cgroup returns tenant's pool, making it on first use.
func (l *Launcher) cgroup(tenant int) (pool.Cgroup, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cg, ok := l.pools[tenant]; ok {
		return cg, nil
	}
	cg, err := l.cgs.Create(fmt.Sprintf("t%d", tenant), pool.Limits{CPUs: pool.FormatCPUList([]int{l.CPU(tenant)})})
	if err != nil {
		if l.err == nil {
			l.err = err
		}
		return nil, err
	}
	l.pools[tenant] = cg
	return cg, nil
}

// Command runs argv inside tenant's pool. If the pool cannot be made, the command
// is one that fails saying so (the Launcher interface has no error), and Err
// reports it.
func (l *Launcher) Command(tenant int, argv ...string) *exec.Cmd {
	cg, err := l.cgroup(tenant)
	if err != nil {
		return exec.Command(l.exe, "pool-exec", "--", "/nonexistent/pool-"+err.Error())
	}
	args := []string{"pool-exec"}
	for _, f := range cg.ProcsFiles() {
		args = append(args, "--cgroup-procs", f)
	}
	args = append(args, "--")
	args = append(args, argv...)
	return exec.Command(l.exe, args...)
}

func (l *Launcher) Service(tenant int, cfg string) *exec.Cmd {
	return l.Command(tenant, append(append([]string{l.exe}, l.logArgs...), "service", "--config", cfg)...)
}

func (l *Launcher) Worker(tenant int) *exec.Cmd { return l.Command(tenant, l.exe, "perf", "worker") }

// Err is the first error making a pool.
func (l *Launcher) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Describe is the pools' layout for up to tenants tenants, for the report's
// parameters.
func (l *Launcher) Describe(tenants int) string {
	var cpus []string
	for i := 0; i < min(tenants, 8); i++ {
		cpus = append(cpus, fmt.Sprintf("t%d on CPU %d", i, l.CPU(i)))
	}
	if tenants > 8 {
		cpus = append(cpus, "...")
	}
	s := fmt.Sprintf("cgroup v%d, one pool per tenant (its service and workers): %s", l.cgs.Version(), strings.Join(cpus, ", "))
	if tenants > len(l.cpus) {
		s += fmt.Sprintf("; %d tenants share %d CPUs", tenants, len(l.cpus))
	}
	return s
}

// Close kills what is left in the pools and removes them and the parent.
func (l *Launcher) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, cg := range l.pools {
		errs = append(errs, cg.Delete())
	}
	l.pools = map[int]pool.Cgroup{}
	l.cgs.RemoveParent()
	return errors.Join(errs...)
}
