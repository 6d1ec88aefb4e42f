package external

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/polytropon/polytropon/perf/results"
)

// FioSpec is one fio measurement: the job given as flags, run by Tenants
// concurrent fio processes.
type FioSpec struct {
	Dir     string   // the path's directory; tenant i runs in Dir/fio-t<i>
	Dirs    []string // instead of Dir: one existing directory per tenant (each its own mount)
	Path    string   // kernel or fuse, recorded in the cells
	Tenants int
	// Args is the job as fio flags, e.g. --rw=randread --bs=4k --size=64M
	// --runtime=5 --time_based --ioengine=psync. --name, --directory,
	// --filename, --output and --output-format are set here and refused.
	Args   []string
	Binary string // default "fio" from PATH
}

// fioOwnFlags are set by RunFio for every tenant.
var fioOwnFlags = []string{"name", "directory", "filename", "output", "output-format", "opendir"}

// RunFio runs the job and returns one cell per I/O direction that did I/O (read,
// write, trim, and sync for fsync latency), named fio-<rw>-<direction>.
func RunFio(ctx context.Context, spec FioSpec) ([]results.Cell, error) {
	bin, err := lookPath(spec.Binary, "fio", "fio")
	if err != nil {
		return nil, err
	}
	if err := refuseFlags("fio", spec.Args, fioOwnFlags); err != nil {
		return nil, err
	}
	dirs, own, err := tenantDirs("fio", spec.Dir, spec.Dirs, spec.Tenants)
	if err != nil {
		return nil, err
	}
	if own {
		// The job's data files can be large; they are of no use after the run.
		defer func() {
			for _, d := range dirs {
				os.RemoveAll(d)
			}
		}()
	}
	argv := make([][]string, len(dirs))
	for i, d := range dirs {
		argv[i] = append(append([]string{}, spec.Args...),
			fmt.Sprintf("--name=polytropon-t%d", i), "--directory="+d, "--output-format=json+")
	}
	procs, wall := runAll(ctx, bin, argv, dirs)
	var reps []*fioReport
	var cpu float64
	for i, p := range procs {
		cpu += p.cpu.Seconds()
		rep, perr := parseFio(p.stdout)
		if p.err != nil && (ctx.Err() == nil || perr != nil) {
			if ctx.Err() != nil {
				return nil, interrupted(ctx, "fio")
			}
			return nil, procError("fio", i, p)
		}
		if perr != nil {
			return nil, fmt.Errorf("fio (tenant %d): %w", i, perr)
		}
		reps = append(reps, rep)
	}
	cells, err := fioCells(reps, spec.Path, spec.Tenants, rwOf(spec.Args))
	if err != nil {
		if ierr := interrupted(ctx, "fio"); ierr != nil {
			return nil, ierr // stopped before any I/O (e.g. while laying out files)
		}
		return nil, err
	}
	for i := range cells {
		cells[i].CPU.Client = cpu
		if cells[i].Seconds == 0 {
			cells[i].Seconds = wall.Seconds()
		}
	}
	return cells, interrupted(ctx, "fio")
}

// rwOf is the job's --rw (or --readwrite) without a ":N" sequence suffix; fio's
// default is read.
func rwOf(args []string) string {
	rw := "read"
	for _, a := range args {
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if ok && (name == "rw" || name == "readwrite") {
			rw, _, _ = strings.Cut(val, ":")
		}
	}
	return rw
}

// fioReport is the part of fio's JSON output that is used.
type fioReport struct {
	Version string   `json:"fio version"`
	Jobs    []fioJob `json:"jobs"`
}

type fioJob struct {
	Name    string            `json:"jobname"`
	Error   int               `json:"error"`
	Options map[string]string `json:"job options"`
	Read    fioDir            `json:"read"`
	Write   fioDir            `json:"write"`
	Trim    fioDir            `json:"trim"`
	Sync    struct {
		TotalIOs int64  `json:"total_ios"`
		Lat      fioLat `json:"lat_ns"`
	} `json:"sync"`
}

type fioDir struct {
	TotalIOs int64   `json:"total_ios"`
	IOPS     float64 `json:"iops"`
	Runtime  int64   `json:"runtime"` // ms
	Clat     fioLat  `json:"clat_ns"`
}

// fioLat is a latency block in ns: fio's own percentiles, and with json+ its
// histogram bins (bucket value in ns -> count).
type fioLat struct {
	Min        float64            `json:"min"`
	Max        float64            `json:"max"`
	Mean       float64            `json:"mean"`
	N          int64              `json:"N"`
	Percentile map[string]float64 `json:"percentile"`
	Bins       map[string]int64   `json:"bins"`
}

