package throughput

import (
	"fmt"
	"testing"

	"github.com/polytropon/polytropon/ipc/rcqb"
)

// BenchmarkThroughput passes b.N values through each kind of queue at 1P1C, 2P2C
// and 4P4C; ns/op is per value, and ops/s is reported as a metric.
func BenchmarkThroughput(b *testing.B) {
	for _, kind := range Kinds() {
		for _, cfg := range configs {
			if !Fits(kind, cfg.p, cfg.c) {
				continue
			}
			b.Run(fmt.Sprintf("%s/%dP%dC", kind, cfg.p, cfg.c), func(b *testing.B) {
				q, err := newBenchQueue(kind, Capacity)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				el, err := runThroughput(q, cfg.p, cfg.c, b.N)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
			})
		}
	}
}

// BenchmarkSpin compares spin budgets for RCQB at 1P1C and 2P2C.
func BenchmarkSpin(b *testing.B) {
	for _, spin := range []int{0, 64, 256, 1024, 4096, 16384} {
		for _, cfg := range configs[:2] {
			b.Run(fmt.Sprintf("spin=%d/%dP%dC", spin, cfg.p, cfg.c), func(b *testing.B) {
				q, err := rcqb.New(Capacity, rcqb.WithSpin(spin))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				el, err := runThroughput(rcqbBench{q}, cfg.p, cfg.c, b.N)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
			})
		}
	}
}
