package union

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

func TestConformanceMemfs(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return New(memfs.New(memfs.Options{}), memfs.New(memfs.Options{}), memfs.New(memfs.Options{}))
	})
}

// fixture is a union of an empty memfs upper over a read-only passthrough lower on
// tmpfs (so that any write to the lower fails loudly with EROFS), and a second,
// bottom memfs lower.
type fixture struct {
	u      *FS
	upper  *memfs.FS
	lower  libservices.FS
	bottom *memfs.FS
	dir    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "polytropon-union-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wr := func(p, s string) {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	mk("etc")
	wr("etc/hosts", "lower hosts")
	wr("etc/passwd", "root:x:0:0")
	mk("empty")
	mk("full/deep")
	wr("full/a", "a")
	wr("full/deep/b", "b")
	mk("bin")
	wr("bin/sh", "#!")
	if err := os.Symlink("/upperonly", filepath.Join(dir, "tothetop")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("end"), 64<<20)
	f.Close()
	wr(".wh.hiddenbelow", "") // a whiteout in the lower: hides bottom's file
	lower, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lower.CloseFS() })
	bottom := memfs.New(memfs.Options{})
	for _, p := range []string{"hiddenbelow", "bottomonly"} {
		h, err := bottom.Open(p, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		bottom.WriteAt(h, []byte("bottom"), 0)
		bottom.Close(h)
	}
	bottom.Mkdir("etc", 0o755)
	h, _ := bottom.Open("etc/bottomconf", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	bottom.Close(h)
	upper := memfs.New(memfs.Options{})
	return &fixture{u: New(upper, lower, bottom), upper: upper, lower: lower, bottom: bottom, dir: dir}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if err != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func read(t *testing.T, fs libservices.FS, p string) string {
	t.Helper()
	h, err := fs.Open(p, libservices.O_RDONLY, 0)
	must(t, "open "+p, err)
	defer fs.Close(h)
	buf := make([]byte, 1<<10)
	n, err := fs.ReadAt(h, buf, 0)
	must(t, "read "+p, err)
	return string(buf[:n])
}

func list(t *testing.T, fs libservices.FS, p string) []string {
	t.Helper()
	ents, err := fs.ReadDir(p)
	must(t, "readdir "+p, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func exists(fs libservices.FS, p string) bool {
	var a libservices.Attr
	return fs.Lstat(p, &a) == nil
}

func TestMergedView(t *testing.T) {
	x := newFixture(t)
	if got := read(t, x.u, "etc/hosts"); got != "lower hosts" {
		t.Fatalf("lower file: %q", got)
	}
	want := []string{"bin", "bottomonly", "empty", "etc", "full", "sparse", "tothetop"}
	if got := list(t, x.u, "."); !slices.Equal(got, want) {
		t.Fatalf("merged root: %q, want %q (whiteouts hidden, and what they hide)", got, want)
	}
	if got := list(t, x.u, "etc"); !slices.Equal(got, []string{"bottomconf", "hosts", "passwd"}) {
		t.Fatalf("merged etc: %q", got)
	}
	var a libservices.Attr
	wantErr(t, "lstat a whited-out name", x.u.Lstat("hiddenbelow", &a), syscall.ENOENT)
	wantErr(t, "lstat a whiteout", x.u.Lstat(".wh.hiddenbelow", &a), syscall.ENOENT)
	_, err := x.u.Open(".wh.x", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	wantErr(t, "create a reserved name", err, syscall.EINVAL)
	wantErr(t, "mkdir a reserved name", x.u.Mkdir(".wh..wh..opq", 0o755), syscall.EINVAL)
}

func TestCopyUpOnWrite(t *testing.T) {
	x := newFixture(t)
	h, err := x.u.Open("etc/hosts", libservices.O_RDWR, 0)
	must(t, "open for writing", err)
	_, err = x.u.WriteAt(h, []byte("UPPER"), 0)
	must(t, "write", err)
	must(t, "close", x.u.Close(h))
	if got := read(t, x.u, "etc/hosts"); got != "UPPER hosts" {
		t.Fatalf("after write: %q", got)
	}
	if got := read(t, x.upper, "etc/hosts"); got != "UPPER hosts" {
		t.Fatalf("upper copy: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(x.dir, "etc/hosts")); string(got) != "lower hosts" {
		t.Fatalf("the lower branch changed: %q", got)
	}
	var a libservices.Attr
	must(t, "lstat copy", x.upper.Lstat("etc/hosts", &a))
	if a.Mode&0o7777 != 0o640 {
		t.Fatalf("copy-up lost the mode: %#o", a.Mode)
	}
	if got := list(t, x.upper, "etc"); !slices.Equal(got, []string{"hosts"}) {
		t.Fatalf("copy-up left temporaries or copied siblings: %q", got)
	}
}

func TestCopyUpOnSetattrAndTruncate(t *testing.T) {
	x := newFixture(t)
	must(t, "chmod", x.u.Setattr("etc/passwd", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}))
	var a libservices.Attr
	must(t, "lstat", x.u.Lstat("etc/passwd", &a))
	if a.Mode&0o7777 != 0o600 || read(t, x.u, "etc/passwd") != "root:x:0:0" {
		t.Fatalf("chmod through union: %#o %q", a.Mode, read(t, x.u, "etc/passwd"))
	}
	must(t, "truncate", x.u.Setattr("full/a", &libservices.SetAttr{Valid: libservices.SetSize, Size: 0}))
	if got := read(t, x.u, "full/a"); got != "" {
		t.Fatalf("after truncate: %q", got)
	}
	h, err := x.u.Open("bin/sh", libservices.O_WRONLY|libservices.O_TRUNC, 0)
	must(t, "open O_TRUNC", err)
	x.u.Close(h)
	if got := read(t, x.u, "bin/sh"); got != "" {
		t.Fatalf("after O_TRUNC: %q", got)
	}
	// O_RDONLY|O_TRUNC truncates too (as Linux does): the copy-up is emptied and
	// the handle stays read-only.
	h, err = x.u.Open("etc/hosts", libservices.O_RDONLY|libservices.O_TRUNC, 0)
	must(t, "open O_RDONLY|O_TRUNC", err)
	must(t, "fstat", x.u.Fstat(h, &a))
	if a.Size != 0 {
		t.Fatalf("after O_RDONLY|O_TRUNC: size %d", a.Size)
	}
	_, err = x.u.WriteAt(h, []byte("x"), 0)
	wantErr(t, "write through O_RDONLY|O_TRUNC", err, syscall.EBADF)
	must(t, "close", x.u.Close(h))
	if got := read(t, x.u, "etc/hosts"); got != "" {
		t.Fatalf("after O_RDONLY|O_TRUNC: %q", got)
	}
	if got := read(t, x.upper, "etc/hosts"); got != "" {
		t.Fatalf("upper copy after O_RDONLY|O_TRUNC: %q", got)
	}
	// O_RDONLY|O_CREAT of a lower file copies nothing up.
	h, err = x.u.Open("full/deep/b", libservices.O_RDONLY|libservices.O_CREAT, 0o644)
	must(t, "open O_RDONLY|O_CREAT", err)
	must(t, "close", x.u.Close(h))
	if exists(x.upper, "full/deep") {
		t.Fatal("O_RDONLY|O_CREAT of a lower file copied it up")
	}
	_, err = x.u.Open("full", libservices.O_RDONLY|libservices.O_CREAT, 0o644)
	wantErr(t, "O_RDONLY|O_CREAT of a lower dir", err, syscall.EISDIR)
	_, err = x.u.Open("full", libservices.O_RDONLY|libservices.O_TRUNC, 0)
	wantErr(t, "O_RDONLY|O_TRUNC of a lower dir", err, syscall.EISDIR)
	must(t, "setxattr", x.u.Setxattr("empty", "user.k", []byte("v"), 0))
	must(t, "upper dir", x.upper.Lstat("empty", &a))
	// Holes stay holes.
	must(t, "chmod sparse", x.u.Setattr("sparse", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}))
	must(t, "lstat sparse", x.upper.Lstat("sparse", &a))
	if a.Size != 64<<20+3 || a.Blocks*512 > 1<<20 {
		t.Fatalf("sparse copy-up: size %d blocks %d", a.Size, a.Blocks)
	}
	for p, want := range map[string]string{"etc/hosts": "lower hosts", "full/a": "a", "bin/sh": "#!", "full/deep/b": "b"} {
		if got, _ := os.ReadFile(filepath.Join(x.dir, p)); string(got) != want {
			t.Fatalf("the lower branch changed %s: %q", p, got)
		}
	}
}

func TestWhiteouts(t *testing.T) {
	x := newFixture(t)
	must(t, "unlink lower file", x.u.Unlink("etc/hosts"))
	var a libservices.Attr
	wantErr(t, "lstat removed", x.u.Lstat("etc/hosts", &a), syscall.ENOENT)
	if !exists(x.upper, "etc/.wh.hosts") {
		t.Fatal("no whiteout in the upper branch")
	}
	if got := list(t, x.u, "etc"); !slices.Equal(got, []string{"bottomconf", "passwd"}) {
		t.Fatalf("readdir after unlink: %q", got)
	}
	h, err := x.u.Open("etc/hosts", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
	must(t, "recreate", err)
	x.u.WriteAt(h, []byte("new"), 0)
	x.u.Close(h)
	if read(t, x.u, "etc/hosts") != "new" || exists(x.upper, "etc/.wh.hosts") {
		t.Fatal("recreate over a whiteout")
	}
	must(t, "unlink bottom file", x.u.Unlink("bottomonly"))
	wantErr(t, "lstat bottom file", x.u.Lstat("bottomonly", &a), syscall.ENOENT)
	must(t, "unlink upper file", x.u.Unlink("etc/hosts"))
	wantErr(t, "lstat", x.u.Lstat("etc/hosts", &a), syscall.ENOENT)

	wantErr(t, "rmdir non-empty lower dir", x.u.Rmdir("full"), syscall.ENOTEMPTY)
	must(t, "unlink full/a", x.u.Unlink("full/a"))
	must(t, "unlink full/deep/b", x.u.Unlink("full/deep/b"))
	must(t, "rmdir full/deep", x.u.Rmdir("full/deep"))
	must(t, "rmdir full", x.u.Rmdir("full"))
	wantErr(t, "lstat full", x.u.Lstat("full", &a), syscall.ENOENT)
	// A new directory over a removed one is opaque: the old lower contents stay hidden.
	must(t, "mkdir full", x.u.Mkdir("full", 0o755))
	if got := list(t, x.u, "full"); len(got) != 0 {
		t.Fatalf("new dir over a removed lower dir shows %q", got)
	}
	must(t, "rmdir full again", x.u.Rmdir("full"))
	must(t, "rmdir lower empty", x.u.Rmdir("empty"))
	wantErr(t, "lstat empty", x.u.Lstat("empty", &a), syscall.ENOENT)
}

func TestRenameAcrossBranches(t *testing.T) {
	x := newFixture(t)
	wantErr(t, "rename a lower dir", x.u.Rename("full", "moved"), syscall.EXDEV)
	wantErr(t, "rename a merged dir", x.u.Rename("etc", "moved"), syscall.EXDEV)
	must(t, "rename lower file", x.u.Rename("etc/passwd", "bin/passwd"))
	var a libservices.Attr
	wantErr(t, "old name", x.u.Lstat("etc/passwd", &a), syscall.ENOENT)
	if read(t, x.u, "bin/passwd") != "root:x:0:0" {
		t.Fatal("moved content")
	}
	must(t, "mkdir upper dir", x.u.Mkdir("new", 0o755))
	must(t, "rename upper dir", x.u.Rename("new", "new2"))
	must(t, "rename upper dir over an empty lower dir", x.u.Rename("new2", "empty"))
	h, _ := x.u.Open("etc/x", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	x.u.Close(h)
	must(t, "rename file over lower file", x.u.Rename("etc/x", "bin/sh"))
	if read(t, x.u, "bin/sh") != "" {
		t.Fatal("rename over a lower file")
	}
	wantErr(t, "rename file over merged non-empty dir", x.u.Rename("bin/sh", "full"), syscall.EISDIR)
	// A directory renamed onto a removed lower directory's name stays opaque
	// (found by the metamorphic test).
	must(t, "unlink full/a", x.u.Unlink("full/a"))
	must(t, "unlink full/deep/b", x.u.Unlink("full/deep/b"))
	must(t, "rmdir full/deep", x.u.Rmdir("full/deep"))
	must(t, "rmdir full", x.u.Rmdir("full"))
	must(t, "mkdir fresh", x.u.Mkdir("fresh", 0o755))
	must(t, "rename fresh over the removed full", x.u.Rename("fresh", "full"))
	if got := list(t, x.u, "full"); len(got) != 0 {
		t.Fatalf("renamed dir merged with the removed lower dir: %q", got)
	}
	if got := list(t, x.u, "bin"); !slices.Equal(got, []string{"passwd", "sh"}) {
		t.Fatalf("bin: %q", got)
	}
}

func TestLinksAndSymlinks(t *testing.T) {
	x := newFixture(t)
	must(t, "link lower file", x.u.Link("etc/hosts", "hosts2"))
	var a, b libservices.Attr
	must(t, "lstat", x.u.Lstat("etc/hosts", &a))
	must(t, "lstat", x.u.Lstat("hosts2", &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("hard link in the upper branch: %+v %+v", a, b)
	}
	// A lower symlink resolves in the merged namespace.
	var s libservices.Attr
	wantErr(t, "dangling", x.u.Stat("tothetop", &s), syscall.ENOENT)
	h, err := x.u.Open("upperonly", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	must(t, "create", err)
	x.u.WriteAt(h, []byte("top"), 0)
	x.u.Close(h)
	if read(t, x.u, "tothetop") != "top" {
		t.Fatal("lower symlink to an upper file")
	}
	must(t, "rename lower symlink", x.u.Rename("tothetop", "ln"))
	if target, err := x.u.Readlink("ln"); err != nil || target != "/upperonly" {
		t.Fatalf("copied-up symlink: %q %v", target, err)
	}
}

// TestConformancePassthrough runs the suite on a union of a tmpfs upper over an
// empty read-only lower: every operation goes through the whiteout and copy-up
// checks against a real kernel FS.
func TestConformancePassthrough(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		var layers []libservices.FS
		for _, ro := range []bool{false, true} {
			dir, err := os.MkdirTemp("/dev/shm", "polytropon-union-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: ro})
			if err != nil {
				t.Fatal(err)
			}
			layers = append(layers, p)
		}
		u := New(layers[0], layers[1:]...)
		t.Cleanup(func() { u.CloseFS() })
		return u
	})
}

// TestReshapesCountsCopyUps: a create in a directory only a lower branch has
// copies the directory (and its ancestors) up, which Reshapes counts; a
// create where the directory is already up, and a read, count nothing.
func TestReshapesCountsCopyUps(t *testing.T) {
	f := newFixture(t)
	n0, known := f.u.Reshapes()
	if !known {
		t.Fatal("a union of memfs and passthrough branches cannot tell its reshapes")
	}
	create := func(p string) {
		t.Helper()
		h, err := f.u.Open(p, libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
		must(t, "create "+p, err)
		must(t, "close "+p, f.u.Close(h))
	}
	create("full/deep/new") // copies up full and full/deep
	n1, _ := f.u.Reshapes()
	if n1 != n0+2 {
		t.Fatalf("copy-up of two directories: reshapes %d -> %d, want +2", n0, n1)
	}
	create("full/deep/new2")
	var a libservices.Attr
	must(t, "stat", f.u.Lstat("etc/hosts", &a))
	if n2, _ := f.u.Reshapes(); n2 != n1 {
		t.Fatalf("create in a directory already up: reshapes %d -> %d", n1, n2)
	}
}
