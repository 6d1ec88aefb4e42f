package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/testenv"
)

// dialEnv turns the test binary into a client that dials the socket it names and
// writes one file: the security test runs it under other uids.
const dialEnv = "POLYTROPON_SERVE_TEST_DIAL"

func init() {
	sock := os.Getenv(dialEnv)
	if sock == "" {
		return
	}
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock, Prefix: "/data"})
	if err == nil {
		err = c.WriteFile("/intruder", []byte("x"), 0o644)
	}
	if err != nil {
		fmt.Println("refused:", err)
		os.Exit(3)
	}
	fmt.Println("connected")
	os.Exit(0)
}

const poolUID, poolGID = 4242, 4242

type serveEnv struct {
	dir, cfg, parent, pool, stateDir string
	cpu                              int // the pool's CPU (poolCPU)
}

func newServeEnv(t *testing.T) *serveEnv {
	return newServeEnvWith(t, "", "    filesystems:\n      - name: data\n        stack: [{memfs: {}}]\n")
}

// newServeEnvWith writes a one-pool configuration with poolExtra (keys of the
// pool, indented by 4) and filesystems (the pool's filesystems key, indented
// by 4).
func newServeEnvWith(t *testing.T, poolExtra, filesystems string) *serveEnv {
	testenv.Root(t)
	testenv.Cpusets(t, false)
	dir := t.TempDir()
	// Other uids must be able to reach the state directory's door (the security
	// test), and run the test binary, copied here out of go's private build dir.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &serveEnv{dir: dir, parent: fmt.Sprintf("polytropon-cmdtest-%d", os.Getpid()), pool: "p" + strconv.Itoa(os.Getpid()), cpu: poolCPU(t)}
	e.stateDir = filepath.Join(dir, "run", e.pool)
	e.cfg = filepath.Join(dir, "serve.yaml")
	cfg := fmt.Sprintf(`cgroup: %s
run_dir: %s
pools:
  - name: %s
    cpus: "%d"
    memory: 256MiB
    pids: 256
    uid: %d
    gid: %d
    spin: 0
%s%s`, e.parent, filepath.Join(dir, "run"), e.pool, e.cpu, poolUID, poolGID, poolExtra, filesystems)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *serveEnv) socket() string { return filepath.Join(e.stateDir, "service.sock") }

// cpusetDir is the pool's cpuset cgroup: serve nests its parent in serve's
// own cgroup, the test's.
func (e *serveEnv) cpusetDir(t testing.TB) string { return cpusetDir(t, e.parent, e.pool) }

// servicePids lists the pool cgroup's processes.
func (e *serveEnv) servicePids(t *testing.T) []int {
	data, err := os.ReadFile(filepath.Join(e.cpusetDir(t), "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		p, _ := strconv.Atoi(f)
		pids = append(pids, p)
	}
	return pids
}

// startServe runs `polytropon serve` (the test binary as the CLI) and waits for
// its ready line.
func startServe(t *testing.T, e *serveEnv) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", e.cfg)
	logf, err := os.Create(filepath.Join(e.dir, fmt.Sprintf("serve-%d.log", time.Now().UnixNano())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("serve log:\n%s", b)
		}
	})
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "polytropon serve ready") {
		t.Fatalf("serve: %q, %v", line, err)
	}
	return cmd
}

func stopServe(t *testing.T, e *serveEnv, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	for _, p := range []string{e.stateDir, e.cpusetDir(t), cpusetDir(t, e.parent)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after SIGTERM (%v)", p, err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestServeEndToEnd(t *testing.T) {
	e := newServeEnv(t)
	serve := startServe(t, e)

	st, err := os.Stat(e.socket())
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o660 || sys.Uid != poolUID || sys.Gid != poolGID {
		t.Fatalf("socket %v %d:%d", st.Mode(), sys.Uid, sys.Gid)
	}
	pids := e.servicePids(t)
	if len(pids) != 1 {
		t.Fatalf("pool cgroup holds %v, want the service alone", pids)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
	if !strings.Contains(string(status), fmt.Sprintf("Cpus_allowed_list:\t%d\n", e.cpu)) {
		t.Fatalf("service not confined to CPU %d:\n%s", e.cpu, status)
	}

	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/f", []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := c.ReadFile("/f"); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}

	// The supervisor restarts a killed service, in the pool; the client
	// reconnects (memfs starts empty again).
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a restarted service", func() bool {
		p := e.servicePids(t)
		if len(p) != 1 || p[0] == pids[0] {
			return false
		}
		st, err := os.Stat(e.socket())
		return err == nil && st.Mode().Perm() == 0o660
	})
	var werr error
	waitFor(t, "the client to work again", func() bool {
		werr = c.WriteFile("/g", []byte("again"), 0o644)
		return werr == nil
	})
	if b, err := c.ReadFile("/g"); err != nil || string(b) != "again" {
		t.Fatalf("after restart: read %q, %v", b, err)
	}

	exe := filepath.Join(e.dir, "client")
	if data, err := os.ReadFile(os.Args[0]); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// Security: another uid cannot reach the socket (permissions); with the
	// pool's gid it reaches it and SO_PEERCRED refuses it.
	for _, tc := range []struct {
		name   string
		cred   *syscall.Credential
		reason string
	}{
		{"other uid and gid", &syscall.Credential{Uid: 65534, Gid: 65534}, "connect: permission denied"},
		{"other uid, pool's gid", &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{poolGID}}, "service refused the connection"},
	} {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), dialEnv+"="+e.socket())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tc.cred}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "refused") ||
			!strings.Contains(strings.ToLower(string(out)), tc.reason) {
			t.Errorf("%s: %v: %s", tc.name, err, out)
		}
		t.Logf("%s: %s", tc.name, strings.TrimSpace(string(out)))
	}
	if _, err := c.Stat("/intruder"); err == nil {
		t.Error("an intruder wrote a file")
	}

	stopServe(t, e, serve)
}

func TestServeReconcileAfterSIGKILL(t *testing.T) {
	e := newServeEnv(t)
	first := startServe(t, e)
	old := e.servicePids(t)
	if len(old) != 1 {
		t.Fatalf("pool cgroup holds %v", old)
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	// Nothing tore the pool down: its service still runs.
	if !alive(old[0]) {
		t.Fatal("the service died with serve: the test would not exercise reconcile")
	}

	second := startServe(t, e)
	now := e.servicePids(t)
	if len(now) != 1 || now[0] == old[0] {
		t.Fatalf("after reconcile the pool holds %v (old service %d)", now, old[0])
	}
	if alive(old[0]) {
		t.Fatalf("old service %d survived reconcile", old[0])
	}
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile("/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stopServe(t, e, second)
}

// alive reports whether pid runs; a zombie (an orphan its new parent has not
// reaped yet) does not.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && len(data) > i+2 && data[i+2] != 'Z'
}
