package pool

import (
	"os"
	"path/filepath"
	"slices"
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
	// The elastic driver's decisions file shows up in the pool's status.
	decisions := `[{"time":"2026-11-21T05:00:00Z","pool":"a","tick":3,"knob":"workers","from":3,"to":2,"reason":"idle","applied":2},
		{"time":"2026-11-21T05:00:05Z","pool":"a","tick":4,"knob":"cache_bytes","from":1048576,"to":2097152,"reason":"misses","applied":1572864}]`
	if err := os.WriteFile(filepath.Join(dir, "decisions-a.json"), []byte(decisions), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err = Status(dir); err != nil {
		t.Fatal(err)
	}
	want := []string{"2026-11-21T05:00:00Z workers 3->2: idle", "2026-11-21T05:00:05Z cache_bytes 1048576->2097152 (applied 1572864): misses"}
	if got := rep.Pools[0].Decisions; !slices.Equal(got, want) {
		t.Errorf("decisions %q, want %q", got, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "pools.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Status(dir); err == nil || !strings.Contains(err.Error(), "pools.json") {
		t.Fatalf("corrupt record: %v", err)
	}
}
