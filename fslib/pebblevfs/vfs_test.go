package pebblevfs_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/fslib/pebblevfs"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeAll(t *testing.T, f vfs.File, data string) {
	t.Helper()
	if n, err := f.Write([]byte(data)); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
}

func readAll(t *testing.T, v vfs.FS, name string) string {
	t.Helper()
	f, err := v.Open(name, vfs.RandomReadsOption)
	must(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	must(t, err)
	return string(b)
}

func ino(t *testing.T, v vfs.FS, name string) uint64 {
	t.Helper()
	fi, err := v.Stat(name)
	must(t, err)
	return fi.Sys().(*libservices.Attr).Ino
}

// TestVFS checks the adapter against the vfs.FS contract, on each backend.
func TestVFS(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		v := pebblevfs.New(c)
		must(t, v.MkdirAll("db/sub", 0o755))
		must(t, v.MkdirAll("db/sub", 0o755))

		f, err := v.Create("db/a", vfs.WriteCategoryUnspecified)
		must(t, err)
		writeAll(t, f, "hello")
		must(t, f.Preallocate(0, 1<<16))
		must(t, f.Preallocate(0, 0))
		if full, err := f.SyncTo(5); !full || err != nil {
			t.Fatalf("SyncTo = %v, %v", full, err)
		}
		must(t, f.SyncData())
		must(t, f.Sync())
		if f.Fd() != vfs.InvalidFd {
			t.Fatal("Fd is not InvalidFd")
		}
		must(t, f.Prefetch(0, 10))
		fi, err := f.Stat()
		must(t, err)
		if fi.Size() != 5 || fi.Name() != "a" || fi.DeviceID() != (vfs.DeviceID{}) {
			t.Fatalf("Stat: size %d (preallocation must keep the size), name %q", fi.Size(), fi.Name())
		}
		if n, err := f.WriteAt([]byte("J"), 0); n != 1 || err != nil {
			t.Fatalf("WriteAt = %d, %v", n, err)
		}
		must(t, f.Close())
		if got := readAll(t, v, "db/a"); got != "Jello" {
			t.Fatalf("db/a = %q", got)
		}

		// Create over an existing file makes a new inode: a hard link to the old
		// one keeps the old contents.
		must(t, v.Link("db/a", "db/a.link"))
		old := ino(t, v, "db/a")
		f, err = v.Create("db/a", vfs.WriteCategoryUnspecified)
		must(t, err)
		writeAll(t, f, "new")
		must(t, f.Close())
		if ino(t, v, "db/a") == old || readAll(t, v, "db/a.link") != "Jello" || readAll(t, v, "db/a") != "new" {
			t.Fatal("Create reused the old inode")
		}

		// OpenReadWrite creates, and does not truncate.
		f, err = v.OpenReadWrite("db/rw", vfs.WriteCategoryUnspecified)
		must(t, err)
		writeAll(t, f, "0123456789")
		must(t, f.Close())
		f, err = v.OpenReadWrite("db/rw", vfs.WriteCategoryUnspecified)
		must(t, err)
		buf := make([]byte, 4)
		if n, err := f.ReadAt(buf, 6); n != 4 || err != nil || string(buf) != "6789" {
			t.Fatalf("ReadAt = %d %q %v", n, buf, err)
		}
		must(t, f.Close())

		// ReuseForWrite renames and keeps the contents for overwriting.
		f, err = v.ReuseForWrite("db/rw", "db/reused", vfs.WriteCategoryUnspecified)
		must(t, err)
		writeAll(t, f, "ab")
		must(t, f.Close())
		if got := readAll(t, v, "db/reused"); got != "ab23456789" {
			t.Fatalf("reused = %q", got)
		}
		if _, err := v.Stat("db/rw"); !oserror.IsNotExist(err) {
			t.Fatalf("db/rw after ReuseForWrite: %v", err)
		}

		d, err := v.OpenDir("db")
		must(t, err)
		must(t, d.Sync())
		if full, err := d.SyncTo(1); full || err != nil {
			t.Fatalf("dir SyncTo = %v, %v", full, err)
		}
		must(t, d.Close())
		if _, err := v.OpenDir("db/a"); !errors.Is(err, syscall.ENOTDIR) {
			t.Fatalf("OpenDir of a file: %v", err)
		}

		names, err := v.List("db")
		must(t, err)
		if want := []string{"a", "a.link", "reused", "sub"}; !slices.Equal(names, want) {
			t.Fatalf("List = %v, want %v", names, want)
		}
		must(t, v.Rename("db/reused", "db/a"))
		if got := readAll(t, v, "db/a"); got != "ab23456789" {
			t.Fatalf("after Rename: %q", got)
		}
		must(t, v.Remove("db/a"))
		must(t, v.Remove("db/sub"))
		if err := v.Remove("db/a"); !oserror.IsNotExist(err) {
			t.Fatalf("second Remove: %v", err)
		}
		if _, err := v.Open("db/missing"); !oserror.IsNotExist(err) {
			t.Fatalf("Open missing: %v", err)
		}

		l, err := v.Lock("db/LOCK")
		must(t, err)
		if _, err := v.Lock("db/LOCK"); err == nil || !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("second Lock: %v", err)
		}
		must(t, l.Close())
		l, err = v.Lock("db/LOCK")
		must(t, err)
		must(t, l.Close())

		du, err := v.GetDiskUsage("db")
		must(t, err)
		if du.TotalBytes == 0 || du.AvailBytes > du.TotalBytes || du.UsedBytes > du.TotalBytes {
			t.Fatalf("disk usage %+v", du)
		}
		if _, err := v.GetDiskUsage("nowhere"); !oserror.IsNotExist(err) {
			t.Fatalf("GetDiskUsage of a missing path: %v", err)
		}

		if v.PathJoin("db", "x", "y") != "db/x/y" || v.PathBase("db/x/") != "x" || v.PathDir("db/x") != "db" {
			t.Fatal("path functions")
		}
		if v.Unwrap() != nil {
			t.Fatal("Unwrap")
		}
		must(t, v.RemoveAll("db"))
		if _, err := v.Stat("db"); !oserror.IsNotExist(err) {
			t.Fatalf("db after RemoveAll: %v", err)
		}
	})
}

