// Package isolation is the experiment behind `polytropon perf isolation`.
package isolation

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/perf/harness"
	"github.com/polytropon/polytropon/perf/results"
	"github.com/polytropon/polytropon/perf/tenantpool"
)

// IsolationRow is one (path, neighbour) measurement of the quiet tenant.
type IsolationRow struct {
	Path      string          `json:"path"`
	Neighbour string          `json:"neighbour"` // "none" or "noisy"
	Round     int             `json:"round"`
	Summary   results.Summary `json:"summary"`
	Error     string          `json:"error,omitempty"`
	// Noisy is what the noisy tenant did meanwhile (noisy rows).
	Noisy *NoisyStats `json:"noisy,omitempty"`
}

// IsolationReport is `perf isolation --json`.
type IsolationReport struct {
	Machine   results.Machine `json:"machine"`
	QuietCPU  int             `json:"quiet_cpu"`
	NoisyCPU  int             `json:"noisy_cpu"`
	Pools     string          `json:"pools"`
	Workload  string          `json:"workload"`
	Noise     string          `json:"noise"`
	Load1     float64         `json:"load1_before"`
	Load1End  float64         `json:"load1_after"`
	Rows      []IsolationRow  `json:"rows"`
	OutputDir string          `json:"output_dir"`
}

