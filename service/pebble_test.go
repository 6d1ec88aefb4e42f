package service_test

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
)

func pebbleKeys() int {
	if raceEnabled {
		return 20000
	}
	return 100000
}

func key(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

func value(i int) []byte { return bytes.Repeat(fmt.Appendf(nil, "v%d.", i), 1+i%7) }

func openDB(t *testing.T, sock string) (*pebble.DB, *fslib.Client) {
	t.Helper()
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open("/data/db", &pebble.Options{FS: pebblevfs.New(c), Logger: quietLogger{}})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return db, c
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

func verify(t *testing.T, db *pebble.DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		v, closer, err := db.Get(key(i))
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if !bytes.Equal(v, value(i)) {
			closer.Close()
			t.Fatalf("key %d: wrong value", i)
		}
		closer.Close()
	}
}

// TestPebbleDirectPath runs Pebble on the direct path against a service in another
// process: 100k keys written, closed, reopened and verified; then keys written with
// a synced WAL survive a SIGKILL of the service.
func TestPebbleDirectPath(t *testing.T) {
	dir := t.TempDir()
	cfg, sock := diskConfig(t, dir, "writeback")
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")

	n := pebbleKeys()
	db, c := openDB(t, sock)
	b := db.NewBatch()
	for i := range n {
		b.Set(key(i), value(i), nil)
		if b.Len() > 1<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			b = db.NewBatch()
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()

	db, c = openDB(t, sock)
	verify(t, db, 0, n)
	const synced = 500
	for i := n; i < n+synced; i++ {
		if err := db.Set(key(i), value(i), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	// SIGKILL with the store open: the WAL was synced through the write-back cache
	// (fsync reaches the disk below it), nothing else was promised.
	svc.cmd.Process.Kill()
	svc.cmd.Wait()
	_ = db.Close() // fails against the dead service; the handles died with it
	c.Close()

	svc2 := spawn(t, "service", configEnv+"="+cfg)
	svc2.expect(t, "ready")
	db, c = openDB(t, sock)
	defer c.Close()
	verify(t, db, 0, n+synced)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDiskUsageOverAService: Pebble asks for the free space of its directory
// (vfs.FS.GetDiskUsage); over a service dialed without a prefix that must be
// the statistics of the instance holding the directory, not an ENOENT for the
// namespace's root (Pebble logged "background error: statfs ." on every open).
func TestDiskUsageOverAService(t *testing.T) {
	dir := t.TempDir()
	cfg, sock := diskConfig(t, dir, "writeback")
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mkdir("/data/db", 0o755); err != nil {
		t.Fatal(err)
	}
	v := pebblevfs.New(c)
	du, err := v.GetDiskUsage("/data/db")
	if err != nil || du.TotalBytes == 0 || du.AvailBytes > du.TotalBytes {
		t.Fatalf("GetDiskUsage(/data/db) = %+v, %v", du, err)
	}
	var st libservices.Statfs
	if err := c.StatfsPath("/data", &st); err != nil || st.Blocks == 0 {
		t.Fatalf("StatfsPath(/data) = %+v, %v", st, err)
	}
	for _, missing := range []string{"/data/nowhere", "/elsewhere"} {
		if _, err := v.GetDiskUsage(missing); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("GetDiskUsage(%s) = %v, want ENOENT", missing, err)
		}
	}
}
