// Package cache is a block cache shared by several block devices under one byte
// budget: each user wraps its device with Cache.Wrap and gets a blockdev.Device that
// serves reads from the cache. Eviction is LRU or CLOCK (policy.go, a deterministic
// core with its own step-by-step tests); writes go through to the device at once
// (WriteThrough) or stay dirty in the cache until Flush or eviction (WriteBack).
// Hits, misses, evictions and write-backs are counted per cache and per device.
//
// Invariants: the cache holds at most BudgetBytes of blocks (slots fixed at New, in
// one page-aligned mapping, so slot buffers can go straight to an O_DIRECT device); a
// block is in at most one slot; a dirty block is written to its device before its
// slot is reused, and Flush on a device writes all its dirty blocks before flushing
// the device. Blocks are the wrapped devices' block size, which must equal the
// cache's.
//
// Lock order: Cache.mu, then the inner devices' own locks. One mutex per cache guards
// the index, the policy and the slots, and is held across a miss's device read and an
// eviction's write-back: simple and coherent (no stale fill can race a write), at the
// price of serialising misses between the cache's users; a sharded cache is the next
// step if that shows up in profiles.
//
// Measure: `go test -run '^$' -bench Hit -benchmem ./blockdev/cache` (a hit's
// cost and its allocations).
package cache

import (
	"errors"
	"fmt"
	"sync"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
	"github.com/polytropon/polytropon/internal/invariants"
)

// Mode is the write policy.
type Mode int

// Write policies.
const (
	WriteThrough Mode = iota
	WriteBack
)

// Config configures a cache.
type Config struct {
	BudgetBytes int64
	BlockSize   int
	Policy      string // "lru" or "clock"
	Mode        Mode
}

// Stats are a cache's counters.
type Stats struct {
	Hits, Misses, Evictions, WriteBacks int64
}

type key struct {
	dev   uint32
	block int64
}

// Cache is the shared block cache.
type Cache struct {
	bs   int
	mode Mode
	data []byte // slots*bs, page aligned

	mu      sync.Mutex
	policy  Policy
	index   map[key]int32
	keys    []key
	valid   []bool
	dirty   []bool
	free    []int32
	devs    map[uint32]*Device
	nextDev uint32
	stats   Stats
	closed  bool
}

// New returns an empty cache.
func New(cfg Config) (*Cache, error) {
	if cfg.BlockSize < 512 || cfg.BlockSize > alignedbuf.PageSize || cfg.BlockSize&(cfg.BlockSize-1) != 0 {
		return nil, fmt.Errorf("cache: block size %d: want a power of two from 512 to %d", cfg.BlockSize, alignedbuf.PageSize)
	}
	slots := cfg.BudgetBytes / int64(cfg.BlockSize)
	if slots < 1 || slots > 1<<24 {
		return nil, fmt.Errorf("cache: budget %d bytes holds %d blocks of %d: want 1..%d", cfg.BudgetBytes, slots, cfg.BlockSize, 1<<24)
	}
	if cfg.Mode != WriteThrough && cfg.Mode != WriteBack {
		return nil, fmt.Errorf("cache: unknown mode %d", cfg.Mode)
	}
	p, ok := NewPolicy(cfg.Policy, int(slots))
	if !ok {
		return nil, fmt.Errorf("cache: policy %q: want lru or clock", cfg.Policy)
	}
	data, err := alignedbuf.Alloc(int(slots) * cfg.BlockSize)
	if err != nil {
		return nil, err
	}
	c := &Cache{bs: cfg.BlockSize, mode: cfg.Mode, data: data, policy: p,
		index: make(map[key]int32, slots), keys: make([]key, slots), valid: make([]bool, slots),
		dirty: make([]bool, slots), free: make([]int32, slots), devs: map[uint32]*Device{}}
	for i := range c.free {
		c.free[i] = int32(int(slots) - 1 - i)
	}
	return c, nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close releases the cache's memory; every wrapped device must be closed first.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("cache: closed twice")
	}
	if len(c.devs) > 0 {
		return fmt.Errorf("cache: %d wrapped devices still open", len(c.devs))
	}
	c.closed = true
	return alignedbuf.Free(c.data)
}

func (c *Cache) slot(s int32) []byte {
	o := int(s) * c.bs
	return c.data[o : o+c.bs : o+c.bs]
}

// Device is one user's view: its device seen through the shared cache.
type Device struct {
	c     *Cache
	inner blockdev.Device
	id    uint32
	// Guarded by c.mu.
	stats  Stats
	closed bool
}

var (
	_ blockdev.Device    = (*Device)(nil)
	_ blockdev.Unwrapper = (*Device)(nil)
)

// Wrap returns inner seen through the cache; the returned device owns inner.
func (c *Cache) Wrap(inner blockdev.Device) (*Device, error) {
	if inner.BlockSize() != c.bs {
		return nil, fmt.Errorf("cache: device block size %d differs from the cache's %d", inner.BlockSize(), c.bs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("cache: closed")
	}
	d := &Device{c: c, inner: inner, id: c.nextDev}
	c.nextDev++
	c.devs[d.id] = d
	return d, nil
}

// Unwrap implements blockdev.Unwrapper.
func (d *Device) Unwrap() blockdev.Device { return d.inner }

// Stats returns this device's share of the counters.
func (d *Device) Stats() Stats {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	return d.stats
}

// getSlotLocked returns a free slot, evicting (and writing back) a victim if needed.
func (c *Cache) getSlotLocked() (int32, error) {
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s, nil
	}
	v := c.policy.Victim()
	if v < 0 {
		return -1, errors.New("cache: no slot to evict")
	}
	s := int32(v)
	if c.dirty[s] {
		if err := c.writeBackLocked(s); err != nil {
			return -1, err
		}
	}
	c.dropLocked(s)
	c.stats.Evictions++
	if d := c.devs[c.keys[s].dev]; d != nil {
		d.stats.Evictions++
	}
	c.free = c.free[:len(c.free)-1] // dropLocked pushed it
	return s, nil
}

