package fusegw

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

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

// mountInChild mounts a memfs on dir in a helper process and returns it once the
// mount serves.
func mountInChild(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=mount", dirEnv+"="+dir)
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
// reads until released, and implements Flusher with an injectable failure.
type trackFS struct {
	*memfs.FS
	mu       sync.Mutex
	open     int
	block    chan struct{} // reads wait on it while non-nil
	entered  chan struct{} // a read signals here when it starts waiting
	flushErr error
	flushes  int
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