// NewCmd is `perf isolation`; logArgs gives the services' logging flags.
func NewCmd(logArgs func() []string) *cobra.Command {
	var (
		out              string
		asJSON           bool
		duration, warmup time.Duration
		rounds           int
		quietCPU         int
		noisyCPU         int
		blockBytes       int
		syncEvery        int
	)
	cmd := &cobra.Command{
		Use:   "isolation [--json]",
		Short: "The quiet tenant's read latency on the direct and kernel paths, alone and beside a noisy writer, each tenant in its own pool",
		Long: `isolation measures what one tenant's heavy writes do to another tenant's
latency-sensitive reads, with each tenant in a pool of its own (a cgroup with one
reserved CPU, made through package pool; root only).

The quiet tenant (pool t0, --quiet-cpu) runs perf run's micro read4k-rand on the
kernel path (pread on its backing directory) and on the direct path (fslib to
its own filesystem service, started inside the pool). The noisy tenant (pool t1,
--noisy-cpu) writes --block-sized blocks sequentially to a file of its own on
the same filesystem, with fsync every --sync-every blocks, without pause. Each
round measures both paths without the neighbour, then with it.

Prints the quiet tenant's p50/p99 per path and neighbour and the p99 ratio
(noisy / alone); --json prints the whole report. DIR holds every run's
results.json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("perf isolation needs root (it creates cgroups)")
			}
			if rounds < 1 || rounds > 20 {
				return fmt.Errorf("--rounds %d: want 1..20", rounds)
			}
			if blockBytes < 4096 || blockBytes > 64<<20 || syncEvery < 1 {
				return errors.New("--block must be 4KiB..64MiB and --sync-every at least 1")
			}
			if out == "" {
				out = "perf-isolation-" + time.Now().UTC().Format("20060102-150405")
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			online, err := tenantpool.OnlineCPUs()
			if err != nil {
				return err
			}
			// Auto: the last and the first online CPU (one CPU: both share it).
			if quietCPU < 0 {
				quietCPU = online[len(online)-1]
			}
			if noisyCPU < 0 {
				noisyCPU = online[0]
			}
			for _, c := range []int{quietCPU, noisyCPU} {
				if !containsCPU(online, c) {
					return fmt.Errorf("CPU %d is not online (online: %v)", c, online)
				}
			}
			pl, err := tenantpool.New(exe, fmt.Sprintf("polytropon-isolation-%d", os.Getpid()), []int{quietCPU, noisyCPU}, logArgs()...)
			if err != nil {
				return err
			}
			defer pl.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep := IsolationReport{QuietCPU: quietCPU, NoisyCPU: noisyCPU, Pools: pl.Describe(2),
				Workload: "micro read4k-rand, 1 thread, quiet tenant (pool t0)",
				Noise:    fmt.Sprintf("sequential %d-byte writes, fsync every %d, pool t1, kernel path", blockBytes, syncEvery),
				Load1:    load1(), OutputDir: out}
			progress := cmd.ErrOrStderr()
			for round := 1; round <= rounds; round++ {
				for _, noisy := range []bool{false, true} {
					name := fmt.Sprintf("r%d-%s", round, map[bool]string{false: "alone", true: "noisy"}[noisy])
					var nz *noisyProc
					if noisy {
						dir := filepath.Join(out, name+"-noise")
						if err := os.MkdirAll(dir, 0o755); err != nil {
							return err
						}
						nz, err = startNoisy(pl, exe, dir, blockBytes, syncEvery)
						if err != nil {
							return err
						}
					}
					fmt.Fprintf(progress, "isolation: round %d, %s\n", round, map[bool]string{false: "quiet tenant alone", true: "beside the noisy tenant"}[noisy])
					run, rerr := harness.Run(ctx, harness.Options{Out: filepath.Join(out, name), Workloads: []string{harness.WorkloadMicro},
						Ops: []string{harness.OpRead4KRand}, Paths: []string{harness.PathKernel, harness.PathDirect}, Tenants: []int{1},
						Warmup: warmup, Duration: duration, Threads: 1, Seed: uint64(round), Launcher: pl,
						Params: map[string]string{"command": strings.Join(os.Args, " "), "pools": rep.Pools, "neighbour": name}})
					var ns *NoisyStats
					if nz != nil {
						ns, err = nz.stop()
						if err != nil && rerr == nil {
							rerr = fmt.Errorf("noisy tenant: %w", err)
						}
					}
					if run != nil {
						rep.Machine = run.Machine
						for _, p := range []string{harness.PathKernel, harness.PathDirect} {
							row := IsolationRow{Path: p, Neighbour: map[bool]string{false: "none", true: "noisy"}[noisy], Round: round, Noisy: ns}
							if c := run.Find(harness.WorkloadMicro, harness.OpRead4KRand, p, 1); c == nil {
								row.Error = "not measured"
							} else {
								row.Summary, row.Error = c.Summary, c.Error
							}
							rep.Rows = append(rep.Rows, row)
						}
					}
					if rerr != nil {
						return rerr
					}
				}
			}
			rep.Load1End = load1()
			if err := pl.Err(); err != nil {
				return err
			}
			b, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(filepath.Join(out, "isolation.json"), append(b, '\n'), 0o644); err != nil {
				return err
			}
			if asJSON {
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
				return err
			}
			return isolationTable(cmd.OutOrStdout(), &rep)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "report directory (default perf-isolation-DATE)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "measured time per cell")
	cmd.Flags().DurationVar(&warmup, "warmup", 2*time.Second, "warm-up before each cell")
	cmd.Flags().IntVar(&rounds, "rounds", 1, "rounds of (alone, with the noisy tenant)")
	cmd.Flags().IntVar(&quietCPU, "quiet-cpu", -1, "the quiet tenant's reserved CPU (default the last online CPU)")
	cmd.Flags().IntVar(&noisyCPU, "noisy-cpu", -1, "the noisy tenant's reserved CPU (default the first online CPU)")
	cmd.Flags().IntVar(&blockBytes, "block", 1<<20, "the noisy tenant's write size in bytes")
	cmd.Flags().IntVar(&syncEvery, "sync-every", 8, "the noisy tenant fsyncs every this many writes")
	return cmd
}

func containsCPU(l []int, c int) bool {
	for _, x := range l {
		if x == c {
			return true
		}
	}
	return false
}

func load1() float64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return float64(si.Loads[0]) / 65536
}

func isolationTable(w io.Writer, rep *IsolationReport) error {
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
			harness.FormatNs(float64(r.Summary.P50)), harness.FormatNs(float64(r.Summary.P99)), ratio, mbs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nreport: %s\n", filepath.Join(rep.OutputDir, "isolation.json"))
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

// startNoisy starts the noisy tenant in pool t1 and waits until it writes.
func startNoisy(pl *tenantpool.Launcher, exe, dir string, block, syncEvery int) (*noisyProc, error) {
	cmd := pl.Command(1, exe, "perf", "noisy", "--dir", dir, "--block", fmt.Sprint(block), "--sync-every", fmt.Sprint(syncEvery))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &noisyProc{cmd: cmd, out: bufio.NewReader(stdout)}
	line, err := n.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "writing" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("noisy tenant: said %q (%v)", line, err)
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

// NewNoisyCmd is perf isolation's noisy tenant: sequential writes with
// periodic fsync until SIGTERM, then its totals as JSON.
func NewNoisyCmd() *cobra.Command {
	var (
		dir        string
		block      int
		syncEvery  int
		fileBlocks int
	)
	cmd := &cobra.Command{
		Use:    "noisy --dir DIR",
		Short:  "Write sequentially with fsync until SIGTERM (perf isolation's noisy tenant)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || block < 4096 || syncEvery < 1 || fileBlocks < 1 {
				return errors.New("noisy: --dir, --block >= 4096, --sync-every >= 1 and --file-blocks >= 1 are required")
			}
			f, err := os.OpenFile(filepath.Join(dir, "noise"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			defer f.Close()
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
			buf := make([]byte, block)
			for i := range buf {
				buf[i] = byte(i*31 + 7)
			}
			var st NoisyStats
			start := time.Now()
			fmt.Fprintln(cmd.OutOrStdout(), "writing")
			for i := 0; ; i++ {
				select {
				case <-term:
					st.Seconds = time.Since(start).Seconds()
					return json.NewEncoder(cmd.OutOrStdout()).Encode(&st)
				default:
				}
				// The file wraps around, so the run needs bounded space.
				if _, err := f.WriteAt(buf, int64(i%fileBlocks)*int64(block)); err != nil {
					return err
				}
				st.Bytes += int64(block)
				if (i+1)%syncEvery == 0 {
					if err := f.Sync(); err != nil {
						return err
					}
					st.Fsyncs++
				}
			}
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the noise file")
	cmd.Flags().IntVar(&block, "block", 1<<20, "write size in bytes")
	cmd.Flags().IntVar(&syncEvery, "sync-every", 8, "fsync every this many writes")
	cmd.Flags().IntVar(&fileBlocks, "file-blocks", 512, "the file wraps around after this many blocks")
	return cmd
}
