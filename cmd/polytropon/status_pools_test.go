package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/pool"
)

func statusOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"status"}, args...)...)
	cmd.Env = append(os.Environ(), "POLYTROPON_SOCKET=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestStatusPools(t *testing.T) {
	e, hostIP, poolIP := newNetServeEnv(t)
	serve := startServe(t, e)
	runDir := filepath.Join(e.dir, "run")

	readReport := func() *pool.Report {
		t.Helper()
		out, err := statusOut(t, "--run-dir", runDir, "--json")
		if err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		var rep pool.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if len(rep.Pools) != 1 {
			t.Fatalf("status --json: %d pools\n%s", len(rep.Pools), out)
		}
		if !strings.Contains(out, `"decisions": []`) {
			t.Errorf("status --json has no (empty) decisions slot:\n%s", out)
		}
		return &rep
	}
	rep := readReport()
	p := rep.Pools[0]
	pids := e.servicePids(t)
	if !rep.ServeRunning || rep.Cgroup != e.parent || rep.CgroupVersion != 1 {
		t.Errorf("report header: %+v", rep)
	}
	r := p.Reservation
	if p.Name != e.pool || p.Socket != e.socket() || r.CPUs != strconv.Itoa(e.cpu) || r.Memory != 256<<20 || r.Pids != 256 {
		t.Errorf("reservation: %+v %+v", p, r)
	}
	if r.Network == nil || r.Network.Address != poolIP+"/30" || r.Network.HostAddress != hostIP+"/30" || r.Network.RateBPS != netRate ||
		r.Network.HostIf != "pt-"+e.pool+"-h" {
		t.Errorf("network reservation: %+v", r.Network)
	}
	// The pool's cgroup holds the service: its CPU time and memory are the
	// service's (it has started, so neither is zero).
	u := p.Usage
	if u.Unavailable != "" || u.CPUNanos == 0 || u.Memory <= 0 || u.MemoryPeak < u.Memory || u.Tasks < 1 {
		t.Errorf("usage: %+v", u)
	}
	if !p.Service.Running || len(pids) != 1 || p.Service.Pid != pids[0] || p.Service.Restarts != 0 {
		t.Errorf("service: %+v (pool's processes %v)", p.Service, pids)
	}

	// A restart is counted.
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart in the status", func() bool {
		p := readReport().Pools[0]
		return p.Service.Running && p.Service.Restarts == 1 && p.Service.Pid != pids[0]
	})

	// The table, found through --config's run_dir.
	out, err := statusOut(t, "--config", e.cfg)
	if err != nil {
		t.Fatalf("status --config: %v\n%s", err, out)
	}
	t.Logf("status --config:\n%s", out)
	for _, want := range []string{"serve of " + runDir + ": running", e.pool, "256.0MiB", poolIP + "/30 via " + hostIP + "/30 1.0MiB/s", "up pid", e.socket()} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	// Bad input: --socket with --pools; a directory without a record.
	if out, err := statusOut(t, "--pools", "--socket", "/x"); err == nil || !strings.Contains(out, "--socket is a service's status") {
		t.Errorf("--pools --socket: %v %s", err, out)
	}
	stopServe(t, e, serve)
	if out, err := statusOut(t, "--run-dir", runDir); err == nil || !strings.Contains(out, "no serve's record in "+runDir) {
		t.Errorf("after serve stopped: %v %s", err, out)
	}
}
