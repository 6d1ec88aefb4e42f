package cache

import "testing"

func TestClockStepByStep(t *testing.T) {
	p := newClockPolicy(3)
	var slots []int32
	for i := 0; i < 3; i++ {
		s, ev, ok := p.Admit()
		if !ok || ev {
			t.Fatalf("admit %d into a free slot: slot %d evicted %v ok %v", i, s, ev, ok)
		}
		slots = append(slots, s)
	}
	if slots[0] != 0 || slots[1] != 1 || slots[2] != 2 {
		t.Fatalf("free slots handed out in order 0,1,2: %v", slots)
	}
	// No references: the hand evicts slot 0 first.
	s, ev, ok := p.Admit()
	if !ok || !ev || s != 0 {
		t.Fatalf("first eviction: slot %d evicted %v", s, ev)
	}
	// Slot 1 referenced: second chance, slot 2 goes.
	p.Reference(1)
	s, ev, _ = p.Admit()
	if !ev || s != 2 {
		t.Fatalf("referenced slot 1 should survive, got slot %d", s)
	}
	// Pinned slots are skipped; the reference bit of 1 was cleared, so 1 goes now
	// unless pinned.
	p.Pin(1)
	p.Pin(0)
	s, ev, _ = p.Admit()
	if !ev || s != 2 {
		t.Fatalf("with 0 and 1 pinned, slot 2: got %d", s)
	}
	p.Pin(2)
	if _, _, ok := p.Admit(); ok {
		t.Fatal("admit with every slot pinned must fail")
	}
	p.Unpin(1)
	s, _, ok = p.Admit()
	if !ok || s != 1 {
		t.Fatalf("after unpinning 1: %d %v", s, ok)
	}
	p.Release(1)
	s, ev, ok = p.Admit()
	if !ok || ev || s != 1 {
		t.Fatalf("released slot is reused without eviction: %d %v %v", s, ev, ok)
	}
	if p.usedCount() != 3 {
		t.Fatalf("used %d", p.usedCount())
	}
}

func TestStoreEvictionAccounting(t *testing.T) {
	s := NewStore(0) // 16 pages
	page := make([]byte, PageSize)
	for i := 0; i < 40; i++ {
		page[0] = byte(i)
		k := pageKey{fs0: 1, ino: 7, idx: int64(i)}
		s.insert(&k, page)
		s.insert(&k, page) // a duplicate insert keeps one copy
		if i == 20 {
			s.checkInvariants()
		}
	}
	mapped := 0
	for i := range s.shards {
		mapped += len(s.shards[i].m)
	}
	if mapped != 16 || s.policy.usedCount() != 16 || len(s.policy.free) != 0 {
		t.Fatalf("after 40 inserts into 16 slots: %d mapped, %d used, %d free", mapped, s.policy.usedCount(), len(s.policy.free))
	}
	got := make([]byte, 1)
	k := pageKey{fs0: 1, ino: 7, idx: 39}
	if !s.read(&k, got, 0) || got[0] != 39 {
		t.Fatalf("the last page inserted is not readable: %v", got)
	}
	k.idx = 0
	if s.read(&k, got, 0) {
		t.Fatal("the first page survived 24 unreferenced insertions after it")
	}
	s.checkInvariants()
}
