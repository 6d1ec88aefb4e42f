package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// runIn runs `polytropon run` (the test binary as the CLI) with stdin, and
// returns its stdout, stderr and exit status.
func runIn(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestRunContainer(t *testing.T) {
	e := newServeEnv(t)
	serve := startServe(t, e)
	runDir := filepath.Join(e.dir, "run")

	out, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--", "sh", "-c",
		`echo $POLYTROPON_SOCKET; hostname; echo $PPID; tr '\0' ' ' </proc/1/cmdline; echo; set -- /proc/[0-9]*; echo $#; cat /proc/self/cgroup; exit 7`)
	if code != 7 {
		t.Fatalf("exit status %d, want 7; stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr %q: a passed-on status needs no message", stderr)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 6 {
		t.Fatalf("output:\n%s", out)
	}
	if lines[0] != e.socket() {
		t.Errorf("POLYTROPON_SOCKET %q, want %q", lines[0], e.socket())
	}
	if lines[1] != e.pool {
		t.Errorf("hostname %q, want the pool's name %q", lines[1], e.pool)
	}
	// New PID namespace: the command is the child of pid 1, our init (its own
	// pid is not fixed: the init's threads take numbers too), and /proc
	// (remounted) shows only the init and sh. The shell expands the glob
	// itself: a pipeline (ls /proc | grep) would list grep or not, depending
	// on whether sh had forked it before ls read the directory.
	if lines[2] != "1" {
		t.Errorf("the command's parent %q, want pid 1", lines[2])
	}
	if !strings.Contains(lines[3], "container-init") {
		t.Errorf("pid 1 is %q, want polytropon's container-init", lines[3])
	}
	if lines[4] != "2" {
		t.Errorf("/proc lists %s processes, want 2 (init, sh)", lines[4])
	}
	if want := "cpuset:" + cpusetPath(t, e.parent, e.pool) + "\n"; !strings.Contains(out, want) {
		t.Errorf("not in the pool's cpuset cgroup (want %q):\n%s", want, out)
	}
	if h, _ := os.Hostname(); h == e.pool {
		t.Error("the container's hostname leaked to the host")
	}

	// Standard input passes through; a success is 0.
	if out, stderr, code := runIn(t, "hello\n", "--run-dir", runDir, "--pool", e.pool, "--", "cat"); code != 0 || out != "hello\n" {
		t.Errorf("cat: %d %q %q", code, out, stderr)
	}
	// A command killed by a signal: 128+n (it is not pid 1, so even SIGKILL from inside
	// the namespace kills it).
	if _, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--", "sh", "-c", "kill -KILL $$"); code != 128+9 {
		t.Errorf("killed by SIGKILL: status %d, want 137 (%s)", code, stderr)
	}

	// A signal to run reaches the command.
	cmd := exec.Command(os.Args[0], "run", "--run-dir", runDir, "--pool", e.pool, "--", "sh", "-c", "echo ready; exec sleep 60")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("%q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 128+15 {
		t.Errorf("SIGTERM to run: %v, want status 143", err)
	}

	// Bad input: an unknown pool names the pools there are; the command is
	// required after --.
	if _, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", "nosuch", "--", "true"); code != 1 ||
		!strings.Contains(stderr, `no pool "nosuch"`) || !strings.Contains(stderr, "its pools: "+e.pool) {
		t.Errorf("unknown pool: %d %q", code, stderr)
	}
	if _, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "true"); code != 1 || !strings.Contains(stderr, "after --") {
		t.Errorf("no --: %d %q", code, stderr)
	}
	if _, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--", "/nonexistent/cmd"); code != 1 || !strings.Contains(stderr, "/nonexistent/cmd") {
		t.Errorf("missing command: %d %q", code, stderr)
	}
	// The containers left nothing in the pool but its service.
	if pids := e.servicePids(t); len(pids) != 1 {
		t.Errorf("pool cgroup holds %v after the containers exited", pids)
	}

	stopServe(t, e, serve)
	// With serve gone, run refuses rather than trust a stale record.
	if _, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--", "true"); code != 1 || !strings.Contains(stderr, "no serve running") {
		t.Errorf("after serve stopped: %d %q", code, stderr)
	}
}

// TestRunFlagErrors: flag mistakes are named before anything starts.
func TestRunFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--", "true"}, "--pool is required"},
		{[]string{"run", "--pool", "p", "--config", "c.yaml", "--run-dir", "/x", "--", "true"}, "exclusive"},
		{[]string{"run", "--pool", "p", "--root", "--", "true"}, "--root goes with --rootfs"},
	} {
		if _, err := runCLI(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
