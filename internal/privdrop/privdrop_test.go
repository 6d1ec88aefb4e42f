package privdrop

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
)

// Child modes of the test binary.
const (
	// execEnv=UID:GID:MODE makes it Exec itself as UID:GID with childEnv=MODE.
	execEnv = "PRIVDROP_TEST_EXEC"
	// childEnv: "finish" calls Finish and prints every thread's state as
	// JSON; "hold" does not (the window between exec and Finish). Either
	// prints "ready" and waits for stdin to close.
	childEnv = "PRIVDROP_TEST_CHILD"
	// probeEnv=PID makes it list /proc/PID/fd and print "open" or the errno.
	probeEnv = "PRIVDROP_TEST_PROBE"
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(execEnv) != "":
		f := strings.Split(os.Getenv(execEnv), ":")
		uid, _ := strconv.Atoi(f[0])
		gid, _ := strconv.Atoi(f[1])
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, execEnv+"=") {
				env = append(env, kv)
			}
		}
		env = append(env, childEnv+"="+f[2])
		err := Exec(Identity{UID: uint32(uid), GID: uint32(gid)}, []string{os.Args[0]}, env)
		fmt.Println("exec:", err)
		os.Exit(1)
	case os.Getenv(childEnv) != "":
		if os.Getenv(childEnv) == "finish" {
			id, err := Finish("")
			if err != nil {
				fmt.Println("finish:", err)
				os.Exit(1)
			}
			sts, err := Threads()
			if err != nil {
				fmt.Println("threads:", err)
				os.Exit(1)
			}
			b, _ := json.Marshal(struct {
				ID      Identity
				Threads []State
			}{id, sts})
			fmt.Println(string(b))
		}
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case os.Getenv(probeEnv) != "":
		if _, err := os.ReadDir("/proc/" + os.Getenv(probeEnv) + "/fd"); err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				fmt.Println(errno.Error())
			} else {
				fmt.Println(err)
			}
			os.Exit(0)
		}
		fmt.Println("open")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testUID, testGID = 4251, 4252

// startDropped runs the test binary through Exec as testUID:testGID in mode,
// waits for its ready line and returns it (its lines before "ready" too).
func startDropped(t *testing.T, mode string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d:%s", execEnv, testUID, testGID, mode))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	var lines []string
	br := bufio.NewReader(out)
	for {
		l, err := br.ReadString('\n')
		l = strings.TrimSuffix(l, "\n")
		if l == "ready" {
			return cmd, lines
		}
		if l != "" {
			lines = append(lines, l)
		}
		if err != nil {
			t.Fatalf("dropped child: %v, said %q", err, lines)
		}
	}
}

// TestExecDrops: after Exec and Finish every thread has the identity in all
// four ids, no groups, no capabilities in any set, no_new_privs, and the
// process is not dumpable, as the process sees itself and as /proc shows it
// to root.
func TestExecDrops(t *testing.T) {
	testenv.Root(t)
	cmd, lines := startDropped(t, "finish")
	if len(lines) != 1 {
		t.Fatalf("child said %q", lines)
	}
	var rep struct {
		ID      Identity
		Threads []State
	}
	if err := json.Unmarshal([]byte(lines[0]), &rep); err != nil {
		t.Fatal(err)
	}
	want := Identity{UID: testUID, GID: testGID}
	if rep.ID != want || len(rep.Threads) < 2 {
		t.Fatalf("child reports %v with %d threads", rep.ID, len(rep.Threads))
	}
	for _, st := range rep.Threads {
		if err := st.Dropped(want); err != nil {
			t.Error(err)
		}
	}
	pid := cmd.Process.Pid
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		st, err := Read(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Dropped(want); err != nil {
			t.Error(err)
		}
		if d := st.Describe(); !strings.Contains(d, "no capabilities") {
			t.Errorf("Describe: %q", d)
		}
	}
	// The files of a process that is not dumpable are root's (its /proc
	// directory itself keeps the owner, for ps).
	var pst syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/fd", pid), &pst); err != nil || pst.Uid != 0 {
		t.Errorf("/proc/%d/fd owned by uid %d (%v): the process is dumpable", pid, pst.Uid, err)
	}
}

// TestExecWindowNotTraceable: between the exec and Finish, a process of the
// same uid and gid cannot reach the new program's descriptors, though it can
// reach those of an ordinary process of that uid (the control).
func TestExecWindowNotTraceable(t *testing.T) {
	testenv.Root(t)
	// The probe runs as the tenant: it needs the test binary where that uid
	// can execute it.
	dir, err := os.MkdirTemp("", "privdrop-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "probe")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	tenant := &syscall.Credential{Uid: testUID, Gid: testGID, Groups: []uint32{}}
	probe := func(pid int) string {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), probeEnv+"="+strconv.Itoa(pid))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tenant}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("probe: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	held, _ := startDropped(t, "hold")
	st, err := Read(fmt.Sprintf("/proc/%d/status", held.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if st.UIDs != [4]uint32{testUID, testUID, testUID, testUID} || st.GIDs != [4]uint32{0, testGID, testGID, testGID} {
		t.Errorf("before Finish: uids %v gids %v, want all %d and 0 %d %d %d", st.UIDs, st.GIDs, testUID, testGID, testGID, testGID)
	}
	if got := probe(held.Process.Pid); got != syscall.EACCES.Error() {
		t.Errorf("the tenant on the descriptors of a program Exec started, before Finish: %q, want %q", got, syscall.EACCES.Error())
	}

	plain := exec.Command(exe)
	plain.Env = append(os.Environ(), childEnv+"=hold")
	plain.SysProcAttr = &syscall.SysProcAttr{Credential: tenant}
	stdin, err := plain.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := plain.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = plain.Wait()
	}()
	if l, err := bufio.NewReader(out).ReadString('\n'); l != "ready\n" {
		t.Fatalf("plain child: %q %v", l, err)
	}
	if got := probe(plain.Process.Pid); got != "open" {
		t.Errorf("control: the tenant on its own ordinary process's descriptors: %q, want open", got)
	}
}

func TestExecRefusesRootIdentity(t *testing.T) {
	for _, id := range []Identity{{0, 5}, {5, 0}} {
		if err := Exec(id, []string{"true"}, nil); err == nil || !strings.Contains(err.Error(), "0") {
			t.Errorf("Exec(%v): %v", id, err)
		}
	}
}

func TestParse(t *testing.T) {
	status := "Name:\tx\nPid:\t42\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 10 \n" +
		"CapInh:\t0000000000000000\nCapPrm:\t0000000000000001\nCapEff:\t0000000000000002\n" +
		"CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
	st, err := parse([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if st.TID != 42 || st.UIDs != [4]uint32{1, 2, 3, 4} || st.GIDs != [4]uint32{5, 6, 7, 8} || len(st.Groups) != 2 ||
		st.CapPrm != 1 || st.CapEff != 2 || st.CapBnd != 0x1ffffffffff || !st.NoNewPrivs {
		t.Fatalf("%+v", st)
	}
	if err := st.Dropped(Identity{UID: 2, GID: 6}); err == nil {
		t.Fatal("a privileged state passed Dropped")
	}
	if _, err := parse([]byte("Uid:\t1 2 3 4\n")); err == nil {
		t.Fatal("a truncated status file parsed")
	}
	if _, err := parse([]byte(strings.Replace(status, "Uid:\t1\t2\t3\t4", "Uid:\t1 2", 1))); err == nil {
		t.Fatal("a Uid line with two ids parsed")
	}
}
