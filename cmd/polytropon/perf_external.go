package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/polytropon/polytropon/perf/external"
	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/plot"
	"github.com/polytropon/polytropon/perf/results"
)

// externalArgs hold perf run's flags for the external programs. They are package
// state because a harness.External is registered once, at start, and reads them
// when the run asks for its operations.
var externalArgs = struct {
	fio        string
	dbBench    string
	dbBenchNum int
	dbBenchArg string
}{
	fio:        "--rw=randread --bs=4k --size=64M --ioengine=psync",
	dbBench:    "fillrandom,readrandom",
	dbBenchNum: 100000,
}

func init() {
	harness.WritePlots = plot.WriteAll
	for _, e := range []harness.External{fioExternal{}, dbBenchExternal{}} {
		if err := harness.RegisterExternal(e); err != nil {
			panic(err)
		}
	}
}

// fioExternal runs fio (its job given by --fio) on the kernel and FUSE paths.
type fioExternal struct{}

func (fioExternal) Name() string    { return "fio" }
func (fioExternal) Paths() []string { return []string{harness.PathKernel, harness.PathFUSE} }

func (fioExternal) Check() error {
	_, err := external.LookPath("", "fio", "fio")
	return err
}

// Ops are the directions the job does I/O in, named as perf/external names them.
func (fioExternal) Ops() []string {
	rw := "read"
	fsync := false
	for _, a := range strings.Fields(externalArgs.fio) {
		if v, ok := strings.CutPrefix(a, "--rw="); ok {
			rw = v
		}
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

func (fioExternal) Run(ctx context.Context, spec harness.ExternalSpec) ([]results.Cell, error) {
	args := strings.Fields(externalArgs.fio)
	// The harness's timing, unless the job sets its own.
	if !strings.Contains(externalArgs.fio, "--runtime") {
		args = append(args, "--time_based", "--runtime="+seconds(spec.Duration.Seconds()))
		if spec.Warmup > 0 {
			args = append(args, "--ramp_time="+seconds(spec.Warmup.Seconds()))
		}
	}
	return external.RunFio(ctx, external.FioSpec{Dir: filepath.Dir(spec.Dirs[0]), Dirs: spec.Dirs, Path: spec.Path,
		Tenants: len(spec.Dirs), Args: args})
}

func seconds(s float64) string { return strconv.Itoa(max(1, int(s+0.5))) + "s" }

// dbBenchExternal runs RocksDB's db_bench on the kernel and FUSE paths.
type dbBenchExternal struct{}

func (dbBenchExternal) Name() string    { return "db_bench" }
func (dbBenchExternal) Paths() []string { return []string{harness.PathKernel, harness.PathFUSE} }

func (dbBenchExternal) Check() error {
	_, err := external.LookPath("", "db_bench", "rocksdb-tools")
	return err
}

func (dbBenchExternal) Ops() []string { return strings.Split(externalArgs.dbBench, ",") }

func (dbBenchExternal) Run(ctx context.Context, spec harness.ExternalSpec) ([]results.Cell, error) {
	if externalArgs.dbBenchNum <= 0 {
		return nil, fmt.Errorf("--db-bench-num %d: want a positive key count", externalArgs.dbBenchNum)
	}
	return external.RunDBBench(ctx, external.DBBenchSpec{Dir: filepath.Dir(spec.Dirs[0]), Dirs: spec.Dirs, Path: spec.Path,
		Tenants: len(spec.Dirs), Benchmarks: externalArgs.dbBench, Num: externalArgs.dbBenchNum,
		Args: strings.Fields(externalArgs.dbBenchArg)})
}
