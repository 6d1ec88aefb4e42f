// Package fstest is the conformance suite of the libservices.FS contract: one set
// of errno-level checks that every libservice and every stack of libservices
// passes, and that the host kernel passes too (through passthrough on a tmpfs and
// on an ext4 directory), which is how we know the suite encodes Linux's behaviour
// rather than one implementation's.
//
// Where Linux filesystems legitimately differ (the largest file size: EFBIG on ext4,
// success on tmpfs) the suite accepts each kernel answer and then checks that the
// FS is consistent with the answer it gave.
//
// Use: fstest.Run(t, func(t *testing.T) libservices.FS { return myfs.New(...) }).
// The kernel reference runs are libservices/passthrough's TestKernelTmpfs
// (/dev/shm) and TestKernelDisk (/var/tmp, ext4 on CI); the suite needs root only
// for its chown case (testenv.Root).
//
// RunPermissions runs the permission cases (perm.go): one FS reached as several
// callers (owner, group member, stranger, root, uid 0 without capabilities,
// callers with single capabilities), each case expecting the errno and the
// resulting owner and mode that Linux gives. Their kernel references are
// passthrough's TestKernelPermissionsTmpfs and TestKernelPermissionsDisk, where
// every call of a caller is made by a thread switched to its identity
// (internal/asuser); libservices/access runs them through its Checker on every
// stack, and the service over the direct path and its FUSE mount. Cases that
// depend on fs.protected_* read this host's values, as the kernel does.
//
// It is a test helper: it has no state of its own and no locks.
package fstest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
)

// NewFS returns a fresh, empty FS for one subtest; its cleanup is the caller's
// (t.Cleanup). Two calls within one subtest must return independent FS values.
type NewFS func(t *testing.T) libservices.FS

// Run runs the whole suite, each case in its own subtest on its own FS.
func Run(t *testing.T, newFS NewFS) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newFS) })
	}
}

// RunExcept is Run for an FS with documented deviations from Linux: each case
// named in except is reported as skipped with its reason (the deviation), and
// every other case runs. Use it only for a behaviour the FS below cannot give
// (CephFS derives st_blocks from the size, as the kernel's ceph client does),
// never to hide a bug.
func RunExcept(t *testing.T, newFS NewFS, except map[string]string) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := except[c.name]; ok {
				t.Skip("documented deviation: " + why)
			}
			c.fn(t, newFS)
		})
	}
}

type testCase struct {
	name string
	fn   func(t *testing.T, newFS NewFS)
}

var cases = []testCase{
	{"Paths", testPaths},
	{"RootOps", testRootOps},
	{"Traversal", testTraversal},
	{"OpenFlags", testOpenFlags},
	{"OpenTruncReadOnly", testOpenTruncReadOnly},
	{"OpenCreateExistingDir", testOpenCreateExistingDir},
	{"ReadWrite", testReadWrite},
	{"Append", testAppend},
	{"Sparse", testSparse},
	{"Truncate", testTruncate},
	{"Fallocate", testFallocate},
	{"Rename", testRename},
	{"HardLinks", testHardLinks},
	{"Symlinks", testSymlinks},
	{"ReadDir", testReadDir},
	{"ReadDirConcurrent", testReadDirConcurrent},
	{"MkdirRmdir", testMkdirRmdir},
	{"Permissions", testPermissions},
	{"Owner", testOwner},
	{"Timestamps", testTimestamps},
	{"Statfs", testStatfs},
	{"Xattrs", testXattrs},
	{"Fsync", testFsync},
	{"HugeOffsets", testHugeOffsets},
	{"ClosedHandles", testClosedHandles},
	{"UnlinkOpen", testUnlinkOpen},
	{"Concurrent", testConcurrent},
}

// errno compares err with want (nil for success), naming the operation.
func errno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("%s: unexpected error %v (%s)", what, err, errName(err))
		}
		return
	}
	if err == nil {
		t.Fatalf("%s: succeeded, want %v (%s)", what, want, errName(want))
	}
	var e syscall.Errno
	if !errors.As(err, &e) || err != error(e) {
		t.Fatalf("%s: error %v of type %T is not a syscall.Errno", what, err, err)
	}
	if e != want {
		t.Fatalf("%s: got %v (%s), want %v (%s)", what, err, errName(err), want, errName(want))
	}
}

func errName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return fmt.Sprintf("errno %d", int(e))
	}
	return "not an errno"
}

func ok(t *testing.T, what string, err error) {
	t.Helper()
	errno(t, what, err, 0)
}

func writeFile(t *testing.T, fs libservices.FS, name string, data []byte, mode uint32) {
	t.Helper()
	h, err := fs.Open(name, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_TRUNC, mode)
	ok(t, "open "+name, err)
	n, err := fs.WriteAt(h, data, 0)
	ok(t, "write "+name, err)
	if n != len(data) {
		t.Fatalf("write %s: %d of %d bytes", name, n, len(data))
	}
	ok(t, "close "+name, fs.Close(h))
}

func readFile(t *testing.T, fs libservices.FS, name string) []byte {
	t.Helper()
	h, err := fs.Open(name, libservices.O_RDONLY, 0)
	ok(t, "open "+name, err)
	defer fs.Close(h)
	var a libservices.Attr
	ok(t, "fstat "+name, fs.Fstat(h, &a))
	buf := make([]byte, a.Size+1)
	n, err := fs.ReadAt(h, buf, 0)
	ok(t, "read "+name, err)
	if int64(n) != a.Size {
		t.Fatalf("read %s: %d bytes, size %d", name, n, a.Size)
	}
	return buf[:n]
}

func lstat(t *testing.T, fs libservices.FS, name string) libservices.Attr {
	t.Helper()
	var a libservices.Attr
	ok(t, "lstat "+name, fs.Lstat(name, &a))
	return a
}

