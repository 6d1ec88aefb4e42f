package blockperf

import (
	"fmt"
	"io"
	"os/exec"
	"text/tabwriter"
)

// Report is a sweep: every measurement in order and, with fio alongside,
// ours/fio per pair.
type Report struct {
	Results []Result `json:"results"`
	Ratios  []Ratios `json:"ratios_vs_fio,omitempty"`
}

// maxRepeat bounds the measurements per queue depth.
const maxRepeat = 100

// Sweep measures cfg at each queue depth in depths, repeat times each (seeds
// 1..repeat); with vsFio each of polytropon's runs is followed at once by
// fio's with the same parameters, so that a pair shares the machine's moment.
// cfg.QueueDepth and cfg.Seed are set per run.
func Sweep(cfg Config, depths []int, repeat int, vsFio bool) (*Report, error) {
	if len(depths) == 0 {
		return nil, fmt.Errorf("blockperf: no queue depth")
	}
	if repeat < 1 || repeat > maxRepeat {
		return nil, fmt.Errorf("blockperf: repeat %d: want 1..%d", repeat, maxRepeat)
	}
	if vsFio {
		if _, err := exec.LookPath("fio"); err != nil {
			return nil, ErrNoFio
		}
	}
	rep := &Report{}
	for _, qd := range depths {
		cfg.QueueDepth = qd
		for r := 0; r < repeat; r++ {
			cfg.Seed = uint64(r + 1)
			ours, err := Run(cfg)
			if err != nil {
				return nil, err
			}
			rep.Results = append(rep.Results, ours)
			if !vsFio {
				continue
			}
			theirs, err := RunFio(cfg)
			if err != nil {
				return nil, err
			}
			rep.Results = append(rep.Results, theirs)
			rep.Ratios = append(rep.Ratios, Compare(ours, theirs))
		}
	}
	return rep, nil
}

// WriteTable prints one row per measurement, then ours/fio per pair.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\trw\tbs\tqd\tIOPS\tMB/s\tp50 us\tp99 us\tp99.9 us\tCPU/IO us\tio-wq CPU s\t")
	for _, r := range rep.Results {
		wk := "-"
		if r.KernelWorkerCPUs >= 0 {
			wk = fmt.Sprintf("%.3f", r.KernelWorkerCPUs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%s\t\n",
			r.Engine, r.RW, r.BlockSize, r.QueueDepth, r.IOPS, r.MBps, r.P50us, r.P99us, r.P999us, r.CPUPerIOus, wk)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Ratios) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nours / fio (same run):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "qd\tIOPS\tCPU/IO\tp50\tp99\t")
	for _, r := range rep.Ratios {
		fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", r.QueueDepth, r.IOPS, r.CPUPerIO, r.P50, r.P99)
	}
	return tw.Flush()
}
