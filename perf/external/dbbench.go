package external

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/polytropon/polytropon/perf/results"
)

// DBBenchSpec is one db_bench measurement, run by Tenants concurrent db_bench
// processes, each on its own database.
type DBBenchSpec struct {
	Dir        string   // the path's directory; tenant i's database is Dir/db_bench-t<i>
	Dirs       []string // instead of Dir: one existing directory per tenant (the database is created inside)
	Path       string   // kernel or fuse, recorded in the cells
	Tenants    int
	Benchmarks string // db_bench's --benchmarks, e.g. "fillrandom,readrandom"
	Num        int    // --num: keys per benchmark
	// Args are further db_bench flags (e.g. --sync=1 --value_size=400).
	// --db, --benchmarks, --num and --histogram are set here and refused.
	Args   []string
	Binary string // default "db_bench" from PATH
}

var dbBenchOwnFlags = []string{"db", "benchmarks", "num", "histogram", "wal_dir"}

var benchName = regexp.MustCompile(`^[a-z0-9_\[\]-]+$`)

// RunDBBench runs the benchmarks and returns one cell per (benchmark, operation
// type): Op is the benchmark's name, or benchmark-type ("readrandomwriterandom-read")
// when a benchmark reports several operation types. Summary holds db_bench's own
// figures: its percentiles (interpolated within its buckets exactly as db_bench
// does, over all tenants' buckets), average, maximum, and the tenants' ops/sec
// summed. Hist spreads each bucket's count evenly over the bucket.
func RunDBBench(ctx context.Context, spec DBBenchSpec) ([]results.Cell, error) {
	bin, err := lookPath(spec.Binary, "db_bench", "rocksdb-tools")
	if err != nil {
		return nil, err
	}
	if err := refuseFlags("db_bench", spec.Args, dbBenchOwnFlags); err != nil {
		return nil, err
	}
	var want []string
	for _, b := range strings.Split(spec.Benchmarks, ",") {
		if b = strings.TrimSpace(b); b != "" {
			if !benchName.MatchString(b) {
				return nil, fmt.Errorf("db_bench: bad benchmark name %q", b)
			}
			want = append(want, b)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("db_bench: no benchmarks given (e.g. \"fillrandom,readrandom\")")
	}
	if spec.Num < 1 {
		return nil, fmt.Errorf("db_bench: --num %d; want at least 1", spec.Num)
	}
	dirs, own, err := tenantDirs("db_bench", spec.Dir, spec.Dirs, spec.Tenants)
	if err != nil {
		return nil, err
	}
	if own {
		defer func() {
			for _, d := range dirs {
				os.RemoveAll(d)
			}
		}()
	}
	argv := make([][]string, len(dirs))
	for i, d := range dirs {
		argv[i] = append([]string{"--benchmarks=" + strings.Join(want, ","), "--num=" + strconv.Itoa(spec.Num),
			"--histogram=1", "--db=" + filepath.Join(d, "db")}, spec.Args...)
	}
	procs, wall := runAll(ctx, bin, argv, dirs)
	if err := interrupted(ctx, "db_bench"); err != nil {
		// db_bench has no SIGINT handler: an interrupted one reports nothing.
		return nil, err
	}
	var outs [][]dbBenchResult
	var cpu float64
	for i, p := range procs {
		cpu += p.cpu.Seconds()
		if p.err != nil {
			return nil, procError("db_bench", i, p)
		}
		res, err := parseDBBench(p.stdout)
		if err != nil {
			return nil, fmt.Errorf("db_bench (tenant %d): %w", i, err)
		}
		for _, w := range want {
			if !slices.ContainsFunc(res, func(r dbBenchResult) bool { return r.bench == w }) {
				return nil, fmt.Errorf("db_bench (tenant %d): benchmark %q is missing from its output (unknown to this db_bench?)", i, w)
			}
		}
		outs = append(outs, res)
	}
	cells := dbBenchCells(outs, spec.Path, spec.Tenants)
	for i := range cells {
		cells[i].CPU.Client = cpu
		if cells[i].Seconds == 0 {
			cells[i].Seconds = wall.Seconds()
		}
	}
	return cells, nil
}

// dbBucket is one line of db_bench's histogram: count values in (lo, hi] µs.
type dbBucket struct {
	lo, hi, count int64
}

// dbHist is one "Microseconds per <type>:" block.
type dbHist struct {
	typ      string
	count    int64
	avg      float64 // µs
	min, max int64   // µs
	pcts     map[string]float64
	buckets  []dbBucket
}

// dbBenchResult is one benchmark's report line and its histograms.
type dbBenchResult struct {
	bench       string
	microsPerOp float64
	opsPerSec   float64
	seconds     float64 // 0 when this db_bench does not print it
	ops         int64
	hists       []*dbHist
}

var (
	// fillrandom   :      19.708 micros/op 50731 ops/sec 0.394 seconds 20000 operations;    5.6 MB/s
	dbReportRE = regexp.MustCompile(`^(\S+)\s+:\s+([0-9.]+) micros/op ([0-9.]+) ops/sec(?:\s+([0-9.]+) seconds\s+(\d+) operations)?`)
	dbPerRE    = regexp.MustCompile(`^Microseconds per (\S+):$`)
	dbCountRE  = regexp.MustCompile(`^Count: (\d+) Average: ([0-9.]+)`)
	dbMinMaxRE = regexp.MustCompile(`^Min: (\d+)\s+Median: [0-9.]+\s+Max: (\d+)`)
	dbPctRE    = regexp.MustCompile(`(P[0-9.]+): ([0-9.]+)`)
	dbBucketRE = regexp.MustCompile(`^[\[(]\s*(\d+),\s*(\d+)\s*[\])]\s+(\d+)\s`)
)

// parseDBBench reads db_bench's standard output.
func parseDBBench(b []byte) ([]dbBenchResult, error) {
	var out []dbBenchResult
	var h *dbHist
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	ln := 0
	bad := func(what, line string) error {
		return fmt.Errorf("db_bench output line %d: %s: %q", ln, what, line)
	}
	for sc.Scan() {
		ln++
		line := strings.TrimRight(sc.Text(), " \r")
		if m := dbReportRE.FindStringSubmatch(line); m != nil {
			r := dbBenchResult{bench: m[1]}
			var err error
			if r.microsPerOp, err = strconv.ParseFloat(m[2], 64); err != nil {
				return nil, bad("micros/op", line)
			}
			if r.opsPerSec, err = strconv.ParseFloat(m[3], 64); err != nil {
				return nil, bad("ops/sec", line)
			}
			if m[4] != "" {
				r.seconds, _ = strconv.ParseFloat(m[4], 64)
				r.ops, _ = strconv.ParseInt(m[5], 10, 64)
			}
			out = append(out, r)
			h = nil
			continue
		}
		if m := dbPerRE.FindStringSubmatch(line); m != nil {
			if len(out) == 0 {
				return nil, bad("histogram before any benchmark", line)
			}
			h = &dbHist{typ: m[1], pcts: map[string]float64{}}
			last := &out[len(out)-1]
			last.hists = append(last.hists, h)
			continue
		}
		if h == nil {
			continue
		}
		if m := dbCountRE.FindStringSubmatch(line); m != nil {
			h.count, _ = strconv.ParseInt(m[1], 10, 64)
			h.avg, _ = strconv.ParseFloat(m[2], 64)
		} else if m := dbMinMaxRE.FindStringSubmatch(line); m != nil {
			h.min, _ = strconv.ParseInt(m[1], 10, 64)
			h.max, _ = strconv.ParseInt(m[2], 10, 64)
		} else if strings.HasPrefix(line, "Percentiles:") {
			for _, m := range dbPctRE.FindAllStringSubmatch(line, -1) {
				v, err := strconv.ParseFloat(m[2], 64)
				if err != nil {
					return nil, bad("percentile", line)
				}
				h.pcts[m[1]] = v
			}
		} else if m := dbBucketRE.FindStringSubmatch(line); m != nil {
			var bk dbBucket
			bk.lo, _ = strconv.ParseInt(m[1], 10, 64)
			bk.hi, _ = strconv.ParseInt(m[2], 10, 64)
			bk.count, _ = strconv.ParseInt(m[3], 10, 64)
			if bk.hi < bk.lo || bk.count < 0 {
				return nil, bad("histogram bucket", line)
			}
			h.buckets = append(h.buckets, bk)
		} else if line == "" && len(h.buckets) > 0 {
			h = nil // the blank line after the buckets ends the block
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("db_bench output: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("db_bench output: %w (no \"micros/op\" line)", errNoOutput)
	}
	for _, r := range out {
		for _, h := range r.hists {
			var n int64
			for _, bk := range h.buckets {
				n += bk.count
			}
			if n != h.count {
				return nil, fmt.Errorf("db_bench output: %s %s histogram: buckets hold %d values, Count says %d", r.bench, h.typ, n, h.count)
			}
		}
	}
	return out, nil
}

// percentile is RocksDB's HistogramStat::Percentile: find the bucket where the
// cumulative count reaches p% and interpolate linearly inside it, clamped to the
// observed minimum and maximum. Applied to one process's buckets it gives the
// figures db_bench printed; applied to the tenants' summed buckets, the same
// statistic over all their operations.
func percentile(buckets []dbBucket, count, lo, hi int64, p float64) float64 {
	threshold := float64(count) * p / 100
	var cum int64
	for _, b := range buckets {
		cum += b.count
		if float64(cum) >= threshold {
			left := float64(cum - b.count)
			pos := 0.0
			if b.count != 0 {
				pos = (threshold - left) / float64(b.count)
			}
			r := float64(b.lo) + float64(b.hi-b.lo)*pos
			return min(max(r, float64(lo)), float64(hi))
		}
	}
	return float64(hi)
}

// dbBenchCells merges the tenants' results, benchmark by benchmark, in the order
// of the first tenant's output.
func dbBenchCells(outs [][]dbBenchResult, path string, tenants int) []results.Cell {
	var cells []results.Cell
	for _, first := range outs[0] {
		var rs []dbBenchResult
		for _, o := range outs {
			if i := slices.IndexFunc(o, func(r dbBenchResult) bool { return r.bench == first.bench }); i >= 0 {
				rs = append(rs, o[i])
			}
		}
		var opsPerSec, seconds float64
		for _, r := range rs {
			opsPerSec += r.opsPerSec
			seconds = max(seconds, r.seconds)
		}
		base := results.Cell{Workload: "db_bench", Path: path, Tenants: tenants, Seconds: seconds, Source: "db_bench"}
		if len(first.hists) == 0 {
			// A benchmark without a histogram (e.g. compact): its time per op.
			c := base
			c.Op = first.bench
			var ops int64
			var total float64
			for _, r := range rs {
				ops += r.ops
				total += r.microsPerOp * float64(r.ops)
			}
			c.Summary = results.Summary{Count: ops, OpsPerSec: opsPerSec, Mean: first.microsPerOp * 1e3}
			if ops > 0 {
				c.Summary.Mean = total / float64(ops) * 1e3
			}
			cells = append(cells, c)
			continue
		}
		for _, fh := range first.hists {
			c := base
			c.Op = first.bench
			if len(first.hists) > 1 {
				c.Op += "-" + fh.typ
			}
			c.Summary, c.Hist = mergeDBHists(rs, fh.typ)
			c.Summary.OpsPerSec = opsPerSec
			cells = append(cells, c)
		}
	}
	return cells
}

// mergeDBHists sums the tenants' histograms of one operation type. The bucket
// bounds are RocksDB's fixed bucket map, identical in every process.
func mergeDBHists(rs []dbBenchResult, typ string) (results.Summary, *results.Histogram) {
	counts := map[[2]int64]int64{}
	var s results.Summary
	var total float64
	lo, hi := int64(-1), int64(0)
	for _, r := range rs {
		for _, h := range r.hists {
			if h.typ != typ {
				continue
			}
			for _, b := range h.buckets {
				counts[[2]int64{b.lo, b.hi}] += b.count
			}
			s.Count += h.count
			total += h.avg * float64(h.count)
			if lo < 0 || h.min < lo {
				lo = h.min
			}
			hi = max(hi, h.max)
		}
	}
	var buckets []dbBucket
	for k, n := range counts {
		buckets = append(buckets, dbBucket{k[0], k[1], n})
	}
	slices.SortFunc(buckets, func(a, b dbBucket) int { return int(a.lo - b.lo) })
	us := func(p float64) int64 { return int64(percentile(buckets, s.Count, lo, hi, p)*1e3 + 0.5) }
	s.P50, s.P90, s.P99, s.P999 = us(50), us(90), us(99), us(99.9)
	s.Max = hi * 1e3
	if s.Count > 0 {
		s.Mean = total / float64(s.Count) * 1e3
	}
	h := results.NewHistogram()
	for _, b := range buckets {
		spreadBucket(h, b, lo, hi)
	}
	return s, h
}

// spreadBucket records a bucket's count at evenly spaced points inside it
// (within the observed minimum and maximum), so that the CDF drawn from the
// histogram is the piecewise-linear one db_bench's percentiles assume.
func spreadBucket(h *results.Histogram, b dbBucket, lo, hi int64) {
	const points = 8
	l, r := float64(max(b.lo, lo)), float64(min(b.hi, hi))
	if r < l {
		l, r = r, l
	}
	k := min(b.count, points)
	for i := range k {
		n := b.count / k
		if i < b.count%k {
			n++
		}
		v := l + (r-l)*(float64(i)+0.5)/float64(k)
		h.RecordN(int64(v*1e3), n)
	}
}
