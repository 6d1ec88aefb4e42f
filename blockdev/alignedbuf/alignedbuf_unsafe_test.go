package alignedbuf

import (
	"testing"
	"unsafe"
)

func TestPool(t *testing.T) {
	p, err := NewPool(5000, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.BufSize() != 2*PageSize && PageSize == 4096 {
		t.Fatalf("BufSize %d", p.BufSize())
	}
	var got [][]byte
	for i := 0; i < 3; i++ {
		b := p.Get()
		if b == nil {
			t.Fatalf("Get %d returned nil", i)
		}
		if uintptr(unsafe.Pointer(&b[0]))%uintptr(PageSize) != 0 {
			t.Fatal("buffer not page aligned")
		}
		b[0], b[len(b)-1] = 1, 2
		got = append(got, b)
	}
	if p.Get() != nil {
		t.Fatal("Get on an exhausted pool returned a buffer")
	}
	if err := p.Put(got[1][PageSize:]); err == nil {
		t.Fatal("Put of an interior slice succeeded")
	}
	other := make([]byte, 10)
	if err := p.Put(other); err == nil {
		t.Fatal("Put of a foreign buffer succeeded")
	}
	if err := p.Put(got[1]); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(got[1]); err == nil {
		t.Fatal("double Put succeeded")
	}
	if b := p.Get(); &b[0] != &got[1][0] {
		t.Fatal("Get did not reuse the freed buffer")
	}
}

func TestAllocBadInput(t *testing.T) {
	if _, err := Alloc(0); err == nil {
		t.Fatal("Alloc(0) succeeded")
	}
	if _, err := NewPool(-1, 1); err == nil {
		t.Fatal("NewPool(-1) succeeded")
	}
	b, err := Alloc(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 100 || cap(b) != PageSize {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	if err := Free(b); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkGetPut(b *testing.B) {
	p, _ := NewPool(4096, 64)
	defer p.Close()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf := p.Get()
		p.Put(buf)
	}
}
