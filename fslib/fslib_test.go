package fslib_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// backends are the FSes every test runs over: memory, and the host kernel through
// passthrough (the reference the conformance suite trusts).
var backends = []struct {
	name string
	new  func(t testing.TB) libservices.FS
}{
	{"memfs", func(t testing.TB) libservices.FS { return memfs.New(memfs.Options{}) }},
	{"passthrough", newPassthrough},
}

func newPassthrough(t testing.TB) libservices.FS {
	f, err := passthrough.New(passthrough.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return f
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantPathErr checks that err is a *fs.PathError with exactly op, path and errno.
func wantPathErr(t *testing.T, err error, op, path string, errno syscall.Errno) {
	t.Helper()
	var pe *fs.PathError
	if !errors.As(err, &pe) || error(pe) != err {
		t.Fatalf("got %T %v, want *fs.PathError{%s %s %v}", err, err, op, path, errno)
	}
	if pe.Op != op || pe.Path != path {
		t.Fatalf("got PathError{Op: %q, Path: %q}, want {%q, %q} (%v)", pe.Op, pe.Path, op, path, err)
	}
	if e, ok := pe.Err.(syscall.Errno); !ok || e != errno {
		t.Fatalf("%v: Err is %T %v, want syscall.Errno %v", err, pe.Err, pe.Err, errno)
	}
}

func wantLinkErr(t *testing.T, err error, op, old, new string, errno syscall.Errno) {
	t.Helper()
	le, ok := err.(*os.LinkError)
	if !ok {
		t.Fatalf("got %T %v, want *os.LinkError{%s %s %s %v}", err, err, op, old, new, errno)
	}
	if le.Op != op || le.Old != old || le.New != new {
		t.Fatalf("got LinkError{%q %q %q}, want {%q %q %q}", le.Op, le.Old, le.New, op, old, new)
	}
	if e, ok := le.Err.(syscall.Errno); !ok || e != errno {
		t.Fatalf("%v: Err is %T %v, want syscall.Errno %v", err, le.Err, le.Err, errno)
	}
}

func wantClosed(t *testing.T, err error, op, path string) {
	t.Helper()
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != op || pe.Path != path || pe.Err != os.ErrClosed {
		t.Fatalf("got %T %v, want PathError{%s %s os.ErrClosed}", err, err, op, path)
	}
}

// tree makes: d/ (with d/f), file "f" holding "hello", empty dir "e", symlink "l"
// -> "f".
func tree(t *testing.T, c *fslib.Client) {
	t.Helper()
	must(t, c.Mkdir("d", 0o755))
	must(t, c.WriteFile("d/f", []byte("x"), 0o644))
	must(t, c.WriteFile("f", []byte("hello"), 0o644))
	must(t, c.Mkdir("e", 0o700))
	must(t, c.Symlink("f", "l"))
}

func TestErrors(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		tree(t, c)
		_, err := c.Stat("missing")
		wantPathErr(t, err, "stat", "missing", syscall.ENOENT)
		if !errors.Is(err, fs.ErrNotExist) || !os.IsNotExist(err) {
			t.Fatalf("%v is not fs.ErrNotExist", err)
		}
		_, err = c.Lstat("f/x")
		wantPathErr(t, err, "lstat", "f/x", syscall.ENOTDIR)
		_, err = c.Stat("d/../f")
		wantPathErr(t, err, "stat", "d/../f", syscall.EINVAL)

		err = c.Mkdir("d", 0o755)
		wantPathErr(t, err, "mkdir", "d", syscall.EEXIST)
		if !errors.Is(err, fs.ErrExist) {
			t.Fatalf("%v is not fs.ErrExist", err)
		}
		wantPathErr(t, c.Mkdir("f/x", 0o755), "mkdir", "f/x", syscall.ENOTDIR)
		wantPathErr(t, c.Mkdir("missing/x", 0o755), "mkdir", "missing/x", syscall.ENOENT)
		wantPathErr(t, c.MkdirAll("f/x/y", 0o755), "mkdir", "f", syscall.ENOTDIR)
		wantPathErr(t, c.MkdirAll("f", 0o755), "mkdir", "f", syscall.ENOTDIR)

		wantPathErr(t, c.Remove("missing"), "remove", "missing", syscall.ENOENT)
		wantPathErr(t, c.Remove("d"), "remove", "d", syscall.ENOTEMPTY)
		wantPathErr(t, c.Remove("f/x"), "remove", "f/x", syscall.ENOTDIR)
		wantPathErr(t, c.RemoveAll("."), "RemoveAll", ".", syscall.EINVAL)
		wantPathErr(t, c.RemoveAll("/"), "RemoveAll", "/", syscall.EINVAL)
		wantPathErr(t, c.RemoveAll("d/."), "RemoveAll", "d/.", syscall.EINVAL)

		_, err = c.OpenFile("d", os.O_WRONLY, 0)
		wantPathErr(t, err, "open", "d", syscall.EISDIR)
		_, err = c.OpenFile("f", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		wantPathErr(t, err, "open", "f", syscall.EEXIST)
		_, err = c.Open("missing")
		wantPathErr(t, err, "open", "missing", syscall.ENOENT)
		_, err = c.Open("")
		wantPathErr(t, err, "open", "", syscall.ENOENT)
		_, err = c.Open("a\x00b")
		wantPathErr(t, err, "open", "a\x00b", syscall.EINVAL)

		wantLinkErr(t, c.Rename("missing", "x"), "rename", "missing", "x", syscall.ENOENT)
		wantLinkErr(t, c.Rename("f", "e"), "rename", "f", "e", syscall.EEXIST) // os.Rename: never over a directory
		wantLinkErr(t, c.Rename("d", "f"), "rename", "d", "f", syscall.ENOTDIR)
		wantLinkErr(t, c.Rename("d", "d/sub"), "rename", "d", "d/sub", syscall.EINVAL)
		wantLinkErr(t, c.Link("d", "x"), "link", "d", "x", syscall.EPERM)
		wantLinkErr(t, c.Link("missing", "x"), "link", "missing", "x", syscall.ENOENT)
		wantLinkErr(t, c.Link("f", "d/f"), "link", "f", "d/f", syscall.EEXIST)
		wantLinkErr(t, c.Symlink("t", "f"), "symlink", "t", "f", syscall.EEXIST)

		_, err = c.Readlink("f")
		wantPathErr(t, err, "readlink", "f", syscall.EINVAL)
		wantPathErr(t, c.Truncate("d", 0), "truncate", "d", syscall.EISDIR)
		wantPathErr(t, c.Truncate("missing", 0), "truncate", "missing", syscall.ENOENT)
		wantPathErr(t, c.Chmod("missing", 0o644), "chmod", "missing", syscall.ENOENT)
		wantPathErr(t, c.Chtimes("missing", time.Now(), time.Now()), "chtimes", "missing", syscall.ENOENT)

		_, err = c.ReadDir("f")
		wantPathErr(t, err, "open", "f", syscall.ENOTDIR)
		_, err = c.ReadDir("missing")
		wantPathErr(t, err, "open", "missing", syscall.ENOENT)
		_, err = c.ReadFile("d")
		wantPathErr(t, err, "read", "d", syscall.EISDIR)
		_, err = c.ReadFile("missing")
		wantPathErr(t, err, "open", "missing", syscall.ENOENT)
		wantPathErr(t, c.WriteFile("d", nil, 0o644), "open", "d", syscall.EISDIR)

		// Nothing was lost to the failed calls.
		if b, err := c.ReadFile("f"); err != nil || string(b) != "hello" {
			t.Fatalf("f = %q, %v", b, err)
		}
		if names, err := c.ReadDirNames("."); err != nil || len(names) != 4 {
			t.Fatalf("root = %v, %v", names, err)
		}
	})
}

func TestNamespace(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		tree(t, c)
		must(t, c.MkdirAll("p/q/r", 0o750))
		must(t, c.MkdirAll("p/q/r", 0o750))
		must(t, c.MkdirAll("p/q/r/.", 0o750))
		fi, err := c.Stat("p/q/r")
		must(t, err)
		if !fi.IsDir() || fi.Mode() != fs.ModeDir|0o750 || fi.Name() != "r" {
			t.Fatalf("p/q/r: %v %v %q", fi.IsDir(), fi.Mode(), fi.Name())
		}
		// No umask: the mode asked for is the mode.
		must(t, c.WriteFile("p/w", []byte("w"), 0o777))
		if fi, err := c.Stat("p/w"); err != nil || fi.Mode() != 0o777 {
			t.Fatalf("p/w: %v %v", fi, err)
		}

		// A trailing slash is dropped by the FS (libservices.Clean), unlike os.
		if fi, err := c.Stat("f/"); err != nil || fi.Name() != "f" {
			t.Fatalf("Stat(f/) = %v, %v", fi, err)
		}

		fi, err = c.Lstat("l")
		must(t, err)
		if fi.Mode()&fs.ModeSymlink == 0 || fi.Size() != 1 {
			t.Fatalf("lstat l: %v size %d", fi.Mode(), fi.Size())
		}
		fi, err = c.Stat("l")
		must(t, err)
		if !fi.Mode().IsRegular() || fi.Size() != 5 || fi.Name() != "l" {
			t.Fatalf("stat l: %v size %d name %q", fi.Mode(), fi.Size(), fi.Name())
		}
		a, ok := fi.Sys().(*libservices.Attr)
		if !ok || a.Size != 5 || !a.IsRegular() || a.Ino == 0 {
			t.Fatalf("Sys() = %#v", fi.Sys())
		}
		if tgt, err := c.Readlink("l"); err != nil || tgt != "f" {
			t.Fatalf("readlink l = %q, %v", tgt, err)
		}

		must(t, c.Chmod("f", 0o600|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		if fi, _ := c.Stat("f"); fi.Mode() != 0o600|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky {
			t.Fatalf("chmod f: %v", fi.Mode())
		}
		mt := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
		must(t, c.Chtimes("f", time.Time{}, mt))
		if fi, _ := c.Stat("f"); !fi.ModTime().Equal(mt) {
			t.Fatalf("chtimes: %v, want %v", fi.ModTime(), mt)
		}
		must(t, c.Truncate("l", 2))
		if b, _ := c.ReadFile("f"); string(b) != "he" {
			t.Fatalf("truncate through symlink: %q", b)
		}

		must(t, c.Link("f", "hard"))
		if a, b := statIno(t, c, "f"), statIno(t, c, "hard"); a != b {
			t.Fatalf("link: inodes %d %d", a, b)
		}
		// Rename replaces a file, and a name onto itself (through another link) is a no-op.
		must(t, c.Rename("hard", "f"))
		if _, err := c.Lstat("hard"); err != nil {
			t.Fatal("rename between two links of one file removed one (POSIX: do nothing)")
		}
		must(t, c.Remove("hard"))
		must(t, c.Rename("d/f", "moved"))
		must(t, c.Rename("e", "e2")) // directory to a new name
		must(t, c.Remove("e2"))      // empty directory
		must(t, c.Remove("moved"))   // file
		must(t, c.Remove("l"))       // symlink, not its target
		if _, err := c.Stat("f"); err != nil {
			t.Fatal("Remove of a symlink removed its target")
		}

		ents, err := c.ReadDir(".")
		must(t, err)
		var got []string
		for _, e := range ents {
			info, err := e.Info()
			must(t, err)
			if info.Name() != e.Name() || info.IsDir() != e.IsDir() || info.Mode().Type() != e.Type() {
				t.Fatalf("entry %s: Info %v vs %v", e.Name(), info.Mode(), e.Type())
			}
			got = append(got, e.Name()+":"+e.Type().String())
		}
		want := []string{"d:d---------", "f:----------", "p:d---------"}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Fatalf("ReadDir = %v, want %v", got, want)
		}

		must(t, c.RemoveAll("p"))
		must(t, c.RemoveAll("p")) // absent: nil
		must(t, c.RemoveAll("f"))
		must(t, c.RemoveAll(""))
		if names, _ := c.ReadDirNames("."); len(names) != 1 || names[0] != "d" {
			t.Fatalf("after RemoveAll: %v", names)
		}
		var st libservices.Statfs
		must(t, c.Statfs(&st))
		if st.Bsize == 0 || st.Blocks == 0 {
			t.Fatalf("statfs: %+v", st)
		}
	})
}

