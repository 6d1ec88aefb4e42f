package harness

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
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
// such workloads join a run: give it in Options.Externals and Options.Workloads
// may name it; Run runs it, once the tenants' services are up, for each tenant
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

// checkExternals refuses externals whose name is taken (built in or twice) or
// that claim a path external programs cannot run on.
func checkExternals(exts []External) error {
	seen := map[string]bool{}
	for _, e := range exts {
		n := e.Name()
		if _, ok := builtin[n]; ok {
			return fmt.Errorf("harness: workload %q is built in", n)
		}
		if seen[n] {
			return fmt.Errorf("harness: external workload %q given twice", n)
		}
		seen[n] = true
		for _, p := range e.Paths() {
			if p != PathKernel && p != PathFUSE {
				return fmt.Errorf("harness: external workload %q claims path %q (external programs run on kernel and fuse)", n, p)
			}
		}
	}
	return nil
}

// findExternal returns the external workload of exts named name, or nil.
func findExternal(exts []External, name string) External {
	for _, e := range exts {
		if e.Name() == name {
			return e
		}
	}
	return nil
}

// Workloads lists every workload name: the built-in ones, then those of exts
// in name order.
func Workloads(exts ...External) []string {
	out := slices.Clone(builtinOrder)
	var ext []string
	for _, e := range exts {
		ext = append(ext, e.Name())
	}
	sort.Strings(ext)
	return append(out, ext...)
}

// WorkloadOps returns the operations of a workload, built in or one of exts,
// or an error listing the valid workloads.
func WorkloadOps(name string, exts ...External) ([]string, error) {
	if ops, ok := builtin[name]; ok {
		return slices.Clone(ops), nil
	}
	if e := findExternal(exts, name); e != nil {
		return e.Ops(), nil
	}
	return nil, fmt.Errorf("harness: unknown workload %q (valid: %s)", name, strings.Join(Workloads(exts...), ", "))
}

// workloadPaths returns the paths a workload runs on.
func workloadPaths(name string, exts []External) []string {
	if e := findExternal(exts, name); e != nil {
		return e.Paths()
	}
	return Paths
}

func isPebble(workload string) bool { return strings.HasPrefix(workload, "pebble-") }
