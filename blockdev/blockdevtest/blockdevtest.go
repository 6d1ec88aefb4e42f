// Package blockdevtest is the conformance suite for blockdev.Device: Run checks one
// implementation against every rule in blockdev's package doc (alignment, short
// reads, range errors, queue depth, flush, close, concurrency). Every implementation
// and wrapper runs it from its own tests.
//
// Invariants: the suite only writes inside the device and compares every read with a
// model of what it wrote, so it works on raw devices with arbitrary old contents. It
// starts goroutines only inside subtests and waits for all of them. No locks.
//
// It is a test suite: it measures nothing (the devices' benchmarks and
// `polytropon perf blockdev` do).
package blockdevtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
)

// Factory returns a fresh device of at least MinSize bytes. Run closes it.
type Factory func(t *testing.T) blockdev.Device

// MinSize is the smallest device the suite accepts.
const MinSize = 1 << 20

// Run runs the conformance suite against devices from factory.
func Run(t *testing.T, factory Factory) {
	sub := func(name string, f func(t *testing.T, d blockdev.Device)) {
		t.Run(name, func(t *testing.T) {
			d := factory(t)
			t.Cleanup(func() { d.Close() })
			if d.Size() < MinSize {
				t.Fatalf("device of %d bytes: the suite needs %d", d.Size(), MinSize)
			}
			f(t, d)
		})
	}
	sub("Geometry", testGeometry)
	sub("RoundTrip", testRoundTrip)
	sub("Misaligned", testMisaligned)
	sub("PastEnd", testPastEnd)
	sub("QueueDepth", testQueueDepth)
	sub("QueueBadRequests", testQueueBadRequests)
	sub("Flush", testFlush)
	sub("Concurrent", testConcurrent)
	sub("Closed", testClosed)
	sub("CloseUnderLoad", testCloseUnderLoad)
}

// Buf returns a page-aligned buffer of n bytes that is unmapped when t ends.
func Buf(t testing.TB, n int) []byte {
	t.Helper()
	b, err := alignedbuf.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alignedbuf.Free(b) })
	return b
}

// Fill writes a pattern derived from seed into b.
func Fill(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func testGeometry(t *testing.T, d blockdev.Device) {
	bs := d.BlockSize()
	if bs < 512 || bs > alignedbuf.PageSize || bs&(bs-1) != 0 {
		t.Fatalf("BlockSize %d: want a power of two from 512 to %d", bs, alignedbuf.PageSize)
	}
	if d.Size()%int64(bs) != 0 {
		t.Fatalf("Size %d is not a multiple of BlockSize %d", d.Size(), bs)
	}
	if o := d.OptimalIOSize(); o < bs || o%bs != 0 {
		t.Fatalf("OptimalIOSize %d is not a positive multiple of BlockSize %d", o, bs)
	}
}

// model remembers what the suite wrote, block by block.
type model struct {
	bs     int
	blocks map[int64][]byte
}

func (m *model) write(p []byte, off int64) {
	for i := 0; i < len(p); i += m.bs {
		m.blocks[(off+int64(i))/int64(m.bs)] = bytes.Clone(p[i : i+m.bs])
	}
}

func (m *model) check(t *testing.T, p []byte, off int64) {
	t.Helper()
	for i := 0; i < len(p); i += m.bs {
		b := (off + int64(i)) / int64(m.bs)
		if want, ok := m.blocks[b]; ok && !bytes.Equal(p[i:i+m.bs], want) {
			t.Fatalf("block %d (offset %d) differs from what was written", b, b*int64(m.bs))
		}
	}
}

func testRoundTrip(t *testing.T, d blockdev.Device) {
	bs := d.BlockSize()
	blocks := d.Size() / int64(bs)
	m := &model{bs: bs, blocks: map[int64][]byte{}}
	r := rand.New(rand.NewPCG(1, 2))
	buf := Buf(t, 64*bs)
	for i := 0; i < 200; i++ {
		nb := 1 + r.IntN(64)
		off := r.Int64N(blocks-int64(nb)+1) * int64(bs)
		p := buf[:nb*bs]
		if r.IntN(2) == 0 {
			Fill(p, uint64(i))
			n, err := d.WriteAt(p, off)
			if err != nil || n != len(p) {
				t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
			}
			m.write(p, off)
		} else {
			n, err := d.ReadAt(p, off)
			if err != nil || n != len(p) {
				t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
			}
			m.check(t, p, off)
		}
	}
	// Read every written block back once more.
	one := buf[:bs]
	for b := range m.blocks {
		if _, err := d.ReadAt(one, b*int64(bs)); err != nil {
			t.Fatal(err)
		}
		m.check(t, one, b*int64(bs))
	}
}

func wantAlignment(t *testing.T, err error, bs int, what string) {
	t.Helper()
	var ae *blockdev.AlignmentError
	if !errors.As(err, &ae) {
		t.Fatalf("%s: got %v, want a *blockdev.AlignmentError", what, err)
	}
	if ae.Align != bs || !strings.Contains(err.Error(), fmt.Sprint(bs)) {
		t.Fatalf("%s: %q does not name the alignment %d", what, err, bs)
	}
}

func testMisaligned(t *testing.T, d blockdev.Device) {
	bs := d.BlockSize()
	buf := Buf(t, 4*bs)
	for _, c := range []struct {
		name string
		p    []byte
		off  int64
	}{
		{"offset", buf[:bs], 1},
		{"offset half block", buf[:bs], int64(bs / 2)},
		{"length", buf[:bs+1], 0},
		{"short length", buf[:bs/2], 0},
		{"buffer address", buf[1 : 1+bs], 0},
		{"buffer address half block", buf[bs/2 : bs/2+bs], 0},
		{"negative offset", buf[:bs], -int64(bs)},
	} {
		_, err := d.ReadAt(c.p, c.off)
		wantAlignment(t, err, bs, "ReadAt "+c.name)
		_, err = d.WriteAt(c.p, c.off)
		wantAlignment(t, err, bs, "WriteAt "+c.name)
	}
	q, err := d.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	n, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf[:bs], Off: 0, Cookie: 1}, {Op: blockdev.OpWrite, Buf: buf[1 : 1+bs], Off: 0, Cookie: 2}})
	if n != 1 {
		t.Fatalf("Submit accepted %d, want 1 before the misaligned request", n)
	}
	wantAlignment(t, err, bs, "Submit")
	drain(t, q, 1)
}