func names(t *testing.T, fs libservices.FS, dir string) []string {
	t.Helper()
	ents, err := fs.ReadDir(dir)
	ok(t, "readdir "+dir, err)
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func testPaths(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	var a libservices.Attr
	errno(t, `lstat ""`, fs.Lstat("", &a), syscall.ENOENT)
	errno(t, "lstat NUL", fs.Lstat("a\x00b", &a), syscall.EINVAL)
	_, err := fs.Open("x\x00", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	errno(t, "create NUL", err, syscall.EINVAL)
	errno(t, "lstat ..", fs.Lstat("..", &a), syscall.EINVAL)
	errno(t, "mkdir a/../b", fs.Mkdir("a/../b", 0o755), syscall.EINVAL)
	errno(t, "lstat /../etc", fs.Lstat("/../etc", &a), syscall.EINVAL)
	long := strings.Repeat("n", libservices.NameMax+1)
	_, err = fs.Open(long, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	errno(t, "create 256-byte name", err, syscall.ENAMETOOLONG)
	errno(t, "mkdir 256-byte name", fs.Mkdir(long, 0o755), syscall.ENAMETOOLONG)
	errno(t, "lstat 256-byte name", fs.Lstat(long, &a), syscall.ENAMETOOLONG)
	max := strings.Repeat("m", libservices.NameMax)
	writeFile(t, fs, max, []byte("x"), 0o644)
	if got := names(t, fs, "."); !slices.Equal(got, []string{max}) {
		t.Fatalf("readdir after creating a 255-byte name: %q", got)
	}
	deep := strings.Repeat("d/", libservices.PathMax/2)
	errno(t, "lstat path of PATH_MAX bytes", fs.Lstat(deep, &a), syscall.ENAMETOOLONG)

	ok(t, "mkdir dir", fs.Mkdir("dir", 0o755))
	writeFile(t, fs, "/dir//f", []byte("abc"), 0o644)
	for _, p := range []string{"dir/f", "/dir/f", "dir//f", "./dir/./f", "dir/f/"} {
		a = lstat(t, fs, p)
		if a.Size != 3 || !a.IsRegular() {
			t.Fatalf("lstat %q: %+v", p, a)
		}
	}
	for _, p := range []string{".", "/", "//", "./"} {
		if a = lstat(t, fs, p); !a.IsDir() {
			t.Fatalf("lstat %q: not the root directory: %+v", p, a)
		}
	}
	errno(t, "lstat through a file", fs.Lstat("dir/f/x", &a), syscall.ENOTDIR)
	errno(t, "lstat missing parent", fs.Lstat("nope/x", &a), syscall.ENOENT)
}

func testRootOps(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	errno(t, "rmdir root", fs.Rmdir("."), syscall.EBUSY)
	errno(t, "rmdir /", fs.Rmdir("/"), syscall.EBUSY)
	errno(t, "unlink root", fs.Unlink("/"), syscall.EISDIR)
	errno(t, "mkdir root", fs.Mkdir(".", 0o755), syscall.EEXIST)
	errno(t, "symlink at root", fs.Symlink("x", "/"), syscall.EEXIST)
	ok(t, "mkdir d", fs.Mkdir("d", 0o755))
	errno(t, "rename root", fs.Rename(".", "x"), syscall.EBUSY)
	errno(t, "rename over root", fs.Rename("d", "/"), syscall.EBUSY)
	errno(t, "link to root name", fs.Link("d", "."), syscall.EEXIST)
	_, err := fs.Readlink(".")
	errno(t, "readlink root", err, syscall.EINVAL)
	h, err := fs.Open(".", libservices.O_RDONLY|libservices.O_DIRECTORY, 0)
	ok(t, "open root", err)
	ok(t, "close root", fs.Close(h))
}

// testTraversal checks that nothing escapes the FS: ".." and absolute symlinks
// resolve inside it, clamped at its root like a chroot.
func testTraversal(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	ok(t, "mkdir a", fs.Mkdir("a", 0o755))
	ok(t, "mkdir a/b", fs.Mkdir("a/b", 0o755))
	writeFile(t, fs, "top", []byte("top"), 0o644)
	ok(t, "symlink up", fs.Symlink("../../../../../../../..", "a/b/up"))
	ok(t, "symlink abs", fs.Symlink("/", "a/abs"))
	ok(t, "symlink etc", fs.Symlink("/etc/passwd", "passwd"))
	ok(t, "symlink proc", fs.Symlink("../../proc/self/root", "a/proc"))
	want := []string{"a", "passwd", "top"}
	for _, d := range []string{"a/b/up", "a/abs", "a/b/up/a/abs", "a/b/up/"} {
		if got := names(t, fs, d); !slices.Equal(got, want) {
			t.Fatalf("readdir %s: %q, want the FS root %q", d, got, want)
		}
	}
	if got := readFile(t, fs, "a/b/up/top"); string(got) != "top" {
		t.Fatalf("read a/b/up/top: %q", got)
	}
	var a libservices.Attr
	errno(t, "stat /etc/passwd through a symlink", fs.Stat("passwd", &a), syscall.ENOENT)
	_, err := fs.Open("passwd", libservices.O_RDONLY, 0)
	errno(t, "open /etc/passwd through a symlink", err, syscall.ENOENT)
	errno(t, "stat /proc through a symlink", fs.Stat("a/proc", &a), syscall.ENOENT)
	ok(t, "mkdir through up", fs.Mkdir("a/b/up/made", 0o755))
	if a = lstat(t, fs, "made"); !a.IsDir() {
		t.Fatalf("mkdir through a symlink to the root did not create /made")
	}
	writeFile(t, fs, "a/abs/made/f", []byte("f"), 0o644)
	if got := readFile(t, fs, "made/f"); string(got) != "f" {
		t.Fatalf("read made/f: %q", got)
	}
	errno(t, "unlink ../x", fs.Unlink("../x"), syscall.EINVAL)
	errno(t, "rename to ../x", fs.Rename("top", "../top"), syscall.EINVAL)
	errno(t, "symlink named ..", fs.Symlink("x", "a/.."), syscall.EINVAL)
}

func testOpenFlags(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	writeFile(t, fs, "f", []byte("hello"), 0o644)
	ok(t, "mkdir d", fs.Mkdir("d", 0o755))
	ok(t, "symlink", fs.Symlink("f", "ln"))
	ok(t, "symlink to dir", fs.Symlink("d", "dln"))
	const wr = libservices.O_WRONLY
	type c struct {
		name  string
		flags int
		want  syscall.Errno
	}
	for _, tc := range []c{
		{"missing", libservices.O_RDONLY, syscall.ENOENT},
		{"f", libservices.O_CREAT | libservices.O_EXCL | wr, syscall.EEXIST},
		{"ln", libservices.O_CREAT | libservices.O_EXCL | wr, syscall.EEXIST},
		{"d", libservices.O_CREAT | libservices.O_EXCL | wr, syscall.EEXIST},
		{"f", libservices.O_RDONLY | libservices.O_DIRECTORY, syscall.ENOTDIR},
		{"ln", libservices.O_RDONLY | libservices.O_DIRECTORY, syscall.ENOTDIR},
		{"ln", libservices.O_RDONLY | libservices.O_NOFOLLOW, syscall.ELOOP},
		{"dln", libservices.O_RDONLY | libservices.O_NOFOLLOW | libservices.O_DIRECTORY, syscall.ENOTDIR},
		{"d", wr, syscall.EISDIR},
		{"d", libservices.O_RDWR, syscall.EISDIR},
		{"d", libservices.O_CREAT | wr, syscall.EISDIR},
		{"f/x", libservices.O_RDONLY, syscall.ENOTDIR},
		{"f/x", libservices.O_CREAT | wr, syscall.ENOTDIR},
		{"nodir/x", libservices.O_CREAT | wr, syscall.ENOENT},
		{"new", libservices.O_CREAT | libservices.O_DIRECTORY | libservices.O_RDONLY, syscall.EINVAL},
		{"f", libservices.O_RDONLY, 0},
		{"ln", libservices.O_RDONLY, 0},
		{"d", libservices.O_RDONLY, 0},
		{"dln", libservices.O_RDONLY | libservices.O_DIRECTORY, 0},
		{"f", libservices.O_CREAT | wr, 0},
	} {
		h, err := fs.Open(tc.name, tc.flags, 0o644)
		errno(t, fmt.Sprintf("open %s flags %#o", tc.name, tc.flags), err, tc.want)
		if err == nil {
			ok(t, "close", fs.Close(h))
		}
	}
	var a libservices.Attr
	errno(t, "O_CREAT|O_DIRECTORY created nothing", fs.Lstat("new", &a), syscall.ENOENT)
	if got := readFile(t, fs, "f"); string(got) != "hello" {
		t.Fatalf("O_CREAT without O_TRUNC changed the file: %q", got)
	}

	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_TRUNC, 0)
	ok(t, "open O_TRUNC", err)
	ok(t, "fstat", fs.Fstat(h, &a))
	if a.Size != 0 {
		t.Fatalf("O_TRUNC left size %d", a.Size)
	}
	ok(t, "close", fs.Close(h))

	h, err = fs.Open("excl", libservices.O_CREAT|libservices.O_EXCL|libservices.O_RDWR, 0o600)
	ok(t, "create O_EXCL", err)
	ok(t, "fstat", fs.Fstat(h, &a))
	if !a.IsRegular() || a.Size != 0 || a.Mode&0o7777 != 0o600 {
		t.Fatalf("created file: %+v", a)
	}
	ok(t, "close", fs.Close(h))

	// Access modes are enforced on the handle.
	writeFile(t, fs, "f", []byte("hello"), 0o644)
	h, err = fs.Open("f", libservices.O_RDONLY, 0)
	ok(t, "open rdonly", err)
	_, err = fs.WriteAt(h, []byte("x"), 0)
	errno(t, "write on O_RDONLY", err, syscall.EBADF)
	errno(t, "ftruncate on O_RDONLY", fs.Ftruncate(h, 0), syscall.EINVAL)
	ok(t, "close", fs.Close(h))
	h, err = fs.Open("f", libservices.O_WRONLY, 0)
	ok(t, "open wronly", err)
	_, err = fs.ReadAt(h, make([]byte, 1), 0)
	errno(t, "read on O_WRONLY", err, syscall.EBADF)
	ok(t, "close", fs.Close(h))
	h, err = fs.Open("d", libservices.O_RDONLY, 0)
	ok(t, "open dir", err)
	_, err = fs.ReadAt(h, make([]byte, 1), 0)
	errno(t, "read on a directory", err, syscall.EISDIR)
	ok(t, "close", fs.Close(h))
}

// testOpenTruncReadOnly: O_TRUNC truncates an existing regular file whatever the
// access mode; Linux (tmpfs and ext4) truncates on O_RDONLY|O_TRUNC too, and the
// handle stays read-only.
func testOpenTruncReadOnly(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes, several pages
	writeFile(t, fs, "f", data, 0o644)
	ok(t, "symlink", fs.Symlink("f", "ln"))
	if got := readFile(t, fs, "f"); !bytes.Equal(got, data) {
		t.Fatalf("written file reads %d bytes", len(got))
	}
	for _, tc := range []struct {
		name  string
		flags int
	}{
		{"f", libservices.O_RDONLY | libservices.O_TRUNC},
		{"ln", libservices.O_RDONLY | libservices.O_TRUNC},
		{"f", libservices.O_RDONLY | libservices.O_TRUNC | libservices.O_CREAT},
	} {
		what := fmt.Sprintf("open %s flags %#o", tc.name, tc.flags)
		// A handle open before the truncation sees it too.
		old, err := fs.Open("f", libservices.O_RDONLY, 0)
		ok(t, "open f", err)
		buf := make([]byte, 100)
		n, err := fs.ReadAt(old, buf, 0)
		ok(t, "read before", err)
		if n != len(buf) {
			t.Fatalf("read before %s: %d bytes", what, n)
		}
		h, err := fs.Open(tc.name, tc.flags, 0o644)
		ok(t, what, err)
		var a libservices.Attr
		ok(t, "fstat", fs.Fstat(h, &a))
		if !a.IsRegular() || a.Size != 0 {
			t.Fatalf("%s: mode %#o size %d, want an empty regular file", what, a.Mode, a.Size)
		}
		n, err = fs.ReadAt(h, buf, 0)
		ok(t, "read", err)
		if n != 0 {
			t.Fatalf("%s: read %d bytes after the truncation", what, n)
		}
		n, err = fs.ReadAt(old, buf, 0)
		ok(t, "read through the older handle", err)
		if n != 0 {
			t.Fatalf("%s: the older handle reads %d bytes", what, n)
		}
		_, err = fs.WriteAt(h, []byte("x"), 0)
		errno(t, what+": write", err, syscall.EBADF)
		ok(t, "close", fs.Close(h))
		ok(t, "close", fs.Close(old))
		if a := lstat(t, fs, "f"); a.Size != 0 {
			t.Fatalf("%s: lstat size %d", what, a.Size)
		}
		writeFile(t, fs, "f", data, 0o644)
	}

	// Data written through another handle before the truncation is gone (a
	// write-back layer must not write it later).
	w, err := fs.Open("f", libservices.O_RDWR, 0)
	ok(t, "open rdwr", err)
	_, err = fs.WriteAt(w, []byte("pending"), 20000)
	ok(t, "write", err)
	h, err := fs.Open("f", libservices.O_RDONLY|libservices.O_TRUNC, 0)
	ok(t, "open O_RDONLY|O_TRUNC with a writer open", err)
	var a libservices.Attr
	ok(t, "fstat writer", fs.Fstat(w, &a))
	if a.Size != 0 {
		t.Fatalf("writer sees size %d after the truncation", a.Size)
	}
	ok(t, "fsync writer", fs.Fsync(w))
	ok(t, "close", fs.Close(h))
	ok(t, "close writer", fs.Close(w))
	if got := readFile(t, fs, "f"); len(got) != 0 {
		t.Fatalf("truncated file reads %d bytes", len(got))
	}

	// A file created by O_RDONLY|O_CREAT|O_TRUNC is empty and readable.
	h, err = fs.Open("new", libservices.O_RDONLY|libservices.O_CREAT|libservices.O_TRUNC, 0o600)
	ok(t, "create O_RDONLY|O_TRUNC", err)
	ok(t, "fstat", fs.Fstat(h, &a))
	if !a.IsRegular() || a.Size != 0 || a.Mode&0o7777 != 0o600 {
		t.Fatalf("created file: mode %#o size %d", a.Mode, a.Size)
	}
	ok(t, "close", fs.Close(h))
}

// testOpenCreateExistingDir: O_CREAT without O_EXCL on an existing directory is
// EISDIR whatever the access mode (the O_CREAT|O_DIRECTORY combination is EINVAL
// before any lookup, Linux >= 6.4), and O_TRUNC on a directory is EISDIR even with
// O_RDONLY. Nothing is created or changed.
func testOpenCreateExistingDir(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	ok(t, "mkdir d", fs.Mkdir("d", 0o755))
	writeFile(t, fs, "d/inside", []byte("x"), 0o644)
	ok(t, "symlink to dir", fs.Symlink("d", "dln"))
	const rd = libservices.O_RDONLY
	for _, tc := range []struct {
		name  string
		flags int
		want  syscall.Errno
	}{
		{"d", rd | libservices.O_CREAT, syscall.EISDIR},
		{"d/", rd | libservices.O_CREAT, syscall.EISDIR},
		{"dln", rd | libservices.O_CREAT, syscall.EISDIR},
		{".", rd | libservices.O_CREAT, syscall.EISDIR},
		{"d", rd | libservices.O_CREAT | libservices.O_TRUNC, syscall.EISDIR},
		{"d", rd | libservices.O_CREAT | libservices.O_APPEND, syscall.EISDIR},
		{"d", libservices.O_RDWR | libservices.O_CREAT, syscall.EISDIR},
		{"d", rd | libservices.O_CREAT | libservices.O_DIRECTORY, syscall.EINVAL},
		{"dln", rd | libservices.O_CREAT | libservices.O_DIRECTORY, syscall.EINVAL},
		{"d", rd | libservices.O_TRUNC, syscall.EISDIR},
		{"d", rd | libservices.O_TRUNC | libservices.O_DIRECTORY, syscall.EISDIR},
		{"dln", rd | libservices.O_TRUNC, syscall.EISDIR},
		{".", rd | libservices.O_TRUNC, syscall.EISDIR},
		{"dln", rd | libservices.O_CREAT | libservices.O_NOFOLLOW, syscall.ELOOP},
		{"d", rd | libservices.O_CREAT | libservices.O_EXCL, syscall.EEXIST},
		{"d", rd, 0},
		{"d", rd | libservices.O_DIRECTORY, 0},
	} {
		h, err := fs.Open(tc.name, tc.flags, 0o644)
		errno(t, fmt.Sprintf("open %s flags %#o", tc.name, tc.flags), err, tc.want)
		if err == nil {
			ok(t, "close", fs.Close(h))
		}
	}
	if a := lstat(t, fs, "d"); !a.IsDir() {
		t.Fatalf("d is no longer a directory: mode %#o", a.Mode)
	}
	if a := lstat(t, fs, "dln"); !a.IsSymlink() {
		t.Fatalf("dln is no longer a symlink: mode %#o", a.Mode)
	}
	if got := readFile(t, fs, "d/inside"); string(got) != "x" {
		t.Fatalf("d/inside changed: %q", got)
	}
}

func testReadWrite(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	defer fs.Close(h)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes, across pages
	n, err := fs.WriteAt(h, data, 0)
	ok(t, "write", err)
	if n != len(data) {
		t.Fatalf("wrote %d", n)
	}
	n, err = fs.WriteAt(h, []byte("XYZ"), 4094)
	ok(t, "overwrite across a page boundary", err)
	copy(data[4094:], "XYZ")
	for _, r := range []struct{ off, n int }{{0, 1}, {4093, 5}, {4095, 4097}, {15990, 10}, {0, 16000}} {
		buf := make([]byte, r.n)
		got, err := fs.ReadAt(h, buf, int64(r.off))
		ok(t, "read", err)
		if got != r.n || !bytes.Equal(buf, data[r.off:r.off+r.n]) {
			t.Fatalf("read %d@%d: %d bytes %q", r.n, r.off, got, buf[:got])
		}
	}
	buf := make([]byte, 100)
	got, err := fs.ReadAt(h, buf, 15950)
	ok(t, "read across EOF", err)
	if got != 50 || !bytes.Equal(buf[:50], data[15950:]) {
		t.Fatalf("read across EOF: %d bytes", got)
	}
	for _, off := range []int64{16000, 16001, 1 << 40} {
		got, err = fs.ReadAt(h, buf, off)
		ok(t, "read past EOF", err)
		if got != 0 {
			t.Fatalf("read at %d past EOF: %d bytes", off, got)
		}
	}
	got, err = fs.ReadAt(h, nil, 0)
	ok(t, "empty read", err)
	if got != 0 {
		t.Fatalf("empty read returned %d", got)
	}
	got, err = fs.WriteAt(h, nil, 100000)
	ok(t, "empty write", err)
	var a libservices.Attr
	ok(t, "fstat", fs.Fstat(h, &a))
	if got != 0 || a.Size != 16000 {
		t.Fatalf("empty write past EOF: n=%d size=%d", got, a.Size)
	}
	// Writing past EOF leaves a zero-filled gap.
	_, err = fs.WriteAt(h, []byte("end"), 20000)
	ok(t, "write past EOF", err)
	gap := make([]byte, 4000)
	got, err = fs.ReadAt(h, gap, 16000)
	ok(t, "read gap", err)
	if got != 4000 || !bytes.Equal(gap, make([]byte, 4000)) {
		t.Fatalf("gap not zero")
	}
	if got := lstat(t, fs, "f"); got.Size != 20003 {
		t.Fatalf("size after write past EOF: %d", got.Size)
	}
}

func testAppend(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	writeFile(t, fs, "f", []byte("abc"), 0o644)
	h, err := fs.Open("f", libservices.O_WRONLY|libservices.O_APPEND, 0)
	ok(t, "open O_APPEND", err)
	for _, s := range []string{"de", "f"} {
		n, err := fs.WriteAt(h, []byte(s), 0)
		ok(t, "append", err)
		if n != len(s) {
			t.Fatalf("append wrote %d", n)
		}
	}
	ok(t, "close", fs.Close(h))
	if got := readFile(t, fs, "f"); string(got) != "abcdef" {
		t.Fatalf("after appends: %q", got)
	}
}

func testSparse(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("s", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	defer fs.Close(h)
	const off = 64 << 20
	_, err = fs.WriteAt(h, []byte("tail"), off)
	ok(t, "write far", err)
	var a libservices.Attr
	ok(t, "fstat", fs.Fstat(h, &a))
	if a.Size != off+4 {
		t.Fatalf("size %d", a.Size)
	}
	if a.Blocks*512 >= off {
		t.Fatalf("a 64 MiB hole is allocated: %d blocks", a.Blocks)
	}
	buf := make([]byte, 8192)
	n, err := fs.ReadAt(h, buf, off-8188)
	ok(t, "read hole", err)
	if n != 8192 || !bytes.Equal(buf[:8188], make([]byte, 8188)) || string(buf[8188:]) != "tail" {
		t.Fatalf("hole then data: %d bytes", n)
	}
}

func testTruncate(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	data := bytes.Repeat([]byte{0xAB}, 10000)
	writeFile(t, fs, "f", data, 0o644)
	h, err := fs.Open("f", libservices.O_RDWR, 0)
	ok(t, "open", err)
	defer fs.Close(h)
	ok(t, "truncate down", fs.Ftruncate(h, 5000))
	ok(t, "truncate up", fs.Ftruncate(h, 9000))
	buf := make([]byte, 10000)
	n, err := fs.ReadAt(h, buf, 0)
	ok(t, "read", err)
	if n != 9000 || !bytes.Equal(buf[:5000], data[:5000]) || !bytes.Equal(buf[5000:9000], make([]byte, 4000)) {
		t.Fatalf("after truncate down and up: %d bytes, the regrown part must read as zeros", n)
	}
	errno(t, "negative ftruncate", fs.Ftruncate(h, -1), syscall.EINVAL)
	ok(t, "setattr size", fs.Setattr("f", &libservices.SetAttr{Valid: libservices.SetSize, Size: 100}))
	if a := lstat(t, fs, "f"); a.Size != 100 {
		t.Fatalf("size after setattr: %d", a.Size)
	}
	errno(t, "setattr negative size", fs.Setattr("f", &libservices.SetAttr{Valid: libservices.SetSize, Size: -5}), syscall.EINVAL)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	errno(t, "truncate a directory", fs.Setattr("d", &libservices.SetAttr{Valid: libservices.SetSize}), syscall.EISDIR)
	errno(t, "truncate missing", fs.Setattr("nope", &libservices.SetAttr{Valid: libservices.SetSize}), syscall.ENOENT)
	ok(t, "symlink", fs.Symlink("f", "ln"))
	ok(t, "truncate through symlink", fs.Setattr("ln", &libservices.SetAttr{Valid: libservices.SetSize, Size: 7}))
	if a := lstat(t, fs, "f"); a.Size != 7 {
		t.Fatalf("truncate did not follow the symlink: size %d", a.Size)
	}
}

func testFallocate(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	defer fs.Close(h)
	ok(t, "fallocate", fs.Fallocate(h, 0, 0, 3*4096))
	var a libservices.Attr
	ok(t, "fstat", fs.Fstat(h, &a))
	if a.Size != 3*4096 || a.Blocks*512 < 3*4096 {
		t.Fatalf("after fallocate: size %d blocks %d", a.Size, a.Blocks)
	}
	ok(t, "fallocate keep size", fs.Fallocate(h, libservices.FallocKeepSize, 0, 8*4096))
	ok(t, "fstat", fs.Fstat(h, &a))
	if a.Size != 3*4096 {
		t.Fatalf("FALLOC_FL_KEEP_SIZE changed the size to %d", a.Size)
	}
	data := bytes.Repeat([]byte{7}, 3*4096)
	_, err = fs.WriteAt(h, data, 0)
	ok(t, "write", err)
	ok(t, "punch", fs.Fallocate(h, libservices.FallocPunchHole|libservices.FallocKeepSize, 4096, 4096))
	buf := make([]byte, 3*4096)
	_, err = fs.ReadAt(h, buf, 0)
	ok(t, "read", err)
	copy(data[4096:8192], make([]byte, 4096))
	if !bytes.Equal(buf, data) {
		t.Fatalf("punched range does not read as zeros, or the rest changed")
	}
	ok(t, "fstat", fs.Fstat(h, &a))
	if a.Size != 3*4096 {
		t.Fatalf("punch hole changed the size to %d", a.Size)
	}
	errno(t, "fallocate zero length", fs.Fallocate(h, 0, 0, 0), syscall.EINVAL)
	errno(t, "fallocate negative offset", fs.Fallocate(h, 0, -1, 10), syscall.EINVAL)
	ro, err := fs.Open("f", libservices.O_RDONLY, 0)
	ok(t, "open rdonly", err)
	errno(t, "fallocate on O_RDONLY", fs.Fallocate(ro, 0, 0, 10), syscall.EBADF)
	ok(t, "close", fs.Close(ro))
}

func testRename(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	for _, d := range []string{"a", "b", "a/sub", "empty", "full"} {
		ok(t, "mkdir "+d, fs.Mkdir(d, 0o755))
	}
	writeFile(t, fs, "full/x", []byte("x"), 0o644)
	writeFile(t, fs, "f1", []byte("one"), 0o644)
	writeFile(t, fs, "f2", []byte("two"), 0o644)

	ok(t, "rename file over file", fs.Rename("f1", "f2"))
	var a libservices.Attr
	errno(t, "old name gone", fs.Lstat("f1", &a), syscall.ENOENT)
	if got := readFile(t, fs, "f2"); string(got) != "one" {
		t.Fatalf("target content %q", got)
	}
	errno(t, "file over dir", fs.Rename("f2", "empty"), syscall.EISDIR)
	errno(t, "dir over file", fs.Rename("empty", "f2"), syscall.ENOTDIR)
	errno(t, "dir over non-empty dir", fs.Rename("empty", "full"), syscall.ENOTEMPTY)
	errno(t, "dir into its own subdirectory", fs.Rename("a", "a/sub/a"), syscall.EINVAL)
	errno(t, "dir onto its own subdirectory", fs.Rename("a", "a/sub"), syscall.EINVAL)
	errno(t, "dir over its ancestor", fs.Rename("a/sub", "a"), syscall.ENOTEMPTY)
	errno(t, "missing source", fs.Rename("nope", "x"), syscall.ENOENT)
	errno(t, "missing target dir", fs.Rename("f2", "nope/x"), syscall.ENOENT)
	errno(t, "target under a file", fs.Rename("f2", "f2/x"), syscall.ENOTDIR)
	errno(t, "missing source, target under a file (parents first)", fs.Rename("nope", "f2/x"), syscall.ENOTDIR)
	ok(t, "rename to itself", fs.Rename("f2", "f2"))
	if got := readFile(t, fs, "f2"); string(got) != "one" {
		t.Fatalf("rename to itself changed content %q", got)
	}

	rootLinks := lstat(t, fs, ".").Nlink
	aLinks := lstat(t, fs, "a").Nlink
	ok(t, "dir over empty dir", fs.Rename("full", "empty"))
	if got := readFile(t, fs, "empty/x"); string(got) != "x" {
		t.Fatalf("moved dir content %q", got)
	}
	if got := lstat(t, fs, ".").Nlink; got != rootLinks-1 {
		t.Fatalf("root nlink %d after replacing a subdirectory, was %d", got, rootLinks)
	}
	ok(t, "dir across dirs", fs.Rename("empty", "a/moved"))
	if got := lstat(t, fs, "a").Nlink; got != aLinks+1 {
		t.Fatalf("nlink of new parent %d, want %d", got, aLinks+1)
	}
	if got := lstat(t, fs, ".").Nlink; got != rootLinks-2 {
		t.Fatalf("nlink of old parent %d, want %d", got, rootLinks-2)
	}
	ok(t, "file across dirs", fs.Rename("f2", "b/f"))
	if got := readFile(t, fs, "b/f"); string(got) != "one" {
		t.Fatalf("moved file %q", got)
	}
	ok(t, "symlink", fs.Symlink("b", "ln"))
	ok(t, "rename a symlink", fs.Rename("ln", "a/ln"))
	if target, err := fs.Readlink("a/ln"); err != nil || target != "b" {
		t.Fatalf("renamed symlink: %q %v", target, err)
	}
	// Two names of one file: rename does nothing.
	ok(t, "link", fs.Link("b/f", "b/g"))
	ok(t, "rename between links of one file", fs.Rename("b/f", "b/g"))
	if got := names(t, fs, "b"); !slices.Equal(got, []string{"f", "g"}) {
		t.Fatalf("after renaming between hard links: %q", got)
	}
}

func testHardLinks(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	writeFile(t, fs, "f", []byte("data"), 0o644)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	ok(t, "link", fs.Link("f", "d/g"))
	a, b := lstat(t, fs, "f"), lstat(t, fs, "d/g")
	if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
		t.Fatalf("after link: %+v %+v", a, b)
	}
	writeFile(t, fs, "d/g", []byte("new"), 0o644)
	if got := readFile(t, fs, "f"); string(got) != "new" {
		t.Fatalf("write through one link not seen through the other: %q", got)
	}
	errno(t, "link over existing", fs.Link("f", "d/g"), syscall.EEXIST)
	errno(t, "link a directory", fs.Link("d", "d2"), syscall.EPERM)
	errno(t, "link missing", fs.Link("nope", "x"), syscall.ENOENT)
	errno(t, "link into missing dir", fs.Link("f", "nope/x"), syscall.ENOENT)
	errno(t, "link into a file", fs.Link("f", "f/x"), syscall.ENOTDIR)
	errno(t, "link missing into a file (old name first)", fs.Link("nope", "f/x"), syscall.ENOENT)
	ok(t, "symlink", fs.Symlink("f", "ln"))
	ok(t, "link a symlink", fs.Link("ln", "ln2"))
	if a := lstat(t, fs, "ln2"); !a.IsSymlink() || a.Nlink != 2 {
		t.Fatalf("hard link of a symlink: %+v", a)
	}
	ok(t, "unlink", fs.Unlink("f"))
	if b := lstat(t, fs, "d/g"); b.Nlink != 1 {
		t.Fatalf("nlink after unlink: %d", b.Nlink)
	}
}

func testSymlinks(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	writeFile(t, fs, "f", []byte("data"), 0o644)
	ok(t, "symlink", fs.Symlink("f", "ln"))
	target, err := fs.Readlink("ln")
	ok(t, "readlink", err)
	if target != "f" {
		t.Fatalf("readlink: %q", target)
	}
	if a := lstat(t, fs, "ln"); !a.IsSymlink() || a.Size != 1 || a.Mode&0o777 != 0o777 {
		t.Fatalf("lstat of symlink: %+v", a)
	}
	var a libservices.Attr
	ok(t, "stat follows", fs.Stat("ln", &a))
	if !a.IsRegular() || a.Size != 4 {
		t.Fatalf("stat through symlink: %+v", a)
	}
	_, err = fs.Readlink("f")
	errno(t, "readlink on a file", err, syscall.EINVAL)
	_, err = fs.Readlink("nope")
	errno(t, "readlink missing", err, syscall.ENOENT)
	errno(t, "symlink over existing", fs.Symlink("x", "f"), syscall.EEXIST)
	errno(t, "symlink empty target", fs.Symlink("", "e"), syscall.ENOENT)
	ok(t, "dangling", fs.Symlink("nowhere", "dangle"))
	errno(t, "stat dangling", fs.Stat("dangle", &a), syscall.ENOENT)
	lstat(t, fs, "dangle")

	ok(t, "loop a", fs.Symlink("b", "a"))
	ok(t, "loop b", fs.Symlink("a", "b"))
	ok(t, "self loop", fs.Symlink("self", "self"))
	for _, n := range []string{"a", "b", "self", "a/x"} {
		errno(t, "stat loop "+n, fs.Stat(n, &a), syscall.ELOOP)
	}
	_, err = fs.Open("a", libservices.O_RDONLY, 0)
	errno(t, "open loop", err, syscall.ELOOP)
	errno(t, "lstat through loop", fs.Lstat("a/x", &a), syscall.ELOOP)
	lstat(t, fs, "a") // the link itself is fine

	// Linux follows at most 40 links in one resolution.
	prev := "f"
	for i := 1; i <= 41; i++ {
		name := fmt.Sprintf("c%d", i)
		ok(t, "chain", fs.Symlink(prev, name))
		prev = name
	}
	ok(t, "40 links", fs.Stat("c40", &a))
	errno(t, "41 links", fs.Stat("c41", &a), syscall.ELOOP)

	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	ok(t, "symlink to dir", fs.Symlink("d", "dl"))
	writeFile(t, fs, "dl/inside", []byte("in"), 0o644)
	if got := readFile(t, fs, "d/inside"); string(got) != "in" {
		t.Fatalf("through dir symlink: %q", got)
	}
	errno(t, "rmdir a symlink to a dir", fs.Rmdir("dl"), syscall.ENOTDIR)
	ok(t, "unlink a symlink to a dir", fs.Unlink("dl"))
	lstat(t, fs, "d/inside")
	ok(t, "relative symlink in subdir", fs.Symlink("../f", "d/up"))
	if got := readFile(t, fs, "d/up"); string(got) != "data" {
		t.Fatalf("through ../f: %q", got)
	}
}

func testReadDir(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	if got := names(t, fs, "d"); len(got) != 0 {
		t.Fatalf("empty dir lists %q", got)
	}
	writeFile(t, fs, "d/file", nil, 0o644)
	ok(t, "mkdir sub", fs.Mkdir("d/sub", 0o755))
	ok(t, "symlink", fs.Symlink("file", "d/link"))
	ents, err := fs.ReadDir("d")
	ok(t, "readdir", err)
	types := map[string]uint32{}
	for _, e := range ents {
		types[e.Name] = e.Type
		if a := lstat(t, fs, "d/"+e.Name); a.Ino != e.Ino {
			t.Fatalf("entry %s: ino %d, lstat says %d", e.Name, e.Ino, a.Ino)
		}
	}
	want := map[string]uint32{"file": syscall.S_IFREG, "sub": syscall.S_IFDIR, "link": syscall.S_IFLNK}
	if len(types) != len(want) || len(ents) != len(want) {
		t.Fatalf("readdir: %+v", ents)
	}
	for k, v := range want {
		if types[k] != v {
			t.Fatalf("entry %s: type %#o, want %#o", k, types[k], v)
		}
	}
	_, err = fs.ReadDir("d/file")
	errno(t, "readdir a file", err, syscall.ENOTDIR)
	_, err = fs.ReadDir("nope")
	errno(t, "readdir missing", err, syscall.ENOENT)
	ok(t, "symlink to dir", fs.Symlink("d", "dl"))
	if got := names(t, fs, "dl"); len(got) != 3 {
		t.Fatalf("readdir through a symlink: %q", got)
	}
	const many = 300
	ok(t, "mkdir big", fs.Mkdir("big", 0o755))
	for i := 0; i < many; i++ {
		writeFile(t, fs, fmt.Sprintf("big/%04d", i), nil, 0o644)
	}
	if got := names(t, fs, "big"); len(got) != many {
		t.Fatalf("readdir of %d entries returned %d", many, len(got))
	}
}

// testReadDirConcurrent checks that entries that exist for a whole ReadDir are
// returned exactly once even while other entries are created and removed.
func testReadDirConcurrent(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	const stable = 200
	for i := 0; i < stable; i++ {
		writeFile(t, fs, fmt.Sprintf("d/s%03d", i), nil, 0o644)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var churnErr error
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("d/churn%05d", i)
			h, err := fs.Open(name, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
			if err != nil {
				churnErr = err
				return
			}
			fs.Close(h)
			if i%2 == 0 {
				if err := fs.Unlink(name); err != nil {
					churnErr = err
					return
				}
			}
		}
	}()
	for round := 0; round < 10; round++ {
		ents, err := fs.ReadDir("d")
		if err != nil {
			close(stop)
			wg.Wait()
			ok(t, "readdir", err)
		}
		seen := map[string]int{}
		for _, e := range ents {
			seen[e.Name]++
		}
		for i := 0; i < stable; i++ {
			if n := seen[fmt.Sprintf("s%03d", i)]; n != 1 {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: stable entry s%03d returned %d times", round, i, n)
			}
		}
		for name, n := range seen {
			if n != 1 {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: entry %s returned %d times", round, name, n)
			}
		}
	}
	close(stop)
	wg.Wait()
	ok(t, "churn", churnErr)
}

func testMkdirRmdir(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	if a := lstat(t, fs, "d"); !a.IsDir() || a.Nlink != 2 {
		t.Fatalf("new dir: %+v", a)
	}
	writeFile(t, fs, "f", nil, 0o644)
	ok(t, "symlink", fs.Symlink("d", "ln"))
	errno(t, "mkdir existing dir", fs.Mkdir("d", 0o755), syscall.EEXIST)
	errno(t, "mkdir over file", fs.Mkdir("f", 0o755), syscall.EEXIST)
	errno(t, "mkdir over symlink", fs.Mkdir("ln", 0o755), syscall.EEXIST)
	errno(t, "mkdir missing parent", fs.Mkdir("nope/x", 0o755), syscall.ENOENT)
	errno(t, "mkdir under file", fs.Mkdir("f/x", 0o755), syscall.ENOTDIR)
	ok(t, "mkdir sub", fs.Mkdir("d/sub", 0o755))
	ok(t, "mkdir sub2", fs.Mkdir("ln/sub2", 0o755))
	if a := lstat(t, fs, "d"); a.Nlink != 4 {
		t.Fatalf("dir with two subdirs: nlink %d", a.Nlink)
	}
	errno(t, "rmdir non-empty", fs.Rmdir("d"), syscall.ENOTEMPTY)
	errno(t, "rmdir file", fs.Rmdir("f"), syscall.ENOTDIR)
	errno(t, "rmdir missing", fs.Rmdir("nope"), syscall.ENOENT)
	errno(t, "rmdir through file", fs.Rmdir("f/x"), syscall.ENOTDIR)
	errno(t, "unlink dir", fs.Unlink("d"), syscall.EISDIR)
	errno(t, "unlink missing", fs.Unlink("nope"), syscall.ENOENT)
	ok(t, "rmdir sub", fs.Rmdir("d/sub"))
	ok(t, "rmdir sub2", fs.Rmdir("d/sub2"))
	if a := lstat(t, fs, "d"); a.Nlink != 2 {
		t.Fatalf("nlink after rmdir of subdirs: %d", a.Nlink)
	}
	ok(t, "rmdir", fs.Rmdir("d"))
	var a libservices.Attr
	errno(t, "lstat removed", fs.Lstat("d", &a), syscall.ENOENT)
	ok(t, "mkdir again", fs.Mkdir("d", 0o700))
}

func testPermissions(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	for _, m := range []uint32{0o640, 0o600, 0o777, 0o4755, 0o2750, 0o1777, 0} {
		name := fmt.Sprintf("f%o", m)
		h, err := fs.Open(name, libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, m)
		ok(t, "create", err)
		ok(t, "close", fs.Close(h))
		if a := lstat(t, fs, name); a.Mode != syscall.S_IFREG|m {
			t.Fatalf("create mode %#o: got %#o (no umask applies)", m, a.Mode)
		}
		dname := fmt.Sprintf("d%o", m)
		ok(t, "mkdir", fs.Mkdir(dname, m))
		if a := lstat(t, fs, dname); a.Mode&0o777 != m&0o777 || !a.IsDir() {
			t.Fatalf("mkdir mode %#o: got %#o", m, a.Mode)
		}
	}
	ok(t, "chmod", fs.Setattr("f640", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o4711}))
	if a := lstat(t, fs, "f640"); a.Mode != syscall.S_IFREG|0o4711 {
		t.Fatalf("chmod: %#o", a.Mode)
	}
	ok(t, "symlink", fs.Symlink("f600", "ln"))
	ok(t, "chmod through symlink", fs.Setattr("ln", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o444}))
	if a := lstat(t, fs, "f600"); a.Mode&0o7777 != 0o444 {
		t.Fatalf("chmod did not follow the symlink: %#o", a.Mode)
	}
	if a := lstat(t, fs, "ln"); a.Mode&0o777 != 0o777 {
		t.Fatalf("chmod changed the symlink itself: %#o", a.Mode)
	}
	errno(t, "chmod missing", fs.Setattr("nope", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o644}), syscall.ENOENT)
}

