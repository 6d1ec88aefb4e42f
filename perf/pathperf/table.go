package pathperf

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/polytropon/polytropon/perf/results"
)

// WriteTable prints the report: p50 and p99 per operation and path with the
// p50 ratios over the direct path, then ops/s and p99.9 with the throughput
// ratios, then Pebble's store close and write stalls per path.
func (rep *Report) WriteTable(out io.Writer) error {
	m := rep.Machine
	fmt.Fprintf(out, "%s, %d cores, %s, %s, backing %s, %s\n\n", m.CPU, m.Cores, m.Kernel, m.Go, m.Backing, m.Date)
	paths := rep.Settings.Paths
	direct := rep.Ratio(rep.Settings.Ops[0]) != nil
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "op\t")
	for _, p := range paths {
		fmt.Fprintf(tw, "%s p50\tp99\t", p)
	}
	if direct {
		for _, p := range paths {
			if p != PathDirect {
				fmt.Fprintf(tw, "%s/direct\t", p)
			}
		}
	}
	fmt.Fprintln(tw)
	for _, op := range rep.Settings.Ops {
		fmt.Fprintf(tw, "%s\t", op)
		for _, p := range paths {
			r := rep.Result(op, p)
			fmt.Fprintf(tw, "%s\t%s\t", results.FormatNs(float64(r.P50Ns)), results.FormatNs(float64(r.P99Ns)))
		}
		if q := rep.Ratio(op); q != nil {
			for _, p := range paths {
				switch p {
				case PathKernel:
					fmt.Fprintf(tw, "%.2fx\t", q.KernelOverDirectP50)
				case PathFUSE:
					fmt.Fprintf(tw, "%.2fx\t", q.FUSEOverDirectP50)
				case PathFUSEUncached:
					fmt.Fprintf(tw, "%.2fx\t", q.FUSEUncachedOverDirectP50)
				}
			}
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "op\t")
	for _, p := range paths {
		fmt.Fprintf(tw, "%s ops/s\tp99.9\t", p)
	}
	if direct {
		for _, p := range paths {
			if p != PathDirect {
				fmt.Fprintf(tw, "direct/%s\t", p)
			}
		}
	}
	fmt.Fprintln(tw)
	for _, op := range rep.Settings.Ops {
		fmt.Fprintf(tw, "%s\t", op)
		for _, p := range paths {
			r := rep.Result(op, p)
			fmt.Fprintf(tw, "%.0f\t%s\t", r.OpsPerSec, results.FormatNs(float64(r.P999Ns)))
		}
		if q := rep.Ratio(op); q != nil {
			for _, p := range paths {
				switch p {
				case PathKernel:
					fmt.Fprintf(tw, "%.2fx\t", q.DirectOverKernelOpsPerSec)
				case PathFUSE:
					fmt.Fprintf(tw, "%.2fx\t", q.DirectOverFUSEOpsPerSec)
				case PathFUSEUncached:
					fmt.Fprintf(tw, "%.2fx\t", q.DirectOverFUSEUncachedOpsPerSec)
				}
			}
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if direct {
		fmt.Fprintln(out, "latency ratios: other path's p50 / direct p50; throughput ratios: direct ops/s / other's; above 1: direct is faster.")
	}
	for _, op := range rep.Settings.Ops {
		if op != OpPebblePut {
			continue
		}
		fmt.Fprintf(out, "pebble-put: %d puts without sync per path; store close took", rep.Settings.PebbleKeys)
		for i, p := range paths {
			fmt.Fprintf(out, "%s %s %s", listSep(i), p, time.Duration(rep.Result(op, p).CloseNs).Round(time.Millisecond))
		}
		fmt.Fprint(out, "; write stalls")
		for i, p := range paths {
			r := rep.Result(op, p)
			fmt.Fprintf(out, "%s %s %d (%s)", listSep(i), p, r.Stalls, time.Duration(r.StallNs).Round(time.Millisecond))
		}
		fmt.Fprintln(out, ".")
	}
	return nil
}

func listSep(i int) string {
	if i == 0 {
		return ""
	}
	return ","
}
