// Package alignedbuf allocates page-aligned I/O buffers outside the Go heap (anonymous
// mmap), as O_DIRECT and io_uring registered buffers need: the garbage collector never
// moves or frees them, so the kernel may hold their addresses across an asynchronous
// request.
//
// Pool carves one mapping into fixed-size buffers with a bounded free list; its Region
// is what a queue registers with io_uring once, after which every buffer from the pool
// is eligible for READ_FIXED/WRITE_FIXED. Alloc maps one buffer by itself.
//
// Invariants: every buffer Get returns starts on a page boundary and is bufSize long
// (bufSize is rounded up to a whole number of pages); a buffer is either free or
// handed out, never both (Put of a foreign or already free buffer is an error). Lock
// order: Pool.mu is a leaf. Measure: `go test -run '^$' -bench GetPut -benchmem
// ./blockdev/alignedbuf`.
package alignedbuf

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// PageSize is the alignment of every buffer.
var PageSize = os.Getpagesize()

// Alloc maps size bytes (rounded up to whole pages), page-aligned and zeroed. Free it
// with Free.
func Alloc(size int) ([]byte, error) {
	if size <= 0 {
		return nil, fmt.Errorf("alignedbuf: Alloc(%d): size must be positive", size)
	}
	n := roundUp(size, PageSize)
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("alignedbuf: mmap %d bytes: %w", n, err)
	}
	return b[:size], nil
}

// Free unmaps a buffer from Alloc.
func Free(b []byte) error {
	if cap(b) == 0 {
		return errors.New("alignedbuf: Free of an empty buffer")
	}
	return unix.Munmap(b[:cap(b)])
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// Pool hands out count buffers of bufSize bytes from one mapping.
type Pool struct {
	region  []byte
	bufSize int

	mu sync.Mutex
	// free is a stack of free buffer indexes; inUse marks handed-out ones.
	free  []int32
	inUse []bool
}

// NewPool maps count buffers of bufSize bytes (rounded up to whole pages).
func NewPool(bufSize, count int) (*Pool, error) {
	if bufSize <= 0 || count <= 0 || count > 1<<20 {
		return nil, fmt.Errorf("alignedbuf: NewPool(%d, %d): want positive sizes, at most 1<<20 buffers", bufSize, count)
	}
	bs := roundUp(bufSize, PageSize)
	region, err := Alloc(bs * count)
	if err != nil {
		return nil, err
	}
	p := &Pool{region: region, bufSize: bs, free: make([]int32, count), inUse: make([]bool, count)}
	for i := range p.free {
		p.free[i] = int32(count - 1 - i)
	}
	return p, nil
}

// BufSize is the size of each buffer.
func (p *Pool) BufSize() int { return p.bufSize }

// Region is the whole mapping, for io_uring buffer registration.
func (p *Pool) Region() []byte { return p.region }

// Get returns a free buffer, or nil when all are handed out.
func (p *Pool) Get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		return nil
	}
	i := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.inUse[i] = true
	off := int(i) * p.bufSize
	return p.region[off : off+p.bufSize : off+p.bufSize]
}

// Put returns a buffer to the pool.
func (p *Pool) Put(b []byte) error {
	i, ok := p.index(b)
	if !ok {
		return errors.New("alignedbuf: Put of a buffer that did not come from this pool")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inUse[i] {
		return fmt.Errorf("alignedbuf: Put of buffer %d, which is already free", i)
	}
	p.inUse[i] = false
	p.free = append(p.free, int32(i))
	return nil
}

// Close unmaps the pool; every buffer from it becomes invalid.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.region == nil {
		return errors.New("alignedbuf: pool closed twice")
	}
	err := Free(p.region)
	p.region = nil
	return err
}
