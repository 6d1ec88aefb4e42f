package nvme

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
)

// ringHost drives a vqueue's ring arithmetic on the host: BAR0 and the queue's DMA
// memory are plain memory, and the test plays the controller by reading submission
// entries and writing completion entries, as the hardware would by DMA. The real
// controller is exercised by the guest tests; this pins down slot, phase, doorbell
// and PRP bookkeeping across many ring wraps.
type ringHost struct {
	t      *testing.T
	v      *VFIO
	q      *vqueue
	sqHead uint32 // controller's view
	cqTail uint32
	phase  uint32
}

const hostIOVA = 0x1_0000_0000

func newRingHost(t *testing.T, depth int) *ringHost {
	t.Helper()
	v := &VFIO{bar: make([]byte, 0x2000), bs: 512, size: 1 << 20, maxXfer: 16 << 10, nsid: 1,
		opts: VFIOOptions{CommandTimeout: time.Hour}, closedCh: make(chan struct{})}
	v.cc, v.csts = barReg(v.bar, regCC), barReg(v.bar, regCSTS)
	v.csts.store(cstsRdy)
	mem := &dmaMem{mem: make([]byte, queueBytes(depth, v.maxXfer)), iova: hostIOVA}
	return &ringHost{t: t, v: v, q: v.layoutQueue(1, depth, mem), phase: 1}
}

func (h *ringHost) sqDoorbell() uint32 { return h.q.sqDB.load() }
func (h *ringHost) cqDoorbell() uint32 { return h.q.cqDB.load() }

// fetch reads the submission entries the doorbell announced.
func (h *ringHost) fetch() []Command {
	var cs []Command
	for h.sqHead != h.sqDoorbell() {
		b := h.q.sq[int(h.sqHead)*sqeSize:]
		dw0 := binary.LittleEndian.Uint32(b)
		cs = append(cs, Command{Opcode: uint8(dw0), CID: uint16(dw0 >> 16), NSID: binary.LittleEndian.Uint32(b[4:]),
			PRP1: binary.LittleEndian.Uint64(b[24:]), PRP2: binary.LittleEndian.Uint64(b[32:]),
			CDW10: binary.LittleEndian.Uint32(b[40:]), CDW11: binary.LittleEndian.Uint32(b[44:]), CDW12: binary.LittleEndian.Uint32(b[48:])})
		h.sqHead = (h.sqHead + 1) % h.q.entries
	}
	return cs
}

// complete posts a completion entry for cid with status (SC | SCT<<8).
func (h *ringHost) complete(cid uint16, status uint16) {
	if (h.cqTail+1)%h.q.entries == h.cqDoorbell() {
		h.t.Fatal("completion queue full: the driver did not acknowledge completions")
	}
	b := h.q.cq[int(h.cqTail)*cqeSize:]
	binary.LittleEndian.PutUint32(b[8:], h.sqHead|1<<16)
	binary.LittleEndian.PutUint32(b[12:], uint32(cid)|h.phase<<16|uint32(status)<<17)
	if h.cqTail++; h.cqTail == h.q.entries {
		h.cqTail, h.phase = 0, h.phase^1
	}
}

// dma moves data as the controller would: into the PRP-described memory for a read
// (filling it with seed's pattern), out of it for a write (returned).
func (h *ringHost) dma(c Command, seed uint64) []byte {
	n := int(c.CDW12+1) * h.v.bs
	var pages []uint64
	first := pageSize - int(c.PRP1%pageSize)
	pages = append(pages, c.PRP1)
	if n > first {
		if n-first <= pageSize {
			pages = append(pages, c.PRP2)
		} else {
			list := u64s(h.at(c.PRP2, pageSize))
			for i := 0; i < (n-first+pageSize-1)/pageSize; i++ {
				pages = append(pages, list[i])
			}
		}
	}
	data := make([]byte, n)
	if c.Opcode == ioRead {
		blockdevtest.Fill(data, seed)
	}
	done := 0
	for i, p := range pages {
		l := pageSize
		if i == 0 {
			l = first
		}
		l = min(l, n-done)
		m := h.at(p, l)
		if c.Opcode == ioRead {
			copy(m, data[done:done+l])
		} else {
			copy(data[done:done+l], m)
		}
		done += l
	}
	return data
}

