package main

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

	"github.com/spf13/cobra"
)

func init() { register(newDemoCmd) }

// demoStep is one real measurement the demo runs, as the command line a user would
// type, so that the demo shows exactly what the tools do and nothing else. Each
// command runs with --json; judge reads that report and turns it into the claims
// the step measures (figure, goal, held or not) and a line or two for context.
type demoStep struct {
	title string
	args  func(dir string, short bool) []string
	// judge reads the command's JSON report; nil for a step that only prepares
	// the next one.
	judge func(report []byte) (claims []demoClaim, info []string, err error)
}

// demoClaim is one goal the project set itself, checked against one run.
type demoClaim struct {
	what   string // the claim in plain words
	figure string // what this run measured
	goal   string
	// held: the figure meets the goal. undecided, when set, says why this run
	// cannot tell (held is then meaningless).
	held      bool
	undecided string
}

func (c demoClaim) verdict() string {
	switch {
	case c.undecided != "":
		return "undecided"
	case c.held:
		return "held"
	}
	return "NOT held"
}

// demoSteps is the main job: the most complete end-to-end runs that exist. Each is
// an ordinary subcommand; the demo only chooses parameters small enough for a
// couple of minutes on a 2-core machine.
var demoSteps = []demoStep{
	{
		title: "the main job: stat, 4 KiB reads and writes, open, create, Pebble puts through the kernel, FUSE and the direct path of one service",
		args: func(dir string, short bool) []string {
			d, keys := "1s", "100000"
			if short {
				d, keys = "200ms", "20000"
			}
			return []string{"perf", "paths", "--dir", dir, "--duration", d, "--pebble-keys", keys, "--json"}
		},
		judge: judgePaths,
	},
	{
		title: "direct-path transport: RCQB over shared memory vs Unix socket and pipe",
		args: func(dir string, short bool) []string {
			if short {
				return []string{"perf", "ipc", "--queue-ops", "200000", "--round-trips", "20000", "--json"}
			}
			return []string{"perf", "ipc", "--queue-ops", "1000000", "--round-trips", "100000", "--json"}
		},
		judge: judgeIPC,
	},
	{
		title: "libservices: cache over union over passthrough, in process, beside the kernel",
		args: func(dir string, short bool) []string {
			d := "1s"
			if short {
				d = "200ms"
			}
			return []string{"perf", "stack", "--dir", filepath.Join(dir, "stack"), "--duration", d, "--json"}
		},
		judge: judgeStack,
	},
	{
		title: "copy kernels: tune per CPU (the profile the next step measures)",
		args: func(dir string, short bool) []string {
			return []string{"tune", "copy", "--quick", "--out", filepath.Join(dir, "copy-profile.json")}
		},
	},
	{
		title: "copy kernels: the tuned copier against copy(), paired rounds",
		args: func(dir string, short bool) []string {
			// perf copy judges a cell from 6 paired rounds on; more narrow the
			// interval, so that fewer cells stay undecided.
			reps := "12"
			if short {
				reps = "6"
			}
			return []string{"perf", "copy", "--quick", "--reps", reps, "--profile", filepath.Join(dir, "copy-profile.json"), "--json"}
		},
		judge: judgeCopy,
	},
	{
		title: "block device on io_uring (O_DIRECT 4 KiB random reads) beside fio",
		args: func(dir string, short bool) []string {
			d := "3s"
			if short {
				d = "1s"
			}
			return []string{"perf", "blockdev", "--dev", filepath.Join(dir, "blockdev.img"), "--size", "256M",
				"--rw", "randread", "--bs", "4k", "--qd", "1,32", "--duration", d, "--vs-fio", "--json"}
		},
		judge: judgeBlockdev,
	},
}

