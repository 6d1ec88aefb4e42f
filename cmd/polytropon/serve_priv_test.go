package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/privdrop"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/pool"
	"github.com/polytropon/polytropon/service"
)

// connectEnv makes the test binary connect(2) to the Unix socket it names and
// print "connected" or the errno: the tests run it as the pool's user.
const connectEnv = "POLYTROPON_PRIV_TEST_CONNECT"

func init() {
	path := os.Getenv(connectEnv)
	if path == "" {
		return
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			fmt.Println(errno.Error())
		} else {
			fmt.Println(err)
		}
		os.Exit(0)
	}
	c.Close()
	fmt.Println("connected")
	os.Exit(0)
}

// tenantDir makes a directory other uids may traverse (t.TempDir's parent is
// 0700), removed at cleanup.
func tenantDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "polytropon-priv-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tenantExe copies the test binary where other uids may run it.
func tenantExe(t *testing.T, dir string) string {
	t.Helper()
	exe := filepath.Join(dir, "polytropon.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

var poolCred = &syscall.Credential{Uid: poolUID, Gid: poolGID, Groups: []uint32{}}

// asPool runs exe (args, extra env) as the pool's user and returns its
// combined output.
func asPool(t *testing.T, env []string, exe string, args ...string) string {
	t.Helper()
	return asUser(t, poolCred, env, exe, args...)
}

// asUser runs exe (args, extra env) as cred and returns its combined output.
func asUser(t *testing.T, cred *syscall.Credential, env []string, exe string, args ...string) string {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v as uid %d: %v\n%s", exe, args, cred.Uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// withHealth puts a health block in e's configuration.
func withHealth(t *testing.T, e *serveEnv, health string) {
	t.Helper()
	data, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cfg, append([]byte("health: "+health+"\n"), data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkDropped: every thread of pid runs as the pool's user in all four ids,
// with no groups, no capability in any set, no_new_privs, and the process is
// not dumpable (its /proc files are root's).
func checkDropped(t *testing.T, pid int) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		st, err := privdrop.Read(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Dropped(privdrop.Identity{UID: poolUID, GID: poolGID}); err != nil {
			t.Errorf("service %d: %v", pid, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd", pid), &st); err != nil || st.Uid != 0 {
		t.Errorf("service %d: /proc/PID/fd owned by uid %d (%v): the service is dumpable", pid, st.Uid, err)
	}
}

// poolReport is `polytropon status --pools --json` of e.
func poolReport(t *testing.T, e *serveEnv) pool.Report {
	t.Helper()
	out, err := exec.Command(os.Args[0], "status", "--run-dir", filepath.Join(e.dir, "run"), "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("status --pools: %v\n%s", err, out)
	}
	var rep pool.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("status --pools --json: %v\n%s", err, out)
	}
	return rep
}

// TestServeServiceRunsAsPoolUser: a pool's service runs as the pool's uid and
// gid with nothing more (all ids, no groups, no capabilities, no_new_privs,
// not dumpable); its FUSE mount, made by serve, is the pool user's and served
// by the service; its control socket is root's alone; status says who it
// runs as. Files it creates are the pool user's.
func TestServeServiceRunsAsPoolUser(t *testing.T) {
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
	e := newServeEnvWith(t, "", fmt.Sprintf(`    filesystems:
      - name: data
        fuse_mounts: [{path: %s, allow_other: true}]
        stack: [{passthrough: {dir: %s}}]
`, mnt, branch))
	serve := startServe(t, e)
	pids := e.servicePids(t)
	if len(pids) != 1 {
		t.Fatalf("pool cgroup holds %v", pids)
	}
	checkDropped(t, pids[0])

	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
			line = l
		}
	}
	for _, want := range []string{"fuse.polytropon", fmt.Sprintf("user_id=%d,group_id=%d", poolUID, poolGID), "default_permissions", "allow_other", "nosuid", "nodev"} {
		if !strings.Contains(line, want) {
			t.Errorf("the service's FUSE mount lacks %q: %q", want, line)
		}
	}
	exe := tenantExe(t, dir)
	cmd := exec.Command("sh", "-c", "echo hi >"+filepath.Join(mnt, "f"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: poolCred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the pool's user writes through the FUSE mount: %v %s", err, out)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(branch, "f"), &st); err != nil || st.Uid != poolUID || st.Gid != poolGID {
		t.Errorf("a file created through the service is %d:%d (%v), want the pool's %d:%d", st.Uid, st.Gid, err, poolUID, poolGID)
	}

	// Only root reaches the control socket: the tenant must not resize its
	// own service.
	ctl := filepath.Join(e.stateDir, "control.sock")
	if err := unix.Stat(ctl, &st); err != nil || st.Uid != 0 || st.Mode&0o777 != 0o600 {
		t.Errorf("control socket %o %d:%d (%v), want root's 0600", st.Mode&0o777, st.Uid, st.Gid, err)
	}
	if got := asPool(t, []string{connectEnv + "=" + ctl}, exe); got != syscall.EACCES.Error() {
		t.Errorf("the pool's user connecting to the control socket: %q, want %q", got, syscall.EACCES.Error())
	}
	cc, err := service.DialControl(ctl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Do(service.ControlRequest{Op: service.ControlPing}, 5*time.Second); err != nil {
		t.Errorf("root's ping: %v", err)
	}
	cc.Close()

	out, err := exec.Command(os.Args[0], "status", "--socket", e.socket()).CombinedOutput()
	if want := fmt.Sprintf("runs as: uid %d gid %d, no capabilities, no_new_privs, not dumpable", poolUID, poolGID); err != nil || !strings.Contains(string(out), want) {
		t.Errorf("status: %v, want %q in:\n%s", err, want, out)
	}
	if p := poolReport(t, e).Pools[0].Service; p.UID != poolUID || p.GID != poolGID || !p.Running {
		t.Errorf("status --pools: %+v", p)
	}
	stopServe(t, e, serve)
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+mnt+" ") {
		t.Errorf("the FUSE mount outlived serve")
	}
}

// TestServeRestartsAStoppedService: serve kills a SIGSTOPped service after
// health.failures failed checks and restarts it, logs why and counts it in
// status; a client reconnects to the new one.
func TestServeRestartsAStoppedService(t *testing.T) {
	e := newServeEnv(t)
	// A deadline generous enough for a loaded test machine: only the stop
	// makes a check fail.
	withHealth(t, e, "{interval: 100ms, timeout: 1s, failures: 3}")
	serve := startServe(t, e)
	pids := e.servicePids(t)
	if len(pids) != 1 {
		t.Fatalf("pool cgroup holds %v", pids)
	}
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "serve to restart the stopped service", func() bool {
		p := e.servicePids(t)
		return len(p) == 1 && p[0] != pids[0]
	})
	if alive(pids[0]) {
		t.Errorf("the stopped service %d still runs beside its replacement", pids[0])
	}
	var werr error
	waitFor(t, "the client to work again", func() bool {
		werr = c.WriteFile("/g", []byte("again"), 0o644)
		return werr == nil
	})
	// Once it serves, it has completed its drop (before, its real gid is
	// still 0: see internal/privdrop).
	checkDropped(t, e.servicePids(t)[0])
	var svc pool.ServiceState
	waitFor(t, "status to count the restart", func() bool {
		svc = poolReport(t, e).Pools[0].Service
		return svc.Running
	})
	if svc.Restarts != 1 || svc.HealthRestarts != 1 || !strings.Contains(svc.LastUnhealthy, "3 health checks in a row failed") {
		t.Errorf("status after one forced restart: %+v", svc)
	}
	out, err := exec.Command(os.Args[0], "status", "--run-dir", filepath.Join(e.dir, "run")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 (1 unhealthy)") || !strings.Contains(string(out), "last restarted for not answering") {
		t.Errorf("status --pools: %v\n%s", err, out)
	}
	stopServe(t, e, serve)
}

// TestServeStoppedServiceClientTimesOut: a client of a stopped service fails
// with ETIMEDOUT after its call timeout instead of hanging (here an explicit
// CallTimeout; the health checks are slowed so that serve does not restart
// the service meanwhile), and works again once the service continues.
func TestServeStoppedServiceClientTimesOut(t *testing.T) {
	e := newServeEnv(t)
	withHealth(t, e, "{interval: 1m, timeout: 1m, failures: 100}")
	serve := startServe(t, e)
	pid := e.servicePids(t)[0]
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data", CallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, pid)
	_, err = c.Stat("/f")
	if err2 := syscall.Kill(pid, syscall.SIGCONT); err2 != nil {
		t.Fatal(err2)
	}
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Errorf("a call to a stopped service: %v, want ETIMEDOUT", err)
	}
	var serr error
	waitFor(t, "the client to work again", func() bool {
		_, serr = c.Stat("/f")
		return serr == nil
	})
	if p := e.servicePids(t); len(p) != 1 || p[0] != pid {
		t.Errorf("the service was replaced: %v, was %d", p, pid)
	}
	stopServe(t, e, serve)
}

// newFIFOServeEnv is a serve environment whose pool's one instance "data" is a
// passthrough branch, owned by the pool's user, holding a FIFO "fifo" (returned
// by its host path): an open(2) of it through the service blocks a worker until
// a writer comes.
func newFIFOServeEnv(t *testing.T, workers int) (*serveEnv, string) {
	t.Helper()
	branch := filepath.Join(tenantDir(t), "branch")
	if err := os.Mkdir(branch, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(branch, poolUID, poolGID); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(branch, "fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	e := newServeEnvWith(t, fmt.Sprintf("    workers: %d\n", workers),
		fmt.Sprintf("    filesystems:\n      - name: data\n        stack: [{passthrough: {dir: %s}}]\n", branch))
	return e, fifo
}

// TestServeKeepsABusyService: a service whose only worker is blocked (in
// open(2) of a FIFO nobody writes, as it would be in slow I/O) still answers
// its health checks, so serve leaves it alone while the stall lasts many
// times health.failures x health.interval, and logs that its workers make
// no progress.
func TestServeKeepsABusyService(t *testing.T) {
	e, fifo := newFIFOServeEnv(t, 1)
	// Checks every 50ms, each with a deadline a loaded machine meets: the
	// worker's stall lasts many times failures x interval.
	withHealth(t, e, "{interval: 50ms, timeout: 5s, failures: 3}")
	serve := startServe(t, e)
	pid := e.servicePids(t)[0]
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	var released, stuck bool
	t.Cleanup(func() {
		if !stuck {
			c.Close()
		}
	})
	// Cleanups run last first: the clients close only after a writer has
	// released the worker and their calls returned (closing a client under a
	// call in flight is not what this test is about).
	opened := make(chan error, 1)
	go func() {
		f, err := c.Open("/fifo")
		if err == nil {
			f.Close()
		}
		opened <- err
	}()
	// The worker is blocked once the service logs that it makes no
	// progress with a request waiting; a second client's call waits too.
	c2, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !stuck {
			c2.Close()
		}
	})
	queued := make(chan error, 1)
	go func() {
		_, err := c2.Stat("/fifo")
		queued <- err
	}()
	// release lets a writer in until both calls returned (a writer's open
	// fails at once while no reader waits, e.g. if the service was replaced
	// and the call not retried yet), within a bound: a test that fails must
	// not hang.
	release := func() (oerr, qerr error) {
		released = true
		got := 0
		deadline := time.Now().Add(30 * time.Second)
		for got < 2 {
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			select {
			case oerr = <-opened:
				got++
			case qerr = <-queued:
				got++
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				stuck = true
				t.Errorf("the calls on the FIFO did not return within 30 s of a writer")
				return nil, nil
			}
		}
		return oerr, qerr
	}
	t.Cleanup(func() {
		if !released {
			release()
		}
	})
	waitFor(t, "serve to see the worker make no progress", func() bool {
		return strings.Contains(serveLog(t, e), "made no progress while requests wait")
	})
	// 40 check intervals with the worker stalled: the service is not killed.
	time.Sleep(2 * time.Second)
	if p := e.servicePids(t); len(p) != 1 || p[0] != pid {
		t.Fatalf("serve replaced a busy service: %v, was %d", p, pid)
	}
	if svc := poolReport(t, e).Pools[0].Service; svc.Restarts != 0 || svc.HealthRestarts != 0 {
		t.Fatalf("status of a busy service: %+v", svc)
	}
	// A writer releases the worker; both calls complete.
	oerr, qerr := release()
	if oerr != nil {
		t.Errorf("open of the FIFO once a writer came: %v", oerr)
	}
	if qerr != nil {
		t.Errorf("the call queued behind it: %v", qerr)
	}
	stopServe(t, e, serve)
}

// TestServeRestartsAStuckService: a worker inside one request for
// health.stuck_after (here open(2) of a FIFO nobody writes: as for a
// deadlocked stack, the control socket goes on answering) fails the health
// checks, and serve replaces the service; a client's other calls work again
// on the new one.
func TestServeRestartsAStuckService(t *testing.T) {
	e, _ := newFIFOServeEnv(t, 2)
	withHealth(t, e, "{interval: 100ms, timeout: 5s, failures: 3, stuck_after: 1s}")
	serve := startServe(t, e)
	pid := e.servicePids(t)[0]
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		f, err := c.Open("/fifo")
		if err == nil {
			f.Close()
		}
		opened <- err
	}()
	// Cleanups run last first: the client closes after its call returned.
	t.Cleanup(func() { c.Close() })
	t.Cleanup(func() {
		select {
		case <-opened:
		case <-time.After(30 * time.Second):
			t.Errorf("the open of the FIFO never returned")
		}
	})
	waitFor(t, "serve to replace the stuck service", func() bool {
		p := e.servicePids(t)
		return len(p) == 1 && p[0] != pid
	})
	var svc pool.ServiceState
	waitFor(t, "status to count the restart", func() bool {
		svc = poolReport(t, e).Pools[0].Service
		return svc.Running && svc.HealthRestarts == 1
	})
	if !strings.Contains(svc.LastUnhealthy, "inside one request for") {
		t.Errorf("last unhealthy restart: %q", svc.LastUnhealthy)
	}
	var werr error
	waitFor(t, "the client to work again", func() bool {
		werr = c.WriteFile("/g", []byte("again"), 0o644)
		return werr == nil
	})
	stopServe(t, e, serve)
}

// waitStopped waits until every thread of pid is stopped (kill(2) returns
// before the signal took effect on threads running on other CPUs).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("process %d to stop", pid), func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return false
		}
		for _, task := range tasks {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				return false
			}
			i := strings.LastIndexByte(string(data), ')')
			if i < 0 || len(data) < i+3 || data[i+2] != 'T' {
				return false
			}
		}
		return true
	})
}

// serveLog is what serve has logged so far (startServe writes it to a file
// in e.dir).
func serveLog(t *testing.T, e *serveEnv) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(e.dir, "serve-*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		b.Write(data)
	}
	return b.String()
}
