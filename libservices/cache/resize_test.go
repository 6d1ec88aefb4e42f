package cache

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

// mappedPages counts the pages the store's index maps.
func mappedPages(s *Store) int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.RLock()
		n += len(s.shards[i].m)
		s.shards[i].mu.RUnlock()
	}
	return n
}

func TestResizeStepByStep(t *testing.T) {
	inner := &countingFS{FS: memfs.New(memfs.Options{})}
	st := NewResizableStore(32*PageSize, 64*PageSize)
	c := New(inner, st, Options{})
	if st.Size() != 32*PageSize || st.MaxSize() != 64*PageSize {
		t.Fatalf("size %d max %d", st.Size(), st.MaxSize())
	}
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 64*PageSize/16)
	if _, err := c.WriteAt(h, data, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64*PageSize)
	readAll := func() {
		t.Helper()
		if n, err := c.ReadAt(h, buf, 0); err != nil || n != len(buf) || !bytes.Equal(buf, data) {
			t.Fatalf("read %d %v, equal %v", n, err, bytes.Equal(buf, data))
		}
	}
	readAll()
	if got := mappedPages(st); got != 32 {
		t.Fatalf("32-page budget maps %d pages", got)
	}
	// Grow: 64 pages fit, so a second pass reads nothing from the inner FS after
	// the first one filled the store.
	if got := st.Resize(1 << 30); got != 64*PageSize {
		t.Fatalf("Resize past the maximum set %d, want %d", got, 64*PageSize)
	}
	readAll()
	before := inner.reads
	readAll()
	if inner.reads != before || mappedPages(st) != 64 {
		t.Fatalf("after growing: %d inner reads on a cached pass, %d pages mapped", inner.reads-before, mappedPages(st))
	}
	// Shrink: evicted at once, and what is left is still right.
	if got := st.Resize(20 * PageSize); got != 20*PageSize {
		t.Fatalf("Resize(20 pages) set %d", got)
	}
	if got := mappedPages(st); got != 20 {
		t.Fatalf("after shrinking to 20 pages, %d mapped", got)
	}
	st.checkInvariants()
	readAll()
	if got := mappedPages(st); got != 20 {
		t.Fatalf("reading after the shrink maps %d pages, budget 20", got)
	}
	if got := st.Resize(0); got != 16*PageSize {
		t.Fatalf("Resize(0) set %d, want the 16-page floor", got)
	}
	if got := c.CacheSize(); got != 16*PageSize {
		t.Fatalf("CacheSize %d", got)
	}
	c.Close(h)
}

// TestResizeUnderLoad resizes the store up and down while readers and writers
// hammer it (run with -race; -tags invariants checks the store after each resize).
func TestResizeUnderLoad(t *testing.T) {
	st := NewResizableStore(16*PageSize, 256*PageSize)
	c := New(memfs.New(memfs.Options{}), st, Options{})
	const files, pages = 4, 64
	for i := 0; i < files; i++ {
		h, err := c.Open(fmt.Sprintf("f%d", i), libservices.O_RDWR|libservices.O_CREAT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		c.WriteAt(h, bytes.Repeat([]byte{byte(i)}, pages*PageSize), 0)
		c.Close(h)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("f%d", w)
			h, err := c.Open(name, libservices.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(h)
			buf := make([]byte, PageSize)
			for n := 0; !stop.Load(); n++ {
				off := int64(n*7%pages) * PageSize
				if n%5 == 0 {
					// Rewrite the page with the same byte: readers must never see
					// anything else, whatever the store evicts meanwhile.
					if _, err := c.WriteAt(h, bytes.Repeat([]byte{byte(w)}, PageSize), off); err != nil {
						errs <- err
						return
					}
					continue
				}
				if _, err := c.ReadAt(h, buf, off); err != nil {
					errs <- err
					return
				}
				for _, b := range buf {
					if b != byte(w) {
						errs <- fmt.Errorf("%s at %d: read byte %d, want %d", name, off, b, w)
						return
					}
				}
			}
		}()
	}
	sizes := []int64{16, 200, 32, 256, 17, 100, 64}
	for i := 0; i < 300; i++ {
		st.Resize(sizes[i%len(sizes)] * PageSize)
		st.checkInvariants()
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st.Resize(16 * PageSize)
	if got := mappedPages(st); got > 16 {
		t.Fatalf("quiet store at a 16-page budget maps %d pages", got)
	}
}

func TestMaxSizeValidate(t *testing.T) {
	for _, o := range []Options{{Size: 1 << 20, MaxSize: 1 << 19}, {MaxSize: -1}, {MaxSize: MaxStoreSize + 1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
	if err := (&Options{Size: 1 << 20, MaxSize: 1 << 22}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestResizeWithPinnedPages: pages being filled while the store shrinks stay
// (they are pinned), and go at the next insert once unpinned: the store does
// not stay over its budget for good.
func TestResizeWithPinnedPages(t *testing.T) {
	inner := memfs.New(memfs.Options{})
	st := NewResizableStore(32*PageSize, 32*PageSize)
	c := New(inner, st, Options{})
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(h)
	data := bytes.Repeat([]byte("x"), 64*PageSize)
	if _, err := c.WriteAt(h, data, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32*PageSize)
	if _, err := c.ReadAt(h, buf, 0); err != nil {
		t.Fatal(err)
	}
	if got := mappedPages(st); got != 32 {
		t.Fatalf("%d pages mapped, want 32", got)
	}
	// Pin every page, as fills in flight would be, then shrink.
	st.allocMu.Lock()
	for i := range st.policy.used {
		if st.policy.used[i] {
			st.policy.Pin(int32(i))
		}
	}
	st.allocMu.Unlock()
	st.Resize(16 * PageSize)
	if got := mappedPages(st); got != 32 {
		t.Fatalf("shrinking evicted pinned pages: %d mapped", got)
	}
	st.allocMu.Lock()
	for i := range st.policy.used {
		st.policy.Unpin(int32(i))
	}
	st.allocMu.Unlock()
	// One more miss: the insert brings the store back within its budget.
	if _, err := c.ReadAt(h, buf[:PageSize], 40*PageSize); err != nil {
		t.Fatal(err)
	}
	if got := mappedPages(st); got > 16 {
		t.Fatalf("after the fills ended and a new page came in, %d pages mapped over a 16-page budget", got)
	}
	st.checkInvariants()
}
