package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/service"
)

func isMounted(t *testing.T, mp string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mp {
			return true
		}
	}
	return false
}

// TestMountCommand runs `polytropon mount` against a service: what a program
// writes through the mount, fslib reads on the direct path, and the command
// returns once the mount goes away.
func TestMountCommand(t *testing.T) {
	testenv.FUSE(t)
	dir := t.TempDir()
	cfg, err := service.ParseConfig([]byte(fmt.Sprintf("socket: %s/s.sock\nspin: 0\nfilesystems:\n  - name: data\n    stack: [{memfs: {}}]\n", dir)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := service.Start(*cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "mount", "--socket", s.Socket(), "--fs", "nosuch", mp); err == nil || !strings.Contains(err.Error(), "data") {
		t.Fatalf("mount of an unknown instance: %v, want an error listing the instances", err)
	}
	done := make(chan error, 1)
	// The command's output and its log (written by the gateway's goroutines) share
	// one buffer here, so it must be safe for concurrent writers.
	var out lockedBuffer
	go func() {
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"mount", "--socket", s.Socket(), "--fs", "data", mp})
		done <- root.Execute()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !isMounted(t, mp) {
		select {
		case err := <-done:
			t.Fatalf("mount command returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("not mounted after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(mp, "hello"), []byte("through FUSE"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := fslib.Dial(fslib.DialOptions{Socket: s.Socket()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, err := c.ReadFile("/data/hello"); err != nil || string(b) != "through FUSE" {
		t.Fatalf("direct path read: %q %v", b, err)
	}
	// Lazily: a file the kernel still releases (the write above) may keep the
	// mount busy for a moment; the gateway ends once the kernel lets go.
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mount command: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mount command still running after its mount went away")
	}
	if got := out.String(); !strings.Contains(got, "mounted data at "+mp) {
		t.Fatalf("output: %q", got)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