// at returns the queue memory at iova.
func (h *ringHost) at(iova uint64, n int) []byte {
	off := iova - h.q.mem.iova
	if iova < h.q.mem.iova || off+uint64(n) > uint64(len(h.q.mem.mem)) {
		h.t.Fatalf("DMA to IOVA %#x (+%d) outside the queue's memory", iova, n)
	}
	return h.q.mem.mem[off : off+uint64(n)]
}

func TestQueueRingWrapsAndData(t *testing.T) {
	const depth = 4
	h := newRingHost(t, depth)
	q := h.q
	bufs := blockdevtest.Buf(t, depth*h.v.maxXfer)
	out := make([]blockdev.Completion, depth)
	// 50 rounds of a full queue: the rings (5 entries) wrap 40 times, so the phase
	// flips both ways many times.
	for round := 0; round < 50; round++ {
		reqs := make([]blockdev.Request, depth)
		for i := range reqs {
			n := 512 * (1 + (round*7+i*13)%32) // 512 B .. 16 KiB: one page to PRP lists
			b := bufs[i*h.v.maxXfer : i*h.v.maxXfer+n]
			op := blockdev.OpRead
			if (round+i)%2 == 0 {
				op = blockdev.OpWrite
				blockdevtest.Fill(b, uint64(round*10+i))
			}
			reqs[i] = blockdev.Request{Op: op, Buf: b, Off: int64(round*depth+i) * 4096, Cookie: uint64(round*10 + i)}
		}
		if n, err := q.Submit(reqs); n != depth || err != nil {
			t.Fatalf("round %d: Submit = %d, %v", round, n, err)
		}
		if n, _ := q.Submit(reqs[:1]); n != 0 {
			t.Fatal("a full queue accepted another request")
		}
		cmds := h.fetch()
		if len(cmds) != depth {
			t.Fatalf("round %d: controller saw %d commands", round, len(cmds))
		}
		byCookie := map[uint64]Command{}
		for i, c := range cmds {
			r := reqs[i]
			if c.NSID != 1 || uint64(c.CDW10) != uint64(r.Off)/512 || int(c.CDW12+1)*512 != len(r.Buf) {
				t.Fatalf("round %d: command %+v for request %d bytes at %d", round, c, len(r.Buf), r.Off)
			}
			data := h.dma(c, r.Cookie)
			if r.Op == blockdev.OpWrite && !bytes.Equal(data, r.Buf) {
				t.Fatalf("round %d: the controller read other data than the write's", round)
			}
			byCookie[r.Cookie] = c
		}
		// Complete in reverse order; the driver must match by command identifier.
		for i := len(cmds) - 1; i >= 0; i-- {
			h.complete(cmds[i].CID, 0)
		}
		got := 0
		for got < depth {
			n, err := pollWithin(t, q, depth-got, out)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range out[:n] {
				r := reqs[c.Cookie%10]
				if c.Err != nil || c.N != len(r.Buf) {
					t.Fatalf("round %d: completion %+v", round, c)
				}
				if r.Op == blockdev.OpRead {
					want := make([]byte, len(r.Buf))
					blockdevtest.Fill(want, c.Cookie)
					if !bytes.Equal(r.Buf, want) {
						t.Fatalf("round %d: read %d did not get the controller's data", round, c.Cookie)
					}
				}
			}
			got += n
		}
		if q.InFlight() != 0 || h.cqDoorbell() != h.cqTail {
			t.Fatalf("round %d: in flight %d, CQ doorbell %d, controller tail %d", round, q.InFlight(), h.cqDoorbell(), h.cqTail)
		}
		q.checkAccounting()
	}
}