func testOwner(t *testing.T, newFS NewFS) {
	testenv.Root(t)
	fs := newFS(t)
	writeFile(t, fs, "f", nil, 0o644)
	ok(t, "chown", fs.Setattr("f", &libservices.SetAttr{Valid: libservices.SetUid | libservices.SetGid, Uid: 1234, Gid: 5678}))
	if a := lstat(t, fs, "f"); a.Uid != 1234 || a.Gid != 5678 {
		t.Fatalf("chown: %d:%d", a.Uid, a.Gid)
	}
	ok(t, "chgrp", fs.Setattr("f", &libservices.SetAttr{Valid: libservices.SetGid, Gid: 42}))
	if a := lstat(t, fs, "f"); a.Uid != 1234 || a.Gid != 42 {
		t.Fatalf("chgrp: %d:%d", a.Uid, a.Gid)
	}
}

var epoch = libservices.Timespec{Sec: 1000000000, Nsec: 123456789}

func setTimes(t *testing.T, fs libservices.FS, name string) {
	t.Helper()
	ok(t, "utimes "+name, fs.Setattr(name, &libservices.SetAttr{Valid: libservices.SetAtime | libservices.SetMtime, Atime: epoch, Mtime: epoch}))
	if a := lstat(t, fs, name); a.Mtime != epoch || a.Atime != epoch {
		t.Fatalf("utimes %s: mtime %+v atime %+v, want %+v", name, a.Mtime, a.Atime, epoch)
	}
}

