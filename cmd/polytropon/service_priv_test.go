package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/testenv"
)

// startService runs `polytropon service --config cfg` (the test binary as the
// CLI) and waits for its ready line; stderr goes to a buffer it returns.
func startService(t *testing.T, cfg string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "service", "--config", cfg)
	var errb lockedBuffer
	cmd.Stderr = &errb
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
		if t.Failed() {
			t.Logf("service's stderr:\n%s", errb.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "polytropon service ready") {
		_ = cmd.Wait()
		t.Fatalf("service: %q, %v\n%s", line, err, errb.String())
	}
	return cmd, &errb
}

// childOf returns the one child process of pid (any of its threads may
// have forked it, so /proc is scanned for the parent pid).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, c)
		}
	}
	if len(kids) != 1 {
		t.Fatalf("process %d has children %v, want one", pid, kids)
	}
	return kids[0]
}

// TestServiceDropsToConfiguredUser: `polytropon service` started by root
// with a user key runs the service as that user with nothing more; a root
// parent makes its socket (the user's, 0660), control socket (root's, 0600)
// and FUSE mount (the user's), and on SIGTERM stops the service and removes
// them all, exiting 0.
func TestServiceDropsToConfiguredUser(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	dir := tenantDir(t)
	branch, mnt := filepath.Join(dir, "branch"), filepath.Join(dir, "mnt")
	for _, d := range []string{branch, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(branch, poolUID, poolGID); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "svc.yaml")
	sock, ctl := filepath.Join(dir, "s.sock"), filepath.Join(dir, "c.sock")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`socket: %s
control: %s
metrics: 127.0.0.1:0
spin: 0
user: {uid: %d, gid: %d}
filesystems:
  - name: data
    fuse: %s
    stack: [{passthrough: {dir: %s}}]
`, sock, ctl, poolUID, poolGID, mnt, branch)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, errb := startService(t, cfg)
	svc := childOf(t, cmd.Process.Pid)
	checkDropped(t, svc)
	for _, c := range []struct {
		path     string
		uid, gid uint32
		perm     uint32
	}{{sock, poolUID, poolGID, 0o660}, {ctl, 0, 0, 0o600}} {
		var st unix.Stat_t
		if err := unix.Stat(c.path, &st); err != nil || st.Uid != c.uid || st.Gid != c.gid || st.Mode&0o777 != c.perm {
			t.Errorf("%s: %o %d:%d (%v), want %o %d:%d", c.path, st.Mode&0o777, st.Uid, st.Gid, err, c.perm, c.uid, c.gid)
		}
	}
	exe := tenantExe(t, dir)
	if got := asPool(t, []string{connectEnv + "=" + ctl}, exe); got != syscall.EACCES.Error() {
		t.Errorf("the user connecting to the control socket: %q", got)
	}
	w := exec.Command("sh", "-c", "echo hi >"+filepath.Join(mnt, "f"))
	w.SysProcAttr = &syscall.SysProcAttr{Credential: poolCred}
	if out, err := w.CombinedOutput(); err != nil {
		t.Fatalf("the user writes through the service's FUSE mount: %v %s", err, out)
	}
	c, err := fslib.Dial(fslib.DialOptions{Socket: sock, Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.ReadFile("/f"); err != nil || string(b) != "hi\n" {
		t.Errorf("root reads over the direct path what the user wrote through FUSE: %q %v", b, err)
	}
	c.Close()
	out, err := exec.Command(os.Args[0], "status", "--socket", sock).CombinedOutput()
	if want := fmt.Sprintf("runs as: uid %d gid %d, no capabilities", poolUID, poolGID); err != nil || !strings.Contains(string(out), want) {
		t.Errorf("status: %v, want %q in:\n%s", err, want, out)
	}
	// The metrics listener, made by the parent, is served by the service.
	var metrics string
	for _, l := range strings.Split(string(out), "\n") {
		if a, ok := strings.CutPrefix(l, "metrics: "); ok {
			metrics = a
		}
	}
	if resp, err := http.Get(metrics); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %q: %v %v", metrics, resp, err)
	} else {
		resp.Body.Close()
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("service after SIGTERM: %v\n%s", err, errb.String())
	}
	if alive(svc) {
		t.Errorf("the service process %d outlived its parent", svc)
	}
	if isMounted(t, mnt) {
		t.Error("the FUSE mount outlived the service")
	}
	for _, p := range []string{sock, ctl} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if strings.Contains(errb.String(), "HOST ROOT") {
		t.Errorf("a service with a user warned that it runs as root:\n%s", errb.String())
	}
}

// TestServiceAsRootSaysSo: without a user key, a service started by root
// warns at start and status says it runs as host root.
func TestServiceAsRootSaysSo(t *testing.T) {
	testenv.Root(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "svc.yaml")
	sock := filepath.Join(dir, "s.sock")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("socket: %s\nspin: 0\nfilesystems:\n  - name: data\n    stack: [{memfs: {}}]\n", sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, errb := startService(t, cfg)
	// stderr is copied by another goroutine than stdout's ready line.
	waitFor(t, "the warning at start", func() bool { return strings.Contains(errb.String(), "THE SERVICE RUNS AS HOST ROOT") })
	out, err := exec.Command(os.Args[0], "status", "--socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "runs as: HOST ROOT") {
		t.Errorf("status: %v\n%s", err, out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestServiceUserErrors: a user the service cannot use, and a branch its
// user cannot use, fail at start with the key, the directory and the fix;
// nothing is left behind.
func TestServiceUserErrors(t *testing.T) {
	testenv.Root(t)
	dir := tenantDir(t)
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	for _, tc := range []struct {
		user, branch string
		want         []string
	}{
		{"{uid: 0, gid: 5}", private, []string{"user: privdrop: uid 0 is host root"}},
		{"{uid: 5}", private, []string{"both uid and gid are required"}},
		{"{uid: 5, gid: 5, shell: x}", private, []string{`unknown key "shell"`}},
		{"no-such-user-here", private, []string{`user "no-such-user-here"`}},
		{fmt.Sprintf("{uid: %d, gid: %d}", poolUID, poolGID), private, []string{
			"filesystems[0].stack[0].passthrough.dir: " + private + " is not usable by the service's user, uid 4242 gid 4242",
			fmt.Sprintf("chown %d:%d %s", poolUID, poolGID, private)}},
	} {
		cfg := filepath.Join(dir, "svc.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("socket: %s\nuser: %s\nfilesystems:\n  - name: data\n    stack: [{passthrough: {dir: %s}}]\n",
			sock, tc.user, tc.branch)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(os.Args[0], "service", "--config", cfg).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("user %s: %v, want exit status 1\n%s", tc.user, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("user %s: no %q in:\n%s", tc.user, w, out)
			}
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("user %s: the socket was left behind (%v)", tc.user, err)
		}
	}
}