func TestQueueStatusAndPastEnd(t *testing.T) {
	h := newRingHost(t, 4)
	q := h.q
	buf := blockdevtest.Buf(t, 4096)
	reqs := []blockdev.Request{
		{Op: blockdev.OpRead, Buf: buf[:512], Off: 0, Cookie: 1},
		{Op: blockdev.OpRead, Buf: buf[512:1024], Off: h.v.size, Cookie: 2}, // entirely past the end
		{Op: blockdev.OpFlush, Cookie: 3},
	}
	if n, err := q.Submit(reqs); n != 3 || err != nil {
		t.Fatalf("Submit = %d, %v", n, err)
	}
	cmds := h.fetch()
	if len(cmds) != 2 || cmds[1].Opcode != ioFlush || cmds[1].PRP1 != 0 {
		t.Fatalf("controller saw %+v; the read past the end must not reach it", cmds)
	}
	h.complete(cmds[0].CID, SCLBAOutOfRange)
	h.complete(cmds[1].CID, 0)
	out := make([]blockdev.Completion, 4)
	n, err := pollWithin(t, q, 3, out)
	if err != nil || n != 3 {
		t.Fatalf("Poll = %d, %v", n, err)
	}
	for _, c := range out[:n] {
		switch c.Cookie {
		case 1:
			var se *StatusError
			if !errors.As(c.Err, &se) || !errors.Is(c.Err, unix.ENOSPC) || c.N != 0 {
				t.Fatalf("failed read: %+v", c)
			}
		case 2, 3:
			if c.Err != nil || c.N != 0 {
				t.Fatalf("completion %+v", c)
			}
		}
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: 0}}); err != nil {
		t.Fatal(err)
	}
	var tl *TransferTooLargeError
	big := blockdevtest.Buf(t, 2*h.v.maxXfer)
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: big, Off: 0}}); !errors.As(err, &tl) {
		t.Fatalf("write above the maximum transfer: %v", err)
	}
}

func TestQueueControllerFatalStatus(t *testing.T) {
	h := newRingHost(t, 4)
	q := h.q
	buf := blockdevtest.Buf(t, 4096)
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: 0, Cookie: 9}, {Op: blockdev.OpWrite, Buf: buf, Off: 4096, Cookie: 10}}); err != nil {
		t.Fatal(err)
	}
	h.fetch()
	h.v.csts.store(cstsRdy | cstsCFS) // the controller gives up without completing
	out := make([]blockdev.Completion, 4)
	n, err := pollWithin(t, q, 2, out)
	if err != nil || n != 2 || !errors.Is(out[0].Err, ErrControllerFailed) || !errors.Is(out[1].Err, unix.EIO) {
		t.Fatalf("Poll = %d, %v, %+v", n, err, out[:n])
	}
	if !h.v.Failed() {
		t.Fatal("device does not report the failure")
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: 0}}); !errors.Is(err, ErrControllerFailed) {
		t.Fatalf("Submit after the failure: %v", err)
	}
	q.checkAccounting()
}

func TestQueueDetachedFailsInFlight(t *testing.T) {
	h := newRingHost(t, 2)
	q := h.q
	buf := blockdevtest.Buf(t, 4096)
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: 0, Cookie: 4}}); err != nil {
		t.Fatal(err)
	}
	// What the unbind watcher does: mark the device gone and detach idle queues.
	h.v.gone.Store(true)
	if !q.detach() {
		t.Fatal("an idle queue refused to detach")
	}
	h.v.bar = nil // the BAR is unmapped: touching it now would fault
	out := make([]blockdev.Completion, 2)
	if n, err := pollWithin(t, q, 1, out); err != nil || n != 1 || !errors.Is(out[0].Err, ErrGone) || !errors.Is(out[0].Err, unix.ENODEV) {
		t.Fatalf("Poll after detach = %d, %v, %+v", n, err, out[0])
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: 0}}); !errors.Is(err, ErrGone) {
		t.Fatalf("Submit after detach: %v", err)
	}
}

// pollWithin is q.Poll that fails the test instead of hanging when the completions
// never come (a broken phase or doorbell would make Poll wait for ever).
func pollWithin(t *testing.T, q *vqueue, min int, out []blockdev.Completion) (int, error) {
	t.Helper()
	type res struct {
		n   int
		err error
	}
	c := make(chan res, 1)
	go func() {
		n, err := q.Poll(min, out)
		c <- res{n, err}
	}()
	select {
	case r := <-c:
		return r.n, r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("Poll(%d) has not returned after 30 s", min)
		return 0, nil
	}
}
