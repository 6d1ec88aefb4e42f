package throughput

import "testing"

var configs = []struct{ p, c int }{{1, 1}, {2, 2}, {4, 4}}

func TestMeasure(t *testing.T) {
	for _, kind := range Kinds() {
		for _, cfg := range configs {
			if !Fits(kind, cfg.p, cfg.c) {
				continue
			}
			ops, err := Measure(kind, cfg.p, cfg.c, 3001)
			if err != nil {
				t.Fatalf("%s %dP%dC: %v", kind, cfg.p, cfg.c, err)
			}
			if ops <= 0 {
				t.Fatalf("%s: %v ops/s", kind, ops)
			}
		}
	}
	bad := []struct {
		kind    string
		p, c, n int
	}{{"nope", 1, 1, 10}, {KindRCQB, 0, 1, 10}, {KindRCQB, 1, 0, 10}, {KindRCQB, 1, 1, 0}, {KindChannel, 2000, 1, 10}, {KindRCQBSPSC, 2, 1, 10}, {KindRCQBSPSC, 1, 2, 10}}
	for _, b := range bad {
		if _, err := Measure(b.kind, b.p, b.c, b.n); err == nil {
			t.Errorf("Measure(%q, %d, %d, %d) succeeded", b.kind, b.p, b.c, b.n)
		}
	}
	if _, err := MeasureResult(KindVyukov, 1, 1, 10, 3); err == nil {
		t.Error("capacity 3 accepted")
	}
}

// TestBaselines: the baselines must be correct queues, or the comparison means
// nothing. Three producers and two consumers through a 4-slot queue: every
// value arrives once, and each consumer sees each producer's values in order.
func TestBaselines(t *testing.T) {
	for _, kind := range []string{KindVyukov, KindMutexRing, KindChannel} {
		q, err := newBenchQueue(kind, 4)
		if err != nil {
			t.Fatal(err)
		}
		const producers, per = 3, 3000
		streams := make([][]uint64, 2)
		done := make(chan struct{})
		for p := 0; p < producers; p++ {
			go func() {
				for i := 0; i < per; i++ {
					q.put(uint64(p)<<32 | uint64(i))
				}
			}()
		}
		for c := range streams {
			go func() {
				for i := 0; i < share(producers*per, len(streams), c); i++ {
					v, _ := q.get()
					streams[c] = append(streams[c], v)
				}
				done <- struct{}{}
			}()
		}
		<-done
		<-done
		seen := make([][]bool, producers)
		for p := range seen {
			seen[p] = make([]bool, per)
		}
		for c, s := range streams {
			last := []int{-1, -1, -1}
			for _, v := range s {
				p, i := int(v>>32), int(v&0xffffffff)
				if p >= producers || i >= per || seen[p][i] {
					t.Fatalf("%s: consumer %d received %#x, never produced or twice", kind, c, v)
				}
				if i <= last[p] {
					t.Fatalf("%s: consumer %d received producer %d's value %d after %d", kind, c, p, i, last[p])
				}
				seen[p][i], last[p] = true, i
			}
		}
	}
}