func drain(t *testing.T, q blockdev.Queue, want int) []blockdev.Completion {
	t.Helper()
	out := make([]blockdev.Completion, q.Depth())
	var all []blockdev.Completion
	for len(all) < want {
		n, err := q.Poll(1, out)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("Poll returned nothing with %d completions outstanding", want-len(all))
		}
		all = append(all, out[:n]...)
	}
	if q.InFlight() != 0 {
		t.Fatalf("InFlight %d after draining", q.InFlight())
	}
	return all
}

func testPastEnd(t *testing.T, d blockdev.Device) {
	bs := d.BlockSize()
	size := d.Size()
	buf := Buf(t, 4*bs)
	Fill(buf[:2*bs], 7)
	if _, err := d.WriteAt(buf[:2*bs], size-int64(2*bs)); err != nil {
		t.Fatal(err)
	}
	p := buf[2*bs : 4*bs]
	n, err := d.ReadAt(p, size-int64(bs))
	if n != bs || err != io.EOF {
		t.Fatalf("ReadAt over the end = %d, %v; want %d, io.EOF", n, err, bs)
	}
	if !bytes.Equal(p[:bs], buf[bs:2*bs]) {
		t.Fatal("short read returned wrong data")
	}
	if n, err := d.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := d.ReadAt(p, size+int64(8*bs)); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past the end = %d, %v; want 0, io.EOF", n, err)
	}
	var re *blockdev.RangeError
	if n, err := d.WriteAt(buf[:2*bs], size-int64(bs)); n != 0 || !errors.As(err, &re) {
		t.Fatalf("WriteAt over the end = %d, %v; want 0, *RangeError", n, err)
	}
	if _, err := d.WriteAt(buf[:bs], size); !errors.As(err, &re) {
		t.Fatalf("WriteAt at the end = %v; want *RangeError", err)
	}
	// The refused write must not have touched the last block.
	if _, err := d.ReadAt(p[:bs], size-int64(bs)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p[:bs], buf[bs:2*bs]) {
		t.Fatal("refused write changed the last block")
	}
	q, err := d.NewQueue(2)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: p, Off: size - int64(bs), Cookie: 5}}); err != nil {
		t.Fatal(err)
	}
	c := drain(t, q, 1)[0]
	if c.Cookie != 5 || c.N != bs || c.Err != nil {
		t.Fatalf("queued read over the end: %+v, want %d bytes and no error", c, bs)
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: p, Off: size - int64(bs), Cookie: 6}}); !errors.As(err, &re) {
		t.Fatalf("queued write over the end: %v, want *RangeError", err)
	}
}