func newDemoCmd() *cobra.Command {
	var (
		short bool
		dir   string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main end-to-end measurements on this machine and say which goals held",
		Long: `Runs the main measurements (perf paths, ipc, stack, copy, blockdev) with small
parameters and ends with a verdict: per goal the project set itself, what this
run measured and whether the goal held. Each step prints the command it runs;
run it without --json for the full table. With --dir the JSON reports stay in
that directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			work := dir
			if work == "" {
				// Not tmpfs: the block device step needs O_DIRECT on a real disk.
				d, err := os.MkdirTemp("/var/tmp", "polytropon-demo-")
				if err != nil {
					return fmt.Errorf("demo: %w", err)
				}
				defer os.RemoveAll(d)
				work = d
			}
			return runDemo(cmd.OutOrStdout(), cmd.ErrOrStderr(), work, short)
		},
	}
	cmd.Flags().BoolVar(&short, "short", false, "shorter measurements (for tests)")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory on a disk filesystem, kept with the steps' JSON reports (default: a new one under /var/tmp, removed at the end)")
	return cmd
}

func runDemo(out, errOut io.Writer, work string, short bool) error {
	var claims []demoClaim
	for i, s := range demoSteps {
		args := s.args(work, short)
		fmt.Fprintf(out, "\n=== %d/%d %s\n$ polytropon %s\n", i+1, len(demoSteps), s.title, strings.Join(args, " "))
		start := time.Now()
		var report bytes.Buffer
		sub := newRoot()
		sub.SetOut(&report)
		sub.SetErr(errOut)
		sub.SetArgs(append([]string{"--log-level", logLevel, "--log-format", logFormat}, args...))
		if err := sub.Execute(); err != nil {
			return fmt.Errorf("demo step %d (%s): %w", i+1, strings.Join(args, " "), err)
		}
		if s.judge == nil {
			fmt.Fprintf(out, "(%s)\n", time.Since(start).Round(time.Millisecond))
			continue
		}
		name := filepath.Join(work, fmt.Sprintf("step%d-%s.json", i+1, strings.Join(args[:2], "-")))
		if err := os.WriteFile(name, report.Bytes(), 0o644); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		cs, info, err := s.judge(report.Bytes())
		if err != nil {
			return fmt.Errorf("demo step %d (%s): the report (%s): %w", i+1, strings.Join(args, " "), name, err)
		}
		for _, l := range info {
			fmt.Fprintf(out, "  %s\n", l)
		}
		for _, c := range cs {
			fmt.Fprintf(out, "  %-9s %s: %s (goal %s)\n", c.verdict(), c.what, c.figure, c.goal)
		}
		fmt.Fprintf(out, "(%s)\n", time.Since(start).Round(time.Millisecond))
		claims = append(claims, cs...)
	}
	printVerdict(out, claims)
	return nil
}

// printVerdict ends the demo: every claim again, in one table, then one
// plain sentence.
func printVerdict(out io.Writer, claims []demoClaim) {
	fmt.Fprintf(out, "\n=== Verdict: the project's goals against this run\n")
	wf, wg := 0, 0
	for _, c := range claims {
		wf, wg = max(wf, len(c.figure)), max(wg, len(c.goal))
	}
	var held, notHeld int
	var undecided []string
	for _, c := range claims {
		fmt.Fprintf(out, "  %-9s  %-*s  goal %-*s  %s\n", c.verdict(), wf, c.figure, wg, c.goal, c.what)
		switch {
		case c.undecided != "":
			undecided = append(undecided, c.undecided)
		case c.held:
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
func atMost(what string, v, bound float64, format string) demoClaim {
	return demoClaim{what: what, figure: fmt.Sprintf(format, v), goal: "<= " + fmt.Sprintf(format, bound), held: v <= bound}
}

func atLeast(what string, v, bound float64, format string) demoClaim {
	return demoClaim{what: what, figure: fmt.Sprintf(format, v), goal: ">= " + fmt.Sprintf(format, bound), held: v >= bound}
}

// errMissing is a report without an entry a claim needs: a command whose JSON
// changed, which must fail the demo rather than judge a zero.
var errMissing = errors.New("missing from the report")

func judgePaths(report []byte) ([]demoClaim, []string, error) {
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
		return 0, 0, fmt.Errorf("%s on the %s path: %w", op, path, errMissing)
	}
	var claims []demoClaim
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

func judgeIPC(report []byte) ([]demoClaim, []string, error) {
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
		return 0, fmt.Errorf("queue %s at %dP%dC: %w", kind, pc, pc, errMissing)
	}
	rtt := func(path string) (time.Duration, error) {
		for _, r := range rep.RoundTrip {
			if r.Path == path && r.P50Ns > 0 {
				return time.Duration(r.P50Ns), nil
			}
		}
		return 0, fmt.Errorf("round trip %s: %w", path, errMissing)
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
	return []demoClaim{
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

func judgeStack(report []byte) ([]demoClaim, []string, error) {
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
		return nil, nil, fmt.Errorf("stack and kernel rows: %w", errMissing)
	}
	return nil, []string{"median, the stack in process vs the kernel: " + strings.Join(parts, ", ") + " (no goal: a library call against a system call)"}, nil
}

func judgeCopy(report []byte) ([]demoClaim, []string, error) {
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
		return nil, nil, fmt.Errorf("tuned_speedups: %w", errMissing)
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
	c := demoClaim{
		what:   "the tuned copier vs copy(): never more than 2 % slower, in every size and setting",
		figure: fmt.Sprintf("%d/%d cells held, %d failed", holds, n, len(fails)),
		goal:   fmt.Sprintf("all %d", n),
		held:   len(fails) == 0 && holds == n,
	}
	if len(fails) == 0 && unclear > 0 {
		c.undecided = fmt.Sprintf("%d cells too noisy to tell", unclear)
	}
	var info []string
	if len(fails) > 0 {
		info = append(info, "slower than the bound: "+strings.Join(fails, ", "))
	}
	if unclear > 0 {
		info = append(info, fmt.Sprintf("%d of %d cells not judged: after %d paired rounds their 95 %% interval still spans 0.98x (`polytropon perf copy --sizes N --reps 30` re-checks a size)", unclear, n, rep.Result.Reps))
	}
	return []demoClaim{c}, info, nil
}

func judgeBlockdev(report []byte) ([]demoClaim, []string, error) {
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
	var claims []demoClaim
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
			return nil, nil, fmt.Errorf("ratios to fio at queue depth %d: %w", qd, errMissing)
		}
	}
	return claims, nil, nil
}