// changed checks that an operation set mtime (from the old epoch) and ctime, as
// POSIX requires, on name.
func changed(t *testing.T, fs libservices.FS, name, op string) {
	t.Helper()
	a := lstat(t, fs, name)
	if a.Mtime == epoch {
		t.Fatalf("%s did not update the mtime of %s", op, name)
	}
	if a.Ctime.Before(a.Mtime) {
		t.Fatalf("%s on %s: ctime %+v before mtime %+v", op, name, a.Ctime, a.Mtime)
	}
}

func testTimestamps(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	setTimes(t, fs, "d")
	writeFile(t, fs, "d/f", []byte("x"), 0o644)
	changed(t, fs, "d", "create")

	setTimes(t, fs, "d/f")
	before := lstat(t, fs, "d/f")
	h, err := fs.Open("d/f", libservices.O_RDWR, 0)
	ok(t, "open", err)
	buf := make([]byte, 1)
	_, err = fs.ReadAt(h, buf, 0)
	ok(t, "read", err)
	if a := lstat(t, fs, "d/f"); a.Mtime != epoch || a.Ctime != before.Ctime {
		t.Fatalf("a read changed mtime or ctime")
	}
	_, err = fs.WriteAt(h, []byte("y"), 0)
	ok(t, "write", err)
	changed(t, fs, "d/f", "write")
	setTimes(t, fs, "d/f")
	ok(t, "ftruncate", fs.Ftruncate(h, 0))
	changed(t, fs, "d/f", "ftruncate")
	ok(t, "close", fs.Close(h))

	c0 := lstat(t, fs, "d/f").Ctime
	ok(t, "chmod", fs.Setattr("d/f", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}))
	if c := lstat(t, fs, "d/f").Ctime; c.Before(c0) {
		t.Fatalf("chmod moved ctime backwards")
	}

	for _, op := range []struct {
		name string
		fn   func() error
	}{
		{"mkdir", func() error { return fs.Mkdir("d/sub", 0o755) }},
		{"symlink", func() error { return fs.Symlink("f", "d/ln") }},
		{"link", func() error { return fs.Link("d/f", "d/hard") }},
		{"unlink", func() error { return fs.Unlink("d/hard") }},
		{"rename within", func() error { return fs.Rename("d/ln", "d/ln2") }},
		{"rmdir", func() error { return fs.Rmdir("d/sub") }},
	} {
		setTimes(t, fs, "d")
		ok(t, op.name, op.fn())
		changed(t, fs, "d", op.name)
	}
	ok(t, "mkdir e", fs.Mkdir("e", 0o755))
	setTimes(t, fs, "d")
	setTimes(t, fs, "e")
	ok(t, "rename across", fs.Rename("d/f", "e/f"))
	changed(t, fs, "d", "rename (source dir)")
	changed(t, fs, "e", "rename (target dir)")

	ok(t, "utimes now", fs.Setattr("e/f", &libservices.SetAttr{Valid: libservices.SetAtimeNow | libservices.SetMtimeNow}))
	changed(t, fs, "e/f", "utimes UTIME_NOW")
	ok(t, "mtime only", fs.Setattr("e/f", &libservices.SetAttr{Valid: libservices.SetMtime, Mtime: epoch}))
	if a := lstat(t, fs, "e/f"); a.Mtime != epoch || a.Atime == epoch {
		t.Fatalf("setting mtime alone: %+v", a)
	}
}

