package rcqb

import "testing"

func TestMeasureThroughput(t *testing.T) {
	for _, kind := range ThroughputKinds() {
		for _, cfg := range benchConfigs {
			if !KindFits(kind, cfg.p, cfg.c) {
				continue
			}
			ops, err := MeasureThroughput(kind, cfg.p, cfg.c, 3001)
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
		if _, err := MeasureThroughput(b.kind, b.p, b.c, b.n); err == nil {
			t.Errorf("MeasureThroughput(%q, %d, %d, %d) succeeded", b.kind, b.p, b.c, b.n)
		}
	}
	if _, err := MeasureThroughputResult(KindVyukov, 1, 1, 10, 3); err == nil {
		t.Error("capacity 3 accepted")
	}
}

func TestVyukovAndMutexRingBaselines(t *testing.T) {
	// The baselines must be correct queues, or the comparison means nothing.
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
		checkStreams(t, streams, producers, per, 0)
	}
}
