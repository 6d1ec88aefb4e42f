// Package demo is `polytropon demo`'s job: the project's main end-to-end
// measurements, each an ordinary subcommand run with --json, and the verdict
// read from their reports: per goal the project set itself, the figure this run
// measured, the goal and whether it held.
//
// Contract: Run runs Steps in order through the caller's runner (the binary's
// own command tree, so the demo shows exactly what the tools do) and returns an
// error when a step fails or its report lacks an entry a goal needs
// (ErrMissing): a command whose JSON drifted fails the demo instead of being
// judged on a zero. Judging never fails on a figure; a figure that misses its
// goal is reported as NOT held.
//
// Lock order: no locks; Run is sequential.
//
// Measure: `make demo` (or `polytropon demo`; --short for tests).
package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Step is one real measurement the demo runs, as the command line a user would
// type, so that the demo shows exactly what the tools do and nothing else. Each
// command runs with --json; judge reads that report and turns it into the claims
// the step measures (figure, goal, held or not) and a line or two for context.
type Step struct {
	Title string
	Args  func(dir string, short bool) []string
	// Judge reads the command's JSON report; nil for a step that only prepares
	// the next one.
	Judge func(report []byte) (claims []Claim, info []string, err error)
}

// Claim is one goal the project set itself, checked against one run.
type Claim struct {
	What   string // the claim in plain words
	Figure string // what this run measured
	Goal   string
	// Held: the figure meets the goal. Undecided, when set, says why this run
	// cannot tell (Held is then meaningless).
	Held      bool
	Undecided string
}

// Verdict is the claim's verdict in one word or two: held, NOT held or
// undecided.
func (c Claim) Verdict() string {
	switch {
	case c.Undecided != "":
		return "undecided"
	case c.Held:
		return "held"
	}
	return "NOT held"
}

// Steps is the main job: the most complete end-to-end runs that exist. Each is
// an ordinary subcommand; the demo only chooses parameters small enough for a
// couple of minutes on a 2-core machine.
var Steps = []Step{
	{
		Title: "the main job: stat, 4 KiB reads and writes, open, create, Pebble puts through the kernel, FUSE and the direct path of one service",
		Args: func(dir string, short bool) []string {
			d, keys := "1s", "100000"
			if short {
				d, keys = "200ms", "20000"
			}
			return []string{"perf", "paths", "--dir", dir, "--duration", d, "--pebble-keys", keys, "--json"}
		},
		Judge: judgePaths,
	},
	{
		Title: "direct-path transport: RCQB over shared memory vs Unix socket and pipe",
		Args: func(dir string, short bool) []string {
			if short {
				return []string{"perf", "ipc", "--queue-ops", "200000", "--round-trips", "20000", "--json"}
			}
			return []string{"perf", "ipc", "--queue-ops", "1000000", "--round-trips", "100000", "--json"}
		},
		Judge: judgeIPC,
	},
	{
		Title: "libservices: cache over union over passthrough, in process, beside the kernel",
		Args: func(dir string, short bool) []string {
			d := "1s"
			if short {
				d = "200ms"
			}
			return []string{"perf", "stack", "--dir", filepath.Join(dir, "stack"), "--duration", d, "--json"}
		},
		Judge: judgeStack,
	},
	{
		Title: "copy kernels: tune per CPU (the profile the next step measures)",
		Args: func(dir string, short bool) []string {
			return []string{"tune", "copy", "--quick", "--out", filepath.Join(dir, "copy-profile.json")}
		},
	},
	{
		Title: "copy kernels: the tuned copier against copy(), paired rounds",
		Args: func(dir string, short bool) []string {
			// perf copy judges a cell from 6 paired rounds on; more narrow the
			// interval, so that fewer cells stay undecided.
			reps := "12"
			if short {
				reps = "6"
			}
			return []string{"perf", "copy", "--quick", "--reps", reps, "--profile", filepath.Join(dir, "copy-profile.json"), "--json"}
		},
		Judge: judgeCopy,
	},
	{
		Title: "block device on io_uring (O_DIRECT 4 KiB random reads) beside fio",
		Args: func(dir string, short bool) []string {
			d := "3s"
			if short {
				d = "1s"
			}
			return []string{"perf", "blockdev", "--dev", filepath.Join(dir, "blockdev.img"), "--size", "256M",
				"--rw", "randread", "--bs", "4k", "--qd", "1,32", "--duration", d, "--vs-fio", "--json"}
		},
		Judge: judgeBlockdev,
	},
}

// Runner runs one of the binary's commands (args as a user would type them
// after "polytropon"), writing its standard output to out.
type Runner func(args []string, out io.Writer) error

