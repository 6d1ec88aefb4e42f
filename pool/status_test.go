package pool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Status of a record a killed serve left: no serve holds the lock, so no
// service counts as running, and statistics of cgroups that are gone say why.
func TestStatusRecordWithoutServe(t *testing.T) {
	dir := t.TempDir()
	if _, err := Status(dir); err == nil || !strings.Contains(err.Error(), "no serve's record in "+dir) {
		t.Fatalf("no record: %v", err)
	}
	cg := t.TempDir()
	for _, sub := range []string{"memory", "pids"} {
		if err := os.MkdirAll(filepath.Join(cg, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rec := `{"cgroup":"pt","cgroup_version":1,"pools":[{"name":"a","state_dir":"/s/a","socket":"/s/a/service.sock",
		"cgroup_procs":["` + sysfsCgroup + `/memory/nonexistent-polytropon-test/a/cgroup.procs"],
		"reservation":{"cpus":"0","memory":67108864,"network":{"netns":"pt-a","host_if":"pt-a-h","address":"10.1.0.2/30","host_address":"10.1.0.1/30","rate_bps":1000}},
		"service_pid":` + "1" + `,"service_up":true,"restarts":2}]}`
	if err := os.WriteFile(filepath.Join(dir, "pools.json"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Status(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ServeRunning || rep.Cgroup != "pt" || len(rep.Pools) != 1 {
		t.Fatalf("%+v", rep)
	}
	p := rep.Pools[0]
	if p.Service.Running || p.Service.Restarts != 2 || p.Reservation.Memory != 64<<20 || p.Reservation.Network.HostIf != "pt-a-h" {
		t.Errorf("%+v", p)
	}
	if !strings.Contains(p.Usage.Unavailable, "nonexistent-polytropon-test") {
		t.Errorf("usage of a cgroup that is gone: %+v", p.Usage)
	}
	if p.Decisions == nil {
		t.Error("decisions slot is nil: JSON would say null, not []")
	}
	if err := os.WriteFile(filepath.Join(dir, "pools.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Status(dir); err == nil || !strings.Contains(err.Error(), "pools.json") {
		t.Fatalf("corrupt record: %v", err)
	}
}
