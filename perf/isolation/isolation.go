// Package isolation is the experiment behind `polytropon perf isolation`: what
// one tenant's heavy writes do to another tenant's latency-sensitive reads,
// with each tenant in a pool of its own (perf/tenantpool: a cgroup with one
// reserved CPU; root only).
//
// The quiet tenant (pool t0, Options.QuietCPU) runs the harness's micro
// read4k-rand on the kernel path (pread on its backing directory) and on the
// direct path (fslib to its own filesystem service, started inside the pool).
// The noisy tenant (pool t1, Options.NoisyCPU) writes Block-sized blocks
// sequentially to a file of its own on the same filesystem, with fsync every
// SyncEvery blocks, without pause (Noisy, in a process of its own started by
// Options.NoisyCommand). Each round measures both paths without the
// neighbour, then with it. The report holds the quiet tenant's summary per
// round, path and neighbour, and what the noisy tenant did meanwhile.
//
// Contract: Run owns the pools, the services, the workers and the noisy
// process it starts; none outlives it, whatever fails or interrupts (ctx). It
// writes OUT/isolation.json and every cell's results.json under OUT. It
// asserts nothing about speed. Lock order: no locks of its own.
//
// Measure: `polytropon perf isolation [--rounds N] [--duration 10s] [--json]`
// as root; a dated run is in docs/results/2026-11-21/isolation.md.
package isolation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
	"github.com/polytropon/polytropon/perf/tenantpool"
)

// Row is one (round, path, neighbour) measurement of the quiet tenant.
type Row struct {
	Path      string          `json:"path"`
	Neighbour string          `json:"neighbour"` // "none" or "noisy"
	Round     int             `json:"round"`
	Summary   results.Summary `json:"summary"`
	Error     string          `json:"error,omitempty"`
	// Noisy is what the noisy tenant did meanwhile (noisy rows).
	Noisy *NoisyStats `json:"noisy,omitempty"`
}

// Report is `perf isolation --json`, and OUT/isolation.json.
type Report struct {
	Machine   results.Machine `json:"machine"`
	QuietCPU  int             `json:"quiet_cpu"`
	NoisyCPU  int             `json:"noisy_cpu"`
	Pools     string          `json:"pools"`
	Workload  string          `json:"workload"`
	Noise     string          `json:"noise"`
	Load1     float64         `json:"load1_before"`
	Load1End  float64         `json:"load1_after"`
	Rows      []Row           `json:"rows"`
	OutputDir string          `json:"output_dir"`
}

// ReportFile is the report's name in the output directory.
const ReportFile = "isolation.json"

// Bounds of Options.
const (
	MaxRounds     = 20
	MinBlockBytes = 4096
	MaxBlockBytes = 64 << 20
)

// Options of a Run.
type Options struct {
	// Out is the report directory (made if missing).
	Out string
	// Warmup and Duration of each cell.
	Warmup, Duration time.Duration
	// Rounds of (alone, beside the noisy tenant), 1..MaxRounds.
	Rounds int
	// QuietCPU and NoisyCPU are the tenants' reserved CPUs; -1 picks the last
	// and the first online CPU (one CPU: both share it).
	QuietCPU, NoisyCPU int
	// BlockBytes is the noisy tenant's write size; it fsyncs every SyncEvery
	// writes.
	BlockBytes, SyncEvery int
	// Exe is the polytropon binary (its pool-exec command enters the pools).
	Exe string
	// Launcher starts the quiet tenant's service and workers; Run puts them in
	// pool t0.
	Launcher harness.Launcher
	// NoisyCommand returns the command running Noisy with these options, with
	// "writing" on its stdout once it writes, its NoisyStats as JSON on stdout
	// when SIGTERM stops it; Run puts it in pool t1.
	NoisyCommand func(NoisyOptions) *exec.Cmd
	// Progress, when set, gets one line per cell.
	Progress io.Writer
	// Params are recorded in every cell's results file.
	Params map[string]string
}

func (o *Options) check() error {
	switch {
	case os.Geteuid() != 0:
		return errors.New("isolation: needs root (it creates cgroups)")
	case o.Rounds < 1 || o.Rounds > MaxRounds:
		return fmt.Errorf("isolation: %d rounds: want 1..%d", o.Rounds, MaxRounds)
	case o.BlockBytes < MinBlockBytes || o.BlockBytes > MaxBlockBytes || o.SyncEvery < 1:
		return fmt.Errorf("isolation: blocks of %d bytes, fsync every %d: want %d..%d bytes and at least 1",
			o.BlockBytes, o.SyncEvery, MinBlockBytes, MaxBlockBytes)
	case o.Out == "" || o.Exe == "" || o.Launcher == nil || o.NoisyCommand == nil:
		return errors.New("isolation: Out, Exe, Launcher and NoisyCommand are required")
	}
	return nil
}

