package cache

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

// TestCrashWriteThrough writes random data through the cache, then "crashes": the
// cache is abandoned without Close or any flush, and the backing FS is read
// directly. A write-through cache promises more than fsync does: every write
// acknowledged before the crash is in the backing FS, fsynced or not.
func TestCrashWriteThrough(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			backing := memfs.New(memfs.Options{})
			c := New(backing, NewStore(0), Options{})
			model := map[string][]byte{}
			handles := map[string]libservices.Handle{}
			for i := 0; i < 300; i++ {
				name := fmt.Sprintf("f%d", rng.Intn(4))
				h := handles[name]
				if h == nil {
					var err error
					h, err = c.Open(name, libservices.O_RDWR|libservices.O_CREAT, 0o644)
					if err != nil {
						t.Fatal(err)
					}
					handles[name] = h
				}
				switch rng.Intn(10) {
				case 0:
					size := int64(rng.Intn(20000))
					if err := c.Ftruncate(h, size); err != nil {
						t.Fatal(err)
					}
					m := model[name]
					if int64(len(m)) > size {
						m = m[:size]
					}
					model[name] = append(m, make([]byte, size-int64(len(m)))...)
				case 1:
					c.Fsync(h)
				case 2:
					// Reads fill the cache, so that later writes update cached pages.
					c.ReadAt(h, make([]byte, 20000), 0)
				default:
					off := rng.Intn(16000)
					data := make([]byte, 1+rng.Intn(6000))
					rng.Read(data)
					if n, err := c.WriteAt(h, data, int64(off)); err != nil || n != len(data) {
						t.Fatal(n, err)
					}
					m := model[name]
					if len(m) < off+len(data) {
						m = append(m, make([]byte, off+len(data)-len(m))...)
					}
					copy(m[off:], data)
					model[name] = m
				}
			}
			// Crash: c and its handles are dropped; only backing remains.
			for name, want := range model {
				h, err := backing.Open(name, libservices.O_RDONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want)+1)
				n, _ := backing.ReadAt(h, got, 0)
				backing.Close(h)
				if !bytes.Equal(got[:n], want) {
					t.Fatalf("%s: backing has %d bytes that differ from the %d acknowledged", name, n, len(want))
				}
			}
		})
	}
}

// TestCrashWriteBack: with write-back, exactly what fsync (or a flush that the
// cache must do: truncate, close) promised survives a crash, and nothing written
// since reaches the backing FS, not even the file size of an extending write: a
// size in the store never covers data the store does not have.
func TestCrashWriteBack(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			backing := memfs.New(memfs.Options{})
			c := New(backing, NewStore(0), Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 1 << 30})
			current := map[string][]byte{}
			synced := map[string][]byte{}
			handles := map[string]libservices.Handle{}
			for i := 0; i < 300; i++ {
				name := fmt.Sprintf("f%d", rng.Intn(3))
				h := handles[name]
				if h == nil {
					var err error
					h, err = c.Open(name, libservices.O_RDWR|libservices.O_CREAT, 0o644)
					if err != nil {
						t.Fatal(err)
					}
					handles[name] = h
				}
				switch rng.Intn(12) {
				case 0:
					size := int64(rng.Intn(20000))
					if err := c.Ftruncate(h, size); err != nil {
						t.Fatal(err)
					}
					m := current[name]
					if int64(len(m)) > size {
						m = m[:size]
					}
					current[name] = append(m, make([]byte, size-int64(len(m)))...)
					synced[name] = bytes.Clone(current[name])
				case 1, 2:
					if err := c.Fsync(h); err != nil {
						t.Fatal(err)
					}
					synced[name] = bytes.Clone(current[name])
				case 3:
					got := make([]byte, 30000)
					n, err := c.ReadAt(h, got, 0)
					if err != nil || !bytes.Equal(got[:n], current[name]) {
						t.Fatalf("read through the cache: %d bytes, %v", n, err)
					}
				default:
					off := rng.Intn(16000)
					data := make([]byte, 1+rng.Intn(6000))
					rng.Read(data)
					if n, err := c.WriteAt(h, data, int64(off)); err != nil || n != len(data) {
						t.Fatal(n, err)
					}
					m := current[name]
					if len(m) < off+len(data) {
						m = append(m, make([]byte, off+len(data)-len(m))...)
					}
					copy(m[off:], data)
					current[name] = m
				}
			}
			// Crash: the cache and its handles are abandoned, nothing is flushed.
			for name, cur := range current {
				want := synced[name]
				h, err := backing.Open(name, libservices.O_RDONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(cur)+1)
				n, _ := backing.ReadAt(h, got, 0)
				backing.Close(h)
				got = got[:n]
				if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
					t.Fatalf("%s: the fsynced %d bytes did not survive (backing has %d)", name, len(want), len(got))
				}
				if len(got) != len(want) {
					t.Fatalf("%s: the backing FS has %d bytes, %d synced: unsynced data or size reached it without a flush", name, len(got), len(want))
				}
			}
		})
	}
}

// TestWriteBackFlushTriggers: the dirty limit and the interval flusher write
// dirty pages without fsync, and CloseFS stops the flusher after flushing.
func TestWriteBackFlushTriggers(t *testing.T) {
	backing := memfs.New(memfs.Options{})
	c := New(backing, NewStore(1<<20), Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 4 * PageSize})
	h, _ := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	data := bytes.Repeat([]byte{9}, 8*PageSize)
	c.WriteAt(h, data, 0)
	if got := backingBytes(t, backing, "f"); !bytes.Equal(got, data) {
		t.Fatal("writing past the dirty limit did not flush")
	}

	c2 := New(backing, NewStore(1<<20), Options{Policy: "writeback", FlushInterval: time.Millisecond, DirtyLimit: 1 << 30})
	h2, _ := c2.Open("g", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	c2.WriteAt(h2, []byte("interval"), 0)
	// Liveness, not timing: wait (bounded) until the flusher has run.
	for i := 0; i < 2000 && string(backingBytes(t, backing, "g")) != "interval"; i++ {
		time.Sleep(time.Millisecond)
	}
	if string(backingBytes(t, backing, "g")) != "interval" {
		t.Fatal("the interval flusher never flushed")
	}
	c2.WriteAt(h2, []byte("INTERVAL"), 0)
	if err := c2.CloseFS(); err != nil {
		t.Fatal(err)
	}
	if string(backingBytes(t, backing, "g")) != "INTERVAL" {
		t.Fatal("CloseFS did not flush")
	}
	c.Close(h)
}

func backingBytes(t *testing.T, fs libservices.FS, name string) []byte {
	t.Helper()
	h, err := fs.Open(name, libservices.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close(h)
	buf := make([]byte, 1<<20)
	n, _ := fs.ReadAt(h, buf, 0)
	return buf[:n]
}
