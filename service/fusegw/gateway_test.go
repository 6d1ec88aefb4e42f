package fusegw

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/cache"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// longEntries keeps names in the kernel's cache for the whole test while every
// stat reaches the gateway: changes made through the direct path are then seen
// only through the gateway's identity checks (ESTALE and the kernel's retry).
var longEntries = Options{EntryTimeout: time.Hour, AttrTimeout: -1}

func lstatIno(t *testing.T, fsys libservices.FS, name string) uint64 {
	t.Helper()
	var a libservices.Attr
	if err := fsys.Lstat(name, &a); err != nil {
		t.Fatalf("lstat %s: %v", name, err)
	}
	return a.Ino
}

// TestDirectPathReplacedFile: a file replaced through the direct path behind a
// cached name is seen as the new file by stat and open.
func TestDirectPathReplacedFile(t *testing.T) {
	needFUSE(t)
	fsys := newTrackFS()
	mp := mountOn(t, fsys, longEntries).Mountpoint()
	if err := os.WriteFile(mp+"/a", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// While a file is open through the mount, GETATTR answers for the open file
	// (fstat must work whatever happened to its name): wait for the RELEASE
	// that follows close(2).
	eventually(t, "the file is released", func() bool { return fsys.openCount() == 0 })
	var st unix.Stat_t
	if err := unix.Stat(mp+"/a", &st); err != nil {
		t.Fatal(err)
	}
	if err := writeFS(fsys, "b", []byte("new content")); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rename("b", "a"); err != nil {
		t.Fatal(err)
	}
	want := lstatIno(t, fsys, "a")
	if err := unix.Stat(mp+"/a", &st); err != nil || st.Ino != want || st.Size != int64(len("new content")) {
		t.Fatalf("stat after a replace through the direct path: ino %d size %d %v, want ino %d", st.Ino, st.Size, err, want)
	}
	if b, err := os.ReadFile(mp + "/a"); err != nil || string(b) != "new content" {
		t.Fatalf("read after a replace through the direct path: %q %v", b, err)
	}
	// Removed through the direct path: ENOENT, not the old file.
	eventually(t, "the file is released", func() bool { return fsys.openCount() == 0 })
	if err := fsys.Unlink("a"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(mp+"/a", &st); err != unix.ENOENT {
		t.Fatalf("stat of a file removed through the direct path: %v", err)
	}
	// Replaced by a directory: the kernel sees a directory.
	if err := fsys.Mkdir("a", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(mp+"/a", &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("stat of a name now a directory: %#o %v", st.Mode, err)
	}
}

// TestDirectPathRenamedDir: a directory renamed through the direct path, and
// replaced by another under its old name, does not get files created through a
// cached name in the wrong place.
func TestDirectPathRenamedDir(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, longEntries).Mountpoint()
	if err := os.Mkdir(mp+"/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp+"/d/x", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rename("d", "d2"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Mkdir("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp+"/d/y", []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	var a libservices.Attr
	if err := fsys.Lstat("d/y", &a); err != nil {
		t.Fatalf("the new file is not in the directory now named d: %v", err)
	}
	if err := fsys.Lstat("d2/y", &a); err != syscall.ENOENT {
		t.Fatalf("the new file went to the renamed directory: %v", err)
	}
	if b, err := os.ReadFile(mp + "/d2/x"); err != nil || string(b) != "x" {
		t.Fatalf("d2/x through the mount: %q %v", b, err)
	}
	if err := os.Remove(mp + "/d/y"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Lstat("d/y", &a); err != syscall.ENOENT {
		t.Fatalf("unlink through a stale directory name: %v", err)
	}
}

// asUser runs fn on a thread whose filesystem uid and gid are uid and gid (the
// credentials FUSE passes with each request); the thread is not reused. Never
// the main thread: the runtime cannot end it, and /proc shows its identity as
// the process's.
func asUser(t *testing.T, uid, gid int, fn func()) {
	t.Helper()
	done := make(chan struct{})
	var run func(locked chan<- struct{})
	run = func(locked chan<- struct{}) {
		runtime.LockOSThread() // never unlocked: the thread exits with its credentials
		if locked != nil {
			close(locked)
		}
		if unix.Gettid() == unix.Getpid() {
			// Hold the main thread until the work has a thread of its own.
			locked := make(chan struct{})
			go run(locked)
			<-locked
			runtime.UnlockOSThread()
			return
		}
		defer close(done)
		unix.Setfsgid(gid)
		unix.Setfsuid(uid)
		fn()
	}
	go run(nil)
	<-done
}

// TestOwnership: files created through the mount belong to their creator (and
// to the group of a set-group-ID directory), as on a local FS.
func TestOwnership(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	// t.TempDir's directories are 0700: let uid 1234 reach the mount point.
	for _, d := range []string{filepath.Dir(mp), filepath.Dir(filepath.Dir(mp))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(mp+"/open", 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(mp+"/open", 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mp+"/sgid", 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mp+"/sgid", 0, 4321); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(mp+"/sgid", 0o2777); err != nil { // os.Chmod has its own setgid bit
		t.Fatal(err)
	}
	var errs [4]error
	asUser(t, 1234, 5678, func() {
		errs[0] = os.WriteFile(mp+"/open/file", []byte("x"), 0o644)
		errs[1] = os.Mkdir(mp+"/open/dir", 0o755)
		errs[2] = os.WriteFile(mp+"/sgid/file", []byte("x"), 0o644)
		errs[3] = os.WriteFile(mp+"/f-in-root", []byte("x"), 0o644) // root's 0755 directory
	})
	for i, err := range errs[:3] {
		if err != nil {
			t.Fatalf("create %d as uid 1234: %v", i, err)
		}
	}
	if !errors.Is(errs[3], os.ErrPermission) {
		t.Fatalf("create in root's 0755 directory as uid 1234: %v (permissions are the kernel's)", errs[3])
	}
	for name, want := range map[string][2]uint32{"open/file": {1234, 5678}, "open/dir": {1234, 5678}, "sgid/file": {1234, 4321}} {
		var a libservices.Attr
		if err := fsys.Lstat(name, &a); err != nil {
			t.Fatal(err)
		}
		if a.Uid != want[0] || a.Gid != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, a.Uid, a.Gid, want[0], want[1])
		}
	}
}

// TestSymlinkAttrs: the contract cannot change a symlink itself: SETATTR on one
// fails (ENOSYS, which tar and cp ignore for symlinks) unless it changes nothing,
// and never reaches the target.
func TestSymlinkAttrs(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	if err := os.WriteFile(mp+"/target", []byte("t"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target", mp+"/ln"); err != nil {
		t.Fatal(err)
	}
	var before libservices.Attr
	if err := fsys.Lstat("target", &before); err != nil {
		t.Fatal(err)
	}
	ts := []unix.Timespec{{Sec: 1000}, {Sec: 1000}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, mp+"/ln", ts, unix.AT_SYMLINK_NOFOLLOW); err != unix.ENOSYS {
		t.Fatalf("lutimes: %v, want ENOSYS", err)
	}
	if err := unix.Lchown(mp+"/ln", 99, 99); err != unix.ENOSYS {
		t.Fatalf("lchown to another owner: %v, want ENOSYS", err)
	}
	if err := unix.Lchown(mp+"/ln", 0, 0); err != nil {
		t.Fatalf("lchown to the owner it has: %v", err)
	}
	var after libservices.Attr
	if err := fsys.Lstat("target", &after); err != nil {
		t.Fatal(err)
	}
	if after.Mtime != before.Mtime || after.Uid != before.Uid {
		t.Fatalf("the target changed: %+v -> %+v", before, after)
	}
	// Following the link is the kernel's: chmod and utimes reach the target.
	if err := os.Chmod(mp+"/ln", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Lstat("target", &after); err != nil || after.Mode&0o777 != 0o600 {
		t.Fatalf("chmod through the link: %#o %v", after.Mode, err)
	}
	if err := unix.Lsetxattr(mp+"/ln", "user.x", []byte("v"), 0); err != unix.EPERM {
		t.Fatalf("lsetxattr user.x on a symlink: %v, want EPERM", err)
	}
	if _, err := unix.Lgetxattr(mp+"/ln", "user.x", nil); err != unix.ENODATA {
		t.Fatalf("lgetxattr on a symlink: %v, want ENODATA", err)
	}
}

func TestRenameFlagsAndMknod(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(mp+"/"+n, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel refuses RENAME_NOREPLACE over a name it sees itself; what
	// reaches the gateway (no target, or RENAME_EXCHANGE) is EINVAL.
	for _, c := range []struct {
		to    string
		flags uint
		want  error
	}{
		{"b", unix.RENAME_NOREPLACE, unix.EEXIST},
		{"c", unix.RENAME_NOREPLACE, unix.EINVAL},
		{"b", unix.RENAME_EXCHANGE, unix.EINVAL},
	} {
		if err := unix.Renameat2(unix.AT_FDCWD, mp+"/a", unix.AT_FDCWD, mp+"/"+c.to, c.flags); err != c.want {
			t.Errorf("renameat2 a %s flags %#x: %v, want %v", c.to, c.flags, err, c.want)
		}
	}
	if got := readFS(t, fsys, "a") + readFS(t, fsys, "b"); got != "ab" {
		t.Fatalf("a and b after refused renames: %q", got)
	}
	if err := unix.Mkfifo(mp+"/fifo", 0o644); err != unix.EPERM {
		t.Fatalf("mkfifo: %v, want EPERM", err)
	}
	if err := unix.Mknod(mp+"/dev", unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err != unix.EPERM {
		t.Fatalf("mknod of a device: %v, want EPERM", err)
	}
	if err := unix.Mknod(mp+"/reg", unix.S_IFREG|0o640, 0); err != nil {
		t.Fatalf("mknod of a regular file: %v", err)
	}
	var a libservices.Attr
	if err := fsys.Lstat("reg", &a); err != nil || !a.IsRegular() {
		t.Fatalf("mknod made %+v %v", a, err)
	}
}

// TestFlushError: a write-back failure reported by the FS's Flush reaches the
// close(2) of the application.
func TestFlushError(t *testing.T) {
	needFUSE(t)
	fsys := newTrackFS()
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	f, err := os.Create(mp + "/f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	fsys.flushErr = syscall.EIO
	fsys.mu.Unlock()
	if err := f.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("close with a failing flush: %v, want EIO", err)
	}
	fsys.mu.Lock()
	fsys.flushErr = nil
	flushes := fsys.flushes
	fsys.mu.Unlock()
	if flushes != 1 {
		t.Fatalf("%d flushes for one close", flushes)
	}
	// RELEASE follows close(2) asynchronously.
	eventually(t, "the handle is closed after close(2)", func() bool { return fsys.openCount() == 0 })
}

// TestNoFlushWithoutHoldingBack: a Flusher that holds nothing back is never
// asked to flush (the kernel is told not to send FLUSH), and close(2) works.
func TestNoFlushWithoutHoldingBack(t *testing.T) {
	needFUSE(t)
	fsys := newTrackFS()
	fsys.noHold = true
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the handle is closed after close(2)", func() bool { return fsys.openCount() == 0 })
	fsys.mu.Lock()
	flushes := fsys.flushes
	fsys.mu.Unlock()
	if flushes != 0 {
		t.Fatalf("%d flushes of an FS that holds nothing back", flushes)
	}
}

// TestWriteBackFlushAtClose mounts a write-back cache over a passthrough on a tiny
// tmpfs. A write(2) the tmpfs has room for waits in the cache; when another
// writer then fills the tmpfs, close(2) returns the ENOSPC of writing it back.
// On the full tmpfs write(2) itself fails with ENOSPC (the cache holds back only
// what the store can take); once there is room again, close(2) returns with the
// data on the tmpfs.
func TestWriteBackFlushAtClose(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	pt, err := passthrough.New(passthrough.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	wb := cache.New(pt, cache.NewStore(1<<20), cache.Options{Policy: "writeback", FlushInterval: -1})
	t.Cleanup(func() { wb.CloseFS() })
	mp := mountOn(t, wb, Options{}).Mountpoint()

	data := []byte("written back at close(2)")
	// writeHeld writes data to a new file name and checks that the cache holds
	// it back; the file stays open (a failing test closes it first: a file of
	// our own mount left open at exit would wait for our own server).
	writeHeld := func(name string) *os.File {
		t.Helper()
		f, err := os.Create(mp + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			t.Fatalf("write into the write-back cache: %v", err)
		}
		if b, _ := os.ReadFile(dir + "/" + name); string(b) == string(data) {
			f.Close()
			t.Fatal("the data reached the tmpfs before close(2): the cache is not holding it back")
		}
		return f
	}
	f := writeHeld("f")
	fill, err := os.Create(dir + "/fill")
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	for {
		if _, err = fill.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	fill.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		f.Close()
		t.Fatalf("filling the tmpfs: %v, want ENOSPC", err)
	}
	if err := f.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("close(2) with a full tmpfs below: %v, want ENOSPC", err)
	}

	g, err := os.Create(mp + "/g")
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Write(data)
	g.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write(2) with a full tmpfs below: %v, want ENOSPC", err)
	}

	if err := os.Remove(dir + "/fill"); err != nil {
		t.Fatal(err)
	}
	h := writeHeld("h")
	if err := h.Close(); err != nil {
		t.Fatalf("close(2) with room below: %v", err)
	}
	if b, err := os.ReadFile(dir + "/h"); err != nil || string(b) != string(data) {
		t.Fatalf("on the tmpfs right after close(2): %q %v", b, err)
	}
}

// TestTruncateOpenFiles: O_TRUNC on a read-only open truncates (as Linux does),
// and an open file that lost its name can still be truncated.
func TestTruncateOpenFiles(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(mp+"/f", os.O_RDONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := readFS(t, fsys, "f"); got != "" {
		t.Fatalf("after open(O_RDONLY|O_TRUNC): %q", got)
	}
	f, err = os.OpenFile(mp+"/f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("unlinked data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mp + "/f"); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4); err != nil {
		t.Fatalf("ftruncate of an unlinked open file: %v", err)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != 4 || fi.Sys().(*syscall.Stat_t).Nlink != 0 {
		t.Fatalf("fstat of the unlinked file: %+v %v", fi, err)
	}
	if err := f.Chmod(0o600); !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("fchmod of an unlinked open file: %v, want ESTALE (the contract has no Fsetattr)", err)
	}
}

// TestCapabilitiesDroppedOnWrite: the kernel removes security.capability from a
// file that is written; GetXAttr's memory of its absence must not hide one set
// through the mount.
func TestCapabilitiesDroppedOnWrite(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	f, err := os.Create(mp + "/bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("one")); err != nil { // the gateway learns: no capability
		t.Fatal(err)
	}
	// struct vfs_cap_data, revision 2, CAP_NET_RAW permitted.
	caps := []byte{0, 0, 0, 2, 1 << 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if err := unix.Setxattr(mp+"/bin", capsAttr, caps, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := fsys.Getxattr("bin", capsAttr, nil); err != nil || n != len(caps) {
		t.Fatalf("capability set through the mount: %d %v", n, err)
	}
	if _, err := f.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Getxattr("bin", capsAttr, nil); err != syscall.ENODATA {
		t.Fatalf("capability after a write: %v, want it removed (ENODATA)", err)
	}
}

// TestKeepCache: a file unchanged since its last open keeps its pages (the FS is
// not read again); a change through the direct path is seen at the next open.
func TestKeepCache(t *testing.T) {
	needFUSE(t)
	var clock atomic.Int64
	clock.Store(1_000_000_000)
	fsys := &countingFS{FS: memfs.New(memfs.Options{Now: func() libservices.Timespec {
		return libservices.Timespec{Sec: clock.Add(1)} // old, and ticking a second per change
	}})}
	if err := writeFS(fsys.FS, "f", []byte("version 1")); err != nil {
		t.Fatal(err)
	}
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	read := func() string {
		b, err := os.ReadFile(mp + "/f")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "version 1" {
		t.Fatalf("first read: %q", got)
	}
	before := fsys.reads.Load()
	if got := read(); got != "version 1" {
		t.Fatalf("second read: %q", got)
	}
	if n := fsys.reads.Load() - before; n != 0 {
		t.Fatalf("the second open of an unchanged file read the FS %d times", n)
	}
	if err := writeFS(fsys.FS, "f", []byte("version 2!")); err != nil {
		t.Fatal(err)
	}
	// Close-to-open: although the kernel's attributes (its size) are within
	// AttrTimeout, open sees the change and has them dropped.
	if got := read(); got != "version 2!" {
		t.Fatalf("after a change through the direct path: %q", got)
	}
}

// countingFS counts the reads that reach memfs.
type countingFS struct {
	*memfs.FS
	reads atomic.Int64
}

func (c *countingFS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.FS.ReadAt(h, p, off)
}

// TestReadDirOffsets: a listing resumed at any offset the kernel returned goes on
// from there (seekdir/telldir), and entries carry inode numbers and types.
func TestReadDirOffsets(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	for i := 0; i < 300; i++ {
		if err := writeFS(fsys, "f"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := fsys.Mkdir("sub", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Symlink("f1", "ln"); err != nil {
		t.Fatal(err)
	}
	for _, plus := range []bool{false, true} {
		mp := mountOn(t, fsys, Options{NoReadDirPlus: !plus}).Mountpoint()
		fd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		all := getdents(t, fd)
		if len(all) != 304 { // 300 files, sub, ln, ".", ".."
			t.Fatalf("plus=%v: %d entries", plus, len(all))
		}
		names := map[string]dirent{}
		for _, e := range all {
			names[e.name] = e
		}
		if names["sub"].typ != unix.DT_DIR || names["ln"].typ != unix.DT_LNK || names["f7"].typ != unix.DT_REG {
			t.Fatalf("plus=%v: types %+v %+v %+v", plus, names["sub"], names["ln"], names["f7"])
		}
		if names["f7"].ino != lstatIno(t, fsys, "f7") || names["."].ino != lstatIno(t, fsys, ".") {
			t.Fatalf("plus=%v: inode numbers %+v", plus, names["f7"])
		}
		// Resume after entry 150.
		if _, err := unix.Seek(fd, all[150].off, 0); err != nil {
			t.Fatal(err)
		}
		rest := getdents(t, fd)
		if len(rest) != len(all)-151 || rest[0].name != all[151].name {
			t.Fatalf("plus=%v: resumed listing has %d entries starting %q, want %d starting %q",
				plus, len(rest), rest[0].name, len(all)-151, all[151].name)
		}
		unix.Close(fd)
	}
}

type dirent struct {
	name string
	ino  uint64
	off  int64
	typ  uint8
}

// getdents reads fd to its end with a small buffer, so that the listing takes
// many READDIR requests.
func getdents(t *testing.T, fd int) []dirent {
	t.Helper()
	var out []dirent
	buf := make([]byte, 512)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			out = append(out, dirent{name: string(name), ino: le64(b), off: int64(le64(b[8:])), typ: b[18]})
			b = b[reclen:]
		}
	}
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func TestXattrList(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{}).Mountpoint()
	if err := os.WriteFile(mp+"/f", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"user.one", "user.two"} {
		if err := unix.Setxattr(mp+"/f", n, []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	size, err := unix.Listxattr(mp+"/f", nil)
	if err != nil || size != len("user.one\x00user.two\x00") {
		t.Fatalf("listxattr size: %d %v", size, err)
	}
	if _, err := unix.Listxattr(mp+"/f", make([]byte, 5)); err != unix.ERANGE {
		t.Fatalf("listxattr into a small buffer: %v", err)
	}
	buf := make([]byte, size)
	n, err := unix.Listxattr(mp+"/f", buf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	start := 0
	for i, c := range buf[:n] {
		if c == 0 {
			names = append(names, string(buf[start:i]))
			start = i + 1
		}
	}
	sort.Strings(names)
	if len(names) != 2 || names[0] != "user.one" || names[1] != "user.two" {
		t.Fatalf("listxattr: %q", names)
	}
}

// eventually waits for cond, which asynchronous kernel requests (RELEASE, FORGET)
// make true soon; the bound only turns a bug into a failure instead of a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30 s", what)
		}
	}
}

// TestDirectPathHardLinks: one name of a hard-linked file removed through the
// direct path does not make the file unreachable through its other name.
func TestDirectPathHardLinks(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, longEntries).Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(mp+"/f", mp+"/g"); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mp+"/g", &st); err != nil || st.Nlink != 2 {
		t.Fatalf("stat g: nlink %d %v", st.Nlink, err)
	}
	if err := fsys.Unlink("g"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := unix.Stat(mp+"/f", &st); err != nil || st.Nlink != 1 {
			t.Fatalf("stat f after g was removed through the direct path: nlink %d %v", st.Nlink, err)
		}
	}
	if b, err := os.ReadFile(mp + "/f"); err != nil || string(b) != "linked" {
		t.Fatalf("read f: %q %v", b, err)
	}
}