func TestChown(t *testing.T) {
	testenv.Root(t) // giving a file to another owner
	forEach(t, func(t *testing.T, c *fslib.Client) {
		tree(t, c)
		must(t, c.Chown("f", 1234, -1))
		must(t, c.Chown("l", -1, 5678)) // follows the symlink
		if a := statAttr(t, c, "f"); a.Uid != 1234 || a.Gid != 5678 {
			t.Fatalf("chown: uid %d gid %d", a.Uid, a.Gid)
		}
		wantPathErr(t, c.Chown("missing", 0, 0), "chown", "missing", syscall.ENOENT)
	})
}

func statAttr(t *testing.T, c *fslib.Client, name string) *libservices.Attr {
	t.Helper()
	fi, err := c.Stat(name)
	must(t, err)
	return fi.Sys().(*libservices.Attr)
}

func statIno(t *testing.T, c *fslib.Client, name string) uint64 {
	t.Helper()
	fi, err := c.Lstat(name)
	must(t, err)
	return fi.Sys().(*libservices.Attr).Ino
}

func TestFileReadWriteSeek(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		f, err := c.Create("f")
		must(t, err)
		if f.Name() != "f" {
			t.Fatalf("Name = %q", f.Name())
		}
		if n, err := f.WriteString("hello, world"); n != 12 || err != nil {
			t.Fatalf("WriteString = %d, %v", n, err)
		}
		if pos, err := f.Seek(0, io.SeekCurrent); pos != 12 || err != nil {
			t.Fatalf("Seek(0, cur) = %d, %v", pos, err)
		}
		if pos, err := f.Seek(-5, io.SeekEnd); pos != 7 || err != nil {
			t.Fatalf("Seek(-5, end) = %d, %v", pos, err)
		}
		buf := make([]byte, 10)
		if n, err := f.Read(buf); n != 5 || err != nil || string(buf[:n]) != "world" {
			t.Fatalf("Read = %d %q, %v", n, buf[:n], err)
		}
		if n, err := f.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read at end = %d, %v, want io.EOF", n, err)
		}
		if n, err := f.Read(nil); n != 0 || err != nil {
			t.Fatalf("Read(nil) = %d, %v", n, err)
		}
		_, err = f.Seek(-1, io.SeekStart)
		wantPathErr(t, err, "seek", "f", syscall.EINVAL)
		_, err = f.Seek(0, 7)
		wantPathErr(t, err, "seek", "f", syscall.EINVAL)

		// ReadAt: full, short with io.EOF, negative offset.
		if n, err := f.ReadAt(buf[:5], 0); n != 5 || err != nil || string(buf[:5]) != "hello" {
			t.Fatalf("ReadAt = %d %q, %v", n, buf[:5], err)
		}
		if n, err := f.ReadAt(buf, 7); n != 5 || err != io.EOF {
			t.Fatalf("short ReadAt = %d, %v, want 5, io.EOF", n, err)
		}
		if n, err := f.ReadAt(buf, 100); n != 0 || err != io.EOF {
			t.Fatalf("ReadAt past end = %d, %v", n, err)
		}
		_, err = f.ReadAt(buf, -1)
		wantPathErr(t, err, "readat", "f", syscall.EINVAL)

		// WriteAt past the end makes a hole that reads as zeros; the offset stays.
		if n, err := f.WriteAt([]byte("!"), 20); n != 1 || err != nil {
			t.Fatalf("WriteAt = %d, %v", n, err)
		}
		if pos, _ := f.Seek(0, io.SeekCurrent); pos != 12 {
			t.Fatalf("WriteAt moved the offset to %d", pos)
		}
		if n, err := f.Read(buf); n != 9 || err != nil || !bytes.Equal(buf[:9], []byte("\x00\x00\x00\x00\x00\x00\x00\x00!")) {
			t.Fatalf("Read over hole = %d %q, %v", n, buf[:n], err)
		}
		_, err = f.WriteAt(nil, -1)
		wantPathErr(t, err, "writeat", "f", syscall.EINVAL)

		must(t, f.Truncate(3))
		fi, err := f.Stat()
		must(t, err)
		if fi.Size() != 3 || fi.Name() != "f" || !fi.Mode().IsRegular() {
			t.Fatalf("Stat = %d %q %v", fi.Size(), fi.Name(), fi.Mode())
		}
		must(t, f.Sync())
		must(t, f.Datasync())
		must(t, f.Close())

		// Every method of a closed file: os.ErrClosed in a PathError.
		wantClosed(t, f.Close(), "close", "f")
		_, err = f.Read(buf)
		wantClosed(t, err, "read", "f")
		_, err = f.ReadAt(buf, 0)
		wantClosed(t, err, "read", "f")
		_, err = f.Write(buf)
		wantClosed(t, err, "write", "f")
		_, err = f.WriteAt(buf, 0)
		wantClosed(t, err, "write", "f")
		_, err = f.Seek(0, 0)
		wantClosed(t, err, "seek", "f")
		_, err = f.Stat()
		wantClosed(t, err, "stat", "f")
		wantClosed(t, f.Sync(), "sync", "f")
		wantClosed(t, f.Truncate(0), "truncate", "f")
		_, err = f.ReadDir(-1)
		wantClosed(t, err, "readdirent", "f")
		if !errors.Is(err, fs.ErrClosed) {
			t.Fatal("not fs.ErrClosed")
		}

		// Access modes are the FS's: EBADF.
		r, err := c.Open("f")
		must(t, err)
		_, err = r.Write([]byte("x"))
		wantPathErr(t, err, "write", "f", syscall.EBADF)
		wantPathErr(t, r.Truncate(0), "truncate", "f", syscall.EINVAL)
		must(t, r.Close())
		w, err := c.OpenFile("f", os.O_WRONLY, 0)
		must(t, err)
		_, err = w.Read(buf)
		wantPathErr(t, err, "read", "f", syscall.EBADF)
		must(t, w.Close())
	})
}

