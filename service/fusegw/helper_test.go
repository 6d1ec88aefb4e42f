package fusegw

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

// The stale-mount tests start a helper process by re-executing the test binary
// with helperEnv set; TestMain then runs the helper instead of the tests.
const (
	helperEnv = "POLYTROPON_FUSEGW_TEST_HELPER"
	dirEnv    = "POLYTROPON_FUSEGW_TEST_DIR"
	readyLine = "ready"
)

// helperMount mounts a memfs holding one file on $dirEnv, says ready, and serves
// until it is killed.
func helperMount() int {
	fsys := memfs.New(memfs.Options{})
	if err := writeFS(fsys, "hello", []byte("from the helper")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := Mount(os.Getenv(dirEnv), fsys, Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(readyLine)
	select {}
}

// helperUser runs the unprivileged path (`polytropon mount` by a user) in a
// private mount namespace it was started in as root: it puts a world-usable
// /dev/fuse there (many hosts have one; a root-only one makes fusermount3 fail,
// since it opens the device with the user's rights), becomes nobody, then mounts
// and unmounts with fusermount3, and removes a dead mount of its own (a killed
// helper's) with CleanStale (fusermount3 -u -z). It prints ok.
func helperUser() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		return 1
	}
	dir := os.Getenv(dirEnv)
	node := filepath.Join(filepath.Dir(dir), "fuse")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 229))); err != nil {
		return fail("mknod %s: %v", node, err)
	}
	if err := unix.Chmod(node, 0o666); err != nil {
		return fail("chmod %s: %v", node, err)
	}
	if err := unix.Mount(node, "/dev/fuse", "", unix.MS_BIND, ""); err != nil {
		return fail("bind %s on /dev/fuse: %v", node, err)
	}
	if err := syscall.Setgid(nobody); err != nil {
		return fail("setgid: %v", err)
	}
	if err := syscall.Setuid(nobody); err != nil {
		return fail("setuid: %v", err)
	}
	s, err := Mount(dir, memfs.New(memfs.Options{}), Options{})
	if err != nil {
		return fail("mount as nobody: %v", err)
	}
	if err := os.WriteFile(dir+"/f", []byte("unprivileged"), 0o644); err != nil {
		return fail("write: %v", err)
	}
	if b, err := os.ReadFile(dir + "/f"); err != nil || string(b) != "unprivileged" {
		return fail("read back %q %v", b, err)
	}
	if err := s.Unmount(); err != nil {
		return fail("unmount as nobody: %v", err)
	}
	s.Wait()
	if ms, err := mountsAt(s.Mountpoint()); err != nil || len(ms) != 0 {
		return fail("still mounted after Unmount: %v %v", ms, err)
	}

	cmd := helperCmd(os.Args[0], "mount", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail("%v", err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fail("start the mount helper: %v", err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != readyLine {
		cmd.Process.Kill()
		return fail("mount helper: %q %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if ms, _ := mountsAt(dir); len(ms) != 1 {
		return fail("%d mounts after killing the server", len(ms))
	}
	cleaned, err := CleanStale(dir)
	if err != nil || !cleaned {
		return fail("CleanStale as nobody: %v %v", cleaned, err)
	}
	if ms, _ := mountsAt(dir); len(ms) != 0 {
		return fail("still mounted after CleanStale")
	}
	fmt.Println("ok")
	return 0
}

const nobody = 65534

// mountInChild mounts a memfs on dir in a helper process and returns it once the
// mount serves.
func mountInChild(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	return startChild(t, helperCmd(os.Args[0], "mount", dir))
}

func helperCmd(bin, kind, dir string) *exec.Cmd {
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+kind, dirEnv+"="+dir)
	return cmd
}

// startChild starts a mount helper and returns once its mount serves.
func startChild(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != readyLine {
		t.Fatalf("helper: %q %v", line, err)
	}
	return cmd
}

// killChild kills the helper with SIGKILL, as the OOM killer or a crash would, and
// reaps it: its /dev/fuse descriptor is closed when Wait returns.
func killChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

func writeFS(fsys libservices.FS, name string, data []byte) error {
	h, err := fsys.Open(name, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := fsys.WriteAt(h, data, 0); err != nil {
		fsys.Close(h)
		return err
	}
	return fsys.Close(h)
}

func readFS(t testing.TB, fsys libservices.FS, name string) string {
	t.Helper()
	h, err := fsys.Open(name, libservices.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer fsys.Close(h)
	buf := make([]byte, 4096)
	n, err := fsys.ReadAt(h, buf, 0)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(buf[:n])
}

// trackFS is memfs instrumented for the tests: it counts open handles, can hold
// reads until released, and implements libservices.Flusher with an injectable
// failure.
type trackFS struct {
	*memfs.FS
	mu       sync.Mutex
	open     int
	block    chan struct{} // reads wait on it while non-nil
	entered  chan struct{} // a read signals here when it starts waiting
	flushErr error
	flushes  int
	noHold   bool // HoldsBack says false: the gateway must not call Flush
}

func newTrackFS() *trackFS { return &trackFS{FS: memfs.New(memfs.Options{})} }

func (f *trackFS) Open(name string, flags int, mode uint32) (libservices.Handle, error) {
	h, err := f.FS.Open(name, flags, mode)
	if err == nil {
		f.mu.Lock()
		f.open++
		f.mu.Unlock()
	}
	return h, err
}

func (f *trackFS) Close(h libservices.Handle) error {
	err := f.FS.Close(h)
	if err == nil {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}
	return err
}

func (f *trackFS) ReadAt(h libservices.Handle, p []byte, off int64) (int, error) {
	f.mu.Lock()
	block, entered := f.block, f.entered
	f.mu.Unlock()
	if block != nil {
		entered <- struct{}{}
		<-block
	}
	return f.FS.ReadAt(h, p, off)
}

func (f *trackFS) HoldsBack() bool { return !f.noHold }

func (f *trackFS) Flush(h libservices.Handle) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes++
	return f.flushErr
}

func (f *trackFS) openCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}
