package cache

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/union"
)

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// contents reads name from fsys directly (below the cache).
func contents(t *testing.T, fsys libservices.FS, name string) []byte {
	t.Helper()
	h, err := fsys.Open(name, libservices.O_RDONLY, 0)
	mustOK(t, "open "+name, err)
	defer fsys.Close(h)
	buf := make([]byte, 64<<10)
	n, err := fsys.ReadAt(h, buf, 0)
	mustOK(t, "read "+name, err)
	return buf[:n]
}

func dirtyBytes(c *FS) int64 {
	var v int64 = -1
	c.Counters(func(name string, value int64) {
		if name == "cache_dirty_bytes" {
			v = value
		}
	})
	return v
}

// TestFlush: Flush writes a write-back handle's dirty pages to the inner FS and
// leaves the handle open; a read-only handle flushes nothing.
func TestFlush(t *testing.T) {
	m := memfs.New(memfs.Options{})
	c := New(m, NewStore(1<<20), wbOptions())
	if !c.HoldsBack() {
		t.Fatal("a write-back cache does not hold data back")
	}
	w, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	r, err := c.Open("f", libservices.O_RDONLY, 0)
	mustOK(t, "open rdonly", err)
	_, err = c.WriteAt(w, []byte("hello"), 0)
	mustOK(t, "write", err)
	if got := contents(t, m, "f"); bytes.Equal(got, []byte("hello")) {
		t.Fatal("the write reached the inner FS before any flush: nothing tests Flush")
	}
	mustOK(t, "flush read-only handle", c.Flush(r))
	if got := contents(t, m, "f"); bytes.Equal(got, []byte("hello")) {
		t.Fatal("Flush of a read-only handle wrote another handle's data")
	}
	mustOK(t, "flush", c.Flush(w))
	if got := contents(t, m, "f"); !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("after Flush the inner FS has %q", got)
	}
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d dirty bytes after Flush", d)
	}
	// The handle stays open.
	_, err = c.WriteAt(w, []byte(" world"), 5)
	mustOK(t, "write after flush", err)
	mustOK(t, "flush again", c.Flush(w))
	if got := contents(t, m, "f"); string(got) != "hello world" {
		t.Fatalf("after the second Flush the inner FS has %q", got)
	}
	mustOK(t, "close", c.Close(w))
	mustOK(t, "close", c.Close(r))
	if err := c.Flush(w); err != syscall.EBADF {
		t.Fatalf("Flush of a closed handle: %v, want EBADF", err)
	}
	if err := c.Flush(nil); err != syscall.EBADF {
		t.Fatalf("Flush of nil: %v, want EBADF", err)
	}

	wt := New(memfs.New(memfs.Options{}), NewStore(1<<20), Options{})
	if wt.HoldsBack() {
		t.Fatal("a write-through cache over memfs holds data back")
	}
	h, err := wt.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	mustOK(t, "write-through flush", wt.Flush(h))
	mustOK(t, "close", wt.Close(h))
}

// TestFlushThroughWrappers: a write-through cache and a union over a write-back
// cache hold data back too, and their Flush reaches it.
func TestFlushThroughWrappers(t *testing.T) {
	m := memfs.New(memfs.Options{})
	wb := New(m, NewStore(1<<20), wbOptions())
	if u := union.New(memfs.New(memfs.Options{}), memfs.New(memfs.Options{})); u.HoldsBack() {
		t.Fatal("a union of memfs branches holds data back")
	}
	for name, top := range map[string]libservices.FS{
		"writethrough": New(wb, NewStore(1<<20), Options{}),
		"union":        union.New(wb, memfs.New(memfs.Options{})),
	} {
		fl, ok := top.(libservices.Flusher)
		if !ok || !fl.HoldsBack() {
			t.Fatalf("%s over a write-back cache: Flusher %v, holds back %v", name, ok, ok && fl.HoldsBack())
		}
		h, err := top.Open(name, libservices.O_WRONLY|libservices.O_CREAT, 0o644)
		mustOK(t, name+": create", err)
		_, err = top.WriteAt(h, []byte(name), 0)
		mustOK(t, name+": write", err)
		if got := contents(t, m, name); string(got) == name {
			t.Fatalf("%s: the write reached memfs before any flush", name)
		}
		mustOK(t, name+": flush", fl.Flush(h))
		if got := contents(t, m, name); string(got) != name {
			t.Fatalf("%s: after Flush memfs has %q", name, got)
		}
		mustOK(t, name+": close", top.Close(h))
	}
}