func TestAppendAndSync(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		must(t, c.WriteFile("log", []byte("abc"), 0o644))
		f, err := c.OpenFile("log", os.O_RDWR|os.O_APPEND|os.O_SYNC, 0)
		must(t, err)
		// O_APPEND starts at offset 0 for reading, as Linux.
		buf := make([]byte, 2)
		if n, err := f.Read(buf); n != 2 || string(buf) != "ab" || err != nil {
			t.Fatalf("Read = %d %q %v", n, buf, err)
		}
		if n, err := f.Write([]byte("de")); n != 2 || err != nil {
			t.Fatalf("append Write = %d, %v", n, err)
		}
		if pos, err := f.Seek(0, io.SeekCurrent); pos != 5 || err != nil {
			t.Fatalf("offset after append = %d, %v, want 5", pos, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("f")); err != nil {
			t.Fatal(err)
		}
		if n, err := f.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read after append = %d, %v, want EOF", n, err)
		}
		_, err = f.WriteAt([]byte("x"), 0)
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Err != fslib.ErrWriteAtInAppendMode || pe.Op != "writeat" {
			t.Fatalf("WriteAt on O_APPEND: %v", err)
		}
		must(t, f.Close())
		if b, _ := c.ReadFile("log"); string(b) != "abcdef" {
			t.Fatalf("log = %q", b)
		}
		d, err := c.OpenFile("log", os.O_WRONLY|syscall.O_DSYNC, 0)
		must(t, err)
		if _, err := d.WriteAt([]byte("A"), 0); err != nil {
			t.Fatal(err)
		}
		must(t, d.Close())
		if b, _ := c.ReadFile("log"); string(b) != "Abcdef" {
			t.Fatalf("log = %q", b)
		}
	})
}

