package fusegw

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

// mounted reports whether mountinfo lists a mount on mp.
func mounted(t testing.TB, mp string) bool {
	t.Helper()
	ms, err := mountsAt(mp)
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// within fails the test if fn does not return in d: a hang becomes a failure
// with a message instead of a test binary timeout.
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

func TestMountBasics(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	if err := writeFS(fsys, "before", []byte("written before mounting")); err != nil {
		t.Fatal(err)
	}
	s := mountOn(t, fsys, Options{Name: "tenant-a"})
	mp := s.Mountpoint()
	if !filepath.IsAbs(mp) {
		t.Fatalf("mount point %q is not absolute", mp)
	}
	ms, err := mountsAt(mp)
	if err != nil || len(ms) != 1 {
		t.Fatalf("mountinfo at %s: %+v %v", mp, ms, err)
	}
	if ms[0].fstype != "fuse.polytropon" || ms[0].source != "tenant-a" {
		t.Fatalf("mount: type %q source %q", ms[0].fstype, ms[0].source)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type != unix.FUSE_SUPER_MAGIC || sfs.Namelen != libservices.NameMax {
		t.Fatalf("statfs: %+v %v", sfs, err)
	}
	if b, err := os.ReadFile(mp + "/before"); err != nil || string(b) != "written before mounting" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
	if err := os.WriteFile(mp+"/through", []byte("written through FUSE"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readFS(t, fsys, "through"); got != "written through FUSE" {
		t.Fatalf("the FS has %q", got)
	}
	// The direct path: a file created behind the kernel's back is visible at once
	// (no negative caching).
	if _, err := os.Stat(mp + "/direct"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	if err := writeFS(fsys, "direct", []byte("direct path")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(mp + "/direct"); err != nil || string(b) != "direct path" {
		t.Fatalf("a file created through the direct path: %q %v", b, err)
	}
}

// TestMaxWrite: requests are split at MaxWrite (the smallest here) and data
// arrives whole, through the page cache and with O_DIRECT.
func TestMaxWrite(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{MaxWrite: 1}).Mountpoint()
	data := make([]byte, 100<<10+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(mp+"/f", data, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := fsys.Open("f", libservices.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+1)
	n, err := fsys.ReadAt(h, got, 0)
	fsys.Close(h)
	if err != nil || !bytes.Equal(got[:n], data) {
		t.Fatalf("the FS has %d bytes (%v), equal: %v", n, err, bytes.Equal(got[:n], data))
	}
	fd, err := unix.Open(mp+"/f", unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if n, err := unix.Pread(fd, buf, 8192); err != nil || n != len(buf) || !bytes.Equal(buf, data[8192:8192+len(buf)]) {
		t.Fatalf("O_DIRECT read of 64 KiB in 4 KiB requests: %d %v", n, err)
	}
}

func TestUnmount(t *testing.T) {
	needFUSE(t)
	s, err := Mount(t.TempDir(), memfs.New(memfs.Options{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	mp := s.Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Unmount(); err != nil {
		t.Fatal(err)
	}
	if mounted(t, mp) {
		t.Fatalf("%s is still in mountinfo after Unmount", mp)
	}
	within(t, 30*time.Second, "Wait after Unmount", s.Wait)
	if err := s.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	// The directory is a plain directory again, and can be mounted on anew.
	if _, err := os.Stat(mp + "/f"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after unmount, %s/f: %v", mp, err)
	}
	s2, err := Mount(mp, memfs.New(memfs.Options{}), Options{})
	if err != nil {
		t.Fatalf("mounting again: %v", err)
	}
	stop(t, s2)
}

// TestUnmountFromOutside: an unmount by someone else (umount(8)) stops the
// server, and Unmount is then a no-op.
func TestUnmountFromOutside(t *testing.T) {
	needFUSE(t)
	s, err := Mount(t.TempDir(), memfs.New(memfs.Options{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(s.Mountpoint(), 0); err != nil {
		t.Fatal(err)
	}
	within(t, 30*time.Second, "Wait after an outside unmount", s.Wait)
	if err := s.Unmount(); err != nil {
		t.Fatalf("Unmount after an outside unmount: %v", err)
	}
}

// TestUnmountBlockedReader: a reader blocked inside the FS (so the mount is busy)
// does not make Unmount hang; the mount leaves the namespace at once, the read
// completes when the FS answers, and the server stops once the file is closed.
func TestUnmountBlockedReader(t *testing.T) {
	needFUSE(t)
	fsys := newTrackFS()
	if err := writeFS(fsys, "f", []byte("slow data")); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(t.TempDir(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mp := s.Mountpoint()
	f, err := os.Open(mp + "/f")
	if err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	fsys.block, fsys.entered = make(chan struct{}), make(chan struct{}, 1)
	block := fsys.block
	fsys.mu.Unlock()
	type result struct {
		data string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := f.ReadAt(buf, 0)
		if err != nil && n > 0 {
			err = nil // io.EOF with the data
		}
		got <- result{string(buf[:n]), err}
	}()
	<-fsys.entered
	within(t, 30*time.Second, "Unmount with a blocked reader", func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
	if mounted(t, mp) {
		t.Fatalf("%s is still in mountinfo after Unmount", mp)
	}
	select {
	case <-s.Done():
		t.Fatal("the server stopped with a request in flight and a file open")
	default:
	}
	fsys.mu.Lock()
	fsys.block = nil
	fsys.mu.Unlock()
	close(block)
	if r := <-got; r.err != nil || r.data != "slow data" {
		t.Fatalf("the blocked read: %q %v", r.data, r.err)
	}
	f.Close()
	within(t, 30*time.Second, "Wait after the last close", s.Wait)
	if n := fsys.openCount(); n != 0 {
		t.Fatalf("%d handles of the FS left open", n)
	}
}

// TestUnmountUnderLoad: Unmount from another goroutine (as a signal handler
// would) while requests are in flight neither hangs nor races.
func TestUnmountUnderLoad(t *testing.T) {
	needFUSE(t)
	fsys := newTrackFS()
	s, err := Mount(t.TempDir(), fsys, Options{EntryTimeout: -1, AttrTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	mp := s.Mountpoint()
	if err := os.WriteFile(mp+"/f", make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				// Errors are expected once the mount is gone.
				if f, err := os.Open(mp + "/f"); err == nil {
					f.ReadAt(buf, int64(w%2)*4096)
					f.Close()
				}
				var st unix.Stat_t
				unix.Stat(mp+"/f", &st)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the load start; not a timing assertion
	within(t, 30*time.Second, "Unmount under load", func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
	close(stopLoad)
	wg.Wait()
	within(t, 30*time.Second, "Wait under load", s.Wait)
	if mounted(t, mp) {
		t.Fatalf("%s still mounted", mp)
	}
	if n := fsys.openCount(); n != 0 {
		t.Fatalf("%d handles of the FS left open", n)
	}
}

// TestAbortClosesHandles: when the connection dies with files open (here a
// forced unmount, which aborts it), the handles the kernel never released are
// closed, so a write-back layer gets to flush them.
func TestAbortClosesHandles(t *testing.T) {
	needFUSE(t)
	fsys := newTrackFS()
	s, err := Mount(t.TempDir(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mp := s.Mountpoint()
	f, err := os.Create(mp + "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := fsys.openCount(); n != 1 {
		t.Fatalf("%d handles open", n)
	}
	// MNT_FORCE aborts the FUSE connection; the mount stays (busy), dead.
	unix.Unmount(mp, unix.MNT_FORCE)
	within(t, 30*time.Second, "Wait after the connection was aborted", s.Wait)
	if n := fsys.openCount(); n != 0 {
		t.Fatalf("%d handles left open after the connection died", n)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("write to a file of an aborted mount: %v", err)
	}
	f.Close()
	if err := s.Unmount(); err != nil {
		t.Fatalf("Unmount of the dead mount: %v", err)
	}
	if mounted(t, mp) {
		t.Fatalf("%s still mounted", mp)
	}
}

func TestStaleMount(t *testing.T) {
	needFUSE(t)
	mp := t.TempDir()
	killChild(t, mountInChild(t, mp))
	// The kernel may answer stat from its cache; statfs and reads reach the
	// (dead) connection.
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != unix.ENOTCONN {
		t.Fatalf("statfs of the mount of a killed server: %v, want ENOTCONN", err)
	}
	if _, err := os.ReadFile(mp + "/hello"); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("read from the mount of a killed server: %v, want ENOTCONN", err)
	}
	var st unix.Stat_t
	cleaned, err := CleanStale(mp)
	if err != nil || !cleaned {
		t.Fatalf("CleanStale: %v %v", cleaned, err)
	}
	if mounted(t, mp) {
		t.Fatalf("%s still mounted after CleanStale", mp)
	}
	if err := unix.Stat(mp, &st); err != nil {
		t.Fatalf("stat after CleanStale: %v", err)
	}
	if cleaned, err := CleanStale(mp); err != nil || cleaned {
		t.Fatalf("CleanStale of a clean directory: %v %v", cleaned, err)
	}

	// Mount cleans up by itself: a service restarted after a kill mounts again.
	killChild(t, mountInChild(t, mp))
	s := mountOnDir(t, mp, memfs.New(memfs.Options{}))
	if err := os.WriteFile(mp+"/after", []byte("new server"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(mp + "/after"); err != nil || string(b) != "new server" {
		t.Fatalf("through the new mount: %q %v", b, err)
	}
	if _, err := os.Stat(mp + "/hello"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the helper's file is visible through the new mount: %v", err)
	}
	ms, _ := mountsAt(mp)
	if len(ms) != 1 {
		t.Fatalf("%d mounts on %s", len(ms), mp)
	}
	_ = s
}

// TestStaleMountsStacked: two dead mounts on one directory are both removed.
func TestStaleMountsStacked(t *testing.T) {
	needFUSE(t)
	mp := t.TempDir()
	first := mountInChild(t, mp)
	killChild(t, first)
	// A second dead mount on top of the first: a mount whose /dev/fuse
	// descriptor is closed before any server reads it.
	fd, err := mountDirect(mp, "stacked", &fuse.MountOptions{Name: "polytropon", MaxWrite: 128 << 10}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd) // no server: the second mount is dead at once
	if ms, _ := mountsAt(mp); len(ms) != 2 {
		t.Fatalf("%d mounts stacked on %s", len(ms), mp)
	}
	cleaned, err := CleanStale(mp)
	if err != nil || !cleaned {
		t.Fatalf("CleanStale: %v %v", cleaned, err)
	}
	if mounted(t, mp) {
		t.Fatalf("%s still mounted", mp)
	}
}

func mountOnDir(t *testing.T, dir string, fsys libservices.FS) *Server {
	t.Helper()
	s, err := Mount(dir, fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

func TestBadMountpoints(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	fsys := memfs.New(memfs.Options{})
	for _, c := range []struct {
		mp, want string
		errno    error
	}{
		{file, "is not a directory", syscall.ENOTDIR},
		{filepath.Join(dir, "missing"), "does not exist", syscall.ENOENT},
		{filepath.Join(dir, "missing", "deeper"), "does not exist", syscall.ENOENT},
		{filepath.Join(dir, "link"), "is a symbolic link", syscall.ENOTDIR},
		{"", "empty mount point", nil},
		{"a\x00b", "NUL", nil},
	} {
		s, err := Mount(c.mp, fsys, Options{})
		if err == nil {
			stop(t, s)
			t.Errorf("mount on %q succeeded", c.mp)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || c.errno != nil && !errors.Is(err, c.errno) {
			t.Errorf("mount on %q: %v, want %q (%v)", c.mp, err, c.want, c.errno)
		}
	}
	if _, err := Mount(t.TempDir(), nil, Options{}); err == nil || !strings.Contains(err.Error(), "nil filesystem") {
		t.Errorf("mount of a nil FS: %v", err)
	}
	if _, err := Mount(t.TempDir(), fsys, Options{MaxWrite: -1}); err == nil {
		t.Error("mount with a negative MaxWrite succeeded")
	}
	// Nothing was left mounted by the failures, and the file is intact.
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Fatalf("the file mount point: %q %v", b, err)
	}
	if mounted(t, file) || mounted(t, dir) {
		t.Fatal("a failed mount left a mount behind")
	}
}

// TestMountTwice: a live mount on the mount point, ours or not, is never
// unmounted: Mount and CleanStale report it, and it keeps working.
func TestMountTwice(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	s := mountOn(t, fsys, Options{})
	mp := s.Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Mount(mp, memfs.New(memfs.Options{}), Options{})
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), mp) || !strings.Contains(err.Error(), "fuse.polytropon") {
		t.Fatalf("second mount on %s: %v", mp, err)
	}
	if cleaned, err := CleanStale(mp); cleaned || !errors.Is(err, ErrMounted) {
		t.Fatalf("CleanStale of a live mount: %v %v", cleaned, err)
	}
	if b, err := os.ReadFile(mp + "/f"); err != nil || string(b) != "still here" {
		t.Fatalf("the first mount after the refused ones: %q %v", b, err)
	}
	if ms, _ := mountsAt(mp); len(ms) != 1 {
		t.Fatalf("%d mounts on %s", len(ms), mp)
	}
}

// TestMountOnOtherMount: a live mount of another kind (tmpfs) is left alone.
func TestMountOnOtherMount(t *testing.T) {
	needFUSE(t)
	mp := t.TempDir()
	if err := unix.Mount("polytropon-test", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mp, unix.MNT_DETACH)
	if err := os.WriteFile(mp+"/keep", []byte("tmpfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cleaned, err := CleanStale(mp); cleaned || err != nil {
		t.Fatalf("CleanStale on a tmpfs: %v %v", cleaned, err)
	}
	_, err := Mount(mp, memfs.New(memfs.Options{}), Options{})
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), "tmpfs") || !strings.Contains(err.Error(), mp) {
		t.Fatalf("mount on a tmpfs: %v", err)
	}
	if b, err := os.ReadFile(mp + "/keep"); err != nil || string(b) != "tmpfs" {
		t.Fatalf("the tmpfs after the refused mount: %q %v", b, err)
	}
}

func TestMountinfoEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:       "/a b",
		`/tab\011x`:     "/tab\tx",
		`/back\134s`:    `/back\s`,
		`/plain`:        "/plain",
		`/short\04`:     `/short\04`,
		`/not\089octal`: `/not\089octal`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescape %q: %q, want %q", in, got, want)
		}
	}
}

// TestMountPointWithSpace: mountinfo escapes the space; Unmount still finds it.
func TestMountPointWithSpace(t *testing.T) {
	needFUSE(t)
	mp := filepath.Join(t.TempDir(), "with space")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mp, memfs.New(memfs.Options{}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !mounted(t, mp) {
		t.Fatal("not found in mountinfo")
	}
	stop(t, s)
	if mounted(t, mp) {
		t.Fatal("still mounted")
	}
}

// TestUnprivileged runs the path of `polytropon mount` by a user, Mount,
// Unmount and CleanStale through fusermount3, in a helper that becomes nobody
// (see helperUser).
func TestUnprivileged(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		testenv.SkipOrFail(t, "fusermount3 is not installed")
		return
	}
	// The test binary and the mount point must be reachable by nobody.
	dir, err := os.MkdirTemp("", "polytropon-fusegw-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := dir + "/fusegw.test"
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	mp := dir + "/mnt"
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mp, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cmd := helperCmd(bin, "user", mp)
	cmd.Dir = dir
	// A private mount namespace (Go makes its mounts private): the helper's
	// /dev/fuse and mounts never reach this one.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("unprivileged helper: %v\n%s", err, out)
	}
	if mounted(t, mp) {
		t.Fatalf("%s is mounted in the test's namespace", mp)
	}
}
