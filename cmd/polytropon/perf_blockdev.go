package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/perf/blockperf"
)

func init() { registerUnder("perf", newPerfBlockdevCmd) }

func newPerfBlockdevCmd() *cobra.Command {
	var (
		dev, rw, bs, qds, size string
		duration               time.Duration
		asJSON, vsFio          bool
		repeat                 int
	)
	cmd := &cobra.Command{
		Use:   "blockdev",
		Short: "Measure a file or block device through polytropon's io_uring block device (optionally beside fio)",
		Long: `blockdev runs block-sized O_DIRECT reads or writes at fixed queue depths for a fixed
time and prints IOPS, MB/s, p50/p99/p99.9 latency and CPU per I/O. With --vs-fio it runs
fio's io_uring engine on the same file with the same parameters, alternating with
polytropon's runs, and prints ours/fio ratios. A missing or too small regular file is
created at --size with real data. --dev /dev/ngXnY measures NVMe passthrough
(io_uring URING_CMD; fio then uses its io_uring_cmd engine) and --dev nvme:PCIADDR
the user-level VFIO driver (see polytropon nvme bind; no fio comparison).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bsBytes, err := blockperf.ParseSize(bs)
			if err != nil {
				return err
			}
			var sizeBytes int64
			if size != "" {
				if sizeBytes, err = blockperf.ParseSize(size); err != nil {
					return err
				}
			}
			var depths []int
			for _, f := range strings.Split(qds, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 1 {
					return fmt.Errorf("bad --qd %q: want a comma-separated list of positive integers", qds)
				}
				depths = append(depths, n)
			}
			if repeat < 1 || repeat > 100 {
				return fmt.Errorf("bad --repeat %d: want 1..100", repeat)
			}
			if vsFio {
				if _, err := exec.LookPath("fio"); err != nil {
					return blockperf.ErrNoFio
				}
			}
			var results []blockperf.Result
			var ratios []blockperf.Ratios
			for _, qd := range depths {
				cfg := blockperf.Config{Path: dev, RW: rw, BlockSize: int(bsBytes), QueueDepth: qd,
					Duration: duration, Size: sizeBytes, Logger: log}
				for r := 0; r < repeat; r++ {
					cfg.Seed = uint64(r + 1)
					ours, err := blockperf.Run(cfg)
					if err != nil {
						return err
					}
					results = append(results, ours)
					if !vsFio {
						continue
					}
					theirs, err := blockperf.RunFio(cfg)
					if err != nil {
						return err
					}
					results = append(results, theirs)
					ratios = append(ratios, blockperf.Compare(ours, theirs))
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Results []blockperf.Result `json:"results"`
					Ratios  []blockperf.Ratios `json:"ratios_vs_fio,omitempty"`
				}{results, ratios})
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "engine\trw\tbs\tqd\tIOPS\tMB/s\tp50 us\tp99 us\tp99.9 us\tCPU/IO us\tio-wq CPU s\t")
			for _, r := range results {
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
			if len(ratios) > 0 {
				fmt.Fprintln(w, "\nours / fio (same run):")
				tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
				fmt.Fprintln(tw, "qd\tIOPS\tCPU/IO\tp50\tp99\t")
				for _, r := range ratios {
					fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", r.QueueDepth, r.IOPS, r.CPUPerIO, r.P50, r.P99)
				}
				return tw.Flush()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dev, "dev", "", "file, block device, NVMe generic device /dev/ngXnY, or nvme:PCIADDR for a controller bound to vfio-pci (required)")
	f.StringVar(&rw, "rw", blockperf.RandRead, "workload: randread, randwrite, read or write")
	f.StringVar(&bs, "bs", "4k", "block size per I/O")
	f.StringVar(&qds, "qd", "1,32", "queue depths, comma-separated")
	f.DurationVar(&duration, "duration", 10*time.Second, "time per measurement")
	f.StringVar(&size, "size", "", "region to use; a missing or smaller regular file is created at this size (e.g. 1G)")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.BoolVar(&vsFio, "vs-fio", false, "also run fio's io_uring engine with the same parameters and print ratios")
	f.IntVar(&repeat, "repeat", 1, "measurements per queue depth (alternating with fio under --vs-fio)")
	_ = cmd.MarkFlagRequired("dev")
	return cmd
}