// Run runs every step with its reports in work (a directory on a disk
// filesystem, which the block device step needs), prints each step's command,
// notes and claims to out, and ends with PrintVerdict.
func Run(out io.Writer, work string, short bool, run Runner) error {
	var claims []Claim
	for i, s := range Steps {
		args := s.Args(work, short)
		fmt.Fprintf(out, "\n=== %d/%d %s\n$ polytropon %s\n", i+1, len(Steps), s.Title, strings.Join(args, " "))
		start := time.Now()
		var report bytes.Buffer
		if err := run(args, &report); err != nil {
			return fmt.Errorf("demo step %d (%s): %w", i+1, strings.Join(args, " "), err)
		}
		if s.Judge == nil {
			fmt.Fprintf(out, "(%s)\n", time.Since(start).Round(time.Millisecond))
			continue
		}
		name := filepath.Join(work, fmt.Sprintf("step%d-%s.json", i+1, strings.Join(args[:2], "-")))
		if err := os.WriteFile(name, report.Bytes(), 0o644); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		cs, info, err := s.Judge(report.Bytes())
		if err != nil {
			return fmt.Errorf("demo step %d (%s): the report (%s): %w", i+1, strings.Join(args, " "), name, err)
		}
		for _, l := range info {
			fmt.Fprintf(out, "  %s\n", l)
		}
		for _, c := range cs {
			fmt.Fprintf(out, "  %-9s %s: %s (goal %s)\n", c.Verdict(), c.What, c.Figure, c.Goal)
		}
		fmt.Fprintf(out, "(%s)\n", time.Since(start).Round(time.Millisecond))
		claims = append(claims, cs...)
	}
	PrintVerdict(out, claims)
	return nil
}

// PrintVerdict ends the demo: every claim again, in one table, then one
// plain sentence.
func PrintVerdict(out io.Writer, claims []Claim) {
	fmt.Fprintf(out, "\n=== Verdict: the project's goals against this run\n")
	wf, wg := 0, 0
	for _, c := range claims {
		wf, wg = max(wf, len(c.Figure)), max(wg, len(c.Goal))
	}
	var held, notHeld int
	var undecided []string
	for _, c := range claims {
		fmt.Fprintf(out, "  %-9s  %-*s  goal %-*s  %s\n", c.Verdict(), wf, c.Figure, wg, c.Goal, c.What)
		switch {
		case c.Undecided != "":
			undecided = append(undecided, c.Undecided)
		case c.Held:
			held++
		default:
			notHeld++
		}
	}
	fmt.Fprintf(out, "\nOverall: %d of %d goals held in this run", held, len(claims))
	switch {
	case notHeld == 0 && len(undecided) == 0:
		fmt.Fprintf(out, ": all of them.\n")
	case len(undecided) == 0:
		fmt.Fprintf(out, "; %d did not (NOT held above).\n", notHeld)
	default:
		fmt.Fprintf(out, "; %d did not (NOT held above); %d could not be decided (%s).\n", notHeld, len(undecided), strings.Join(undecided, "; "))
	}
	fmt.Fprintf(out, "One short run: on a shared machine single figures swing by 30 %% or more between runs; a step's command with longer durations gives firmer ones, and without --json its full table.\n")
}

// atMost and atLeast judge a figure against a bound; the figure is printed
// with the unit the bound is given in.
func atMost(what string, v, bound float64, format string) Claim {
	return Claim{What: what, Figure: fmt.Sprintf(format, v), Goal: "<= " + fmt.Sprintf(format, bound), Held: v <= bound}
}

func atLeast(what string, v, bound float64, format string) Claim {
	return Claim{What: what, Figure: fmt.Sprintf(format, v), Goal: ">= " + fmt.Sprintf(format, bound), Held: v >= bound}
}

// ErrMissing is a report without an entry a claim needs: a command whose JSON
// changed, which must fail the demo rather than judge a zero.
var ErrMissing = errors.New("missing from the report")

