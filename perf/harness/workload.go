package harness

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/polytropon/polytropon/perf/results"
)

// Paths, in report order.
const (
	PathKernel = "kernel"
	PathFUSE   = "fuse"
	PathDirect = "direct"
)

// Paths are the paths the harness knows, in report order.
var Paths = []string{PathKernel, PathFUSE, PathDirect}

// Built-in workloads: run by `polytropon perf worker` processes with the
// harness's own timers.
const (
	WorkloadMicro            = "micro"
	WorkloadPebbleFillSeq    = "pebble-fillseq"
	WorkloadPebbleFillRandom = "pebble-fillrandom"
	WorkloadPebbleReadRandom = "pebble-readrandom"
)

// Operations of the micro workload, in report order.
const (
	OpStat         = "stat"
	OpOpenClose    = "open-close"
	OpCreateUnlink = "create-unlink"
	OpRead4KSeq    = "read4k-seq"
	OpRead4KRand   = "read4k-rand"
	OpWrite4KSeq   = "write4k-seq"
	OpWrite4KRand  = "write4k-rand"
	OpAppendFsync  = "append-fsync"
)

// Operations of the Pebble workloads.
const (
	OpPut = "put"
	OpGet = "get"
)

// builtin maps a built-in workload to its operations.
var builtin = map[string][]string{
	WorkloadMicro: {OpStat, OpOpenClose, OpCreateUnlink, OpRead4KSeq, OpRead4KRand, OpWrite4KSeq,
		OpWrite4KRand, OpAppendFsync},
	WorkloadPebbleFillSeq:    {OpPut},
	WorkloadPebbleFillRandom: {OpPut},
	WorkloadPebbleReadRandom: {OpGet},
}

// builtinOrder is the order of built-in workloads in listings.
var builtinOrder = []string{WorkloadMicro, WorkloadPebbleFillSeq, WorkloadPebbleFillRandom, WorkloadPebbleReadRandom}

// External is a workload measured by an external program (fio, RocksDB's
// db_bench: package perf/external), which runs on the files of the kernel or fuse
// path and parses the program's own latency output. It is the seam through which
// such workloads join a run: register one with RegisterExternal and `perf run
// --workload NAME` runs it, once the tenants' services are up, for each tenant
// count and each asked path it supports, in the same results file as the built-in
// workloads.
//
// Run must measure all spec.Tenants concurrently (one program per tenant),
// honour ctx (stop the programs and return what was measured, or an error), and
// return one cell per operation with Workload, Op, Path, Tenants, Seconds,
// Summary and Source (the program's name) set, Hist when the program gives a
// distribution fine enough to build one, and CPU.Client when it can tell. The
// harness fills CPU.Service with the services' CPU time over the whole call.
type External interface {
	// Name is the workload's name on the command line.
	Name() string
	// Ops are the operations it reports, in report order.
	Ops() []string
	// Paths are those of Paths it runs on (not the direct path: an unmodified
	// program reaches files only through the kernel).
	Paths() []string
	// Check says what is missing to run it (a program not installed: name the
	// package to install), or nil.
	Check() error
	Run(ctx context.Context, spec ExternalSpec) ([]results.Cell, error)
}

// ExternalSpec is one External measurement: a path and tenant count.
type ExternalSpec struct {
	Path string
	// Dirs are the tenants' directories on the path, one per tenant, each empty
	// and the external program's to use.
	Dirs     []string
	Warmup   time.Duration
	Duration time.Duration
	// Params are the run's parameters (Run's Params).
	Params map[string]string
}

var (
	externalMu sync.Mutex
	externals  = map[string]External{}
)

// RegisterExternal makes an external workload known to Run; a name already taken
// is an error.
func RegisterExternal(e External) error {
	externalMu.Lock()
	defer externalMu.Unlock()
	n := e.Name()
	if _, ok := builtin[n]; ok {
		return fmt.Errorf("harness: workload %q is built in", n)
	}
	if _, ok := externals[n]; ok {
		return fmt.Errorf("harness: workload %q registered twice", n)
	}
	for _, p := range e.Paths() {
		if p != PathKernel && p != PathFUSE {
			return fmt.Errorf("harness: external workload %q claims path %q (external programs run on kernel and fuse)", n, p)
		}
	}
	externals[n] = e
	return nil
}

func external(name string) External {
	externalMu.Lock()
	defer externalMu.Unlock()
	return externals[name]
}

// Workloads lists every workload name: the built-in ones, then the registered
// external ones in name order.
func Workloads() []string {
	out := slices.Clone(builtinOrder)
	externalMu.Lock()
	var ext []string
	for n := range externals {
		ext = append(ext, n)
	}
	externalMu.Unlock()
	sort.Strings(ext)
	return append(out, ext...)
}

// WorkloadOps returns a workload's operations, or an error listing the valid
// workloads.
func WorkloadOps(name string) ([]string, error) {
	if ops, ok := builtin[name]; ok {
		return slices.Clone(ops), nil
	}
	if e := external(name); e != nil {
		return e.Ops(), nil
	}
	return nil, fmt.Errorf("harness: unknown workload %q (valid: %s)", name, strings.Join(Workloads(), ", "))
}

// workloadPaths returns the paths a workload runs on.
func workloadPaths(name string) []string {
	if e := external(name); e != nil {
		return e.Paths()
	}
	return Paths
}

func isPebble(workload string) bool { return strings.HasPrefix(workload, "pebble-") }