func TestDirectoryFile(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		must(t, c.Mkdir("d", 0o755))
		names := []string{"e", "a", "d", "c", "b"}
		for _, n := range names {
			must(t, c.WriteFile("d/"+n, nil, 0o644))
		}
		must(t, c.Mkdir("d/sub", 0o755))
		d, err := c.Open("d")
		must(t, err)
		var got []string
		for {
			ents, err := d.ReadDir(2)
			if err == io.EOF {
				if len(ents) != 0 {
					t.Fatal("entries with io.EOF")
				}
				break
			}
			must(t, err)
			if len(ents) == 0 || len(ents) > 2 {
				t.Fatalf("batch of %d", len(ents))
			}
			for _, e := range ents {
				got = append(got, e.Name())
				if e.IsDir() != (e.Name() == "sub") {
					t.Fatalf("%s: IsDir %v", e.Name(), e.IsDir())
				}
			}
		}
		if want := "a b c d e sub"; join(got) != want {
			t.Fatalf("ReadDir(2) batches = %q, want %q", join(got), want)
		}
		// n <= 0 after the end: empty, not io.EOF, as os.
		if ents, err := d.ReadDir(-1); err != nil || ents == nil || len(ents) != 0 {
			t.Fatalf("ReadDir(-1) at end = %v, %v", ents, err)
		}
		// A seek to the start lists afresh, and sees what changed.
		must(t, c.Remove("d/a"))
		if _, err := d.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		ns, err := d.Readdirnames(-1)
		must(t, err)
		if join(ns) != "b c d e sub" {
			t.Fatalf("Readdirnames after seek = %q", join(ns))
		}
		if _, err := d.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		infos, err := d.Readdir(3)
		must(t, err)
		if len(infos) != 3 || infos[0].Name() != "b" || infos[0].Size() != 0 {
			t.Fatalf("Readdir(3) = %v", infos)
		}
		buf := make([]byte, 1)
		_, err = d.Read(buf)
		wantPathErr(t, err, "read", "d", syscall.EISDIR)
		fi, err := d.Stat()
		must(t, err)
		if !fi.IsDir() || fi.Name() != "d" {
			t.Fatalf("dir Stat: %v %q", fi.Mode(), fi.Name())
		}
		must(t, d.Close())

		// ReadDir of a file that is not a directory.
		f, err := c.Open("d/b")
		must(t, err)
		_, err = f.ReadDir(-1)
		wantPathErr(t, err, "readdirent", "d/b", syscall.ENOTDIR)
		must(t, f.Close())
	})
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