func testQueueDepth(t *testing.T, d blockdev.Device) {
	const depth = 32
	bs := d.BlockSize()
	blocks := d.Size() / int64(bs)
	total := min(512, int(blocks/2))
	q, err := d.NewQueue(depth)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Depth() != depth {
		t.Fatalf("Depth %d, want %d", q.Depth(), depth)
	}
	bufs := Buf(t, depth*2*bs)
	slot := func(i int) []byte { return bufs[i*2*bs : (i+1)*2*bs] }
	// Phase 1: write total distinct 2-block extents through the queue.
	offs := rand.New(rand.NewPCG(3, 4)).Perm(int(blocks / 2))[:total]
	run := func(op blockdev.Op) {
		free := make([]int, 0, depth)
		for i := depth - 1; i >= 0; i-- {
			free = append(free, i)
		}
		inBuf := make(map[uint64]int) // cookie -> slot
		out := make([]blockdev.Completion, depth)
		next, done := 0, 0
		reqs := make([]blockdev.Request, 0, depth)
		for done < total {
			reqs = reqs[:0]
			for next+len(reqs) < total && len(free) > len(reqs) {
				i := next + len(reqs)
				s := free[len(free)-1-len(reqs)]
				if op == blockdev.OpWrite {
					Fill(slot(s), uint64(i))
				}
				reqs = append(reqs, blockdev.Request{Op: op, Buf: slot(s), Off: int64(offs[i]) * int64(2*bs), Cookie: uint64(i)})
			}
			n, err := q.Submit(reqs)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k < n; k++ {
				inBuf[reqs[k].Cookie] = free[len(free)-1]
				free = free[:len(free)-1]
			}
			next += n
			if q.InFlight() > depth {
				t.Fatalf("InFlight %d over depth %d", q.InFlight(), depth)
			}
			m, err := q.Poll(1, out)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range out[:m] {
				s, ok := inBuf[c.Cookie]
				if !ok {
					t.Fatalf("completion for unknown or repeated cookie %d", c.Cookie)
				}
				delete(inBuf, c.Cookie)
				if c.Err != nil || c.N != 2*bs {
					t.Fatalf("%v cookie %d: %d, %v", op, c.Cookie, c.N, c.Err)
				}
				if op == blockdev.OpRead {
					want := make([]byte, 2*bs)
					Fill(want, c.Cookie)
					if !bytes.Equal(slot(s), want) {
						t.Fatalf("queued read of cookie %d returned other data", c.Cookie)
					}
				}
				free = append(free, s)
			}
			done += m
		}
	}
	run(blockdev.OpWrite)
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpFlush, Cookie: 99}}); err != nil {
		t.Fatal(err)
	}
	if c := drain(t, q, 1)[0]; c.Cookie != 99 || c.Err != nil {
		t.Fatalf("queued flush: %+v", c)
	}
	run(blockdev.OpRead)
	// A full queue accepts nothing more.
	reqs := make([]blockdev.Request, depth+5)
	for i := range reqs {
		reqs[i] = blockdev.Request{Op: blockdev.OpRead, Buf: bufs[:bs], Off: 0, Cookie: uint64(i)}
	}
	n, err := q.Submit(reqs)
	if err != nil || n > depth {
		t.Fatalf("Submit of %d to an empty queue of %d = %d, %v", len(reqs), depth, n, err)
	}
	drain(t, q, n)
}

func testQueueBadRequests(t *testing.T, d blockdev.Device) {
	if _, err := d.NewQueue(0); err == nil {
		t.Fatal("NewQueue(0) succeeded")
	}
	if _, err := d.NewQueue(-3); err == nil {
		t.Fatal("NewQueue(-3) succeeded")
	}
	q, err := d.NewQueue(2)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := q.Submit([]blockdev.Request{{Op: 77}}); n != 0 || err == nil {
		t.Fatalf("Submit of an unknown op = %d, %v", n, err)
	}
	if n, err := q.Poll(5, make([]blockdev.Completion, 2)); n != 0 || err != nil {
		t.Fatalf("Poll on an empty queue = %d, %v; want 0 without blocking", n, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err == nil {
		t.Fatal("second queue Close succeeded")
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpFlush}}); !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("Submit on a closed queue: %v", err)
	}
}

func testFlush(t *testing.T, d blockdev.Device) {
	buf := Buf(t, d.BlockSize())
	Fill(buf, 11)
	if _, err := d.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
}

