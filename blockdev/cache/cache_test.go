package cache

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
	"github.com/polytropon/polytropon/blockdev/mem"
)

const bs = 4096

func memDev(t *testing.T) *mem.Device {
	t.Helper()
	d, err := mem.New(2<<20, bs)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newCache(t *testing.T, blocks int, policy string, mode Mode) *Cache {
	t.Helper()
	c, err := New(Config{BudgetBytes: int64(blocks * bs), BlockSize: bs, Policy: policy, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	for _, policy := range []string{"lru", "clock"} {
		for _, mode := range []Mode{WriteThrough, WriteBack} {
			t.Run(fmt.Sprintf("%s/%d", policy, mode), func(t *testing.T) {
				// A budget smaller than the suite's working set forces evictions and
				// write-backs while it runs.
				c := newCache(t, 64, policy, mode)
				blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
					d, err := c.Wrap(memDev(t))
					if err != nil {
						t.Fatal(err)
					}
					return d
				})
				if s := c.Stats(); s.Hits == 0 || s.Misses == 0 || s.Evictions == 0 {
					t.Fatalf("suite left counters %+v", s)
				}
			})
		}
	}
}

func blk(t *testing.T, seed uint64) []byte {
	b := blockdevtest.Buf(t, bs)
	blockdevtest.Fill(b, seed)
	return b
}

func TestSharedBudgetAndCounters(t *testing.T) {
	c := newCache(t, 2, "lru", WriteThrough)
	a, err := c.Wrap(memDev(t))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Wrap(memDev(t))
	buf := blockdevtest.Buf(t, bs)
	a.ReadAt(buf, 0)  // miss
	a.ReadAt(buf, 0)  // hit
	b.ReadAt(buf, 0)  // miss: same block number, other device
	b.ReadAt(buf, bs) // miss, evicts a's block 0 (least recent)
	a.ReadAt(buf, 0)  // miss again
	if s := a.Stats(); s.Hits != 1 || s.Misses != 2 {
		t.Fatalf("device a: %+v", s)
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 4 || s.Evictions != 2 {
		t.Fatalf("cache: %+v", s)
	}
	if err := c.Close(); err == nil {
		t.Fatal("Close with wrapped devices open succeeded")
	}
	a.Close()
	b.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWriteBack(t *testing.T) {
	c := newCache(t, 2, "clock", WriteBack)
	inner := memDev(t)
	d, _ := c.Wrap(inner)
	defer d.Close()
	if d.Unwrap() != inner {
		t.Fatal("Unwrap")
	}
	x := blk(t, 1)
	d.WriteAt(x, 0)
	got := blockdevtest.Buf(t, bs)
	inner.ReadAt(got, 0)
	if bytes.Equal(got, x) {
		t.Fatal("write-back cache wrote through")
	}
	d.ReadAt(got, 0)
	if !bytes.Equal(got, x) {
		t.Fatal("read does not see the cached write")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	inner.ReadAt(got, 0)
	if !bytes.Equal(got, x) || inner.Flushes() != 1 {
		t.Fatal("Flush did not write back and flush")
	}
	// Eviction writes a dirty block back.
	y := blk(t, 2)
	d.WriteAt(y, bs)
	d.ReadAt(got, 2*bs)
	d.ReadAt(got, 3*bs)
	inner.ReadAt(got, bs)
	if !bytes.Equal(got, y) {
		t.Fatal("evicted dirty block was not written back")
	}
	if c.Stats().WriteBacks != 2 {
		t.Fatalf("write-backs %d, want 2", c.Stats().WriteBacks)
	}
}

func TestWriteThroughIsImmediate(t *testing.T) {
	c := newCache(t, 4, "lru", WriteThrough)
	inner := memDev(t)
	d, _ := c.Wrap(inner)
	defer d.Close()
	x := blk(t, 3)
	d.WriteAt(x, 5*bs)
	got := blockdevtest.Buf(t, bs)
	inner.ReadAt(got, 5*bs)
	if !bytes.Equal(got, x) {
		t.Fatal("write-through did not reach the device")
	}
	d.ReadAt(got, 5*bs)
	if c.Stats().Hits != 1 {
		t.Fatal("a written block is not served from the cache")
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{BudgetBytes: 1 << 20, BlockSize: 1000, Policy: "lru"},
		{BudgetBytes: 100, BlockSize: 4096, Policy: "lru"},
		{BudgetBytes: 1 << 20, BlockSize: 4096, Policy: "fifo"},
		{BudgetBytes: 1 << 20, BlockSize: 4096, Policy: "lru", Mode: 7},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	c := newCache(t, 4, "lru", WriteThrough)
	d512, _ := mem.New(1<<20, 512)
	if _, err := c.Wrap(d512); err == nil {
		t.Fatal("device with another block size accepted")
	}
}

func BenchmarkHit(b *testing.B) {
	c, _ := New(Config{BudgetBytes: 1 << 20, BlockSize: bs, Policy: "clock"})
	inner, _ := mem.New(1<<20, bs)
	d, _ := c.Wrap(inner)
	buf := blockdevtest.Buf(b, bs)
	d.ReadAt(buf, 0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.ReadAt(buf, 0)
	}
}
