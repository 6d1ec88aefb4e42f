package service_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/service"
)

// TestControlSocket moves a running service's workers and cache through its
// control socket and reads them back in its status.
func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	cfg, err := service.ParseConfig([]byte(`
socket: ` + filepath.Join(dir, "s.sock") + `
control: ` + filepath.Join(dir, "c.sock") + `
spin: 0
workers: 2
filesystems:
  - name: m
    stack:
      - cache: {size: 1MiB, max_size: 8MiB}
      - memfs: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	start(t, *cfg)
	c, err := service.DialControl(cfg.Control)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	do := func(req service.ControlRequest) service.ControlReply {
		t.Helper()
		rep, err := c.Do(req, 5*time.Second)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return rep
	}
	st := do(service.ControlRequest{Op: service.ControlStatus}).Status
	if st == nil || st.Workers != 2 || len(st.Caches) != 1 || st.Caches[0].SizeBytes != 1<<20 || st.Caches[0].MaxBytes != 8<<20 {
		t.Fatalf("status %+v", st)
	}
	if rep := do(service.ControlRequest{Op: service.ControlSetWorkers, Value: 3}); rep.Value != 3 {
		t.Fatalf("set_workers: %+v", rep)
	}
	if rep := do(service.ControlRequest{Op: service.ControlSetCacheBytes, Value: 64 << 20}); rep.Value != 8<<20 {
		t.Fatalf("set_cache_bytes past max_size: %+v, want 8MiB", rep)
	}
	st = do(service.ControlRequest{Op: service.ControlStatus}).Status
	if st.Workers != 3 || st.Caches[0].SizeBytes != 8<<20 {
		t.Fatalf("after set: workers %d cache %d", st.Workers, st.Caches[0].SizeBytes)
	}
	// Bad requests get an error and change nothing.
	for _, req := range []service.ControlRequest{{Op: "reboot"}, {Op: service.ControlSetWorkers, Value: 0},
		{Op: service.ControlSetWorkers, Value: 1000}, {Op: service.ControlSetCacheBytes, Value: -1}} {
		if _, err := c.Do(req, 5*time.Second); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	raw, err := net.Dial("unix", cfg.Control)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte("{not json\n"))
	buf := make([]byte, 256)
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := raw.Read(buf)
	if !strings.Contains(string(buf[:n]), "bad request") {
		t.Fatalf("malformed request answered %q", buf[:n])
	}
	st = do(service.ControlRequest{Op: service.ControlStatus}).Status
	if st.Workers != 3 || st.Caches[0].SizeBytes != 8<<20 {
		t.Fatalf("bad requests changed workers %d cache %d", st.Workers, st.Caches[0].SizeBytes)
	}
}

// roleControl asks the control socket in sockEnv for the status: 0 when
// answered, 3 when refused.
func roleControl() int {
	c, err := service.DialControl(os.Getenv(sockEnv))
	if err != nil {
		fmt.Println("refused:", err)
		return 3
	}
	defer c.Close()
	if _, err := c.Do(service.ControlRequest{Op: service.ControlStatus}, 5*time.Second); err != nil {
		fmt.Println("refused:", err)
		return 3
	}
	fmt.Println("answered")
	return 0
}

// TestControlSocketOtherUID: with the socket's permissions opened up on purpose,
// SO_PEERCRED alone still refuses another uid; root is answered.
func TestControlSocketOtherUID(t *testing.T) {
	testenv.Root(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary, where another uid can run it.
	bin := filepath.Join(dir, "service.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := service.ParseConfig([]byte("socket: " + filepath.Join(dir, "s.sock") + "\ncontrol: " +
		filepath.Join(dir, "c.sock") + "\nspin: 0\nfilesystems: [{name: m, stack: [{memfs: {}}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, *cfg)
	if err := os.Chmod(cfg.Control, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []uint32{4242, 0} {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), roleEnv+"=control", sockEnv+"="+cfg.Control)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		code := cmd.ProcessState.ExitCode()
		if uid != 0 && (code != 3 || !strings.Contains(string(out), "refused")) {
			t.Fatalf("uid %d: exit %d (%v): %s", uid, code, err, out)
		}
		if uid == 0 && (code != 0 || !strings.Contains(string(out), "answered")) {
			t.Fatalf("root: exit %d (%v): %s", code, err, out)
		}
	}
}

// TestCloseWithIdleControlConnection: a control connection that sends nothing
// does not hold Close up for its one-minute read deadline.
func TestCloseWithIdleControlConnection(t *testing.T) {
	dir := t.TempDir()
	cfg, err := service.ParseConfig([]byte(`
socket: ` + filepath.Join(dir, "s.sock") + `
control: ` + filepath.Join(dir, "c.sock") + `
spin: 0
filesystems:
  - name: m
    stack: [{memfs: {}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := service.Start(*cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := service.DialControl(cfg.Control)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One request first, so the connection is surely being served.
	if _, err := c.Do(service.ControlRequest{Op: service.ControlStatus}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close waited on an idle control connection")
	}
}
