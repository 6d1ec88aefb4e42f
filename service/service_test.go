package service_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/service"
)

// memConfig is a service with one memfs instance mounted at /m.
func memConfig(t testing.TB) service.Config {
	cfg, err := service.ParseConfig([]byte(fmt.Sprintf(`
socket: %s
spin: 0
filesystems:
  - name: m
    stack:
      - memfs: {}
`, filepath.Join(t.TempDir(), "s.sock"))))
	if err != nil {
		t.Fatal(err)
	}
	return *cfg
}

// stackConfig is the demo's default stack: cache over union over two passthrough
// branches in temporary directories.
func stackConfig(t testing.TB, policy string) service.Config {
	dir := t.TempDir()
	cfg, err := service.ParseConfig([]byte(fmt.Sprintf(`
socket: %[1]s/s.sock
spin: 0
filesystems:
  - name: root
    mount: /
    stack:
      - cache: {size: 4MiB, policy: %[2]s}
      - union: {}
    branches:
      - passthrough: {dir: %[1]s}
      - passthrough: {dir: %[1]s}
`, dir, policy)))
	if err != nil {
		t.Fatal(err)
	}
	// Distinct branch directories.
	up, low := filepath.Join(dir, "upper"), filepath.Join(dir, "lower")
	for _, d := range []string{up, low} {
		if err := syscall.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fc := &cfg.Filesystems[0]
	setDir(t, &fc.Branches[0], up)
	setDir(t, &fc.Branches[1], low)
	return *cfg
}

func setDir(t testing.TB, l *libservices.Layer, dir string) {
	for i := 0; i+1 < len(l.Opts.Content); i += 2 {
		if l.Opts.Content[i].Value == "dir" {
			l.Opts.Content[i+1].Value = dir
			return
		}
	}
	t.Fatal("no dir key in layer")
}

func start(t testing.TB, cfg service.Config) *service.Service {
	s, err := service.Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("service close: %v", err)
		}
	})
	return s
}

func dialFS(t testing.TB, s *service.Service, prefix string) libservices.FS {
	fs, err := fslib.DialFS(fslib.DialOptions{Socket: s.Socket(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, ok := fs.(libservices.Closer); ok {
			c.CloseFS()
		}
	})
	return fs
}

// TestConformanceDirectMemfs runs the libservices conformance suite through the
// direct path: fslib's remote FS -> shared memory -> service -> memfs.
func TestConformanceDirectMemfs(t *testing.T) {
	fstest.Run(t, func(t *testing.T) libservices.FS {
		s := start(t, memConfig(t))
		return dialFS(t, s, "/m")
	})
}

// TestConformanceDirectStack is the same over cache -> union -> passthrough.
func TestConformanceDirectStack(t *testing.T) {
	for _, policy := range []string{"writethrough", "writeback"} {
		t.Run(policy, func(t *testing.T) {
			fstest.Run(t, func(t *testing.T) libservices.FS {
				s := start(t, stackConfig(t, policy))
				return dialFS(t, s, "")
			})
		})
	}
}
