package crash

import (
	"bytes"
	"testing"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
	"github.com/polytropon/polytropon/blockdev/mem"
)

const bs = 4096

func newCrash(t *testing.T, o Options) (*Device, *mem.Device) {
	t.Helper()
	inner, err := mem.New(4<<20, bs)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(inner, o)
	if err != nil {
		t.Fatal(err)
	}
	return d, inner
}

func TestConformance(t *testing.T) {
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		d, _ := newCrash(t, Options{})
		return d
	})
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		d, _ := newCrash(t, Options{Torn: true, MaxPendingBytes: 16 * bs})
		return d
	})
}

func block(t *testing.T, seed uint64) []byte {
	b := blockdevtest.Buf(t, bs)
	blockdevtest.Fill(b, seed)
	return b
}

func readBlock(t *testing.T, d blockdev.Device, blk int64) []byte {
	t.Helper()
	b := blockdevtest.Buf(t, bs)
	if _, err := d.ReadAt(b, blk*bs); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCrashLosesUnsyncedOnly(t *testing.T) {
	d, inner := newCrash(t, Options{})
	defer d.Close()
	if d.Unwrap() != inner {
		t.Fatal("Unwrap does not return the inner device")
	}
	a, b := block(t, 1), block(t, 2)
	d.WriteAt(a, 0)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.WriteAt(b, 0)     // overwrites durable block 0, unsynced
	d.WriteAt(b, 10*bs) // new unsynced block
	if !bytes.Equal(readBlock(t, d, 0), b) {
		t.Fatal("read before the crash does not see the unsynced write")
	}
	if !bytes.Equal(readBlock(t, inner, 0), a) {
		t.Fatal("unsynced write reached the inner device")
	}
	lost, err := d.Crash()
	if err != nil || lost != 2 {
		t.Fatalf("Crash = %d, %v; want 2 blocks lost", lost, err)
	}
	if !bytes.Equal(readBlock(t, d, 0), a) {
		t.Fatal("crash did not restore the durable block")
	}
	if !bytes.Equal(readBlock(t, d, 10), make([]byte, bs)) {
		t.Fatal("crash kept an unsynced block")
	}
	// A flush through a queue is durable too.
	q, _ := d.NewQueue(2)
	defer q.Close()
	d.WriteAt(b, 20*bs)
	q.Submit([]blockdev.Request{{Op: blockdev.OpFlush}})
	d.Crash()
	if !bytes.Equal(readBlock(t, d, 20), b) {
		t.Fatal("queued flush was not durable")
	}
}

func TestTornCrashIsSeededAndBlockGranular(t *testing.T) {
	run := func() []bool {
		d, _ := newCrash(t, Options{Torn: true, Seed: 99})
		defer d.Close()
		big := blockdevtest.Buf(t, 64*bs)
		blockdevtest.Fill(big, 5)
		d.WriteAt(big, 0)
		lost, err := d.Crash()
		if err != nil {
			t.Fatal(err)
		}
		var survived []bool
		n := 0
		for i := int64(0); i < 64; i++ {
			got := readBlock(t, d, i)
			s := bytes.Equal(got, big[i*bs:(i+1)*bs])
			if !s && !bytes.Equal(got, make([]byte, bs)) {
				t.Fatalf("block %d is neither old nor new: torn inside a block", i)
			}
			if s {
				n++
			}
			survived = append(survived, s)
		}
		if lost+n != 64 || n == 0 || n == 64 {
			t.Fatalf("torn crash kept %d and lost %d of 64 blocks", n, lost)
		}
		return survived
	}
	a, b := run(), run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("the same seed tore differently")
		}
	}
}

func TestPendingBound(t *testing.T) {
	d, inner := newCrash(t, Options{MaxPendingBytes: 4 * bs})
	defer d.Close()
	for i := int64(0); i < 6; i++ {
		d.WriteAt(block(t, uint64(i)), i*bs)
	}
	if d.Pending() > 4 {
		t.Fatalf("%d blocks pending over a bound of 4", d.Pending())
	}
	if !bytes.Equal(readBlock(t, inner, 0), block(t, 0)) {
		t.Fatal("overflowing the bound did not write the overlay back")
	}
	if _, err := New(inner, Options{MaxPendingBytes: 100}); err == nil {
		t.Fatal("a bound below one block was accepted")
	}
}