func testStatfs(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	var st libservices.Statfs
	ok(t, "statfs", fs.Statfs(&st))
	if st.Bsize <= 0 || st.Namelen != libservices.NameMax || st.Bfree > st.Blocks || st.Bavail > st.Bfree || st.Blocks == 0 {
		t.Fatalf("statfs: %+v", st)
	}
}

func testXattrs(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	writeFile(t, fs, "f", nil, 0o644)
	ok(t, "mkdir", fs.Mkdir("d", 0o755))
	ok(t, "symlink", fs.Symlink("f", "ln"))
	buf := make([]byte, 64)
	_, err := fs.Getxattr("f", "user.absent", buf)
	errno(t, "get absent", err, syscall.ENODATA)
	_, err = fs.Getxattr("nope", "user.a", buf)
	errno(t, "get on missing file", err, syscall.ENOENT)
	errno(t, "set on missing file", fs.Setxattr("nope", "user.a", []byte("v"), 0), syscall.ENOENT)
	errno(t, "set without namespace", fs.Setxattr("f", "plain", []byte("v"), 0), syscall.EOPNOTSUPP)
	errno(t, "replace absent", fs.Setxattr("f", "user.a", []byte("v"), libservices.XattrReplace), syscall.ENODATA)
	ok(t, "set", fs.Setxattr("f", "user.a", []byte("value"), 0))
	ok(t, "set empty", fs.Setxattr("f", "user.empty", nil, 0))
	ok(t, "set on dir", fs.Setxattr("d", "user.dir", []byte("dv"), 0))
	errno(t, "create existing", fs.Setxattr("f", "user.a", []byte("v"), libservices.XattrCreate), syscall.EEXIST)
	n, err := fs.Getxattr("f", "user.a", nil)
	ok(t, "size query", err)
	if n != 5 {
		t.Fatalf("size query: %d", n)
	}
	n, err = fs.Getxattr("f", "user.a", make([]byte, 2))
	errno(t, "get into small buffer", err, syscall.ERANGE)
	if n != 0 {
		t.Fatalf("failed getxattr returned length %d, want 0", n)
	}
	n, err = fs.Getxattr("ln", "user.a", buf)
	ok(t, "get through symlink", err)
	if string(buf[:n]) != "value" {
		t.Fatalf("get: %q", buf[:n])
	}
	n, err = fs.Getxattr("f", "user.empty", buf)
	ok(t, "get empty", err)
	if n != 0 {
		t.Fatalf("empty value has length %d", n)
	}
	ok(t, "replace", fs.Setxattr("f", "user.a", []byte("v2"), libservices.XattrReplace))
	n, _ = fs.Getxattr("f", "user.a", buf)
	if string(buf[:n]) != "v2" {
		t.Fatalf("after replace: %q", buf[:n])
	}
	list, err := fs.Listxattr("f")
	ok(t, "list", err)
	var user []string
	for _, x := range list {
		if strings.HasPrefix(x, "user.") {
			user = append(user, x)
		}
	}
	sort.Strings(user)
	if !slices.Equal(user, []string{"user.a", "user.empty"}) {
		t.Fatalf("list: %q", list)
	}
	ok(t, "remove", fs.Removexattr("f", "user.a"))
	errno(t, "remove absent", fs.Removexattr("f", "user.a"), syscall.ENODATA)
	_, err = fs.Getxattr("f", "user.a", buf)
	errno(t, "get removed", err, syscall.ENODATA)
	n, err = fs.Getxattr("d", "user.dir", buf)
	ok(t, "get on dir", err)
	if string(buf[:n]) != "dv" {
		t.Fatalf("dir xattr: %q", buf[:n])
	}
}

