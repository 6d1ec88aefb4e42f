// Package faulty wraps a blockdev.Device and injects errors by rule: which operation,
// which byte range, with what probability, how many times, with which error. The
// random choices come from a seeded generator, so a failing test replays exactly.
//
// Invariants: alignment and range errors are reported before any fault is
// considered, so a fault never hides a caller's bug; a request that gets a fault does
// not reach the inner device (no partial effects). Rules are matched in order and the
// first that fires wins. Lock order: Device.mu is taken only to pick a fault and is
// released before the inner device is called.
//
// It is a test device: it makes no performance claim and nothing measures it.
package faulty

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
)

// Rule says when to inject a fault.
type Rule struct {
	// Op is the operation it applies to; 0 means reads, writes and flushes.
	Op blockdev.Op
	// Off and End bound the byte range [Off, End) a read or write must overlap;
	// End 0 means up to the end of the device. Flushes ignore the range.
	Off, End int64
	// Probability of firing when it matches, in (0, 1].
	Probability float64
	// Count limits how often it fires; 0 means without limit.
	Count int
	// Err is the injected error; nil means unix.EIO.
	Err error
}

type rule struct {
	Rule
	fired int
}

// Device is a fault-injecting wrapper.
type Device struct {
	inner blockdev.Device

	mu       sync.Mutex
	rules    []rule
	rng      *rand.Rand
	injected int
}

var (
	_ blockdev.Device    = (*Device)(nil)
	_ blockdev.Unwrapper = (*Device)(nil)
)

// New wraps inner (which it then owns and closes) with rules, choosing with seed.
func New(inner blockdev.Device, seed uint64, rules ...Rule) (*Device, error) {
	d := &Device{inner: inner, rng: rand.New(rand.NewPCG(seed, 0xfa17))}
	for i, r := range rules {
		if !(r.Probability > 0 && r.Probability <= 1) {
			return nil, fmt.Errorf("faulty: rule %d: probability %v: want (0, 1]", i, r.Probability)
		}
		if r.Off < 0 || (r.End != 0 && r.End <= r.Off) || r.Count < 0 {
			return nil, fmt.Errorf("faulty: rule %d: bad range [%d, %d) or count %d", i, r.Off, r.End, r.Count)
		}
		switch r.Op {
		case 0, blockdev.OpRead, blockdev.OpWrite, blockdev.OpFlush:
		default:
			return nil, fmt.Errorf("faulty: rule %d: unknown %v", i, r.Op)
		}
		if r.Err == nil {
			r.Err = unix.EIO
		}
		d.rules = append(d.rules, rule{Rule: r})
	}
	return d, nil
}

// Unwrap implements blockdev.Unwrapper.
func (d *Device) Unwrap() blockdev.Device { return d.inner }

// Injected returns how many faults have been injected.
func (d *Device) Injected() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.injected
}

func (d *Device) fault(op blockdev.Op, off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.rules {
		r := &d.rules[i]
		if r.Op != 0 && r.Op != op {
			continue
		}
		if r.Count > 0 && r.fired >= r.Count {
			continue
		}
		if op != blockdev.OpFlush {
			end := r.End
			if end == 0 {
				end = d.inner.Size()
			}
			if off+n <= r.Off || off >= end {
				continue
			}
		}
		if r.Probability < 1 && d.rng.Float64() >= r.Probability {
			continue
		}
		r.fired++
		d.injected++
		return r.Err
	}
	return nil
}

// ReadAt implements blockdev.Device.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckAligned(p, off, d.inner.BlockSize()); err != nil {
		return 0, err
	}
	if err := d.fault(blockdev.OpRead, off, int64(len(p))); err != nil {
		return 0, err
	}
	return d.inner.ReadAt(p, off)
}

// WriteAt implements blockdev.Device.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckWrite(p, off, d.inner.BlockSize(), d.inner.Size()); err != nil {
		return 0, err
	}
	if err := d.fault(blockdev.OpWrite, off, int64(len(p))); err != nil {
		return 0, err
	}
	return d.inner.WriteAt(p, off)
}

// Flush implements blockdev.Device.
func (d *Device) Flush() error {
	if err := d.fault(blockdev.OpFlush, 0, 0); err != nil {
		return err
	}
	return d.inner.Flush()
}

// Size implements blockdev.Device.
func (d *Device) Size() int64 { return d.inner.Size() }

// BlockSize implements blockdev.Device.
func (d *Device) BlockSize() int { return d.inner.BlockSize() }

// OptimalIOSize implements blockdev.Device.
func (d *Device) OptimalIOSize() int { return d.inner.OptimalIOSize() }

// NewQueue implements blockdev.Device with a blockdev.SyncQueue over the wrapper, so
// queued requests see the same faults.
func (d *Device) NewQueue(depth int) (blockdev.Queue, error) {
	// Ask the inner device first so a closed device answers ErrClosed.
	q, err := d.inner.NewQueue(1)
	if err != nil {
		if errors.Is(err, blockdev.ErrClosed) {
			return nil, err
		}
	} else {
		q.Close()
	}
	return blockdev.NewSyncQueue(d, depth)
}

// Close implements blockdev.Device and closes the inner device.
func (d *Device) Close() error { return d.inner.Close() }
