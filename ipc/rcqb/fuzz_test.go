package rcqb

import (
	"testing"
	"time"
)

// FuzzAttach feeds Attach arbitrary region contents (as a hostile or corrupt peer
// could leave them). Attach must return an error or a queue, never panic; and on
// a queue it accepted, the non-blocking operations must not panic or touch memory
// outside the region whatever the head, tail and slot words hold.
func FuzzAttach(f *testing.F) {
	size, _ := Size(4)
	good := alignedBuf(size)
	if _, err := Init(good, 4); err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), good...))
	packed, _ := SizeLayout(8, Packed)
	gp := alignedBuf(packed)
	if _, err := Init(gp, 8, WithLayout(Packed)); err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), gp...))
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		mem := alignedBuf(len(data))
		copy(mem, data)
		q, err := Attach(mem, WithSpin(0), WithWaitSlice(time.Microsecond))
		if err != nil {
			return
		}
		need, err := SizeLayout(q.Cap(), q.Layout())
		if err != nil || need > len(mem) {
			t.Fatalf("Attach accepted a %d-byte region for a queue of %d bytes", len(mem), need)
		}
		for i := 0; i < 4; i++ {
			q.TryEnqueue(uint64(i))
			q.TryDequeue()
		}
		q.Len()
		q.Close()
		q.TryDequeue()
	})
}
