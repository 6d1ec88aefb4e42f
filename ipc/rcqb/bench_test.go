package rcqb

import (
	"fmt"
	"testing"
)

var benchConfigs = []struct{ p, c int }{{1, 1}, {2, 2}, {4, 4}}

// BenchmarkThroughput passes b.N values through each kind of queue at 1P1C, 2P2C
// and 4P4C; ns/op is per value, and ops/s is reported as a metric.
func BenchmarkThroughput(b *testing.B) {
	for _, kind := range ThroughputKinds() {
		for _, cfg := range benchConfigs {
			if !KindFits(kind, cfg.p, cfg.c) {
				continue
			}
			b.Run(fmt.Sprintf("%s/%dP%dC", kind, cfg.p, cfg.c), func(b *testing.B) {
				q, err := newBenchQueue(kind, ThroughputCapacity)
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
		for _, cfg := range benchConfigs[:2] {
			b.Run(fmt.Sprintf("spin=%d/%dP%dC", spin, cfg.p, cfg.c), func(b *testing.B) {
				q, err := New(ThroughputCapacity, WithSpin(spin))
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

// BenchmarkUncontended is one goroutine doing Enqueue then Dequeue: the cost of
// the protocol with no waiting (and the allocation check for -benchmem).
func BenchmarkUncontended(b *testing.B) {
	for _, layout := range []Layout{Padded, Packed} {
		b.Run(layout.String(), func(b *testing.B) {
			q, err := New(ThroughputCapacity, WithLayout(layout))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := q.Enqueue(1); err != nil {
					b.Fatal(err)
				}
				if _, err := q.Dequeue(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPingPong is a round trip between two goroutines over two queues:
// the latency of a hand-off, including sleeping when the spin budget runs out.
func BenchmarkPingPong(b *testing.B) {
	for _, spin := range []int{0, 256, 4096, 65536} {
		b.Run(fmt.Sprintf("spin=%d", spin), func(b *testing.B) {
			req, _ := New(16, WithSpin(spin))
			resp, _ := New(16, WithSpin(spin))
			go func() {
				for {
					v, err := req.Dequeue()
					if err != nil {
						return
					}
					resp.Enqueue(v)
				}
			}()
			b.ReportAllocs()
			for b.Loop() {
				req.Enqueue(1)
				resp.Dequeue()
			}
			req.Close()
		})
	}
}