func TestFileMode(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		for _, m := range []fs.FileMode{0, 0o644, 0o777, fs.ModeSetuid | 0o755, fs.ModeSetgid | 0o750,
			fs.ModeSticky | 0o777, 0o644 | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky} {
			must(t, c.WriteFile("m", nil, 0o600))
			// Type bits in the argument are ignored, as os.Chmod.
			must(t, c.Chmod("m", m|fs.ModeDir))
			fi, err := c.Stat("m")
			must(t, err)
			if fi.Mode() != m {
				t.Fatalf("chmod %v: Mode = %v", m, fi.Mode())
			}
			want := uint32(m.Perm())
			if m&fs.ModeSetuid != 0 {
				want |= syscall.S_ISUID
			}
			if m&fs.ModeSetgid != 0 {
				want |= syscall.S_ISGID
			}
			if m&fs.ModeSticky != 0 {
				want |= syscall.S_ISVTX
			}
			if got := fi.Sys().(*libservices.Attr).Mode; got != syscall.S_IFREG|want {
				t.Fatalf("chmod %v: Attr.Mode %o, want %o", m, got, syscall.S_IFREG|want)
			}
		}
		must(t, c.Symlink("m", "s"))
		must(t, c.Mkdir("d", 0o711))
		for name, want := range map[string]fs.FileMode{"s": fs.ModeSymlink | 0o777, "d": fs.ModeDir | 0o711} {
			fi, err := c.Lstat(name)
			must(t, err)
			if fi.Mode() != want {
				t.Fatalf("%s: Mode %v, want %v", name, fi.Mode(), want)
			}
		}
	})
}

