// Package mem is an in-memory blockdev.Device for tests: it keeps the same alignment,
// range and close rules as a real device, so code tested against it behaves the same
// on blockdev/file.
//
// Invariants: data never changes size; after Close every call fails with
// blockdev.ErrClosed. Lock order: Device.mu is a leaf. One RWMutex covers the whole
// device: this is a test device, not a hot path.
//
// It makes no performance claim and nothing measures it.
package mem

import (
	"fmt"
	"sync"

	"github.com/polytropon/polytropon/blockdev"
)

// Device is a memory-backed block device.
type Device struct {
	blockSize int
	size      int64

	mu      sync.RWMutex
	data    []byte
	closed  bool
	flushes int
}

var _ blockdev.Device = (*Device)(nil)

// New returns a zeroed device of size bytes with the given block size.
func New(size int64, blockSize int) (*Device, error) {
	if blockSize < 512 || blockSize > 1<<16 || blockSize&(blockSize-1) != 0 {
		return nil, fmt.Errorf("mem: block size %d: want a power of two from 512 to 65536", blockSize)
	}
	if size <= 0 || size%int64(blockSize) != 0 || size > 1<<34 {
		return nil, fmt.Errorf("mem: size %d: want a positive multiple of the block size %d, at most 16 GiB", size, blockSize)
	}
	return &Device{blockSize: blockSize, size: size, data: make([]byte, size)}, nil
}

// ReadAt implements blockdev.Device.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	n, err := blockdev.ClampRead(p, off, d.blockSize, int64(len(d.data)))
	if err != nil {
		return 0, err
	}
	if n > 0 {
		copy(p[:n], d.data[off:])
	}
	return blockdev.ShortRead(n, len(p))
}

// WriteAt implements blockdev.Device.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	if err := blockdev.CheckWrite(p, off, d.blockSize, int64(len(d.data))); err != nil {
		return 0, err
	}
	return copy(d.data[off:], p), nil
}

// Flush implements blockdev.Device; memory is as durable as it gets.
func (d *Device) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return blockdev.ErrClosed
	}
	d.flushes++
	return nil
}

// Flushes returns how many times Flush succeeded.
func (d *Device) Flushes() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.flushes
}

// Size implements blockdev.Device.
func (d *Device) Size() int64 { return d.size }

// BlockSize implements blockdev.Device.
func (d *Device) BlockSize() int { return d.blockSize }

// OptimalIOSize implements blockdev.Device.
func (d *Device) OptimalIOSize() int { return max(d.blockSize, 64<<10) }

// NewQueue implements blockdev.Device with a blockdev.SyncQueue.
func (d *Device) NewQueue(depth int) (blockdev.Queue, error) {
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return nil, blockdev.ErrClosed
	}
	return blockdev.NewSyncQueue(d, depth)
}

// Close implements blockdev.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return blockdev.ErrClosed
	}
	d.closed = true
	return nil
}