func judgePaths(report []byte) ([]Claim, []string, error) {
	var rep struct {
		Results []struct {
			Op        string  `json:"op"`
			Path      string  `json:"path"`
			P50Ns     float64 `json:"p50_ns"`
			OpsPerSec float64 `json:"ops_per_sec"`
			Error     string  `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(report, &rep); err != nil {
		return nil, nil, err
	}
	find := func(op, path string) (p50 time.Duration, opsPerSec float64, err error) {
		for _, r := range rep.Results {
			if r.Op == op && r.Path == path {
				if r.Error != "" {
					return 0, 0, fmt.Errorf("%s on the %s path: %s", op, path, r.Error)
				}
				if r.P50Ns <= 0 || r.OpsPerSec <= 0 {
					break
				}
				return time.Duration(r.P50Ns), r.OpsPerSec, nil
			}
		}
		return 0, 0, fmt.Errorf("%s on the %s path: %w", op, path, ErrMissing)
	}
	var claims []Claim
	var info []string
	for _, op := range []struct{ op, name string }{{"stat", "stat"}, {"read4k", "a cached 4 KiB read"}} {
		direct, _, err := find(op.op, "direct")
		if err != nil {
			return nil, nil, err
		}
		fuse, _, err := find(op.op, "fuse-uncached")
		if err != nil {
			return nil, nil, err
		}
		cached, _, err := find(op.op, "fuse")
		if err != nil {
			return nil, nil, err
		}
		c := atMost(op.name+" through the direct path, median latency", float64(direct)/1e3, 2, "%.2f µs")
		claims = append(claims, c,
			atLeast(op.name+": direct path vs a FUSE mount that asks the service (uncached), median", float64(fuse)/float64(direct), 5, "%.2fx"))
		info = append(info, fmt.Sprintf("%s median: direct %v, FUSE uncached %v, FUSE with the kernel's caches %v (answered by the kernel, not the service: no goal)",
			op.op, direct, fuse, cached))
	}
	_, kernelPuts, err := find("pebble-put", "kernel")
	if err != nil {
		return nil, nil, err
	}
	_, directPuts, err := find("pebble-put", "direct")
	if err != nil {
		return nil, nil, err
	}
	claims = append(claims, atLeast("Pebble puts without sync: direct path vs the kernel's filesystem, puts per second", directPuts/kernelPuts, 1, "%.2fx"))
	return claims, info, nil
}

func judgeIPC(report []byte) ([]Claim, []string, error) {
	var rep struct {
		Queue []struct {
			Kind      string  `json:"kind"`
			Producers int     `json:"producers"`
			Consumers int     `json:"consumers"`
			OpsPerSec float64 `json:"ops_per_sec"`
		} `json:"queue"`
		RoundTrip []struct {
			Path  string  `json:"path"`
			P50Ns float64 `json:"p50_ns"`
		} `json:"round_trip"`
	}
	if err := json.Unmarshal(report, &rep); err != nil {
		return nil, nil, err
	}
	queue := func(kind string, pc int) (float64, error) {
		for _, q := range rep.Queue {
			if q.Kind == kind && q.Producers == pc && q.Consumers == pc && q.OpsPerSec > 0 {
				return q.OpsPerSec, nil
			}
		}
		return 0, fmt.Errorf("queue %s at %dP%dC: %w", kind, pc, pc, ErrMissing)
	}
	rtt := func(path string) (time.Duration, error) {
		for _, r := range rep.RoundTrip {
			if r.Path == path && r.P50Ns > 0 {
				return time.Duration(r.P50Ns), nil
			}
		}
		return 0, fmt.Errorf("round trip %s: %w", path, ErrMissing)
	}
	var vals [4]float64
	for i, q := range []struct {
		kind string
		pc   int
	}{{"rcqb", 2}, {"vyukov", 2}, {"rcqb-spsc", 1}, {"chan", 1}} {
		v, err := queue(q.kind, q.pc)
		if err != nil {
			return nil, nil, err
		}
		vals[i] = v
	}
	spin, err := rtt("direct-spin")
	if err != nil {
		return nil, nil, err
	}
	unix, err := rtt("unix")
	if err != nil {
		return nil, nil, err
	}
	return []Claim{
			atLeast("RCQB vs the Vyukov queue, 2 producers and 2 consumers, values per second", vals[0]/vals[1], 1, "%.2fx"),
			atLeast("RCQB (its one-producer mode) vs a buffered Go channel, 1 producer and 1 consumer", vals[2]/vals[3], 3, "%.2fx"),
		}, []string{roundTripNote(spin, unix, rtt)},
		nil
}

// roundTripNote reports the direct path's round trip beside the hardware's
// floor where the run measured it (a VM's cross-core latency changes with where
// its CPUs land), so that a slow figure reads as the machine's, not the code's.
func roundTripNote(spin, unix time.Duration, rtt func(string) (time.Duration, error)) string {
	s := fmt.Sprintf("an empty request's round trip, median: direct path (service spinning) %v, Unix socket %v", spin, unix)
	if line, err := rtt("cache-line"); err == nil {
		s += fmt.Sprintf(", one cache line between two cores %v (the hardware's floor)", line)
	}
	return s + " (no goal)"
}

func judgeStack(report []byte) ([]Claim, []string, error) {
	var rows []struct {
		Op    string  `json:"Op"`
		Path  string  `json:"Path"`
		P50Ns float64 `json:"P50Ns"`
	}
	if err := json.Unmarshal(report, &rows); err != nil {
		return nil, nil, err
	}
	kernel := map[string]float64{}
	for _, r := range rows {
		if r.Path == "kernel" {
			kernel[r.Op] = r.P50Ns
		}
	}
	var parts []string
	for _, r := range rows {
		if r.Path == "stack" && r.P50Ns > 0 && kernel[r.Op] > 0 {
			parts = append(parts, fmt.Sprintf("%s %v vs %v", r.Op, time.Duration(r.P50Ns), time.Duration(kernel[r.Op])))
		}
	}
	if len(parts) == 0 {
		return nil, nil, fmt.Errorf("stack and kernel rows: %w", ErrMissing)
	}
	return nil, []string{"median, the stack in process vs the kernel: " + strings.Join(parts, ", ") + " (no Goal: a library call against a system call)"}, nil
}

func judgeCopy(report []byte) ([]Claim, []string, error) {
	var rep struct {
		Result struct {
			Reps int `json:"reps"`
		} `json:"result"`
		Tuned []struct {
			Setting string `json:"setting"`
			Bytes   int    `json:"bytes"`
			Kernel  string `json:"kernel"`
			Paired  *struct {
				Median float64 `json:"median"`
			} `json:"paired"`
			Verdict string `json:"verdict"`
		} `json:"tuned_speedups"`
	}
	if err := json.Unmarshal(report, &rep); err != nil {
		return nil, nil, err
	}
	if len(rep.Tuned) == 0 {
		return nil, nil, fmt.Errorf("tuned_speedups: %w", ErrMissing)
	}
	var holds, unclear int
	var fails []string
	for _, c := range rep.Tuned {
		switch c.Verdict {
		case "holds":
			holds++
		case "fails":
			ratio := "?"
			if c.Paired != nil {
				ratio = fmt.Sprintf("%.3fx", c.Paired.Median)
			}
			fails = append(fails, fmt.Sprintf("%d B %s (%s): %s", c.Bytes, c.Setting, c.Kernel, ratio))
		case "unclear":
			unclear++
		default:
			return nil, nil, fmt.Errorf("cell %d B %s: verdict %q", c.Bytes, c.Setting, c.Verdict)
		}
	}
	n := len(rep.Tuned)
	c := Claim{
		What:   "the tuned copier vs copy(): never more than 2 % slower, in every size and setting",
		Figure: fmt.Sprintf("%d/%d cells held, %d failed", holds, n, len(fails)),
		Goal:   fmt.Sprintf("all %d", n),
		Held:   len(fails) == 0 && holds == n,
	}
	if len(fails) == 0 && unclear > 0 {
		c.Undecided = fmt.Sprintf("%d cells too noisy to tell", unclear)
	}
	var info []string
	if len(fails) > 0 {
		info = append(info, "slower than the bound: "+strings.Join(fails, ", "))
	}
	if unclear > 0 {
		info = append(info, fmt.Sprintf("%d of %d cells not judged: after %d paired rounds their 95 %% interval still spans 0.98x (`polytropon perf copy --sizes N --reps 30` re-checks a size)", unclear, n, rep.Result.Reps))
	}
	return []Claim{c}, info, nil
}

func judgeBlockdev(report []byte) ([]Claim, []string, error) {
	var rep struct {
		Ratios []struct {
			QD       int     `json:"qd"`
			IOPS     float64 `json:"iops"`
			CPUPerIO float64 `json:"cpu_per_io"`
			P50      float64 `json:"p50"`
		} `json:"ratios_vs_fio"`
	}
	if err := json.Unmarshal(report, &rep); err != nil {
		return nil, nil, err
	}
	var claims []Claim
	for _, qd := range []int{32, 1} {
		found := false
		for _, r := range rep.Ratios {
			if r.QD != qd || r.IOPS <= 0 || r.CPUPerIO <= 0 || r.P50 <= 0 {
				continue
			}
			found = true
			if qd == 32 {
				claims = append(claims,
					atLeast("io_uring block device vs fio at queue depth 32, IOPS", r.IOPS, 0.95, "%.2fx"),
					atMost("io_uring block device vs fio at queue depth 32, CPU per I/O", r.CPUPerIO, 1.1, "%.2fx"))
			} else {
				claims = append(claims, atMost("io_uring block device vs fio at queue depth 1, median latency", r.P50, 1.1, "%.2fx"))
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("ratios to fio at queue depth %d: %w", qd, ErrMissing)
		}
	}
	return claims, nil, nil
}
