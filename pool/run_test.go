package pool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	if _, err := Lookup(dir, "a"); err == nil || !strings.Contains(err.Error(), "no serve running") {
		t.Fatalf("no lock file: %v", err)
	}
	lf, err := os.Create(filepath.Join(dir, "serve.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	rec := `{"pools":[{"name":"b","state_dir":"/s/b"},
		{"name":"a","state_dir":"/s/a","socket":"/s/a/service.sock","cgroup_procs":["/cg/a/cgroup.procs"]}]}`
	if err := os.WriteFile(filepath.Join(dir, "pools.json"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(dir, "a"); err == nil || !strings.Contains(err.Error(), "no serve running") {
		t.Fatalf("lock not held: %v", err)
	}
	// A lock held by another open file description is a running serve.
	holder, err := os.Open(lf.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	p, err := Lookup(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if p.Socket != "/s/a/service.sock" || len(p.CgroupProcs) != 1 || p.CgroupProcs[0] != "/cg/a/cgroup.procs" || p.StateDir != "/s/a" {
		t.Fatalf("%+v", p)
	}
	if _, err := Lookup(dir, "b"); err == nil || !strings.Contains(err.Error(), "not started yet") {
		t.Fatalf("pool without cgroups: %v", err)
	}
	if _, err := Lookup(dir, "zz"); err == nil || !strings.Contains(err.Error(), `no pool "zz"`) || !strings.Contains(err.Error(), "its pools: a, b") {
		t.Fatalf("unknown pool: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pools.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(dir, "a"); err == nil || !strings.Contains(err.Error(), "pools.json") {
		t.Fatalf("corrupt record: %v", err)
	}
}

func TestContainerInitRefusesOutsideANamespace(t *testing.T) {
	if err := ContainerInit(InitOptions{Hostname: "h"}, []string{"true"}); err == nil || !strings.Contains(err.Error(), "not the first process") {
		t.Fatalf("%v", err)
	}
	if err := ContainerInit(InitOptions{Hostname: "h"}, nil); err == nil {
		t.Fatal("no command accepted")
	}
}
