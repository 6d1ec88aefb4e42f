package blockdev_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
)

func TestCheckAligned(t *testing.T) {
	buf, err := alignedbuf.Alloc(8192)
	if err != nil {
		t.Fatal(err)
	}
	defer alignedbuf.Free(buf)
	if err := blockdev.CheckAligned(buf[:4096], 4096, 4096); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    []byte
		off  int64
		what string
	}{{buf[:4096], 512, "offset"}, {buf[:100], 0, "length"}, {buf[512 : 512+4096], 0, "buffer address"}} {
		err := blockdev.CheckAligned(c.p, c.off, 4096)
		var ae *blockdev.AlignmentError
		if !errors.As(err, &ae) || ae.What != c.what || !strings.Contains(err.Error(), "alignment 4096") || !errors.Is(err, unix.EINVAL) {
			t.Errorf("%s: %v", c.what, err)
		}
	}
	err = blockdev.CheckWrite(buf[:4096], 8192, 4096, 8192)
	var re *blockdev.RangeError
	if !errors.As(err, &re) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("write past the end: %v", err)
	}
	if n, err := blockdev.ClampRead(buf[:8192], 4096, 4096, 8192); n != 4096 || err != nil {
		t.Fatalf("ClampRead = %d, %v", n, err)
	}
	if n, err := blockdev.ShortRead(4096, 8192); n != 4096 || err != io.EOF {
		t.Fatalf("ShortRead = %d, %v", n, err)
	}
	if a := blockdev.AlignedScratch(4096); len(a) != 4096 || blockdev.CheckAligned(a, 0, 4096) != nil {
		t.Fatal("AlignedScratch is not aligned")
	}
}

func TestSyncQueueBadDepth(t *testing.T) {
	for _, d := range []int{0, -1, 1 << 20} {
		if _, err := blockdev.NewSyncQueue(nil, d); err == nil {
			t.Errorf("depth %d accepted", d)
		}
	}
}

func TestPollBounds(t *testing.T) {
	for _, tc := range []struct{ minimum, out, scratch, inflight, wait, lim int }{
		{1, 8, 32, 4, 1, 8},
		{10, 8, 32, 20, 8, 8},    // never wait for more than fits in out
		{10, 64, 32, 20, 10, 32}, // nor in the scratch space
		{10, 64, 32, 3, 3, 32},   // nor for more than are in flight
		{-5, 8, 32, 4, 0, 8},
		{0, 0, 32, 4, 0, 0},
	} {
		if w, l := blockdev.PollBounds(tc.minimum, tc.out, tc.scratch, tc.inflight); w != tc.wait || l != tc.lim {
			t.Errorf("PollBounds(%d, %d, %d, %d) = %d, %d; want %d, %d", tc.minimum, tc.out, tc.scratch, tc.inflight, w, l, tc.wait, tc.lim)
		}
	}
}