func testFsync(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	_, err = fs.WriteAt(h, []byte("durable"), 0)
	ok(t, "write", err)
	ok(t, "fdatasync", fs.Fdatasync(h))
	ok(t, "fsync", fs.Fsync(h))
	ok(t, "close", fs.Close(h))
	if got := readFile(t, fs, "f"); string(got) != "durable" {
		t.Fatalf("after fsync: %q", got)
	}
	d, err := fs.Open(".", libservices.O_RDONLY|libservices.O_DIRECTORY, 0)
	ok(t, "open dir", err)
	ok(t, "fsync dir", fs.Fsync(d))
	ok(t, "close dir", fs.Close(d))
}

func testHugeOffsets(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	defer fs.Close(h)
	buf := make([]byte, 4)
	_, err = fs.ReadAt(h, buf, -1)
	errno(t, "read at negative offset", err, syscall.EINVAL)
	_, err = fs.WriteAt(h, buf, -1)
	errno(t, "write at negative offset", err, syscall.EINVAL)
	_, err = fs.WriteAt(h, buf, math.MaxInt64-1)
	errno(t, "write whose end overflows", err, syscall.EINVAL)
	_, err = fs.ReadAt(h, buf, math.MaxInt64-1)
	errno(t, "read whose end overflows", err, syscall.EINVAL)
	n, err := fs.ReadAt(h, buf, math.MaxInt64-8)
	ok(t, "read far past EOF", err)
	if n != 0 {
		t.Fatalf("read far past EOF: %d", n)
	}
	// The largest file size is the FS's (ext4: 16 TiB, tmpfs: 8 EiB): accept either
	// answer, then check the FS agrees with itself.
	const far = 1 << 50
	n, err = fs.WriteAt(h, []byte("far!"), far)
	if err != nil {
		errno(t, "write at 1 PiB", err, syscall.EFBIG)
		if a := lstat(t, fs, "f"); a.Size != 0 {
			t.Fatalf("failed far write changed the size to %d", a.Size)
		}
	} else {
		if n != 4 {
			t.Fatalf("write at 1 PiB: %d bytes", n)
		}
		if a := lstat(t, fs, "f"); a.Size != far+4 {
			t.Fatalf("size after write at 1 PiB: %d", a.Size)
		}
		got := make([]byte, 4)
		if n, err := fs.ReadAt(h, got, far); err != nil || n != 4 || string(got) != "far!" {
			t.Fatalf("read back at 1 PiB: %d %v %q", n, err, got)
		}
	}
	if err := fs.Ftruncate(h, 1<<62); err != nil {
		errno(t, "ftruncate to 4 EiB", err, syscall.EFBIG)
	} else if a := lstat(t, fs, "f"); a.Size != 1<<62 {
		t.Fatalf("size after ftruncate to 4 EiB: %d", a.Size)
	}
	ok(t, "ftruncate back", fs.Ftruncate(h, 0))
}