// testConcurrent runs goroutines that each own a queue and a disjoint region and mix
// synchronous and queued I/O; run it under -race.
func testConcurrent(t *testing.T, d blockdev.Device) {
	const workers = 4
	bs := d.BlockSize()
	region := d.Size() / workers / int64(bs) * int64(bs)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- worker(d, w, int64(w)*region, region/int64(bs))
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func worker(d blockdev.Device, w int, base, blocks int64) error {
	bs := d.BlockSize()
	q, err := d.NewQueue(8)
	if err != nil {
		return err
	}
	defer q.Close()
	buf, err := alignedbuf.Alloc(16 * bs)
	if err != nil {
		return err
	}
	defer alignedbuf.Free(buf)
	r := rand.New(rand.NewPCG(uint64(w), 5))
	out := make([]blockdev.Completion, 8)
	for i := 0; i < 50; i++ {
		off := base + r.Int64N(blocks-8)*int64(bs)
		wb, rb := buf[:8*bs], buf[8*bs:]
		Fill(wb, uint64(w*1000+i))
		if i%2 == 0 {
			if _, err := d.WriteAt(wb, off); err != nil {
				return err
			}
		} else {
			if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: wb, Off: off}}); err != nil {
				return err
			}
			if n, err := q.Poll(1, out); err != nil || n != 1 || out[0].Err != nil {
				return fmt.Errorf("worker %d: queued write: %d, %v, %+v", w, n, err, out[0])
			}
		}
		if _, err := d.ReadAt(rb, off); err != nil {
			return err
		}
		if !bytes.Equal(rb, wb) {
			return fmt.Errorf("worker %d: read back differs at %d", w, off)
		}
	}
	return nil
}

func testClosed(t *testing.T, d blockdev.Device) {
	bs := d.BlockSize()
	buf := Buf(t, bs)
	q, err := d.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: buf, Off: 0, Cookie: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// The request submitted before Close still completes (with or without error).
	out := make([]blockdev.Completion, 4)
	got := 0
	for q.InFlight() > 0 {
		n, err := q.Poll(1, out)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if got != 1 {
		t.Fatalf("%d completions after Close, want 1", got)
	}
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: 0}}); !errors.Is(err, blockdev.ErrClosed) {
		if err == nil {
			n, _ := q.Poll(1, out)
			if n != 1 || !errors.Is(out[0].Err, blockdev.ErrClosed) {
				t.Fatalf("queued read after Close: %+v, want ErrClosed", out[0])
			}
		} else {
			t.Fatalf("Submit after Close: %v, want ErrClosed", err)
		}
	}
	q.Close()
	for name, err := range map[string]error{
		"ReadAt":  second(d.ReadAt(buf, 0)),
		"WriteAt": second(d.WriteAt(buf, 0)),
		"Flush":   d.Flush(),
		"NewQueue": func() error {
			_, err := d.NewQueue(1)
			return err
		}(),
		"Close": d.Close(),
	} {
		if !errors.Is(err, blockdev.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func second(_ int, err error) error { return err }

// testCloseUnderLoad closes the device while goroutines hammer it; all of them must
// see errors and stop, none may hang.
func testCloseUnderLoad(t *testing.T, d blockdev.Device) {
	const workers = 3
	bs := d.BlockSize()
	var wg sync.WaitGroup
	started := make(chan struct{}, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf, err := alignedbuf.Alloc(8 * bs)
			if err != nil {
				return
			}
			defer alignedbuf.Free(buf)
			q, err := d.NewQueue(8)
			if err != nil {
				started <- struct{}{}
				return
			}
			defer q.Close()
			out := make([]blockdev.Completion, 8)
			reqs := make([]blockdev.Request, 8)
			for i := range reqs {
				reqs[i] = blockdev.Request{Op: blockdev.OpRead, Buf: buf[i*bs : (i+1)*bs], Off: int64(i*bs) + int64(w)*8*int64(bs)}
				if w == 1 {
					reqs[i].Op = blockdev.OpWrite
				}
			}
			started <- struct{}{}
			for i := 0; ; i++ {
				if w == 2 {
					if _, err := d.ReadAt(buf[:bs], 0); err != nil {
						return
					}
					continue
				}
				if _, err := q.Submit(reqs[:8-q.InFlight()]); err != nil {
					for q.InFlight() > 0 {
						if _, err := q.Poll(1, out); err != nil {
							return
						}
					}
					return
				}
				if _, err := q.Poll(1, out); err != nil {
					return
				}
			}
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-started
	}
	time.Sleep(10 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("I/O goroutines still running 30 s after Close: something hangs")
	}
}
