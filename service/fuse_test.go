package service_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/service"
	"github.com/polytropon/polytropon/service/fusegw"
)

// overMount is the kernel's view of a FUSE mountpoint as a libservices.FS, so that
// the conformance suite runs through the legacy path. Without passthrough's
// directory cache: every call walks the path through the kernel (and so the
// FUSE gateway) as the calling thread's identity, which the permission cases
// switch between.
func overMount(t *testing.T, mp string) libservices.FS {
	var every libservices.Duration
	p, err := passthrough.New(passthrough.Options{Dir: mp, DirRevalidate: &every})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.CloseFS() })
	return p
}

// TestConformanceFUSEService runs the suite through the service's own FUSE mount of
// its instances (kernel -> FUSE -> gateway -> stack), on the same stacks as the
// direct-path runs.
func TestConformanceFUSEService(t *testing.T) {
	testenv.FUSE(t)
	for _, c := range []struct {
		name string
		cfg  func(t *testing.T) service.Config
	}{
		{"memfs", func(t *testing.T) service.Config { return memConfig(t) }},
		{"stack", func(t *testing.T) service.Config { return stackConfig(t, "writeback") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			fstest.Run(t, func(t *testing.T) libservices.FS {
				cfg := c.cfg(t)
				mp := t.TempDir()
				cfg.Filesystems[0].FUSE = mp
				start(t, cfg)
				return overMount(t, mp)
			})
		})
	}
}

// TestConformanceFUSEUncached: a second mountpoint from fuse_mounts with the
// kernel's caches off (timeouts and page cache), parsed from YAML.
func TestConformanceFUSEUncached(t *testing.T) {
	testenv.FUSE(t)
	fstest.Run(t, func(t *testing.T) libservices.FS {
		dir := t.TempDir()
		cfg, err := service.ParseConfig([]byte(fmt.Sprintf(`
socket: %[1]s/s.sock
spin: 0
filesystems:
  - name: m
    fuse: %[1]s/cached
    fuse_mounts:
      - {path: %[1]s/uncached, attr_timeout: -1s, entry_timeout: -1s, direct_io: true}
    stack: [{memfs: {}}]
`, dir)))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"cached", "uncached"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		s := start(t, *cfg)
		if fs := s.Status().Filesystems[0].FUSE; len(fs) != 2 {
			t.Fatalf("status lists mountpoints %v", fs)
		}
		return overMount(t, filepath.Join(dir, "uncached"))
	})
}

// TestConformanceFUSEOverDirect is what `polytropon mount` does: a FUSE gateway in
// the client's process over the direct path to the service.
func TestConformanceFUSEOverDirect(t *testing.T) {
	testenv.FUSE(t)
	fstest.Run(t, func(t *testing.T) libservices.FS {
		s := start(t, memConfig(t))
		remote := dialFS(t, s, "/m")
		mp := t.TempDir()
		srv, err := fusegw.Mount(mp, remote, fusegw.Options{DirectIO: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := srv.Unmount(); err != nil {
				t.Errorf("unmount: %v", err)
			}
			// Bounded: a failed case may leave files open on the mount, which
			// keeps the lazily detached connection (and the server) alive.
			select {
			case <-srv.Done():
			case <-time.After(10 * time.Second):
				t.Errorf("FUSE server still running 10 s after unmount")
			}
		})
		return overMount(t, mp)
	})
}

// TestPebbleFUSEPath: Pebble through the service's FUSE mount with the kernel's
// own file calls (an unmodified program), including a SIGKILL of the service with
// a synced WAL; the restarted service cleans the stale mount and mounts again.
func TestPebbleFUSEPath(t *testing.T) {
	testenv.FUSE(t)
	dir := t.TempDir()
	mp := t.TempDir()
	cfgPath, _ := diskConfig(t, dir, "writeback")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw, fmt.Sprintf("    fuse: %s\n", mp)...)
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	svc := spawn(t, "service", configEnv+"="+cfgPath)
	svc.expect(t, "ready")
	dbDir := filepath.Join(mp, "db")
	open := func() *pebble.DB {
		db, err := pebble.Open(dbDir, &pebble.Options{Logger: quietLogger{}})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	n := pebbleKeys()
	db := open()
	b := db.NewBatch()
	for i := range n {
		b.Set(key(i), value(i), nil)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	verify(t, db, 0, n)
	const synced = 200
	for i := n; i < n+synced; i++ {
		if err := db.Set(key(i), value(i), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	svc.cmd.Process.Kill()
	svc.cmd.Wait()
	func() {
		defer func() { recover() }() // Pebble may panic on a dead mount; its files are gone
		_ = db.Close()
	}()
	svc2 := spawn(t, "service", configEnv+"="+cfgPath)
	svc2.expect(t, "ready")
	db = open()
	verify(t, db, 0, n+synced)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	svc2.cmd.Process.Signal(os.Interrupt)
	if err := svc2.cmd.Wait(); err != nil {
		t.Fatalf("service exit: %v\n%s", err, svc2.errb)
	}
	if mounted(t, mp) {
		t.Fatalf("%s still mounted after the service exited", mp)
	}
}

func mounted(t *testing.T, mp string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		var f [5]string
		if n, _ := fmt.Sscan(l, &f[0], &f[1], &f[2], &f[3], &f[4]); n == 5 && f[4] == mp {
			return true
		}
	}
	return false
}