func TestClientClose(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		must(t, c.WriteFile("f", []byte("x"), 0o644))
		f, err := c.Open("f")
		must(t, err)
		must(t, c.Close())
		if err := c.Close(); err != os.ErrClosed {
			t.Fatalf("second Close = %v", err)
		}
		_, err = c.Stat("f")
		wantClosed(t, err, "stat", "f")
		_, err = c.Open("f")
		wantClosed(t, err, "open", "f")
		wantClosed(t, c.Remove("f"), "remove", "f")
		if le, ok := c.Rename("f", "g").(*os.LinkError); !ok || le.Err != os.ErrClosed {
			t.Fatalf("Rename after Close: %v", le)
		}
		_, err = f.Read(make([]byte, 1))
		wantClosed(t, err, "read", "f")
		// The file's Close still releases its handle; the FS's answer may be an
		// error (passthrough closed its root but not this descriptor: nil).
		f.Close()
	})
}

func TestLock(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		must(t, c.WriteFile("LOCK", []byte("stale"), 0o644))
		l, err := c.Lock("LOCK")
		must(t, err)
		if fi, err := c.Stat("LOCK"); err != nil || fi.Size() != 0 {
			t.Fatalf("lock file not truncated: %v %v", fi.Size(), err)
		}
		_, err = c.Lock("./LOCK") // same clean name
		wantPathErr(t, err, "lock", "./LOCK", syscall.EAGAIN)
		l2, err := c.Lock("OTHER") // created
		must(t, err)
		must(t, l.Close())
		if err := l.Close(); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("second unlock = %v", err)
		}
		l3, err := c.Lock("LOCK")
		must(t, err)
		must(t, l3.Close())
		must(t, l2.Close())
		_, err = c.Lock("missing/LOCK")
		wantPathErr(t, err, "lock", "missing/LOCK", syscall.ENOENT)
		_, err = c.Lock("a/../LOCK")
		wantPathErr(t, err, "lock", "a/../LOCK", syscall.EINVAL)
	})
}

