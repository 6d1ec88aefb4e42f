package back

import (
	"testing"

	"github.com/polytropon/polytropon/ipc/front"
)

// benchNop measures the empty round trip through a service in this process (client
// and service still use separate mappings of the ring and the arena). -benchmem
// counts allocations of both sides.
func benchNop(b *testing.B, serviceSpin, clientSpin int) {
	s, _ := startService(b, Config{SpinBudget: serviceSpin})
	c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: clientSpin})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Nop(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Nop(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNopServiceSpinning(b *testing.B) { benchNop(b, 1<<30, 1<<20) }
func BenchmarkNopServiceSleeping(b *testing.B) { benchNop(b, -1, -1) }

func BenchmarkWrite4K(b *testing.B) {
	s, _ := startService(b, Config{SpinBudget: 1 << 30})
	c, err := front.Dial(front.Config{SocketPath: s.Addr(), SpinIters: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	h, err := c.Create("/bench", 0o644)
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.WriteAt(h, p, 0); err != nil {
			b.Fatal(err)
		}
	}
}
