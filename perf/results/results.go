// Package results is the data model of the latency harness (`polytropon perf run`):
// a run's machine, parameters and cells, each cell one (workload, op, path, tenant
// count) with a latency histogram merged across every thread and process that
// measured it, a summary, and the CPU both sides used. The JSON encoding of Run is
// the harness's results file; plots, CSV, tables and `perf compare` read it.
//
// Histograms are HdrHistograms of nanoseconds (1 ns to 1 h, 3 significant
// figures), carried as snapshots so that per-process histograms merge exactly.
//
// It holds no locks; a Histogram is not safe for concurrent use (each thread
// records into its own and they are merged).
//
// ThisMachine describes the machine a run is made on; FormatNs prints a
// latency for the tables. It measures nothing itself.
package results

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds, in nanoseconds.
const (
	LowestNs  = 1
	HighestNs = int64(3600e9)
	SigFigs   = 3
)

// Histogram is a latency histogram in nanoseconds.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(LowestNs, HighestNs, SigFigs)}
}

// Record adds one latency; values out of range are clamped to the bounds.
func (h *Histogram) Record(ns int64) {
	ns = min(max(ns, LowestNs), HighestNs)
	_ = h.h.RecordValue(ns)
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the value at quantile q in [0, 1], in nanoseconds.
func (h *Histogram) Quantile(q float64) int64 { return h.h.ValueAtQuantile(q * 100) }

// Mean is the mean in nanoseconds.
func (h *Histogram) Mean() float64 { return h.h.Mean() }

// Max is the largest value (to the histogram's precision).
func (h *Histogram) Max() int64 { return h.h.Max() }

// CDF returns (value ns, cumulative fraction) points, one per distinct bucket,
// for plotting.
func (h *Histogram) CDF() (ns []int64, frac []float64) {
	total := float64(h.h.TotalCount())
	if total == 0 {
		return nil, nil
	}
	var cum int64
	for _, b := range h.h.Distribution() {
		if b.Count == 0 {
			continue
		}
		cum += b.Count
		ns = append(ns, b.To)
		frac = append(frac, float64(cum)/total)
	}
	return ns, frac
}

// MarshalJSON encodes the histogram as an hdrhistogram snapshot.
func (h *Histogram) MarshalJSON() ([]byte, error) { return json.Marshal(h.h.Export()) }

// UnmarshalJSON decodes a snapshot.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var s hdrhistogram.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.LowestTrackableValue < 1 || s.HighestTrackableValue <= s.LowestTrackableValue || s.SignificantFigures < 1 || s.SignificantFigures > 5 {
		return fmt.Errorf("results: histogram snapshot with bounds %d..%d, %d figures", s.LowestTrackableValue, s.HighestTrackableValue, s.SignificantFigures)
	}
	h.h = hdrhistogram.Import(&s)
	return nil
}

// Summary is a histogram's headline numbers, in nanoseconds, plus throughput.
type Summary struct {
	Count     int64   `json:"count"`
	P50       int64   `json:"p50_ns"`
	P90       int64   `json:"p90_ns"`
	P99       int64   `json:"p99_ns"`
	P999      int64   `json:"p999_ns"`
	Max       int64   `json:"max_ns"`
	Mean      float64 `json:"mean_ns"`
	OpsPerSec float64 `json:"ops_per_sec"` // all tenants together
}

// Summarize computes the summary of h over the measured wall time (seconds).
func Summarize(h *Histogram, seconds float64) Summary {
	s := Summary{Count: h.Count(), P50: h.Quantile(0.5), P90: h.Quantile(0.9), P99: h.Quantile(0.99),
		P999: h.Quantile(0.999), Max: h.Max(), Mean: h.Mean()}
	if seconds > 0 {
		s.OpsPerSec = float64(s.Count) / seconds
	}
	return s
}

// CPU is processor time used during a cell's measurement, in seconds.
type CPU struct {
	Client  float64 `json:"client_s"`  // the workload processes
	Service float64 `json:"service_s"` // the filesystem services (0 on the kernel path)
}

// Cell is one measurement: a workload's op on one path with a number of tenants.
type Cell struct {
	Workload string     `json:"workload"`
	Op       string     `json:"op"`
	Path     string     `json:"path"` // kernel, fuse, direct
	Tenants  int        `json:"tenants"`
	Seconds  float64    `json:"seconds"` // measured wall time (after warm-up)
	Summary  Summary    `json:"summary"`
	CPU      CPU        `json:"cpu"`
	Hist     *Histogram `json:"histogram,omitempty"`
	// Source says who measured: "polytropon" (the harness's own timers) or an
	// external program ("fio", "db_bench") whose own output was parsed, in which
	// case Hist may be absent and Summary holds what the program reported.
	Source string `json:"source"`
	Error  string `json:"error,omitempty"` // the cell failed; Summary is empty
}

// Machine is what a run was measured on (ThisMachine).
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Date   string `json:"date"` // UTC, RFC 3339
	// Backing is the type of the filesystem under the work directory (the disk
	// the kernel path and the services' branches use).
	Backing string `json:"backing"`
}

// Run is a results file.
type Run struct {
	Machine Machine           `json:"machine"`
	Params  map[string]string `json:"params"`  // every parameter, as given on the command line
	Partial bool              `json:"partial"` // interrupted: cells hold what was measured
	Cells   []Cell            `json:"cells"`
}

// Find returns the cell for (workload, op, path, tenants), or nil.
func (r *Run) Find(workload, op, path string, tenants int) *Cell {
	for i := range r.Cells {
		c := &r.Cells[i]
		if c.Workload == workload && c.Op == op && c.Path == path && c.Tenants == tenants {
			return c
		}
	}
	return nil
}

// Load reads a results file.
func Load(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}
