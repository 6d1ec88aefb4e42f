package pebblevfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/fslib/pebblevfs"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

var backends = []struct {
	name string
	new  func(t *testing.T) libservices.FS
}{
	{"memfs", func(t *testing.T) libservices.FS { return memfs.New(memfs.Options{}) }},
	{"passthrough", func(t *testing.T) libservices.FS {
		f, err := passthrough.New(passthrough.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}},
}

func forEach(t *testing.T, fn func(t *testing.T, c *fslib.Client)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			c := fslib.New(b.new(t))
			t.Cleanup(func() { c.Close() })
			fn(t, c)
		})
	}
}

func numKeys() int {
	if raceEnabled {
		return 20_000
	}
	return 100_000
}

func key(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

func value(i int) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "v%d.", i), 1+i%9)
}

func open(t *testing.T, c *fslib.Client) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("store", &pebble.Options{FS: pebblevfs.New(c)})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// verify reads every key back, by iteration (order and count) and by Get.
func verify(t *testing.T, db *pebble.DB, n int) {
	t.Helper()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for it.First(); it.Valid(); it.Next() {
		if !bytes.Equal(it.Key(), key(i)) || !bytes.Equal(it.Value(), value(i)) {
			t.Fatalf("entry %d: %q = %q", i, it.Key(), it.Value())
		}
		i++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Fatalf("iterated %d keys, want %d", i, n)
	}
	for i := 0; i < n; i += 97 {
		v, closer, err := db.Get(key(i))
		if err != nil {
			t.Fatalf("Get %q: %v", key(i), err)
		}
		if !bytes.Equal(v, value(i)) {
			t.Fatalf("Get %q = %q", key(i), v)
		}
		closer.Close()
	}
}

// TestStoreRestart writes the keys without syncing, flushes, closes, reopens the
// store from its files and reads every key back.
func TestStoreRestart(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		n := numKeys()
		db := open(t, c)
		b := db.NewBatch()
		for i := range n {
			if err := b.Set(key(i), value(i), nil); err != nil {
				t.Fatal(err)
			}
			if b.Len() > 1<<20 || i == n-1 {
				if err := b.Commit(pebble.NoSync); err != nil {
					t.Fatal(err)
				}
				b = db.NewBatch()
			}
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
		if m := db.Metrics(); m.Flush.Count == 0 {
			t.Fatal("no flush happened")
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = open(t, c)
		verify(t, db, n)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		names, err := c.ReadDirNames("store")
		if err != nil {
			t.Fatal(err)
		}
		ssts := 0
		for _, name := range names {
			if len(name) > 4 && name[len(name)-4:] == ".sst" {
				ssts++
			}
		}
		if ssts == 0 {
			t.Fatalf("no sstables in %v", names)
		}
	})
}

// TestStoreWALRestart writes with pebble.Sync and closes without a flush: the
// keys are only in the write-ahead log, and reopening must replay it.
func TestStoreWALRestart(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		// One fsync per key on the passthrough backend: few keys, so that a slow
		// disk keeps the test short.
		n := numKeys() / 50
		db := open(t, c)
		for i := range n {
			if err := db.Set(key(i), value(i), pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		if m := db.Metrics(); m.Flush.Count != 0 || m.Table.ZombieCount != 0 || sstCount(m) != 0 {
			t.Fatalf("the keys reached sstables (flushes %d): the test would not exercise the WAL", m.Flush.Count)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = open(t, c)
		verify(t, db, n)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func sstCount(m *pebble.Metrics) int64 {
	var n int64
	for _, l := range m.Levels {
		n += l.TablesCount
	}
	return n
}

// TestStoreLocked: a second Open of a store that is open fails on its LOCK file,
// and leaves the open store working.
func TestStoreLocked(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		db := open(t, c)
		if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		_, err := pebble.Open("store", &pebble.Options{FS: pebblevfs.New(c)})
		if err == nil || !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("second Open: %v, want EAGAIN from the lock", err)
		}
		v, closer, err := db.Get([]byte("k"))
		if err != nil || string(v) != "v" {
			t.Fatalf("Get after refused Open: %q %v", v, err)
		}
		closer.Close()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = open(t, c)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