func (c *Cache) writeBackLocked(s int32) error {
	k := c.keys[s]
	d := c.devs[k.dev]
	if _, err := d.inner.WriteAt(c.slot(s), k.block*int64(c.bs)); err != nil {
		return err
	}
	c.dirty[s] = false
	c.stats.WriteBacks++
	d.stats.WriteBacks++
	return nil
}

func (c *Cache) dropLocked(s int32) {
	if invariants.Enabled {
		invariants.Check(c.valid[s] && c.index[c.keys[s]] == s, "cache: dropping slot %d that the index does not map", s)
	}
	delete(c.index, c.keys[s])
	c.valid[s] = false
	c.dirty[s] = false
	c.policy.Remove(int(s))
	c.free = append(c.free, s)
}

// ReadAt implements blockdev.Device.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	c := d.c
	n, err := blockdev.ClampRead(p, off, c.bs, d.inner.Size())
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	for i := 0; i < n; i += c.bs {
		k := key{d.id, (off + int64(i)) / int64(c.bs)}
		if s, ok := c.index[k]; ok {
			copy(p[i:i+c.bs], c.slot(s))
			c.policy.Hit(int(s))
			c.stats.Hits++
			d.stats.Hits++
			continue
		}
		s, err := c.getSlotLocked()
		if err != nil {
			return i, err
		}
		if _, err := d.inner.ReadAt(c.slot(s), k.block*int64(c.bs)); err != nil {
			c.free = append(c.free, s)
			return i, err
		}
		c.keys[s], c.valid[s] = k, true
		c.index[k] = s
		c.policy.Insert(int(s))
		c.stats.Misses++
		d.stats.Misses++
		copy(p[i:i+c.bs], c.slot(s))
	}
	return blockdev.ShortRead(n, len(p))
}

// WriteAt implements blockdev.Device.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	c := d.c
	if err := blockdev.CheckWrite(p, off, c.bs, d.inner.Size()); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	if c.mode == WriteThrough {
		if n, err := d.inner.WriteAt(p, off); err != nil {
			// The device may hold part of it; drop the range so no stale block stays.
			for i := 0; i < len(p); i += c.bs {
				if s, ok := c.index[key{d.id, (off + int64(i)) / int64(c.bs)}]; ok {
					c.dropLocked(s)
				}
			}
			return n, err
		}
	}
	for i := 0; i < len(p); i += c.bs {
		k := key{d.id, (off + int64(i)) / int64(c.bs)}
		s, ok := c.index[k]
		if ok {
			c.policy.Hit(int(s))
		} else {
			var err error
			if s, err = c.getSlotLocked(); err != nil {
				return i, err
			}
			c.keys[s], c.valid[s] = k, true
			c.index[k] = s
			c.policy.Insert(int(s))
		}
		copy(c.slot(s), p[i:i+c.bs])
		if c.mode == WriteBack {
			c.dirty[s] = true
		}
	}
	return len(p), nil
}

// flushLocked writes back d's dirty blocks.
func (d *Device) flushLocked() error {
	c := d.c
	for s := range c.dirty {
		if c.dirty[s] && c.keys[s].dev == d.id {
			if err := c.writeBackLocked(int32(s)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Flush implements blockdev.Device: dirty blocks reach the device, then it flushes.
func (d *Device) Flush() error {
	c := d.c
	c.mu.Lock()
	if d.closed {
		c.mu.Unlock()
		return blockdev.ErrClosed
	}
	err := d.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return d.inner.Flush()
}

// Size implements blockdev.Device.
func (d *Device) Size() int64 { return d.inner.Size() }

// BlockSize implements blockdev.Device.
func (d *Device) BlockSize() int { return d.c.bs }

// OptimalIOSize implements blockdev.Device.
func (d *Device) OptimalIOSize() int { return d.inner.OptimalIOSize() }

// NewQueue implements blockdev.Device with a blockdev.SyncQueue over the cache.
func (d *Device) NewQueue(depth int) (blockdev.Queue, error) {
	d.c.mu.Lock()
	closed := d.closed
	d.c.mu.Unlock()
	if closed {
		return nil, blockdev.ErrClosed
	}
	return blockdev.NewSyncQueue(d, depth)
}

// Close writes back the device's dirty blocks, drops its blocks from the cache and
// closes the inner device.
func (d *Device) Close() error {
	c := d.c
	c.mu.Lock()
	if d.closed {
		c.mu.Unlock()
		return blockdev.ErrClosed
	}
	err := d.flushLocked()
	for s := range c.valid {
		if c.valid[s] && c.keys[s].dev == d.id {
			c.dropLocked(int32(s))
		}
	}
	d.closed = true
	delete(c.devs, d.id)
	c.mu.Unlock()
	if cerr := d.inner.Close(); err == nil {
		err = cerr
	}
	return err
}
