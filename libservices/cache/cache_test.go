package cache

import (
	"os"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

func TestConformanceMemfs(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return New(memfs.New(memfs.Options{}), NewStore(1<<20), Options{})
	})
}

// TestConformanceTinyStore runs the suite with a store of 16 pages, so that
// eviction happens all the time.
func TestConformanceTinyStore(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return New(memfs.New(memfs.Options{}), NewStore(0), Options{Attrs: 8})
	})
}

// TestConformanceStack runs the suite on cache over union over passthrough with a
// read-only lower branch, the stack of the example configuration.
func TestConformanceStack(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		var layers []libservices.FS
		for _, ro := range []bool{false, true} {
			dir, err := os.MkdirTemp("/dev/shm", "polytropon-cache-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: ro})
			if err != nil {
				t.Fatal(err)
			}
			layers = append(layers, p)
		}
		c := New(union.New(layers[0], layers[1]), NewStore(1<<20), Options{})
		t.Cleanup(func() { c.CloseFS() })
		return c
	})
}