// parseFio decodes fio's JSON output. fio writes notes such as "fio: terminating
// on signal 2" into the same stream before the JSON, so the document starts at
// the first line that is "{".
func parseFio(b []byte) (*fioReport, error) {
	i := bytes.Index(b, []byte("\n{"))
	switch {
	case bytes.HasPrefix(b, []byte("{")):
		i = 0
	case i >= 0:
		i++
	default:
		return nil, fmt.Errorf("fio output: %w (no JSON document)", errNoOutput)
	}
	var r fioReport
	dec := json.NewDecoder(bytes.NewReader(b[i:]))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("fio output: %w", err)
	}
	if len(r.Jobs) == 0 {
		return nil, fmt.Errorf("fio output: %w (no jobs)", errNoOutput)
	}
	for _, j := range r.Jobs {
		if j.Error != 0 {
			return nil, fmt.Errorf("fio job %s failed: error %d", j.Name, j.Error)
		}
	}
	return &r, nil
}

// fioSide is one direction's latencies across every job of every tenant.
type fioSide struct {
	name    string
	lats    []fioLat
	iops    float64
	seconds float64
}

// fioCells merges the tenants' reports into one cell per direction.
func fioCells(reps []*fioReport, path string, tenants int, rw string) ([]results.Cell, error) {
	sides := []*fioSide{{name: "read"}, {name: "write"}, {name: "trim"}, {name: "sync"}}
	for _, r := range reps {
		for _, j := range r.Jobs {
			for k, d := range []fioDir{j.Read, j.Write, j.Trim} {
				if d.TotalIOs == 0 {
					continue
				}
				s := sides[k]
				s.lats = append(s.lats, d.Clat)
				s.iops += d.IOPS
				s.seconds = max(s.seconds, float64(d.Runtime)/1e3)
			}
			if j.Sync.TotalIOs > 0 {
				sides[3].lats = append(sides[3].lats, j.Sync.Lat)
			}
		}
	}
	// fsyncs are timed inside the write phase; their rate is over its runtime.
	sides[3].seconds = sides[1].seconds
	var cells []results.Cell
	for _, s := range sides {
		if len(s.lats) == 0 {
			continue
		}
		sum, err := mergeFio(s.lats)
		if err != nil {
			return nil, fmt.Errorf("fio %s: %w", s.name, err)
		}
		c := results.Cell{Workload: "fio", Op: "fio-" + rw + "-" + s.name, Path: path, Tenants: tenants,
			Seconds: s.seconds, Source: "fio"}
		c.Summary, c.Hist = sum.summary, sum.hist
		if s.iops > 0 {
			c.Summary.OpsPerSec = s.iops
		} else if s.seconds > 0 {
			c.Summary.OpsPerSec = float64(c.Summary.Count) / s.seconds
		}
		cells = append(cells, c)
	}
	if len(cells) == 0 {
		return nil, fmt.Errorf("fio: %w (no direction did any I/O)", errNoOutput)
	}
	return cells, nil
}

type merged struct {
	summary results.Summary
	hist    *results.Histogram
}

// mergeFio combines latency blocks. One block keeps fio's own percentiles;
// several are merged through their bins, which fio only writes with json+.
func mergeFio(lats []fioLat) (merged, error) {
	var m merged
	var total float64
	haveBins := true
	for _, l := range lats {
		m.summary.Count += l.N
		total += l.Mean * float64(l.N)
		m.summary.Max = max(m.summary.Max, int64(l.Max))
		if len(l.Bins) == 0 && l.N > 0 {
			haveBins = false
		}
	}
	if m.summary.Count > 0 {
		m.summary.Mean = total / float64(m.summary.Count)
	}
	if haveBins {
		m.hist = results.NewHistogram()
		for _, l := range lats {
			for k, n := range l.Bins {
				v, err := strconv.ParseFloat(k, 64)
				if err != nil || v < 0 || n < 0 || math.IsInf(v, 0) {
					return m, fmt.Errorf("bad latency bin %q: %d", k, n)
				}
				m.hist.RecordN(int64(v), n)
			}
		}
	}
	pct := func(l fioLat, key string) (int64, bool) {
		v, ok := l.Percentile[key]
		return int64(v), ok
	}
	quantiles := []struct {
		key string
		q   float64
		dst *int64
	}{{"50.000000", 0.5, &m.summary.P50}, {"90.000000", 0.9, &m.summary.P90},
		{"99.000000", 0.99, &m.summary.P99}, {"99.900000", 0.999, &m.summary.P999}}
	for _, q := range quantiles {
		if len(lats) == 1 {
			if v, ok := pct(lats[0], q.key); ok {
				*q.dst = v
				continue
			}
		}
		if m.hist == nil {
			if len(lats) > 1 {
				return m, fmt.Errorf("%d jobs' percentiles cannot be merged without json+ latency bins", len(lats))
			}
			continue // a --percentile_list without this one: left unknown
		}
		*q.dst = m.hist.Quantile(q.q)
	}
	return m, nil
}
