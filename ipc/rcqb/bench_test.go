package rcqb

import (
	"fmt"
	"testing"
)

// benchCapacity is the queue size of the benchmarks, as perf ipc's.
const benchCapacity = 1024

// BenchmarkUncontended is one goroutine doing Enqueue then Dequeue: the cost of
// the protocol with no waiting (and the allocation check for -benchmem).
func BenchmarkUncontended(b *testing.B) {
	for _, layout := range []Layout{Padded, Packed} {
		b.Run(layout.String(), func(b *testing.B) {
			q, err := New(benchCapacity, WithLayout(layout))
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