// Run measures opts.Rounds rounds and writes the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("isolation: %w", err)
	}
	online, err := tenantpool.OnlineCPUs()
	if err != nil {
		return nil, err
	}
	quietCPU, noisyCPU := opts.QuietCPU, opts.NoisyCPU
	if quietCPU < 0 {
		quietCPU = online[len(online)-1]
	}
	if noisyCPU < 0 {
		noisyCPU = online[0]
	}
	for _, c := range []int{quietCPU, noisyCPU} {
		if !slices.Contains(online, c) {
			return nil, fmt.Errorf("isolation: CPU %d is not online (online: %v)", c, online)
		}
	}
	pl, err := tenantpool.New(opts.Exe, fmt.Sprintf("polytropon-isolation-%d", os.Getpid()), []int{quietCPU, noisyCPU}, opts.Launcher)
	if err != nil {
		return nil, err
	}
	defer pl.Close()
	rep := &Report{QuietCPU: quietCPU, NoisyCPU: noisyCPU, Pools: pl.Describe(2),
		Workload: "micro read4k-rand, 1 thread, quiet tenant (pool t0)",
		Noise:    fmt.Sprintf("sequential %d-byte writes, fsync every %d, pool t1, kernel path", opts.BlockBytes, opts.SyncEvery),
		Load1:    load1(), OutputDir: opts.Out}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	for round := 1; round <= opts.Rounds; round++ {
		for _, noisy := range []bool{false, true} {
			if err := measure(ctx, &opts, pl, rep, round, noisy, progress); err != nil {
				return nil, err
			}
		}
	}
	rep.Load1End = load1()
	if err := pl.Err(); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(opts.Out, ReportFile), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("isolation: %w", err)
	}
	return rep, nil
}

// measure runs one cell of the quiet tenant, beside the noisy one if noisy,
// and adds its rows to rep.
func measure(ctx context.Context, o *Options, pl *tenantpool.Launcher, rep *Report, round int, noisy bool, progress io.Writer) error {
	neighbour, name, what := "none", fmt.Sprintf("r%d-alone", round), "quiet tenant alone"
	if noisy {
		neighbour, name, what = "noisy", fmt.Sprintf("r%d-noisy", round), "beside the noisy tenant"
	}
	var nz *noisyProc
	if noisy {
		dir := filepath.Join(o.Out, name+"-noise")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("isolation: %w", err)
		}
		var err error
		nz, err = startNoisy(pl.Wrap(1, o.NoisyCommand(NoisyOptions{Dir: dir, BlockBytes: o.BlockBytes, SyncEvery: o.SyncEvery})))
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(progress, "isolation: round %d, %s\n", round, what)
	params := map[string]string{"pools": rep.Pools, "neighbour": name}
	for k, v := range o.Params {
		params[k] = v
	}
	run, rerr := harness.Run(ctx, harness.Options{Out: filepath.Join(o.Out, name), Workloads: []string{harness.WorkloadMicro},
		Ops: []string{harness.OpRead4KRand}, Paths: []string{harness.PathKernel, harness.PathDirect}, Tenants: []int{1},
		Warmup: o.Warmup, Duration: o.Duration, Threads: 1, Seed: uint64(round), Launcher: pl, Params: params})
	var ns *NoisyStats
	if nz != nil {
		var err error
		if ns, err = nz.stop(); err != nil && rerr == nil {
			rerr = fmt.Errorf("isolation: noisy tenant: %w", err)
		}
	}
	if run != nil {
		rep.Machine = run.Machine
		for _, p := range []string{harness.PathKernel, harness.PathDirect} {
			row := Row{Path: p, Neighbour: neighbour, Round: round, Noisy: ns}
			if c := run.Find(harness.WorkloadMicro, harness.OpRead4KRand, p, 1); c == nil {
				row.Error = "not measured"
			} else {
				row.Summary, row.Error = c.Summary, c.Error
			}
			rep.Rows = append(rep.Rows, row)
		}
	}
	return rerr
}

func load1() float64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return float64(si.Loads[0]) / 65536
}

