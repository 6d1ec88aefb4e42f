package faulty

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
	"github.com/polytropon/polytropon/blockdev/mem"
)

const bs = 512

func newFaulty(t *testing.T, seed uint64, rules ...Rule) *Device {
	t.Helper()
	inner, err := mem.New(2<<20, bs)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(inner, seed, rules...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConformanceWithoutFaults(t *testing.T) {
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		// A rule that matches nothing the suite does (flushes limited to zero left)
		// still goes through the matching code.
		return newFaulty(t, 1, Rule{Op: blockdev.OpRead, Off: 1 << 40, Probability: 1})
	})
}

func TestRulesByOpRangeAndCount(t *testing.T) {
	errBoom := errors.New("boom")
	d := newFaulty(t, 1,
		Rule{Op: blockdev.OpWrite, Off: 4 * bs, End: 8 * bs, Probability: 1, Err: errBoom},
		Rule{Op: blockdev.OpFlush, Probability: 1, Count: 2},
	)
	defer d.Close()
	buf := blockdevtest.Buf(t, 2*bs)
	if _, err := d.WriteAt(buf, 0); err != nil {
		t.Fatalf("write outside the range: %v", err)
	}
	if _, err := d.WriteAt(buf, 3*bs); !errors.Is(err, errBoom) {
		t.Fatalf("write overlapping the range: %v", err)
	}
	if _, err := d.WriteAt(buf, 8*bs); err != nil {
		t.Fatalf("write just past the range: %v", err)
	}
	if _, err := d.ReadAt(buf, 4*bs); err != nil {
		t.Fatalf("read in a write-only rule's range: %v", err)
	}
	for i := 0; i < 3; i++ {
		err := d.Flush()
		if i < 2 && !errors.Is(err, unix.EIO) {
			t.Fatalf("flush %d: %v, want EIO", i, err)
		}
		if i == 2 && err != nil {
			t.Fatalf("flush after the count ran out: %v", err)
		}
	}
	if d.Injected() != 3 {
		t.Fatalf("Injected %d, want 3", d.Injected())
	}
	// Alignment errors win over faults.
	var ae *blockdev.AlignmentError
	if _, err := d.WriteAt(buf[1:bs+1], 4*bs); !errors.As(err, &ae) {
		t.Fatalf("misaligned write in a faulty range: %v", err)
	}
	// Queued requests see faults as completions.
	q, err := d.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: buf[:bs], Off: 5 * bs, Cookie: 7}})
	out := make([]blockdev.Completion, 1)
	if n, _ := q.Poll(1, out); n != 1 || !errors.Is(out[0].Err, errBoom) {
		t.Fatalf("queued write: %+v", out[0])
	}
}

func TestProbabilityIsSeeded(t *testing.T) {
	pattern := func(seed uint64) []bool {
		d := newFaulty(t, seed, Rule{Op: blockdev.OpRead, Probability: 0.3})
		defer d.Close()
		buf := blockdevtest.Buf(t, bs)
		var got []bool
		for i := 0; i < 200; i++ {
			_, err := d.ReadAt(buf, 0)
			got = append(got, err != nil)
		}
		return got
	}
	a, b := pattern(5), pattern(5)
	n := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed, different faults")
		}
		if a[i] {
			n++
		}
	}
	if n < 30 || n > 90 {
		t.Fatalf("%d of 200 reads failed at probability 0.3", n)
	}
}

func TestBadRules(t *testing.T) {
	inner, _ := mem.New(1<<20, bs)
	for _, r := range []Rule{{Probability: 0}, {Probability: 1.5}, {Probability: 1, Off: 10, End: 5}, {Probability: 1, Op: 9}, {Probability: 1, Count: -1}} {
		if _, err := New(inner, 1, r); err == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
}
