package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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
			rep, err := blockperf.Sweep(blockperf.Config{Path: dev, RW: rw, BlockSize: int(bsBytes),
				Duration: duration, Size: sizeBytes, Logger: log}, depths, repeat, vsFio)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteTable(cmd.OutOrStdout())
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