// lockingFS is a real libservices.FS (memfs) with a Locker whose locks are
// shared by every Client over it, as the service's will be across processes.
type lockingFS struct {
	*memfs.FS
	held map[string]bool
	mu   chan struct{}
}

type lockRelease struct {
	fs   *lockingFS
	name string
	done bool
}

func (l *lockRelease) Close() error {
	l.fs.mu <- struct{}{}
	defer func() { <-l.fs.mu }()
	if l.done {
		return syscall.EBADF
	}
	l.done = true
	delete(l.fs.held, l.name)
	return nil
}

func (f *lockingFS) Lock(name string) (io.Closer, error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return nil, err
	}
	var a libservices.Attr
	if err := f.Stat(clean, &a); err != nil {
		return nil, err // the Client created it: this must succeed
	}
	f.mu <- struct{}{}
	defer func() { <-f.mu }()
	if f.held[clean] {
		return nil, syscall.EAGAIN
	}
	f.held[clean] = true
	return &lockRelease{fs: f, name: clean}, nil
}

func TestLockDelegatesToLocker(t *testing.T) {
	lfs := &lockingFS{FS: memfs.New(memfs.Options{}), held: map[string]bool{}, mu: make(chan struct{}, 1)}
	c1, c2 := fslib.New(lfs), fslib.New(lfs)
	l, err := c1.Lock("LOCK")
	must(t, err)
	// A second Client: the in-process table would not see c1's lock, the FS does.
	_, err = c2.Lock("LOCK")
	wantPathErr(t, err, "lock", "LOCK", syscall.EAGAIN)
	must(t, l.Close())
	l, err = c2.Lock("LOCK")
	must(t, err)
	must(t, l.Close())
	if len(lfs.held) != 0 {
		t.Fatalf("locks left: %v", lfs.held)
	}
}
