package external

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

// The golden file is db_bench 7.8.3 (Debian rocksdb-tools) running
// fillrandom,readrandom with --num=20000 --histogram=1.
func TestDBBenchGolden(t *testing.T) {
	res, err := parseDBBench(golden(t, "db_bench-7.8.3.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].bench != "fillrandom" || res[1].bench != "readrandom" {
		t.Fatalf("results %+v", res)
	}
	f := res[0]
	if f.microsPerOp != 19.708 || f.opsPerSec != 50731 || f.seconds != 0.394 || f.ops != 20000 || len(f.hists) != 1 {
		t.Errorf("fillrandom %+v", f)
	}
	h := f.hists[0]
	if h.typ != "write" || h.count != 20000 || h.avg != 19.7092 || h.min != 3 || h.max != 25335 || len(h.buckets) != 19 {
		t.Errorf("fillrandom histogram %+v", h)
	}
	// Recomputing db_bench's percentiles from its buckets gives what it printed
	// (it prints two decimals).
	for _, r := range res {
		for _, h := range r.hists {
			for name, p := range map[string]float64{"P50": 50, "P75": 75, "P99": 99, "P99.9": 99.9, "P99.99": 99.99} {
				want, ok := h.pcts[name]
				if !ok {
					t.Fatalf("%s: no %s in %v", r.bench, name, h.pcts)
				}
				if got := percentile(h.buckets, h.count, h.min, h.max, p); math.Abs(got-want) > 0.005 {
					t.Errorf("%s %s: computed %.4f, db_bench printed %.2f", r.bench, name, got, want)
				}
			}
		}
	}

	cells := dbBenchCells([][]dbBenchResult{res}, "fuse", 1)
	if len(cells) != 2 {
		t.Fatalf("%d cells", len(cells))
	}
	c := findCell(t, cells, "fillrandom")
	s := c.Summary
	if c.Workload != "db_bench" || c.Source != "db_bench" || c.Path != "fuse" || c.Tenants != 1 || c.Seconds != 0.394 ||
		s.Count != 20000 || s.OpsPerSec != 50731 || math.Abs(s.Mean-19709.2) > 1e-6 || s.Max != 25335000 ||
		math.Abs(float64(s.P50)-7810) > 5 || math.Abs(float64(s.P99)-221010) > 5 || math.Abs(float64(s.P999)-870000) > 5 {
		t.Errorf("fillrandom cell %+v summary %+v", c, s)
	}
	if c.Hist == nil || c.Hist.Count() != 20000 {
		t.Fatalf("histogram %v", c.Hist)
	}
	// The histogram spreads buckets linearly, as the interpolation assumes: its
	// median lies in the same bucket (6, 10] µs, near db_bench's.
	if m := c.Hist.Quantile(0.5); m <= 6000 || m > 10000 || math.Abs(float64(m)-7810) > 600 {
		t.Errorf("histogram median %d ns", m)
	}
	r := findCell(t, cells, "readrandom")
	if r.Summary.Count != 20000 || math.Abs(float64(r.Summary.P50)-2300) > 5 || r.Summary.Max != 895000 {
		t.Errorf("readrandom %+v", r.Summary)
	}
}

func TestDBBenchMergedTenants(t *testing.T) {
	res, err := parseDBBench(golden(t, "db_bench-7.8.3.txt"))
	if err != nil {
		t.Fatal(err)
	}
	one := dbBenchCells([][]dbBenchResult{res}, "kernel", 1)
	two := dbBenchCells([][]dbBenchResult{res, res}, "kernel", 2)
	for i := range one {
		a, b := one[i].Summary, two[i].Summary
		if b.Count != 2*a.Count || b.OpsPerSec != 2*a.OpsPerSec || math.Abs(b.Mean-a.Mean) > 1e-6 ||
			b.P50 != a.P50 || b.P99 != a.P99 || b.P999 != a.P999 || b.Max != a.Max || two[i].Hist.Count() != b.Count {
			t.Errorf("%s: one tenant %+v, two %+v", one[i].Op, a, b)
		}
	}
	// Two different distributions: the merged median lies between theirs.
	fast := res[1].hists[0]
	slow := res[0].hists[0]
	mixed := []dbBenchResult{{bench: "x", hists: []*dbHist{fast}}}
	mixed2 := []dbBenchResult{{bench: "x", hists: []*dbHist{{typ: fast.typ, count: slow.count, avg: slow.avg, min: slow.min, max: slow.max, buckets: slow.buckets}}}}
	m := dbBenchCells([][]dbBenchResult{mixed, mixed2}, "kernel", 2)[0].Summary
	if m.P50 <= int64(fast.pcts["P50"]*1e3) || m.P50 >= int64(slow.pcts["P50"]*1e3) || m.Count != 40000 || m.Max != 25335000 {
		t.Errorf("merged %+v; medians %v and %v µs", m, fast.pcts["P50"], slow.pcts["P50"])
	}
}

func TestDBBenchMultiTypeAndNoHistogram(t *testing.T) {
	out := `readrandomwriterandom :       5.000 micros/op 200000 ops/sec 1.000 seconds 200000 operations; ( reads:180000 writes:20000 total:200000 found:1000)
Microseconds per read:
Count: 3 Average: 2.0000  StdDev: 0.50
Min: 1  Median: 2.0000  Max: 3
Percentiles: P50: 2.00 P75: 2.50 P99: 3.00 P99.9: 3.00 P99.99: 3.00
------------------------------------------------------
[       0,       1 ]        1  33.333%  33.333% #######
(       1,       2 ]        1  33.333%  66.667% #######
(       2,       3 ]        1  33.333% 100.000% #######

Microseconds per write:
Count: 1 Average: 9.0000  StdDev: 0.00
Min: 9  Median: 9.0000  Max: 9
Percentiles: P50: 9.00 P75: 9.00 P99: 9.00 P99.9: 9.00 P99.99: 9.00
------------------------------------------------------
(       6,      10 ]        1 100.000% 100.000% ####################

compact      :  100000.000 micros/op 10 ops/sec 0.100 seconds 1 operations;
`
	res, err := parseDBBench([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	cells := dbBenchCells([][]dbBenchResult{res}, "kernel", 1)
	if len(cells) != 3 {
		t.Fatalf("%d cells", len(cells))
	}
	rd, wr, cp := findCell(t, cells, "readrandomwriterandom-read"), findCell(t, cells, "readrandomwriterandom-write"), findCell(t, cells, "compact")
	if rd.Summary.Count != 3 || rd.Summary.P50 != 1500 || wr.Summary.P50 != 9000 || wr.Summary.OpsPerSec != 200000 {
		t.Errorf("read %+v write %+v", rd.Summary, wr.Summary)
	}
	if cp.Hist != nil || cp.Summary.Mean != 100000e3 || cp.Summary.Count != 1 || cp.Summary.P50 != 0 {
		t.Errorf("compact %+v", cp)
	}
}

func TestParseDBBenchBad(t *testing.T) {
	good := string(golden(t, "db_bench-7.8.3.txt"))
	for name, in := range map[string]string{
		"empty":          "",
		"no report":      "Initializing RocksDB Options from the specified file\nunknown benchmark 'x'\n",
		"orphan hist":    "Microseconds per write:\nCount: 1 Average: 1.0\n",
		"count mismatch": strings.Replace(good, "Count: 20000 Average: 19.7092", "Count: 20001 Average: 19.7092", 1),
		"lost bucket":    strings.Replace(good, "(       6,      10 ]    11771", "(       6,      10 ]    11770", 1),
		"inverted":       strings.Replace(good, "(       6,      10 ]", "(      10,       6 ]", 1),
	} {
		if _, err := parseDBBench([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "empty" && !errors.Is(err, errNoOutput) {
			t.Errorf("empty: %v", err)
		}
	}
}

// The real db_bench from rocksdb-tools, two tenants.
func TestRunDBBench(t *testing.T) {
	needProgram(t, "db_bench", "rocksdb-tools")
	dir := t.TempDir()
	cells, err := RunDBBench(context.Background(), DBBenchSpec{Dir: dir, Path: "kernel", Tenants: 2, Benchmarks: "fillrandom,readrandom", Num: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 2 {
		t.Fatalf("%d cells: %+v", len(cells), cells)
	}
	for _, op := range []string{"fillrandom", "readrandom"} {
		c := findCell(t, cells, op)
		s := c.Summary
		if c.Tenants != 2 || c.Source != "db_bench" || s.Count != 10000 || c.Hist == nil || c.Hist.Count() != s.Count ||
			s.P50 <= 0 || s.P50 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max || s.OpsPerSec <= 0 || c.CPU.Client <= 0 || c.Seconds <= 0 {
			t.Errorf("%s: %+v summary %+v", op, c, s)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("databases left behind: %v", ents)
	}
}

func TestRunDBBenchBadInput(t *testing.T) {
	needProgram(t, "db_bench", "rocksdb-tools")
	dir := t.TempDir()
	ctx := context.Background()
	for name, c := range map[string]struct {
		spec DBBenchSpec
		want string
	}{
		"no benchmarks": {DBBenchSpec{Dir: dir, Tenants: 1, Num: 10}, "no benchmarks"},
		"bad name":      {DBBenchSpec{Dir: dir, Tenants: 1, Num: 10, Benchmarks: "fill;rm"}, "bad benchmark name"},
		"num":           {DBBenchSpec{Dir: dir, Tenants: 1, Benchmarks: "fillseq"}, "--num 0"},
		"own flag":      {DBBenchSpec{Dir: dir, Tenants: 1, Num: 10, Benchmarks: "fillseq", Args: []string{"--db=/"}}, "--db is set by the harness"},
		"unknown":       {DBBenchSpec{Dir: dir, Tenants: 1, Num: 10, Benchmarks: "bogus"}, "unknown benchmark 'bogus'"},
		"tenants":       {DBBenchSpec{Dir: dir, Tenants: -1, Num: 10, Benchmarks: "fillseq"}, "-1 tenants"},
	} {
		_, err := RunDBBench(ctx, c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

func TestRunDBBenchInterrupted(t *testing.T) {
	needProgram(t, "db_bench", "rocksdb-tools")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := RunDBBench(ctx, DBBenchSpec{Dir: t.TempDir(), Tenants: 1, Num: 1000000, Benchmarks: "fillrandom"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%v, want one wrapping context.Canceled", err)
	}
}
