package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/fslib"
)

// openEnv turns the test binary into a prober that tries to open, for reading and
// writing, every path it is given (colon-separated): the isolation test runs it as
// another pool's uid against the service's shared memory.
const openEnv = "POLYTROPON_SERVE_TEST_OPEN"

func init() {
	paths := os.Getenv(openEnv)
	if paths == "" {
		return
	}
	opened := 0
	for _, p := range strings.Split(paths, ":") {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err == nil {
			fmt.Println("opened", p)
			f.Close()
			opened++
			continue
		}
		if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
			fmt.Println("unexpected", p, err)
			opened++
		}
	}
	if opened > 0 {
		os.Exit(4)
	}
	fmt.Println("denied")
	os.Exit(0)
}

// TestServeSharedMemoryIsolation: a process of another pool (another uid) cannot
// reach the service's shared memory, the request ring and the clients' arenas,
// through /proc (the memfds the service holds, its mappings, its memory).
func TestServeSharedMemoryIsolation(t *testing.T) {
	e := newServeEnv(t)
	serve := startServe(t, e)
	c, err := fslib.Dial(fslib.DialOptions{Socket: e.socket(), Prefix: "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteFile("/f", []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	pids := e.servicePids(t)
	if len(pids) != 1 {
		t.Fatalf("pool cgroup holds %v", pids)
	}
	pid := pids[0]
	var targets []string
	for _, dir := range []string{"fd", "map_files"} {
		d := fmt.Sprintf("/proc/%d/%s", pid, dir)
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			p := filepath.Join(d, ent.Name())
			if link, err := os.Readlink(p); err == nil && strings.Contains(link, "memfd:polytropon") {
				targets = append(targets, p)
			}
		}
	}
	if len(targets) == 0 {
		t.Fatalf("no shared-memory file found in /proc/%d (the test would prove nothing)", pid)
	}
	targets = append(targets, fmt.Sprintf("/proc/%d/mem", pid))
	const otherPoolUID = 4343
	// The test binary, copied out of go's private build directory so that another
	// uid may run it.
	exe := filepath.Join(e.dir, "prober")
	if data, err := os.ReadFile(os.Args[0]); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), openEnv+"="+strings.Join(targets, ":"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherPoolUID, Gid: otherPoolUID}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "denied") {
		t.Fatalf("another pool's uid on %d shared-memory paths: %v\n%s", len(targets), err, out)
	}
	stopServe(t, e, serve)
}
