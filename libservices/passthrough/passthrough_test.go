package passthrough

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/asuser"
	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
)

// hostDir makes a scratch directory under base, which must exist.
func hostDir(t *testing.T, base string) string {
	t.Helper()
	dir, err := os.MkdirTemp(base, "polytropon-fstest-")
	if err != nil {
		t.Fatalf("scratch directory under %s: %v", base, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newOn(base string, wantMagic int64) fstest.NewFS {
	return func(t *testing.T) libservices.FS {
		dir := hostDir(t, base)
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if wantMagic != 0 && st.Type != wantMagic {
			t.Fatalf("%s is filesystem type %#x, want %#x", base, st.Type, wantMagic)
		}
		f, err := New(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.CloseFS() })
		return f
	}
}

// TestKernelTmpfs runs the suite on the host kernel's tmpfs: the reference.
func TestKernelTmpfs(t *testing.T) {
	fstest.Run(t, newOn("/dev/shm", unix.TMPFS_MAGIC))
}

// TestKernelDisk runs the suite on a disk filesystem (ext4 on CI machines):
// the second reference.
func TestKernelDisk(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/var/tmp", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		testenv.SkipOrFail(t, "/var/tmp is a tmpfs here: the disk reference run needs a disk filesystem there")
		return
	}
	t.Logf("/var/tmp filesystem type %#x", st.Type)
	fstest.Run(t, newOn("/var/tmp", 0))
}

// TestConfinement plants symlinks and ".." paths aimed at a file beside the branch
// and checks that no operation reads, writes or removes it.
func TestConfinement(t *testing.T) {
	outer := hostDir(t, "/dev/shm")
	branch := outer + "/branch"
	secret := outer + "/secret"
	if err := os.Mkdir(branch, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"abs": secret, "rel": "../secret", "dir": "..", "magic": "/proc/self/root" + secret} {
		if err := os.Symlink(target, branch+"/"+name); err != nil {
			t.Fatal(err)
		}
	}
	f, err := New(Options{Dir: branch})
	if err != nil {
		t.Fatal(err)
	}
	defer f.CloseFS()
	var a libservices.Attr
	for _, p := range []string{"abs", "rel", "dir/secret", "magic"} {
		if err := f.Stat(p, &a); err != unix.ENOENT {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
		if h, err := f.Open(p, libservices.O_RDWR|libservices.O_TRUNC, 0); err == nil {
			f.Close(h)
			t.Errorf("open %s for writing succeeded", p)
		}
		if err := f.Setattr(p, &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o777}); err == nil {
			t.Errorf("chmod %s succeeded", p)
		}
		if err := f.Setxattr(p, "user.x", []byte("x"), 0); err == nil {
			t.Errorf("setxattr %s succeeded", p)
		}
	}
	if err := f.Unlink("dir/secret"); err != unix.ENOENT {
		t.Errorf("unlink dir/secret: %v", err)
	}
	if err := f.Rename("dir/secret", "stolen"); err != unix.ENOENT {
		t.Errorf("rename dir/secret: %v", err)
	}
	if err := f.Link("dir/secret", "stolen"); err != unix.ENOENT {
		t.Errorf("link dir/secret: %v", err)
	}
	if err := f.Mkdir("dir/escaped", 0o755); err != nil {
		t.Errorf("mkdir through a symlink to ..: %v (it resolves to the branch root)", err)
	}
	if _, err := os.Stat(outer + "/escaped"); err == nil {
		t.Errorf("mkdir escaped the branch")
	}
	b, err := os.ReadFile(secret)
	if err != nil || string(b) != "secret" {
		t.Fatalf("the file beside the branch changed: %q %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(secret, &st); err != nil || st.Mode&0o777 != 0o600 {
		t.Fatalf("the file beside the branch changed mode: %#o %v", st.Mode, err)
	}
}

func TestReadOnly(t *testing.T) {
	dir := hostDir(t, "/dev/shm")
	if err := os.WriteFile(dir+"/f", []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir+"/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := New(Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.CloseFS()
	check := func(what string, err error, want unix.Errno) {
		t.Helper()
		if want == 0 && err != nil || want != 0 && err != want {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	_, err = f.Open("f", libservices.O_RDWR, 0)
	check("open rdwr", err, unix.EROFS)
	_, err = f.Open("new", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	check("create", err, unix.EROFS)
	_, err = f.Open("f", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
	check("create existing O_EXCL", err, unix.EEXIST)
	_, err = f.Open("missing", libservices.O_WRONLY, 0)
	check("open missing for writing", err, unix.ENOENT)
	check("mkdir", f.Mkdir("x", 0o755), unix.EROFS)
	check("mkdir existing", f.Mkdir("d", 0o755), unix.EEXIST)
	check("unlink", f.Unlink("f"), unix.EROFS)
	check("unlink missing", f.Unlink("nope"), unix.ENOENT)
	check("rmdir", f.Rmdir("d"), unix.EROFS)
	check("rename", f.Rename("f", "g"), unix.EROFS)
	check("link", f.Link("f", "g"), unix.EROFS)
	check("symlink", f.Symlink("f", "g"), unix.EROFS)
	check("setattr", f.Setattr("f", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}), unix.EROFS)
	check("setxattr", f.Setxattr("f", "user.x", nil, 0), unix.EROFS)
	check("removexattr", f.Removexattr("f", "user.x"), unix.EROFS)
	h, err := f.Open("f", libservices.O_RDONLY, 0)
	check("open rdonly", err, 0)
	buf := make([]byte, 8)
	n, err := f.ReadAt(h, buf, 0)
	if err != nil || string(buf[:n]) != "data" {
		t.Fatalf("read: %q %v", buf[:n], err)
	}
	f.Close(h)
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New with no dir succeeded")
	}
	// A missing branch is the first error a new configuration meets: the
	// message names the directory once and the fix.
	missing := filepath.Join(t.TempDir(), "upper")
	_, err := New(Options{Dir: missing})
	if !errors.Is(err, unix.ENOENT) || strings.Count(err.Error(), missing) != 1 || !strings.Contains(err.Error(), "create the branch directory") {
		t.Errorf("New on a missing dir: %v", err)
	}
	if _, err := New(Options{Dir: "/etc/hostname"}); err == nil {
		t.Error("New on a file succeeded")
	}
}

// TestReadOnlyOpenMatchesKernel opens every name of a small tree with every
// combination of the open flags that matter, once through a read-only passthrough
// over a writable copy of the tree and once directly on a read-only tmpfs mount
// of it, and wants the same result: the read-only option behaves like a read-only
// mount, and modifies nothing.
func TestReadOnlyOpenMatchesKernel(t *testing.T) {
	testenv.Root(t)
	populate := func(dir string) {
		t.Helper()
		for _, err := range []error{
			os.WriteFile(dir+"/f", []byte("data"), 0o644),
			os.Mkdir(dir+"/d", 0o755),
			os.Symlink("f", dir+"/ln"),
			os.Symlink("d", dir+"/dln"),
			os.Symlink("missing", dir+"/dangling"),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	mnt := hostDir(t, "/dev/shm")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		testenv.SkipOrFail(t, "mount tmpfs: "+err.Error())
		return
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	populate(mnt)
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	ref, err := unix.Open(mnt, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ref)
	dir := hostDir(t, "/dev/shm")
	populate(dir)
	f, err := New(Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.CloseFS()

	extra := []int{unix.O_CREAT, unix.O_EXCL, unix.O_TRUNC, unix.O_NOFOLLOW, unix.O_DIRECTORY, unix.O_APPEND}
	for _, name := range []string{"f", "d", "ln", "dln", "dangling", "missing", "nodir/x", "f/x", "d/new", "."} {
		for _, acc := range []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR} {
			for set := 0; set < 1<<len(extra); set++ {
				flags := acc
				for i, fl := range extra {
					if set&(1<<i) != 0 {
						flags |= fl
					}
				}
				var want error
				fd, err := unix.Openat(ref, name, flags|unix.O_CLOEXEC, 0o644)
				if err == nil {
					unix.Close(fd)
				} else {
					want = err
				}
				h, got := f.Open(name, flags, 0o644)
				if got == nil {
					f.Close(h)
				}
				if got != want {
					t.Errorf("open %s flags %#o: read-only passthrough %v, read-only mount %v", name, flags, got, want)
				}
			}
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 5 {
		t.Errorf("the branch has %d entries, want the 5 it started with", len(ents))
	}
	if b, err := os.ReadFile(dir + "/f"); err != nil || string(b) != "data" {
		t.Errorf("the branch's file changed: %q %v", b, err)
	}
}

// kernelCallers reaches a passthrough FS on a scratch directory under base as
// any caller: every call of a caller other than Root is made by a thread
// switched to its identity (internal/asuser), so the kernel itself answers.
func kernelCallers(base string) fstest.NewCallers {
	return func(t *testing.T) *fstest.Callers {
		testenv.Root(t)
		// Not t.TempDir: its parent is 0700, closed to the other callers.
		dir := hostDir(t, base)
		// No directory cache: a cached descriptor skips its ancestors'
		// search checks, and these callers have different credentials (see
		// the package doc); the kernel must check every walk.
		var every libservices.Duration
		f, err := New(Options{Dir: dir, DirRevalidate: &every})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.CloseFS() })
		return &fstest.Callers{As: func(t *testing.T, c peercred.Cred) libservices.FS {
			th, err := asuser.Start(c)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(th.Close)
			return asuser.FS(f, th)
		}}
	}
}

// TestKernelPermissionsTmpfs runs the permission cases on the kernel's tmpfs:
// their reference.
func TestKernelPermissionsTmpfs(t *testing.T) {
	fstest.RunPermissions(t, kernelCallers("/dev/shm"))
}

// TestKernelPermissionsDisk runs them on a disk filesystem (ext4 on CI).
func TestKernelPermissionsDisk(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/var/tmp", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		testenv.SkipOrFail(t, "/var/tmp is a tmpfs here: the disk reference run needs a disk filesystem there")
		return
	}
	fstest.RunPermissions(t, kernelCallers("/var/tmp"))
}
