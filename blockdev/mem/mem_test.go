package mem

import (
	"testing"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
)

func TestConformance(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
			d, err := New(4<<20, bs)
			if err != nil {
				t.Fatal(err)
			}
			return d
		})
	}
}

func TestBadGeometry(t *testing.T) {
	for _, c := range []struct {
		size int64
		bs   int
	}{{4096, 100}, {4096, 256}, {1000, 512}, {0, 512}, {-512, 512}} {
		if _, err := New(c.size, c.bs); err == nil {
			t.Errorf("New(%d, %d) succeeded", c.size, c.bs)
		}
	}
}
