package service_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	iofstest "testing/fstest"

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

// TestMetricsAndStatus: the Prometheus endpoint and the status document report
// operations, latency histograms and the cache's hit counters.
func TestMetricsAndStatus(t *testing.T) {
	cfg := stackConfig(t, "writethrough")
	cfg.Metrics = "127.0.0.1:0"
	s := start(t, cfg)
	c, err := fslib.Dial(fslib.DialOptions{Socket: s.Socket()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/f", bytes.Repeat([]byte("x"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.ReadFile("/f"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Stat("/f"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Stat("/missing"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`polytropon_service_ops_total{op="stat"} 4`,
		`polytropon_service_op_errors_total{op="stat"} 1`,
		`polytropon_service_op_seconds_bucket{op="read",le=`,
		`polytropon_cache_page_hits{fs="root",layer="0"}`,
		`polytropon_service_clients 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
	st := s.Status()
	var stat *service.StatusOp
	for i := range st.Ops {
		if st.Ops[i].Op == "stat" {
			stat = &st.Ops[i]
		}
	}
	if stat == nil || stat.Count != 4 || stat.Errors != 1 || stat.P50Us <= 0 {
		t.Fatalf("status of stat: %+v", stat)
	}
	hits := -1.0
	for _, cn := range st.Counters {
		if cn.Name == "polytropon_cache_page_hits" {
			hits = cn.Value
		}
	}
	if hits <= 0 {
		t.Fatalf("cache page hits in status: %v (counters %+v)", hits, st.Counters)
	}
	if st.Clients != 1 || len(st.Filesystems) != 1 || st.Filesystems[0].Mount != "/" {
		t.Fatalf("status: %+v", st)
	}
}

// TestDialErrors: no service names the socket; the environment variable is used
// when no socket is given; neither is a clear error.
func TestDialErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nobody-here.sock")
	_, err := fslib.Dial(fslib.DialOptions{Socket: missing})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("dial with no service: %v, want an error naming %s", err, missing)
	}
	t.Setenv(fslib.SocketEnv, "")
	if _, err := fslib.Dial(fslib.DialOptions{}); !errors.Is(err, fslib.ErrNoSocket) {
		t.Fatalf("dial with no socket: %v", err)
	}
	s := start(t, memConfig(t))
	t.Setenv(fslib.SocketEnv, s.Socket())
	c, err := fslib.Dial(fslib.DialOptions{})
	if err != nil {
		t.Fatalf("dial through $%s: %v", fslib.SocketEnv, err)
	}
	defer c.Close()
	if err := c.Mkdir("/m/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir("/elsewhere", 0o755); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("mkdir outside every mount: %v, want ENOENT", err)
	}
}

// TestIOFSDirect runs testing/fstest.TestFS on fslib's io/fs adapter over the
// direct path.
func TestIOFSDirect(t *testing.T) {
	s := start(t, memConfig(t))
	c, err := fslib.Dial(fslib.DialOptions{Socket: s.Socket(), Prefix: "/m"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := []string{"a.txt", "dir/b.txt", "dir/sub/c.bin"}
	for _, name := range want {
		if err := c.MkdirAll(filepath.Dir("/"+name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteFile("/"+name, []byte("content of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := iofstest.TestFS(c.FS(), want...); err != nil {
		t.Fatal(err)
	}
}

// TestBadConfig: configuration errors name the key.
func TestBadConfig(t *testing.T) {
	for _, c := range []struct{ yaml, key string }{
		{"filesystems: [{name: a, stack: [{memfs: {}}]}]", "socket"},
		{"socket: /tmp/x\n", "filesystems"},
		{"socket: /tmp/x\nfilesystems: [{name: a, stack: [{memfs: {}}]}, {name: a, stack: [{memfs: {}}]}]", "filesystems[1].name"},
		{"socket: /tmp/x\nfilesystems: [{name: a, mount: rel, stack: [{memfs: {}}]}]", "filesystems[0].mount"},
		{"socket: /tmp/x\nfilesystems: [{name: a, mount: /a/../b, stack: [{memfs: {}}]}]", "filesystems[0].mount"},
		{"socket: /tmp/x\nmetrics: nope\nfilesystems: [{name: a, stack: [{memfs: {}}]}]", "metrics"},
		{"socket: /tmp/x\nbogus: 1\nfilesystems: [{name: a, stack: [{memfs: {}}]}]", "bogus"},
		{"socket: /tmp/x\nfilesystems: [{name: a, fuse: /m, fuse_mounts: [{path: /n}, {direct_io: true}], stack: [{memfs: {}}]}]", "filesystems[0].fuse_mounts[1].path"},
		{"socket: /tmp/x\nfilesystems: [{name: a, fuse: /m, fuse_mounts: [{path: /m}], stack: [{memfs: {}}]}]", "filesystems[0].fuse_mounts[0].path"},
	} {
		_, err := service.ParseConfig([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%q: %v, want an error naming %s", c.yaml, err, c.key)
		}
	}
	cfg, err := service.ParseConfig([]byte("socket: /tmp/x\nfilesystems: [{name: a, stack: [{nosuch: {}}]}]"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := service.Start(*cfg, nil); err == nil || !strings.Contains(err.Error(), "filesystems[0].stack[0]") {
		t.Fatalf("unknown libservice: %v", err)
	}
	// A start that fails half way leaves nothing behind: the socket is free again.
	bad := memConfig(t)
	bad.Filesystems[0].FUSE = filepath.Join(t.TempDir(), "no-such-dir")
	if _, err := service.Start(bad, nil); err == nil || !strings.Contains(err.Error(), "filesystems[0].fuse") {
		t.Fatalf("missing FUSE mountpoint: %v", err)
	}
	bad.Filesystems[0].FUSE = ""
	start(t, bad)
}