// fill writes name on fsys (below the cache, as another writer of the store)
// until the store has room for exactly pagesLeft pages, and returns the bytes
// written.
func fill(t *testing.T, fsys libservices.FS, name string, pagesLeft uint64) int64 {
	t.Helper()
	var st libservices.Statfs
	mustOK(t, "statfs", fsys.Statfs(&st))
	if st.Bavail < pagesLeft {
		t.Fatalf("the store has %d pages free, fewer than the %d to leave", st.Bavail, pagesLeft)
	}
	h, err := fsys.Open(name, libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create "+name, err)
	defer fsys.Close(h)
	var a libservices.Attr
	mustOK(t, "fstat "+name, fsys.Fstat(h, &a))
	n := int64(st.Bavail-pagesLeft) * st.Bsize
	if _, err := fsys.WriteAt(h, make([]byte, n), a.Size); err != nil {
		t.Fatalf("fill %s: %v", name, err)
	}
	return n
}

// TestFlushError: when the inner FS refuses held-back data (another writer
// filled it after the cache reserved the space), Flush reports it and keeps
// what was not written dirty, the store's size covers only the pages it took;
// the Close that follows reports it again and drops the pages, leaving no dirty
// bytes counted.
func TestFlushError(t *testing.T) {
	m := memfs.New(memfs.Options{Size: 64 * memfs.PageSize})
	c := New(m, NewStore(1<<20), wbOptions())
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	data := bytes.Repeat([]byte("x"), 3*PageSize)
	if _, err := c.WriteAt(h, data, 0); err != nil {
		t.Fatalf("write into dirty pages: %v", err)
	}
	if d := dirtyBytes(c); d != 3*PageSize {
		t.Fatalf("%d dirty bytes after a 3-page write into an empty store, want it held back", d)
	}
	fill(t, m, "filler", 2)
	if err := c.Flush(h); err != syscall.ENOSPC {
		t.Fatalf("flush of 3 pages into 2: %v, want ENOSPC", err)
	}
	if d := dirtyBytes(c); d != PageSize {
		t.Fatalf("%d dirty bytes after a flush that wrote 2 of 3 pages, want %d", d, PageSize)
	}
	var a libservices.Attr
	mustOK(t, "fstat", c.Fstat(h, &a))
	if a.Size != int64(len(data)) {
		t.Fatalf("size %d after the failed flush, want %d", a.Size, len(data))
	}
	if got := contents(t, m, "f"); !bytes.Equal(got, data[:2*PageSize]) {
		t.Fatalf("the store has %d bytes of f after taking 2 pages, want them and no size past them", len(got))
	}
	c.checkDirtyAccounting()
	if err := c.Close(h); err != syscall.ENOSPC {
		t.Fatalf("close after the failed flush: %v, want ENOSPC", err)
	}
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d dirty bytes counted after the last close", d)
	}
	if c.dirtyInodes.Load() != 0 {
		t.Fatalf("%d dirty files counted after the last close", c.dirtyInodes.Load())
	}
	// A reader that outlives the failing writer still reads the pages that did
	// not make it, until a truncation cuts them.
	mustOK(t, "unlink filler", c.Unlink("filler"))
	w, err := c.Open("g", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create g", err)
	r, err := c.Open("g", libservices.O_RDONLY, 0)
	mustOK(t, "open g", err)
	if _, err := c.WriteAt(w, data, 0); err != nil {
		t.Fatalf("write g: %v", err)
	}
	if d := dirtyBytes(c); d != 3*PageSize {
		t.Fatalf("%d dirty bytes after writing g once space was freed, want it held back", d)
	}
	fill(t, m, "filler", 0)
	if err := c.Close(w); err != syscall.ENOSPC {
		t.Fatalf("close of g's writer: %v, want ENOSPC", err)
	}
	buf := make([]byte, len(data))
	if n, err := c.ReadAt(r, buf, 0); err != nil || n != len(data) || !bytes.Equal(buf, data) {
		t.Fatalf("read g after the failed close: %d %v", n, err)
	}
	// With no writer left to write them, truncating cuts them all the same.
	mustOK(t, "truncate g", c.Setattr("g", &libservices.SetAttr{Valid: libservices.SetSize}))
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d dirty bytes after g was truncated", d)
	}
	if n, err := c.ReadAt(r, buf, 0); err != nil || n != 0 {
		t.Fatalf("read g after the truncation: %d %v", n, err)
	}
	mustOK(t, "close g's reader", c.Close(r))
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d dirty bytes counted after the reader's close", d)
	}
	if got := contents(t, m, "g"); len(got) != 0 {
		t.Fatalf("the store has %d bytes of g, which it never took", len(got))
	}
	mustOK(t, "unlink g", c.Unlink("g"))
	mustOK(t, "unlink filler", c.Unlink("filler"))

	// The cache goes on working.
	mustOK(t, "truncate", c.Setattr("f", &libservices.SetAttr{Valid: libservices.SetSize}))
	h, err = c.Open("f", libservices.O_RDWR, 0)
	mustOK(t, "reopen", err)
	_, err = c.WriteAt(h, []byte("ok"), 0)
	mustOK(t, "write", err)
	mustOK(t, "close", c.Close(h))
	if got := contents(t, m, "f"); string(got) != "ok" {
		t.Fatalf("after reopening: %q", got)
	}
}
