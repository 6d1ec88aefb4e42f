//go:build ceph

package pathperf

import (
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
)

// TestCephFSBackend runs every operation on the fuse and direct paths of a
// service whose instance is a cephfs libservice on the test cluster: the report
// has every cell, the service stops cleanly, and nothing is left behind (the
// run's directory on CephFS is removed through the instance).
func TestCephFSBackend(t *testing.T) {
	c := testenv.Ceph(t)
	testenv.Root(t)
	testenv.FUSE(t)
	dir := t.TempDir()
	svcs := &services{role: "service"}
	rep, err := Run(Options{Dir: dir, Duration: time.Millisecond, Iterations: 30, PebbleKeys: 200, Seed: 3,
		Paths: []string{PathFUSE, PathDirect}, Backend: BackendCephFS,
		Ceph:           CephOptions{Conf: c.Conf, ClientID: c.ID, Keyring: c.Keyring},
		ServiceCommand: svcs.command})
	if err != nil {
		t.Fatal(err)
	}
	svcs.gone(t, dir, true)
	if !strings.Contains(rep.Settings.ServiceConfig, "cephfs: {conf: ") || rep.Settings.Backend != BackendCephFS {
		t.Fatalf("service config:\n%s", rep.Settings.ServiceConfig)
	}
	for _, op := range Ops {
		for _, p := range []string{PathFUSE, PathDirect} {
			if r := rep.Result(op, p); r == nil || r.N == 0 {
				t.Fatalf("no result for %s on %s", op, p)
			}
		}
	}
	// The kernel path has no CephFS: asking for it is an error that says so.
	_, err = Run(Options{Dir: dir, Paths: []string{PathKernel}, Backend: BackendCephFS, Ceph: CephOptions{Conf: c.Conf}, ServiceCommand: svcs.command})
	if err == nil || !strings.Contains(err.Error(), "no kernel path") {
		t.Fatalf("kernel path on cephfs: %v", err)
	}
}
