package cache

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

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
