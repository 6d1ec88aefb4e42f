package pathfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestOS: the kernel path's FS is package os, errors included; the direct
// path's (Dial) is tested through perf/pathperf and perf/harness, which run a
// service.
func TestOS(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "a", "f")
	if err := OS.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := OS.WriteFile(name, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OS.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if n, err := f.ReadAt(b, 0); n != 5 || err != nil || string(b) != "hello" {
		t.Fatalf("ReadAt: %d %v %q", n, err, b)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		t.Fatal(err)
	}
	if fi, err := OS.Stat(name); err != nil || fi.Size() != 5 {
		t.Fatalf("Stat: %v %v", fi, err)
	}
	// A failed open is a nil File, not a typed nil *os.File.
	f, err = OS.OpenFile(filepath.Join(dir, "missing"), os.O_RDONLY, 0)
	if f != nil || !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("open of a missing file: %v, %v", f, err)
	}
	var o pebble.Options
	OS.PebbleOptions(&o)
	if o.FS != vfs.Default {
		t.Fatalf("Pebble on the kernel path uses %v", o.FS)
	}
	if err := errors.Join(OS.RemoveAll(filepath.Join(dir, "a")), OS.Mkdir(filepath.Join(dir, "a"), 0o755),
		OS.Remove(filepath.Join(dir, "a")), OS.Close()); err != nil {
		t.Fatal(err)
	}
}

func TestDialNoService(t *testing.T) {
	if f, err := Dial(filepath.Join(t.TempDir(), "none.sock")); err == nil || f != nil {
		t.Fatalf("Dial without a service: %v, %v", f, err)
	}
}
