package service

import (
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/cache"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

func TestPlanQuota(t *testing.T) {
	base := Config{AllowUIDs: []uint32{1000, 1001}}
	// root, this process's uid and two allowed uids: 3 or 4 uids.
	p, err := planQuota(20000, &base, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantClients := back.DefaultMaxClients*back.FdsPerClient + back.DefaultMaxPending*back.FdsPerHandshake
	if p.reserve != defaultFDReserve || p.clients != wantClients || p.handles != 20000-defaultFDReserve-wantClients {
		t.Fatalf("plan %+v", p)
	}
	if p.perUID*p.uids > p.handles {
		t.Fatalf("default shares %d x %d uids exceed the budget %d: a uid could be refused for another's use", p.perUID, p.uids, p.handles)
	}
	if p.perClient != back.DefaultMaxHandles || p.clientsPerUID*p.uids > p.maxClients || p.clientsPerUID < 1 {
		t.Fatalf("plan %+v", p)
	}
	// A small limit shrinks the per-client default below 1024.
	p, err = planQuota(1024, &base, 0)
	if err != nil || p.perClient != p.perUID || p.perUID*p.uids > p.handles {
		t.Fatalf("plan under 1024 fds: %+v, %v", p, err)
	}
	// A huge hard limit is capped.
	if p, _ := planQuota(1<<40, &base, 0); p.limit != maxPlannedFDs {
		t.Fatalf("limit %d, want the cap %d", p.limit, maxPlannedFDs)
	}
	// What the stacks hold on their own comes out of the handles.
	full, _ := planQuota(20000, &base, 0)
	if p, err := planQuota(20000, &base, 2050); err != nil || p.reserve != defaultFDReserve+2050 || p.stacks != 2050 || p.handles != full.handles-2050 {
		t.Fatalf("plan with 2050 descriptors held by the stacks: %+v, %v (without: %+v)", p, err, full)
	}
	if _, err := planQuota(2450, &base, 2050); err == nil || !strings.Contains(err.Error(), "dir_cache_size") {
		t.Errorf("stacks holding most of the limit: %v, want an error naming dir_cache_size", err)
	}
	for _, tc := range []struct {
		limit uint64
		q     QuotaConfig
		max   int
		key   string
	}{
		{400, QuotaConfig{}, 0, "max_clients"},
		{20000, QuotaConfig{FDReserve: 19990}, 0, "max_clients"},
		{20000, QuotaConfig{MaxHandlesPerUID: 19999}, 0, "max_handles_per_uid"},
		{20000, QuotaConfig{MaxHandlesPerClient: 9000}, 0, "max_handles_per_client"},
		{20000, QuotaConfig{MaxClientsPerUID: 65}, 64, "max_clients_per_uid"},
	} {
		cfg := base
		cfg.QuotaConfig, cfg.MaxClients = tc.q, tc.max
		_, err := planQuota(tc.limit, &cfg, 0)
		var ce *libservices.ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("limit %d, %+v: %v, want an error about %s", tc.limit, tc.q, err, tc.key)
		}
	}
}

func TestQuotaConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		q   QuotaConfig
		key string
	}{
		{QuotaConfig{MaxHandlesPerClient: -1}, "max_handles_per_client"},
		{QuotaConfig{MaxHandlesPerUID: -5}, "max_handles_per_uid"},
		{QuotaConfig{MaxClientsPerUID: 70000}, "max_clients_per_uid"},
		{QuotaConfig{MaxPendingPerUID: -1}, "max_pending_per_uid"},
		{QuotaConfig{FDReserve: -1}, "fd_reserve"},
		{QuotaConfig{MaxHandlesPerClient: 10, MaxHandlesPerUID: 5}, "max_handles_per_client"},
	} {
		err := tc.q.validate()
		var ce *libservices.ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%+v: %v, want an error naming %s", tc.q, err, tc.key)
		}
	}
	if err := (&QuotaConfig{MaxHandlesPerClient: 5, MaxHandlesPerUID: 10, FDReserve: 100}).validate(); err != nil {
		t.Fatal(err)
	}
}

func TestQuota(t *testing.T) {
	q := NewQuota(3, 5)
	for range 3 {
		if e := q.Acquire(7); e != 0 {
			t.Fatal(e)
		}
	}
	if e := q.Acquire(7); e != syscall.EMFILE {
		t.Fatalf("uid over its share: %v, want EMFILE", e)
	}
	if e := q.Acquire(8); e != 0 {
		t.Fatal(e)
	}
	if e := q.Acquire(9); e != 0 {
		t.Fatal(e)
	}
	if e := q.Acquire(9); e != syscall.ENFILE {
		t.Fatalf("budget spent: %v, want ENFILE", e)
	}
	if q.Held(7) != 3 || q.Held(9) != 1 {
		t.Fatalf("held %d and %d", q.Held(7), q.Held(9))
	}
	q.Release(7)
	if e := q.Acquire(9); e != 0 {
		t.Fatalf("after a release: %v", e)
	}
	// Concurrent use keeps the counts exact.
	q = NewQuota(1000, 1000)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if q.Acquire(uint32(g%3)) == 0 {
					q.Release(uint32(g % 3))
				}
			}
		}()
	}
	wg.Wait()
	for u := range uint32(3) {
		if q.Held(u) != 0 {
			t.Fatalf("uid %d holds %d after balanced use", u, q.Held(u))
		}
	}
	if q.used.Load() != 0 {
		t.Fatalf("%d in use after balanced use", q.used.Load())
	}
}

// TestStacksFDs: the descriptors a stack's layers hold on their own are
// counted through every wrapper, for every instance: here two passthrough
// branches under a union under a cache, each with its root and its
// directory cache.
func TestStacksFDs(t *testing.T) {
	var insts []*instance
	want := 0
	for range 2 {
		var branches []libservices.FS
		for range 2 {
			p, err := passthrough.New(passthrough.Options{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.CloseFS() })
			want += p.ReservedFDs()
			branches = append(branches, p)
		}
		c := cache.New(union.New(branches[0], branches[1:]...), cache.NewStore(1<<20), cache.Options{})
		insts = append(insts, &instance{fs: c})
	}
	if want != 4*(1+passthrough.DefaultDirCacheSize) {
		t.Fatalf("passthrough reserves %d in all, want %d", want, 4*(1+passthrough.DefaultDirCacheSize))
	}
	if got := stacksFDs(insts); got != want {
		t.Fatalf("stacksFDs = %d, want %d", got, want)
	}
}
