package fusegw

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/stack"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "mount":
		os.Exit(helperMount())
	case "user":
		os.Exit(helperUser())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// needFUSE: the tests mount with mount(2), which needs root, and /dev/fuse.
func needFUSE(t testing.TB) {
	t.Helper()
	testenv.Root(t)
	testenv.FUSE(t)
}

// mountOn mounts fsys on a fresh directory and unmounts it at cleanup, failing the
// test if the server does not stop.
func mountOn(t testing.TB, fsys libservices.FS, o Options) *Server {
	t.Helper()
	s, err := Mount(t.TempDir(), fsys, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, s) })
	return s
}

// stop unmounts s and waits for it; the wait is bounded so that a hang fails the
// test instead of the whole run.
func stop(t testing.TB, s *Server) {
	t.Helper()
	if err := s.Unmount(); err != nil {
		t.Errorf("unmount: %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Errorf("the server of %s did not stop after unmount", s.Mountpoint())
	}
}

// client is the FS a program sees through the mount: passthrough over the
// mount point, so every call goes through the kernel's FUSE client.
func client(t testing.TB, s *Server) libservices.FS {
	t.Helper()
	p, err := passthrough.New(passthrough.Options{Dir: s.Mountpoint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.CloseFS() })
	return p
}

// TestConformanceMemfs runs the conformance suite through the kernel into the
// gateway over memfs.
func TestConformanceMemfs(t *testing.T) {
	needFUSE(t)
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return client(t, mountOn(t, memfs.New(memfs.Options{}), Options{}))
	})
}

// TestConformanceNoCache runs the suite with the kernel's entry, attribute and page
// caches off, so that every path walk, stat, read and write reaches the gateway.
func TestConformanceNoCache(t *testing.T) {
	needFUSE(t)
	fstest.Run(t, func(t *testing.T) libservices.FS {
		return client(t, mountOn(t, memfs.New(memfs.Options{}), Options{EntryTimeout: -1, AttrTimeout: -1, NoReadDirPlus: true, DirectIO: true}))
	})
}

// TestDirectIOSeesDirectWrites: with DirectIO, a file open through the mount reads
// what the direct path wrote a moment ago, with no page cache in between.
func TestDirectIOSeesDirectWrites(t *testing.T) {
	needFUSE(t)
	fsys := memfs.New(memfs.Options{})
	mp := mountOn(t, fsys, Options{DirectIO: true}).Mountpoint()
	if err := os.WriteFile(mp+"/f", []byte("version 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(mp + "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 16)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "version 1" {
		t.Fatalf("first read: %q %v", buf[:n], err)
	}
	h, err := fsys.Open("f", libservices.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fsys.WriteAt(h, []byte("VERSION"), 0)
	fsys.Close(h)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "VERSION 1" {
		t.Fatalf("read after a direct-path write: %q %v", buf[:n], err)
	}
}

const stackYAML = `name: root
stack:
  - cache: {size: 64MiB, policy: writeback}
  - union: {}
branches:
  - passthrough: {dir: %s}
  - passthrough: {dir: %s, readonly: true}
`

// TestConformanceStack runs the suite through the mount into the example stack:
// a write-back cache over a union of a host directory over a read-only one.
func TestConformanceStack(t *testing.T) {
	needFUSE(t)
	fstest.Run(t, func(t *testing.T) libservices.FS {
		fsys, err := stack.BuildYAML([]byte(fmt.Sprintf(stackYAML, t.TempDir(), t.TempDir())), "filesystems[0]", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := stack.Close(fsys); err != nil {
				t.Errorf("closing the stack: %v", err)
			}
		})
		return client(t, mountOn(t, fsys, Options{}))
	})
}