func testClosedHandles(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	ok(t, "close", fs.Close(h))
	buf := make([]byte, 4)
	var a libservices.Attr
	for _, hh := range []libservices.Handle{h, nil, 42, "x"} {
		_, err = fs.ReadAt(hh, buf, 0)
		errno(t, "read", err, syscall.EBADF)
		_, err = fs.WriteAt(hh, buf, 0)
		errno(t, "write", err, syscall.EBADF)
		errno(t, "fstat", fs.Fstat(hh, &a), syscall.EBADF)
		errno(t, "ftruncate", fs.Ftruncate(hh, 0), syscall.EBADF)
		errno(t, "fallocate", fs.Fallocate(hh, 0, 0, 1), syscall.EBADF)
		errno(t, "fsync", fs.Fsync(hh), syscall.EBADF)
		errno(t, "fdatasync", fs.Fdatasync(hh), syscall.EBADF)
		errno(t, "close", fs.Close(hh), syscall.EBADF)
	}
	// A handle of another FS is not this FS's.
	other := newFS(t)
	oh, err := other.Open("g", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create on other FS", err)
	_, err = fs.ReadAt(oh, buf, 0)
	errno(t, "read with another FS's handle", err, syscall.EBADF)
	errno(t, "close with another FS's handle", fs.Close(oh), syscall.EBADF)
	ok(t, "close on its own FS", other.Close(oh))
}

func testUnlinkOpen(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	h, err := fs.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create", err)
	_, err = fs.WriteAt(h, []byte("still here"), 0)
	ok(t, "write", err)
	ok(t, "unlink", fs.Unlink("f"))
	var a libservices.Attr
	errno(t, "lstat unlinked", fs.Lstat("f", &a), syscall.ENOENT)
	buf := make([]byte, 10)
	n, err := fs.ReadAt(h, buf, 0)
	ok(t, "read unlinked", err)
	if string(buf[:n]) != "still here" {
		t.Fatalf("read through the handle of an unlinked file: %q", buf[:n])
	}
	ok(t, "fstat unlinked", fs.Fstat(h, &a))
	if a.Nlink != 0 {
		t.Fatalf("nlink of an unlinked open file: %d", a.Nlink)
	}
	ok(t, "close", fs.Close(h))
	writeFile(t, fs, "f", []byte("new"), 0o644)
	if got := readFile(t, fs, "f"); string(got) != "new" {
		t.Fatalf("recreated file: %q", got)
	}
}

func testConcurrent(t *testing.T, newFS NewFS) {
	fs := newFS(t)
	const workers, ops = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	h, err := fs.Open("shared", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	ok(t, "create shared", err)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := bytes.Repeat([]byte{byte('a' + w)}, 4096)
			buf := make([]byte, 4096)
			for i := 0; i < ops; i++ {
				off := int64(w*4096 + i%3*workers*4096)
				if _, err := fs.WriteAt(h, mine, off); err != nil {
					errs <- err
					return
				}
				if n, err := fs.ReadAt(h, buf, off); err != nil || n != 4096 || !bytes.Equal(buf, mine) {
					errs <- fmt.Errorf("worker %d: read back %d bytes, err %v", w, n, err)
					return
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				if err := fs.Mkdir(name, 0o755); err != nil {
					errs <- err
					return
				}
				var a libservices.Attr
				if err := fs.Lstat(name, &a); err != nil {
					errs <- err
					return
				}
				if err := fs.Rmdir(name); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ok(t, "close", fs.Close(h))
}