// WriteTable prints the quiet tenant's ops/s, p50 and p99 per round, path and
// neighbour, its p99 beside the noisy tenant over its p99 alone, and the noisy
// tenant's write rate.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "machine: %s, %d cores, %s, %s, %s\n", rep.Machine.CPU, rep.Machine.Cores, rep.Machine.Kernel, rep.Machine.Go, rep.Machine.Date)
	fmt.Fprintf(w, "quiet tenant: %s on CPU %d; noisy tenant: %s on CPU %d\n", rep.Workload, rep.QuietCPU, rep.Noise, rep.NoisyCPU)
	fmt.Fprintf(w, "pools: %s; load average (1 min) %.2f before, %.2f after\n\n", rep.Pools, rep.Load1, rep.Load1End)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUND\tPATH\tNEIGHBOUR\tOPS/S\tP50\tP99\tP99 vs ALONE\tNOISY MB/S")
	alone := map[string]int64{}
	for _, r := range rep.Rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%d\t%s\t%s\terror: %s\n", r.Round, r.Path, r.Neighbour, r.Error)
			continue
		}
		ratio, mbs := "", ""
		key := fmt.Sprintf("%d/%s", r.Round, r.Path)
		if r.Neighbour == "none" {
			alone[key] = r.Summary.P99
		} else if a := alone[key]; a > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(r.Summary.P99)/float64(a))
		}
		if r.Noisy != nil && r.Noisy.Seconds > 0 {
			mbs = fmt.Sprintf("%.0f", float64(r.Noisy.Bytes)/r.Noisy.Seconds/1e6)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\n", r.Round, r.Path, r.Neighbour, r.Summary.OpsPerSec,
			results.FormatNs(float64(r.Summary.P50)), results.FormatNs(float64(r.Summary.P99)), ratio, mbs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nreport: %s\n", filepath.Join(rep.OutputDir, ReportFile))
	return err
}

// NoisyStats is what the noisy tenant reports when stopped.
type NoisyStats struct {
	Bytes   int64   `json:"bytes"`
	Fsyncs  int64   `json:"fsyncs"`
	Seconds float64 `json:"seconds"`
}

type noisyProc struct {
	cmd *exec.Cmd
	out *bufio.Reader
}

// noisyReady is the line the noisy tenant prints once it writes.
const noisyReady = "writing"

// startNoisy starts the noisy tenant and waits until it writes.
func startNoisy(cmd *exec.Cmd) (*noisyProc, error) {
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("isolation: noisy tenant: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("isolation: noisy tenant: %w", err)
	}
	n := &noisyProc{cmd: cmd, out: bufio.NewReader(stdout)}
	line, err := n.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != noisyReady {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("isolation: noisy tenant: said %q (%v)", line, err)
	}
	return n, nil
}

// stop ends the noisy tenant (SIGTERM) and reads its statistics.
func (n *noisyProc) stop() (*NoisyStats, error) {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	var st NoisyStats
	derr := json.NewDecoder(n.out).Decode(&st)
	werr := n.cmd.Wait()
	if derr != nil {
		return nil, errors.Join(derr, werr)
	}
	return &st, werr
}

// NoisyOptions are the noisy tenant's.
type NoisyOptions struct {
	// Dir holds the noise file.
	Dir string
	// BlockBytes per write; fsync every SyncEvery writes.
	BlockBytes, SyncEvery int
	// FileBlocks is where the file wraps around (default 512), so that a run
	// needs bounded space.
	FileBlocks int
}

// DefaultFileBlocks is NoisyOptions.FileBlocks' default.
const DefaultFileBlocks = 512

// Noisy is the noisy tenant: sequential writes of o.BlockBytes into
// o.Dir/noise with fsync every o.SyncEvery until stop delivers, then its
// totals as JSON on out. It prints "writing" on out first. The noise file is
// removed at the end.
func Noisy(o NoisyOptions, out io.Writer, stop <-chan os.Signal) error {
	if o.FileBlocks == 0 {
		o.FileBlocks = DefaultFileBlocks
	}
	if o.Dir == "" || o.BlockBytes < MinBlockBytes || o.BlockBytes > MaxBlockBytes || o.SyncEvery < 1 || o.FileBlocks < 1 {
		return fmt.Errorf("isolation: noisy tenant: a directory, blocks of %d..%d bytes, fsync every 1 or more and 1 or more file blocks are required",
			MinBlockBytes, MaxBlockBytes)
	}
	f, err := os.OpenFile(filepath.Join(o.Dir, "noise"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("isolation: noisy tenant: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, o.BlockBytes)
	for i := range buf {
		buf[i] = byte(i*31 + 7)
	}
	var st NoisyStats
	start := time.Now()
	fmt.Fprintln(out, noisyReady)
	for i := 0; ; i++ {
		select {
		case <-stop:
			st.Seconds = time.Since(start).Seconds()
			return json.NewEncoder(out).Encode(&st)
		default:
		}
		if _, err := f.WriteAt(buf, int64(i%o.FileBlocks)*int64(o.BlockBytes)); err != nil {
			return fmt.Errorf("isolation: noisy tenant: %w", err)
		}
		st.Bytes += int64(o.BlockBytes)
		if (i+1)%o.SyncEvery == 0 {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("isolation: noisy tenant: %w", err)
			}
			st.Fsyncs++
		}
	}
}
