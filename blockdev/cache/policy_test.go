package cache

import "testing"

func TestLRUSteps(t *testing.T) {
	l := NewLRU(3)
	if l.Victim() != -1 {
		t.Fatal("victim in an empty LRU")
	}
	for _, step := range []struct {
		do     string
		slot   int
		victim int
	}{
		{"insert", 0, 0},
		{"insert", 1, 0},
		{"insert", 2, 0},
		{"hit", 0, 1},
		{"hit", 1, 2},
		{"remove", 2, 0},
		{"insert", 2, 0},
		{"hit", 0, 1},
		{"remove", 1, 2},
		{"remove", 2, 0},
		{"remove", 0, -1},
	} {
		switch step.do {
		case "insert":
			l.Insert(step.slot)
		case "hit":
			l.Hit(step.slot)
		case "remove":
			l.Remove(step.slot)
		}
		if v := l.Victim(); v != step.victim {
			t.Fatalf("after %s %d: victim %d, want %d", step.do, step.slot, v, step.victim)
		}
	}
}

func TestClockSteps(t *testing.T) {
	c := NewClock(4)
	if c.Victim() != -1 {
		t.Fatal("victim in an empty CLOCK")
	}
	for s := 0; s < 4; s++ {
		c.Insert(s)
	}
	c.Hit(0)
	c.Hit(1)
	// Hand at 0: 0 and 1 get a second chance, 2 goes.
	if v := c.Victim(); v != 2 {
		t.Fatalf("victim %d, want 2", v)
	}
	c.Remove(2)
	c.Insert(2)
	// Hand at 3, no bit set on 3.
	if v := c.Victim(); v != 3 {
		t.Fatalf("victim %d, want 3", v)
	}
	c.Remove(3)
	// Hand at 0 again: 0 and 1 lost their bits in the first sweep.
	if v := c.Victim(); v != 0 {
		t.Fatalf("victim %d, want 0", v)
	}
	for s := 0; s < 4; s++ {
		c.Hit(s)
	}
	// Every bit set: one full sweep clears them, then the first occupied slot goes.
	if v := c.Victim(); v != 1 {
		t.Fatalf("victim with every bit set %d, want 1", v)
	}
	for s := 0; s < 4; s++ {
		c.Remove(s)
	}
	if c.Victim() != -1 {
		t.Fatal("victim in an emptied CLOCK")
	}
}

func TestNewPolicy(t *testing.T) {
	for _, n := range []string{"lru", "clock"} {
		if _, ok := NewPolicy(n, 2); !ok {
			t.Fatalf("no policy %q", n)
		}
	}
	if _, ok := NewPolicy("arc", 2); ok {
		t.Fatal("unknown policy accepted")
	}
}
