package external

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
)

// Defaults of perf run's --fio, --db-bench and --db-bench-num.
const (
	DefaultFioJob            = "--rw=randread --bs=4k --size=64M --ioengine=psync"
	DefaultDBBenchBenchmarks = "fillrandom,readrandom"
	DefaultDBBenchNum        = 100000
)

var (
	_ harness.External = Fio{}
	_ harness.External = DBBench{}
)

// Fio is fio with a fixed job, as a workload of the latency harness on the
// kernel and FUSE paths.
type Fio struct {
	Args   []string // the job as flags; see FioSpec.Args
	Binary string   // default "fio" from PATH
}

// Name implements harness.External.
func (Fio) Name() string { return "fio" }

// Paths implements harness.External: kernel and fuse (see the package doc for
// direct).
func (Fio) Paths() []string { return append([]string(nil), paths...) }

// Check implements harness.External.
func (f Fio) Check() error {
	_, err := lookPath(f.Binary, "fio", "fio")
	return err
}

// Ops implements harness.External: the directions the job does I/O in
// (fio-RW-read, -write, -trim, and -sync with --fsync), as RunFio names its
// cells.
func (f Fio) Ops() []string {
	rw := rwOf(f.Args)
	fsync := false
	for _, a := range f.Args {
		if v, ok := strings.CutPrefix(a, "--fsync="); ok && v != "0" {
			fsync = true
		}
	}
	var dirs []string
	switch strings.TrimPrefix(rw, "rand") {
	case "read":
		dirs = []string{"read"}
	case "write":
		dirs = []string{"write"}
	case "trim":
		dirs = []string{"trim"}
	default: // rw, readwrite, randrw, trimwrite
		dirs = []string{"read", "write"}
	}
	if fsync {
		dirs = append(dirs, "sync")
	}
	ops := make([]string, len(dirs))
	for i, d := range dirs {
		ops[i] = "fio-" + rw + "-" + d
	}
	return ops
}

// job is the job's flags with the harness's timing (spec's Duration and
// Warmup) added, unless the job sets its own --runtime.
func (f Fio) job(spec harness.ExternalSpec) []string {
	args := append([]string(nil), f.Args...)
	for _, a := range f.Args {
		if strings.HasPrefix(a, "--runtime") {
			return args
		}
	}
	args = append(args, "--time_based", "--runtime="+seconds(spec.Duration.Seconds()))
	if spec.Warmup > 0 {
		args = append(args, "--ramp_time="+seconds(spec.Warmup.Seconds()))
	}
	return args
}

// seconds is s as fio's whole seconds, at least one.
func seconds(s float64) string { return strconv.Itoa(max(1, int(s+0.5))) + "s" }

// Run implements harness.External: one fio per directory of spec.Dirs.
func (f Fio) Run(ctx context.Context, spec harness.ExternalSpec) ([]results.Cell, error) {
	if err := checkPath("fio", spec.Path); err != nil {
		return nil, err
	}
	if len(spec.Dirs) == 0 {
		return nil, errors.New("fio: no tenant directory")
	}
	return RunFio(ctx, FioSpec{Dirs: spec.Dirs, Path: spec.Path, Tenants: len(spec.Dirs), Args: f.job(spec), Binary: f.Binary})
}

// DBBench is RocksDB's db_bench with fixed benchmarks, as a workload of the
// latency harness on the kernel and FUSE paths. It runs its benchmarks to the
// end (--num keys each): the harness's duration does not bound it.
type DBBench struct {
	Benchmarks string   // db_bench's --benchmarks, e.g. "fillrandom,readrandom"
	Num        int      // --num: keys per benchmark
	Args       []string // further db_bench flags; see DBBenchSpec.Args
	Binary     string   // default "db_bench" from PATH
}

// Name implements harness.External.
func (DBBench) Name() string { return "db_bench" }

// Paths implements harness.External: kernel and fuse (see the package doc for
// direct).
func (DBBench) Paths() []string { return append([]string(nil), paths...) }

// Check implements harness.External.
func (d DBBench) Check() error {
	_, err := lookPath(d.Binary, "db_bench", "rocksdb-tools")
	return err
}

// Ops implements harness.External: the benchmarks, each one operation.
func (d DBBench) Ops() []string { return strings.Split(d.Benchmarks, ",") }

// Run implements harness.External: one db_bench per directory of spec.Dirs.
func (d DBBench) Run(ctx context.Context, spec harness.ExternalSpec) ([]results.Cell, error) {
	if err := checkPath("db_bench", spec.Path); err != nil {
		return nil, err
	}
	if len(spec.Dirs) == 0 {
		return nil, errors.New("db_bench: no tenant directory")
	}
	if d.Num <= 0 {
		return nil, fmt.Errorf("db_bench: --num %d: want a positive key count", d.Num)
	}
	return RunDBBench(ctx, DBBenchSpec{Dirs: spec.Dirs, Path: spec.Path, Tenants: len(spec.Dirs),
		Benchmarks: d.Benchmarks, Num: d.Num, Args: d.Args, Binary: d.Binary})
}