// limitedFS is memfs without fallocate and without fsync of directory handles:
// what a remote FS may be. Pebble must still run on it.
type limitedFS struct{ *memfs.FS }

func (l limitedFS) Fallocate(libservices.Handle, uint32, int64, int64) error {
	return syscall.EOPNOTSUPP
}

func (l limitedFS) Fsync(h libservices.Handle) error {
	var a libservices.Attr
	if err := l.Fstat(h, &a); err != nil {
		return err
	}
	if a.IsDir() {
		return syscall.EINVAL
	}
	return l.FS.Fsync(h)
}

func TestLimitedFS(t *testing.T) {
	c := fslib.New(limitedFS{memfs.New(memfs.Options{})})
	v := pebblevfs.New(c)
	must(t, v.MkdirAll("db", 0o755))
	d, err := v.OpenDir("db")
	must(t, err)
	must(t, d.Sync())
	must(t, d.SyncData())
	must(t, d.Close())
	f, err := v.Create("db/f", vfs.WriteCategoryUnspecified)
	must(t, err)
	must(t, f.Preallocate(0, 4096))
	must(t, f.Sync())
	must(t, f.Close())
	// A file's fsync error is never swallowed.
	f, err = v.Open("db/f")
	must(t, err)
	must(t, f.Close())
	if err := f.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Sync of a closed file: %v", err)
	}

	db := open(t, c)
	for i := range 1000 {
		must(t, db.Set(key(i), value(i), nil))
	}
	must(t, db.Flush())
	must(t, db.Close())
	db = open(t, c)
	verify(t, db, 1000)
	must(t, db.Close())
}

func TestFileModes(t *testing.T) {
	c := fslib.New(memfs.New(memfs.Options{}))
	v := pebblevfs.New(c)
	f, err := v.Create("f", vfs.WriteCategoryUnspecified)
	must(t, err)
	must(t, f.Close())
	fi, err := v.Stat("f")
	must(t, err)
	if fi.Mode() != 0o644 {
		t.Fatalf("created mode %v, want 0644 (0666 less the usual umask)", fi.Mode())
	}
	must(t, v.MkdirAll("d/e", 0o750))
	if fi, _ := v.Stat("d/e"); fi.Mode() != fs.ModeDir|0o750 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
}
