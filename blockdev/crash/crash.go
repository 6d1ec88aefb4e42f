// Package crash wraps a blockdev.Device so that tests can crash it: writes are held
// in a volatile overlay until Flush makes them durable on the inner device, and Crash
// throws the overlay away (or, with Torn, keeps a random subset of its blocks, as a
// power cut during write-back leaves a disk torn at block granularity). Reads see the
// overlay, as they see a disk's volatile cache.
//
// Invariants: the inner device only ever holds data that a Flush made durable,
// blocks a torn crash let through, or blocks written back early because the overlay
// reached MaxPendingBytes (a disk may write its cache back whenever it likes, so that
// is a legal outcome too). The overlay holds at most MaxPendingBytes. Randomness comes
// only from the seed. Lock order: Device.mu, then whatever the inner device takes.
//
// It is a test device: it makes no performance claim and nothing measures it.
package crash

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/polytropon/polytropon/blockdev"
)

// Options configure a crashable device.
type Options struct {
	// Torn makes Crash keep each unsynced block with probability 1/2.
	Torn bool
	// Seed seeds the torn-crash choices.
	Seed uint64
	// MaxPendingBytes bounds the overlay; past it the oldest-written data is written
	// back to the inner device. 0 means 64 MiB.
	MaxPendingBytes int64
}

// Device is a crashable wrapper.
type Device struct {
	inner blockdev.Device
	bs    int
	max   int

	mu      sync.Mutex
	pending map[int64][]byte // block index -> unsynced contents
	rng     *rand.Rand
	torn    bool
	closed  bool
}

var (
	_ blockdev.Device    = (*Device)(nil)
	_ blockdev.Unwrapper = (*Device)(nil)
)

// New wraps inner; the wrapper owns it and closes it on Close.
func New(inner blockdev.Device, o Options) (*Device, error) {
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = 64 << 20
	}
	bs := inner.BlockSize()
	if o.MaxPendingBytes < int64(bs) {
		return nil, fmt.Errorf("crash: MaxPendingBytes %d is less than one block (%d)", o.MaxPendingBytes, bs)
	}
	return &Device{inner: inner, bs: bs, max: int(o.MaxPendingBytes / int64(bs)),
		pending: map[int64][]byte{}, rng: rand.New(rand.NewPCG(o.Seed, 0xc7a54)), torn: o.Torn}, nil
}

// Unwrap implements blockdev.Unwrapper.
func (d *Device) Unwrap() blockdev.Device { return d.inner }

// ReadAt implements blockdev.Device.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	n, err := blockdev.ClampRead(p, off, d.bs, d.inner.Size())
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return blockdev.ShortRead(0, len(p))
	}
	if _, err := d.inner.ReadAt(p[:n], off); err != nil {
		return 0, err
	}
	if len(d.pending) > 0 {
		for i := 0; i < n; i += d.bs {
			if b, ok := d.pending[(off+int64(i))/int64(d.bs)]; ok {
				copy(p[i:i+d.bs], b)
			}
		}
	}
	return blockdev.ShortRead(n, len(p))
}

// WriteAt implements blockdev.Device: the data is held until Flush.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	if err := blockdev.CheckWrite(p, off, d.bs, d.inner.Size()); err != nil {
		return 0, err
	}
	if len(d.pending)+len(p)/d.bs > d.max {
		if err := d.writeBackLocked(); err != nil {
			return 0, err
		}
	}
	for i := 0; i < len(p); i += d.bs {
		blk := (off + int64(i)) / int64(d.bs)
		b, ok := d.pending[blk]
		if !ok {
			b = make([]byte, d.bs)
			d.pending[blk] = b
		}
		copy(b, p[i:i+d.bs])
	}
	return len(p), nil
}

// writeBackLocked writes every pending block to the inner device (not flushed).
func (d *Device) writeBackLocked() error {
	return d.writeBlocksLocked(func(int64) bool { return true })
}

func (d *Device) writeBlocksLocked(keep func(int64) bool) error {
	blocks := make([]int64, 0, len(d.pending))
	for b := range d.pending {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks) // map order is random; the seed must decide torn crashes alone
	buf := blockdev.AlignedScratch(d.bs)
	for _, b := range blocks {
		if keep(b) {
			copy(buf, d.pending[b])
			if _, err := d.inner.WriteAt(buf, b*int64(d.bs)); err != nil {
				return err
			}
		}
		delete(d.pending, b)
	}
	return nil
}

// Flush implements blockdev.Device: pending writes reach the inner device, which is
// then flushed.
func (d *Device) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return blockdev.ErrClosed
	}
	if err := d.writeBackLocked(); err != nil {
		return err
	}
	return d.inner.Flush()
}

// Pending returns how many blocks are unsynced.
func (d *Device) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// Crash loses the unsynced writes (all, or with Torn a random half of the blocks)
// and returns how many blocks were lost. The device stays usable, as after a reboot.
func (d *Device) Crash() (lost int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	before := len(d.pending)
	kept := 0
	err = d.writeBlocksLocked(func(int64) bool {
		if d.torn && d.rng.IntN(2) == 0 {
			kept++
			return true
		}
		return false
	})
	if err != nil {
		return 0, err
	}
	if kept > 0 {
		if err := d.inner.Flush(); err != nil {
			return 0, err
		}
	}
	return before - kept, nil
}

// Size implements blockdev.Device.
func (d *Device) Size() int64 { return d.inner.Size() }

// BlockSize implements blockdev.Device.
func (d *Device) BlockSize() int { return d.bs }

// OptimalIOSize implements blockdev.Device.
func (d *Device) OptimalIOSize() int { return d.inner.OptimalIOSize() }

// NewQueue implements blockdev.Device with a blockdev.SyncQueue over the wrapper.
func (d *Device) NewQueue(depth int) (blockdev.Queue, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, blockdev.ErrClosed
	}
	return blockdev.NewSyncQueue(d, depth)
}

// Close implements blockdev.Device; unsynced writes are lost, and the inner device
// is closed.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return blockdev.ErrClosed
	}
	d.closed = true
	clear(d.pending)
	return d.inner.Close()
}
