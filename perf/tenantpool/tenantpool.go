// Package tenantpool starts each tenant of a measurement inside a pool of its
// own: a cgroup PARENT/tN made through package pool, with one reserved CPU.
// Its Launcher wraps another harness.Launcher (the one that knows how to start
// a service or a worker) so that each tenant's service and workers enter the
// tenant's cgroups through `polytropon pool-exec` before they exec, as serve's
// services do: no thread of theirs ever runs outside the pool. `polytropon
// perf run --pools` and `polytropon perf isolation` use it.
//
// Contract: tenant i gets CPU cpus[i % len(cpus)]; with more tenants than CPUs,
// pools share cores, and Describe says so. A pool is made on the tenant's
// first command; if it cannot be made, the command returned is one that fails
// saying why (a Launcher method returns no error) and Err reports the first
// such error. Close kills what is left in the pools and removes them and the
// parent. Root only: it creates cgroups.
//
// Lock order: mu guards the pools and the first error; it is a leaf.
//
// Measure: it measures nothing itself; `polytropon perf run --pools
// --workload micro --tenants 2 --out DIR` runs through it.
package tenantpool

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/pool"
)

// Launcher is a harness.Launcher whose commands run inside each tenant's pool.
type Launcher struct {
	exe   string
	inner harness.Launcher
	cpus  []int
	cgs   *pool.Cgroups

	mu    sync.Mutex
	pools map[int]pool.Cgroup // by tenant; guarded by mu
	err   error               // the first pool that could not be made; guarded by mu
}

var _ harness.Launcher = (*Launcher)(nil)

// New makes pools under the parent cgroup parent (created on demand, removed
// by Close) for the commands of inner. exe is the polytropon binary, whose
// hidden pool-exec command enters the cgroups and execs. cpus are the CPUs the
// tenants get in turn (default: the online CPUs).
func New(exe, parent string, cpus []int, inner harness.Launcher) (*Launcher, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("tenantpool: pools need root (they are cgroups)")
	}
	if inner == nil {
		return nil, errors.New("tenantpool: no inner launcher")
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
	return &Launcher{exe: exe, inner: inner, cpus: cpus, cgs: cgs, pools: map[int]pool.Cgroup{}}, nil
}

// OnlineCPUs lists the online CPUs.
func OnlineCPUs() ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("tenantpool: %w", err)
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

// Command runs argv inside tenant's pool. If the pool cannot be made, the
// command is one that fails saying so, and Err reports it.
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

// Wrap returns cmd (not started) running inside tenant's pool: its program,
// arguments, environment and directory; nothing else of it is carried over.
func (l *Launcher) Wrap(tenant int, cmd *exec.Cmd) *exec.Cmd {
	w := l.Command(tenant, append([]string{cmd.Path}, cmd.Args[1:]...)...)
	w.Env, w.Dir = cmd.Env, cmd.Dir
	return w
}

// Service implements harness.Launcher: the inner launcher's service, in
// tenant's pool.
func (l *Launcher) Service(tenant int, cfg string) *exec.Cmd {
	return l.Wrap(tenant, l.inner.Service(tenant, cfg))
}

// Worker implements harness.Launcher: the inner launcher's worker, in tenant's
// pool.
func (l *Launcher) Worker(tenant int) *exec.Cmd { return l.Wrap(tenant, l.inner.Worker(tenant)) }

// Err is the first error making a pool.
func (l *Launcher) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Describe is the pools' layout for up to tenants tenants, for a report's
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
